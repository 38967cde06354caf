package io.msync.client

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout
import org.junit.jupiter.api.assertThrows
import java.util.concurrent.atomic.AtomicInteger

/**
 * Faults a real server does not produce, from a scripted socket: each must
 * end the session with a clear exception type in an event (never a crash of
 * the app), and the client must reconnect.
 */
@Timeout(60)
class BadInputTest {
    private fun client(addr: String, ev: Events, rec: Recorder = Recorder(), maxFrame: Int = 4 shl 20, dialTimeoutMs: Long = 5_000,
                       tokens: AtomicInteger = AtomicInteger()): MsyncClient =
        MsyncClient(addr, Options(device = "dev1", tokenProvider = { "tkn-${tokens.incrementAndGet()}" }, backoffMinMs = 10, backoffMaxMs = 50,
            dialTimeoutMs = dialTimeoutMs, maxFrame = maxFrame, onEvent = ev.sink)).apply { registerBiz("chat", rec.handler) }

    private inline fun <reified T : MsyncException> Events.disconnectedWith() = of<Event.Disconnected>().map { it.error }.filterIsInstance<T>()

    @Test fun serverThatNeverAnswersAuth() {
        FakeServer { c -> c.read(); Thread.sleep(60_000) }.use { fs ->
            val ev = Events()
            client(fs.addr, ev, dialTimeoutMs = 300).use { c ->
                c.start()
                eventually("two auth timeouts") { ev.disconnectedWith<AuthTimeoutException>().size >= 2 }
                assertTrue(ev.of<Event.Error>().any { it.error is AuthTimeoutException }, ev.toString())
                assertTrue(ev.of<Event.Disconnected>().all { it.retryInMs in 0..50 }, ev.toString())
                assertEquals(0, ev.count<Event.Connected>())
            }
        }
    }

    @Test fun oversizedFrameIsRefusedBeforeItsBody() {
        FakeServer { c ->
            c.auth("chat" to "chat/u/alice")
            // Says 1 GiB; only the header is sent. A reader that trusted it
            // would allocate or wait forever.
            c.raw(byteArrayOf(0x40, 0, 0, 0, 0, 16, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0))
            Thread.sleep(60_000)
        }.use { fs ->
            val ev = Events()
            client(fs.addr, ev, maxFrame = 1 shl 20).use { c ->
                c.start()
                eventually("frame too large") { ev.disconnectedWith<FrameTooLargeException>().isNotEmpty() }
                val e = ev.disconnectedWith<FrameTooLargeException>()[0]
                assertEquals(1L shl 30, e.length); assertEquals(1 shl 20, e.limit)
                eventually("reconnected") { fs.conns.size >= 2 }
            }
        }
    }

    @Test fun malformedBodyEndsTheSessionAndNothingIsAcked() {
        FakeServer { c ->
            c.auth("chat" to "chat/u/alice")
            if (c.n == 1) {
                // A SYNC whose page claims 5 bytes but holds 1.
                c.raw(byteArrayOf(0, 0, 0, 19, 0, 16, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0x0a, 0x05, 0x0a))
                c.readLoop()
            } else {
                c.send(Op.SYNC, 0, Sync(listOf(ChannelPage("chat/u/alice", "chat", 0, 1, listOf(Oplog("chat", "chat/u/alice", 1, "ok".toByteArray()))))))
                c.readLoop()
            }
        }.use { fs ->
            val ev = Events(); val rec = Recorder()
            client(fs.addr, ev, rec).use { c ->
                c.start()
                eventually("malformed reported") { ev.disconnectedWith<MalformedFrameException>().isNotEmpty() }
                assertTrue(ev.of<Event.Error>().any { it.error is MalformedFrameException }, ev.toString())
                eventually("delivered on the next connection") { rec.ops.size == 1 }
                assertEquals(0, fs.conns[0].received.count { it.op == Op.ACK }, "ACK on the broken connection")
                assertEquals(1L, Points.decode(fs.conns[1].next(Op.ACK)).points[0].id)
            }
        }
    }

