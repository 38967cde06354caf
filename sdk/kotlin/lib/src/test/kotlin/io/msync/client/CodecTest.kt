package io.msync.client

import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import java.io.File
import java.util.Base64

/**
 * The codec against frames encoded by the Go codec (sdk/js/testdata/frames.json,
 * kept equal to pkg/protocol by web/golden_test.go) and the byte dumps of
 * docs/protocol.md §3.
 */
class CodecTest {
    private val golden: List<Map<*, *>> by lazy {
        @Suppress("UNCHECKED_CAST")
        MiniJson(File(repoRoot, "sdk/js/testdata/frames.json").readText()).parse() as List<Map<*, *>>
    }

    private fun hex(s: String) = ByteArray(s.length / 2) { s.substring(2 * it, 2 * it + 2).toInt(16).toByte() }
    private fun hexOf(b: ByteArray) = b.joinToString("") { "%02x".format(it) }
    private fun b64(b: ByteArray) = Base64.getEncoder().encodeToString(b)

    private fun pointJson(p: ChannelPoint) = mapOf("channel" to p.channel, "id" to p.id.toString())

    /** A decoded body in protojson's canonical form (every field, int64 as strings, bytes as base64). */
    private fun canonical(f: Frame): Pair<Map<String, Any?>, WireMessage> = when (f.op) {
        Op.AUTH -> Auth.decode(f).let { a ->
            mapOf("token" to a.token, "device" to a.device, "platform" to a.platform, "appVersion" to a.appVersion,
                "bizs" to a.bizs, "points" to a.points.map(::pointJson), "heartbeatMs" to a.heartbeatMs.toLong(),
                "compression" to a.compression) to a
        }
        Op.AUTH_REPLY -> AuthReply.decode(f).let { r ->
            mapOf("user" to r.user, "session" to r.session, "heartbeatMs" to r.heartbeatMs.toLong(),
                "channels" to r.channels.map { mapOf("biz" to it.biz, "channel" to it.channel, "from" to it.from.toString()) },
                "rejected" to r.rejected.map { mapOf("biz" to it.biz, "reason" to it.reason) }, "maxRequests" to r.maxRequests.toLong(),
                "compression" to r.compression) to r
        }
        Op.HEARTBEAT, Op.HEARTBEAT_REPLY -> Heartbeat.decode(f).let { mapOf("intervalMs" to it.intervalMs.toLong()) to it }
        Op.SYNC -> Sync.decode(f).let { s ->
            mapOf("pages" to s.pages.map { p ->
                mapOf("channel" to p.channel, "biz" to p.biz, "after" to p.after.toString(), "upto" to p.upto.toString(),
                    "oplogs" to p.oplogs.map { o ->
                        assertEquals(p.channel, o.channel); assertEquals(p.biz, o.biz)
                        mapOf("id" to o.id.toString(), "payload" to b64(o.payload), "createdMs" to o.createdMs.toString(),
                            "validUntilMs" to o.validUntilMs.toString())
                    },
                    "more" to p.more, "skipped" to p.skipped.toString(), "live" to p.live)
            }) to s
        }
        Op.ACK, Op.SYNC_REQ -> Points.decode(f).let { mapOf("points" to it.points.map(::pointJson)) to it }
        Op.PUSH -> Push.decode(f).let { mapOf("room" to it.room, "payload" to b64(it.payload), "createdMs" to it.createdMs.toString(), "biz" to it.biz) to it }
        Op.KICK -> CodeMessage.decode(f).let { mapOf("code" to it.code.toLong(), "reason" to it.message) to it }
        Op.ERROR -> CodeMessage.decode(f).let { mapOf("code" to it.code.toLong(), "message" to it.message) to it }
        else -> throw AssertionError("no decoder for op ${f.op}")
    }

    @Test fun goldenFramesDecodeAndReencodeByteForByte() {
        assertTrue(golden.size >= 19, "golden frames: ${golden.size}")
        for (g in golden) {
            val name = g["name"]
            val bytes = hex(g["hex"] as String)
            val f = FrameCodec.decode(bytes)
            // REQUEST/RESPONSE (RPC, docs/protocol.md §17) are not in this SDK yet: only their header is checked.
            if (f.op == 15 || f.op == 16) { assertEquals((g["op"] as Long).toInt(), f.op, "$name op"); continue }
            assertEquals((g["op"] as Long).toInt(), f.op, "$name op")
            assertEquals((g["seq"] as Long).toInt(), f.seq, "$name seq")
            val (json, msg) = canonical(f)
            assertEquals(g["message"], json, "$name fields")
            val again = FrameCodec.encode(f.op, f.seq, msg)
            if (name == "sync-unknown-fields") {
                // Unknown fields are skipped on decode, so they are not re-encoded.
                assertTrue(again.size < bytes.size, "$name: unknown fields were not skipped")
            } else {
                assertEquals(g["hex"], hexOf(again), "$name re-encoded")
            }
        }
    }

