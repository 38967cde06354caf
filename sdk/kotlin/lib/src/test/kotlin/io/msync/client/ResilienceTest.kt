package io.msync.client

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout
import java.io.File
import java.io.IOException
import java.nio.file.Files
import java.util.Collections
import java.util.concurrent.atomic.AtomicBoolean
import kotlin.concurrent.thread

/** Each test owns its server: they kill, freeze or reconfigure it. */
@Timeout(120)
class ResilienceTest {
    @Test fun kill9MidStreamDeliversEveryAcknowledgedPublishOnceInOrder() {
        val data = Files.createTempDirectory("kt-crash").toFile()
        val server = MsyncServer(dataDir = data)
        val storeDir = Files.createTempDirectory("kt-crash-points").toFile()
        val ev = Events(); val rec = Recorder()
        val acked = Collections.synchronizedList(ArrayList<Long>())
        try {
            testClient(server, "crash", "crash-d1", mapOf("demo" to rec.handler), ev, store = FileStore(File(storeDir, "p.json"))).use { c ->
                c.start()
                eventually("connected") { c.connected }
                val stop = AtomicBoolean(false)
                // One publisher, as fast as the server acks. Calls that fail
                // while the server is down are not acknowledged: they may or
                // may not be stored, ids stay dense either way.
                val pub = thread(name = "publisher") {
                    var n = 0
                    while (!stop.get() && acked.size < 600) {
                        try { acked.add(server.publish("demo", "crash", "c${n++}")) } catch (_: IOException) { Thread.sleep(20) } catch (_: IllegalStateException) { Thread.sleep(20) }
                    }
                }
                eventually("300 acknowledged and some delivered") { acked.size >= 300 && rec.ops.size >= 100 }
                server.kill9()
                val atKill = acked.size
                eventually("the client notices") { !c.connected }
                server.start() // same data dir, same ports
                pub.join(60_000)
                stop.set(true)
                assertTrue(acked.size >= 600, "acked ${acked.size}")
                val max = acked.max()
                eventually("everything acknowledged delivered", 60_000) { rec.ops.isNotEmpty() && rec.ops.last().id >= max }
                val ids = rec.ids()
                assertEquals((1..ids.last()).toList(), ids, "delivered once each, in order, no gap")
                assertTrue(ids.toSet().containsAll(acked), "an acknowledged publish was lost")
                assertTrue(ev.count<Event.Connected>() >= 2, ev.toString())
                assertTrue(atKill < 600, "killed mid-stream")
            }
        } finally {
            server.close()
            storeDir.deleteRecursively()
        }
    }

    @Test fun heartbeatsKeepTheSessionAndASilentServerHitsTheReadDeadline() {
        MsyncServer(heartbeat = "1s", extraComet = "  heartbeat_min: 500ms\n  heartbeat_max: 5s").use { server ->
            val ev = Events(); val rec = Recorder()
            testClient(server, "hb", "hb-d1", mapOf("demo" to rec.handler), ev, heartbeatMs = 600).use { c ->
                c.start()
                eventually("connected") { c.connected }
                // The wish is inside [500ms, 5s]: the server takes it.
                assertEquals(600L, ev.of<Event.Connected>()[0].heartbeatMs)
                // Idle for longer than the server's deadline (3 x 0.6 s + 5 s):
                // only the SDK's heartbeats keep the session.
                Thread.sleep(8_000)
                assertEquals(0, ev.count<Event.Disconnected>(), ev.toString())
                assertTrue(c.connected)
                // A frozen server answers nothing: the client gives up after
                // 2 x 0.6 s + 5 s and reconnects once the server is back.
                server.signal("STOP")
                try {
                    eventually("read deadline", 15_000) { ev.of<Event.Disconnected>().any { it.error is ReadTimeoutException } }
                } finally {
                    server.signal("CONT")
                }
                eventually("reconnected") { ev.count<Event.Connected>() >= 2 && c.connected }
                server.publish("demo", "hb", "after")
                eventually("delivered after the freeze") { rec.ops.size == 1 }
            }
        }
    }

    @Test fun tlsWithVerifiedCertificate() {
        val certDir = Files.createTempDirectory("kt-tls").toFile()
        val cert = TestCert(certDir)
        MsyncServer(tls = cert).use { server ->
            val rec = Recorder()
            testClient(server, "tls", "tls-d1", mapOf("demo" to rec.handler), Events(), addr = server.tlsAddr, tls = cert.sslFactory).use { c ->
                c.start()
                eventually("connected over TLS") { c.connected }
                repeat(10) { server.publish("demo", "tls", "secret $it") }
                eventually("10 over TLS") { rec.ops.size == 10 }
                assertEquals((1L..10L).toList(), rec.ids())
            }
            // Without the test CA in its trust the handshake must fail.
            val ev = Events()
            testClient(server, "tls", "tls-d2", mapOf("demo" to Recorder().handler), ev, addr = server.tlsAddr).use { c ->
                c.start()
                eventually("handshake refused") { ev.of<Event.Disconnected>().any { it.error is ConnectionException } }
                assertEquals(0, ev.count<Event.Connected>())
            }
        }
        certDir.deleteRecursively()
    }
}
