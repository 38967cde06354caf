package io.msync.client

import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.Timeout
import org.junit.jupiter.api.assertThrows
import java.io.ByteArrayOutputStream
import java.io.DataInputStream
import java.net.InetSocketAddress
import java.net.Socket
import java.util.zip.Deflater

/** Body compression (docs/protocol.md §18): the codec, and the SDK against one real `msync all`. */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@Timeout(90)
class CompressionTest {
    private val server = MsyncServer()

    @AfterAll fun stop() = server.close()

    /** A realistic ~2 KB JSON oplog: an order with items. */
    private fun order(id: Int): String {
        val items = (0 until 12).joinToString(",") { i ->
            """{"sku":"SKU-$id-$i","name":"Organic green tea, 100 g","quantity":${i % 3 + 1},"unit_price":"4.90","tax_rate":"0.07"}"""
        }
        return """{"type":"order.updated","order":{"id":"ord_$id","status":"shipped","currency":"EUR","customer":{"id":"cus_1029","name":"Alice Martin"},"items":[$items]}}"""
    }

    private fun publishJSON(user: String, payload: String): Long {
        val esc = payload.replace("\\", "\\\\").replace("\"", "\\\"")
        val r = server.post("/v1/sync", """{"biz":"demo","user":"$user","payload":"$esc"}""")
        check(r.statusCode() == 200) { "publish: ${r.statusCode()} ${r.body()}" }
        return (MiniJson(r.body()).parse() as Map<*, *>)["id"] as Long
    }

    private fun rawDeflate(b: ByteArray): ByteArray {
        val d = Deflater(Deflater.BEST_COMPRESSION, true)
        d.setInput(b); d.finish()
        val out = ByteArrayOutputStream(); val buf = ByteArray(8192)
        while (!d.finished()) out.write(buf, 0, d.deflate(buf))
        d.end()
        return out.toByteArray()
    }

    @Test fun bigJsonOplogArrivesCompressedAndExactSmallOnePlain() {
        val ev = Events(); val rec = Recorder()
        testClient(server, "kz", "kz-phone", mapOf("demo" to rec.handler), ev).use { c ->
            c.start()
            eventually("connected") { c.connected }
            publishJSON("kz", """{"type":"chat","text":"hi"}""")
            eventually("small oplog") { rec.ops.size == 1 }
            assertEquals(0L, c.compressionStats().framesIn, "a 27-byte oplog arrived compressed")
            val want = order(7)
            publishJSON("kz", want)
            eventually("big oplog") { rec.ops.size == 2 }
            assertEquals(want, rec.ops[1].text)
            val st = c.compressionStats()
            assertEquals(1L, st.framesIn, "$st")
            assertTrue(st.bytesInWire * 2 < st.bytesInRaw, "not even halved: $st")
        }
        assertEquals(0, ev.count<Event.Error>(), ev.toString())
    }

    @Test fun compressionOffGetsPlainFrames() {
        val rec = Recorder()
        val c = MsyncClient(server.addr, Options(device = "kz-off", tokenProvider = { server.token("kzoff") }, compression = false))
        c.registerBiz("demo", rec.handler)
        c.use {
            c.start()
            eventually("connected") { c.connected }
            val want = order(8)
            publishJSON("kzoff", want)
            eventually("big oplog") { rec.ops.size == 1 }
            assertEquals(want, rec.ops[0].text)
            assertEquals(0L, c.compressionStats().framesIn)
        }
    }

    /** A client that negotiated deflate and sends a frame inflating past 64 KiB gets ERROR 4008. */
    @Test fun bombFromTheClientGets4008() {
        Socket().use { s ->
            s.connect(InetSocketAddress("127.0.0.1", server.cometPort), 5000)
            s.soTimeout = 10_000
            val out = s.getOutputStream(); val input = DataInputStream(s.getInputStream())
            fun read(): Frame {
                val hdr = ByteArray(16); input.readFully(hdr)
                val h = FrameCodec.parseHeader(hdr, 1 shl 20)
                val body = ByteArray(h.length - 16); input.readFully(body)
                return Frame(h.op, h.seq, body)
            }
            out.write(FrameCodec.encode(Op.AUTH, 1, Auth(server.token("kzbomb"), "kz-bomb", "android", "", listOf("demo"), compression = listOf("deflate"))))
            val reply = read()
            assertEquals(Op.AUTH_REPLY, reply.op)
            assertEquals("deflate", AuthReply.decode(reply).compression)
            val bomb = rawDeflate(ByteArray(4 shl 20))
            val w = ProtoWriter(ByteArray(16 + bomb.size))
            w.u32be(16 + bomb.size); w.u16be(16); w.u16be(1); w.u32be(Op.HEARTBEAT or Compression.FLAG); w.u32be(2)
            System.arraycopy(bomb, 0, w.buf, 16, bomb.size)
            out.write(w.buf)
            val e = read()
            assertEquals(Op.ERROR, e.op)
            assertEquals(4008, CodeMessage.decode(e).code)
        }
    }

    @Test fun inflaterBoundsAndRoundTrip() {
        val stats = CompressionCounters()
        FrameInflater(stats).use { inf ->
            val body = order(9).toByteArray()
            val frame = FrameCodec.encode(Op.PUSH, 0, Push("", body, 0, ""))
            val z = Compression.deflate(frame)!!
            val f = FrameCodec.decode(z)
            assertTrue(Compression.isCompressed(f.op))
            val back = inf.inflate(f, 1 shl 20)
            assertEquals(Op.PUSH, back.op)
            assertArrayEquals(body, Push.decode(back).payload)
            assertThrows<InflateTooLargeException> { inf.inflate(Frame(Op.SYNC or Compression.FLAG, 0, rawDeflate(ByteArray(70_000))), 64 shl 10) }
            assertEquals(64 shl 10, inf.inflate(Frame(Op.SYNC or Compression.FLAG, 0, rawDeflate(ByteArray((64 shl 10) - 16))), 64 shl 10).bodyLen + 16)
            assertThrows<MalformedFrameException> { inf.inflate(Frame(Op.SYNC or Compression.FLAG, 0, byteArrayOf(0xde.toByte(), 0xad.toByte(), 0xbe.toByte(), 0xef.toByte())), 1 shl 20) }
            val good = rawDeflate("hello hello hello".toByteArray())
            assertThrows<MalformedFrameException> { inf.inflate(Frame(Op.SYNC or Compression.FLAG, 0, good.copyOf(good.size / 2)), 1 shl 20) }
            assertNull(Compression.deflate(FrameCodec.encode(Op.PUSH, 0, Push("", ByteArray(100), 0, ""))), "a 100-byte body was compressed")
        }
    }
}