    @Test fun unknownOpBeforeAuthReplyIsAProtocolErrorAfterItIsIgnored() {
        FakeServer { c ->
            if (c.n == 1) {
                c.read()
                c.send(99, 1, Room("x")) // not AUTH_REPLY, not a known op
                c.readLoop()
                return@FakeServer
            }
            c.auth("chat" to "chat/u/alice")
            c.send(99, 0, Room("from a newer server"))
            c.send(Op.SYNC, 0, Sync(listOf(ChannelPage("chat/u/alice", "chat", 0, 1, listOf(Oplog("chat", "chat/u/alice", 1, "ok".toByteArray()))))))
            c.readLoop()
        }.use { fs ->
            val ev = Events(); val rec = Recorder()
            client(fs.addr, ev, rec).use { c ->
                c.start()
                eventually("delivered after the unknown op") { rec.ops.size == 1 }
                val e = ev.disconnectedWith<UnexpectedOpException>()
                assertEquals(1, e.size, ev.toString())
                assertEquals(99, e[0].op)
                assertEquals(1, ev.count<Event.Connected>(), "the unknown op after AUTH_REPLY must not end the session")
            }
        }
    }

    @Test fun codesByRange() {
        // 2001 -> new token; 4004 -> stopped, no reconnect until updateUser.
        FakeServer { c ->
            c.read()
            val code = if (c.n == 1) Codes.TOKEN_EXPIRED else Codes.BAD_AUTH
            c.send(Op.ERROR, 1, CodeMessage(code, "nope"))
            c.readLoop()
        }.use { fs ->
            val ev = Events(); val tokens = AtomicInteger()
            client(fs.addr, ev, tokens = tokens).use { c ->
                c.start()
                eventually("stopped") { ev.count<Event.Stopped>() == 1 }
                assertEquals(Codes.BAD_AUTH, ev.of<Event.Stopped>()[0].code)
                assertEquals(2, tokens.get(), "2001 must fetch a new token")
                assertEquals(2, fs.conns.size)
                Thread.sleep(300) // 6 backoff maxima: a reconnect would show
                assertEquals(2, fs.conns.size, "reconnected after a 4xxx code")
                kotlinx.coroutines.runBlocking { c.updateUser() }
                eventually("updateUser resumes") { fs.conns.size == 3 }
            }
        }
    }

    @Test fun gapsDuplicatesAndPartialPagesFollowTheClientRules() {
        FakeServer { c ->
            c.auth("chat" to "chat/u/alice")
            // A gap first (after 5 > point 0): ignored, SYNC_REQ{0}.
            c.send(Op.SYNC, 0, Sync(listOf(ChannelPage("chat/u/alice", "chat", 5, 6, listOf(Oplog("chat", "", 6, ByteArray(0))), live = true))))
            // Then the backlog: 1, 3 listed (2 filtered), 1 again as a duplicate in a second page.
            c.send(Op.SYNC, 0, Sync(listOf(
                ChannelPage("chat/u/alice", "chat", 0, 4, listOf(Oplog("chat", "", 1, ByteArray(0)), Oplog("chat", "", 3, ByteArray(0))), more = true),
                ChannelPage("chat/u/alice", "chat", 0, 6, listOf(Oplog("chat", "", 1, ByteArray(0)), Oplog("chat", "", 6, ByteArray(0)))),
            )))
            c.readLoop()
        }.use { fs ->
            val ev = Events(); val rec = Recorder()
            client(fs.addr, ev, rec).use { c ->
                c.start()
                eventually("delivered") { rec.ops.size == 3 }
                val conn = fs.conns[0]
                assertEquals(ChannelPoint("chat/u/alice", 0), Points.decode(conn.next(Op.SYNC_REQ)).points[0])
                assertEquals(4L, Points.decode(conn.next(Op.ACK)).points[0].id)
                assertEquals(6L, Points.decode(conn.next(Op.ACK)).points[0].id)
                assertEquals(listOf(1L, 3L, 6L), rec.ids())
                assertEquals(6L, c.syncPoint("chat/u/alice"))
            }
        }
    }

    @Test fun badOptionsFailAtConstruction() {
        val tp: suspend () -> String = { "t" }
        assertThrows<BadOptionsException> { MsyncClient("127.0.0.1:1", Options(device = "", tokenProvider = tp)) }
        assertThrows<BadOptionsException> { MsyncClient("127.0.0.1:1", Options(device = "d", tokenProvider = tp, appVersion = "5.x")) }
        assertThrows<BadOptionsException> { MsyncClient("ws://127.0.0.1:1/sub", Options(device = "d", tokenProvider = tp)) }
        assertThrows<BadOptionsException> { MsyncClient("127.0.0.1", Options(device = "d", tokenProvider = tp)) }
        val c = MsyncClient("127.0.0.1:1", Options(device = "d", tokenProvider = tp))
        assertThrows<BadOptionsException> { c.registerBiz("bad biz", Recorder().handler) }
        assertThrows<BadOptionsException> { c.joinRoom("has space") }
        assertThrows<BadOptionsException> { c.start() } // no biz
        c.close()
    }
}