    /** The dumps in docs/protocol.md §3, from Kotlin values. */
    @Test fun protocolDocDumps() {
        val doc = File(repoRoot, "docs/protocol.md").readText()
        val section = doc.substringAfter("## 3. Example bytes").substringBefore("## 4. Ops")
        val dumps = Regex("```\n(00000000 .*?)```", RegexOption.DOT_MATCHES_ALL).findAll(section).flatMap { m ->
            // A block may hold two dumps separated by a blank line.
            m.groupValues[1].trim().split("\n\n").asSequence()
        }.map { d ->
            hex(d.lines().joinToString("") { line -> line.substring(10).substringBefore("|").replace(" ", "") })
        }.toList()
        val mine = listOf(
            FrameCodec.encode(Op.AUTH, 1, Auth("tkn", "dev1", "android", "5.12.1", listOf("chat"), listOf(ChannelPoint("chat/u/alice", 2)))),
            FrameCodec.encode(Op.HEARTBEAT, 2, Heartbeat()),
            FrameCodec.encode(Op.HEARTBEAT_REPLY, 2, Heartbeat(30000)),
            FrameCodec.encode(Op.SYNC, 0, Sync(listOf(ChannelPage("chat/u/alice", "chat", 2, 3, listOf(Oplog("chat", "chat/u/alice", 3, "hi".toByteArray())), live = true)))),
            FrameCodec.encode(Op.ACK, 3, Points(listOf(ChannelPoint("chat/u/alice", 3)))),
            FrameCodec.encode(Op.ERROR, 0, CodeMessage(2001, "expired")),
        )
        assertEquals(mine.size, dumps.size, "dumps in §3")
        for (i in mine.indices) assertArrayEquals(dumps[i], mine[i], "dump $i")
    }

    private fun frame(op: Int, body: ByteArray, version: Int = 1, headerLen: Int = 16, length: Int = 16 + body.size): ByteArray {
        val w = ProtoWriter(ByteArray(16 + body.size))
        w.u32be(length); w.u16be(headerLen); w.u16be(version); w.u32be(op); w.u32be(0)
        System.arraycopy(body, 0, w.buf, 16, body.size)
        return w.buf
    }

    @Test fun badHeadersAreClearExceptions() {
        assertThrows<MalformedFrameException> { FrameCodec.decode(frame(Op.SYNC, ByteArray(0), version = 2)) }
        assertThrows<MalformedFrameException> { FrameCodec.decode(frame(Op.SYNC, ByteArray(0), headerLen = 12)) }
        assertThrows<MalformedFrameException> { FrameCodec.decode(frame(Op.SYNC, ByteArray(0), length = 8)) }
        assertThrows<MalformedFrameException> { FrameCodec.decode(ByteArray(5)) }
        val big = assertThrows<FrameTooLargeException> { FrameCodec.parseHeader(frame(Op.SYNC, ByteArray(0), length = -1), 4 shl 20) }
        assertEquals(0xffffffffL, big.length)
        // A larger header length is accepted and its extra bytes skipped.
        val f = FrameCodec.decode(byteArrayOf(0, 0, 0, 22, 0, 20, 0, 1, 0, 0, 0, 4, 0, 0, 0, 9, 7, 7, 7, 7, 8, 5))
        assertEquals(5, Heartbeat.decode(f).intervalMs)
    }

    @Test fun badBodiesAreClearExceptions() {
        fun sync(vararg b: Int) = FrameCodec.decode(frame(Op.SYNC, ByteArray(b.size) { b[it].toByte() }))
        assertThrows<MalformedFrameException>("truncated varint") { Sync.decode(sync(0x0a, 0x80)) }
        assertThrows<MalformedFrameException>("length beyond body") { Sync.decode(sync(0x0a, 0x05, 0x0a)) }
        assertThrows<MalformedFrameException>("wrong wire type") { Sync.decode(sync(0x0a, 0x02, 0x08, 0x01)) }
        assertThrows<MalformedFrameException>("bad UTF-8") { Sync.decode(sync(0x0a, 0x04, 0x0a, 0x02, 0xc3, 0x28)) }
        assertThrows<MalformedFrameException>("id above 2^63-1") {
            Sync.decode(sync(0x0a, 0x0c, 0x2a, 0x0a, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01))
        }
        assertThrows<MalformedFrameException>("field 0") { Sync.decode(sync(0x02, 0x00)) }
        assertThrows<MalformedFrameException>("wire type 3") { Sync.decode(sync(0x0b)) }
    }

    @Test fun utf8SizesMatchEncoding() {
        for (s in listOf("", "abc", "dévice-☃", "emoji \uD83D\uDE00", "lone \uD800 surrogate")) {
            assertEquals(s.toByteArray(Charsets.UTF_8).size, ProtoWriter.utf8Len(s), s)
            FrameCodec.encode(Op.AUTH, 1, Auth(token = s, bizs = listOf(s)))
        }
    }
}
