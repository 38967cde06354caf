package io.msync.client

import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.Timeout
import java.io.File
import java.nio.file.Files
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.atomic.AtomicInteger

/** Builds a client for [user]/[device] against [server] with fast backoff, recording events. */
fun testClient(
    server: MsyncServer, user: String, device: String, handlers: Map<String, Handler>, events: Events,
    store: SyncPointStore = MemoryStore(), addr: String = server.addr, handlerRetries: Int = 5,
    heartbeatMs: Int = 0, onPush: ((Push) -> Unit)? = null, tls: javax.net.ssl.SSLSocketFactory? = null,
    rooms: List<String> = emptyList(),
): MsyncClient {
    val c = MsyncClient(addr, Options(
        device = device, tokenProvider = { server.token(user) }, platform = "android", appVersion = "5.12.1",
        store = store, backoffMinMs = 20, backoffMaxMs = 300, dialTimeoutMs = 5_000, handlerRetries = handlerRetries,
        heartbeatMs = heartbeatMs, onEvent = events.sink, onPush = onPush, sslSocketFactory = tls,
    ))
    for ((biz, h) in handlers) c.registerBiz(biz, h)
    for (r in rooms) c.joinRoom(r)
    return c
}

/** The SDK against one real `msync all` (tests use distinct users and devices). */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@Timeout(90)
class ServerTest {
    private val server = MsyncServer()

    @AfterAll fun stop() = server.close()

    private fun assertDense(ids: List<Long>, upto: Long, what: String) =
        assertEquals((1..upto).toList(), ids, "$what: want 1..$upto once each, in order")

    @Test fun onlineDeliveryOf1000PublishesInOrder() {
        val ev = Events(); val rec = Recorder()
        testClient(server, "online", "online-d1", mapOf("demo" to rec.handler), ev).use { c ->
            c.start()
            eventually("connected") { c.connected }
            val acked = (1..1000).map { server.publish("demo", "online", "m$it") }
            assertDense(acked, 1000, "publish ids")
            eventually("1000 oplogs delivered") { rec.ops.size >= 1000 }
            assertDense(rec.ids(), 1000, "delivered")
            assertEquals("m1000", rec.ops.last().text)
            assertEquals("demo/u/online", rec.ops.last().channel)
            assertEquals(1000L, c.syncPoint("demo/u/online"))
            // The server saw the ACKs: its stored point for this device is 1000.
            eventually("server-side point 1000") { serverPoint("online-d1", "demo/u/online") == 1000L }
        }
        assertEquals(0, ev.count<Event.Error>(), ev.toString())
    }

    private fun serverPoint(device: String, channel: String): Long? {
        val http = java.net.http.HttpClient.newHttpClient()
        val r = http.send(java.net.http.HttpRequest.newBuilder(java.net.URI("http://127.0.0.1:${server.httpPort}/v1/devices/$device/sync"))
            .header("Authorization", "Bearer ${MsyncServer.API_KEY}").GET().build(), java.net.http.HttpResponse.BodyHandlers.ofString())
        if (r.statusCode() != 200) return null
        val chans = (MiniJson(r.body()).parse() as Map<*, *>)["channels"] as List<*>
        return chans.map { it as Map<*, *> }.firstOrNull { it["channel"] == channel }?.let { it["sync_point"] as Long? }
    }

    @Test fun offlineBacklogAcrossPagesThenFileStoreSurvivesARestart() {
        val dir = Files.createTempDirectory("kt-store").toFile()
        val file = File(dir, "points.json")
        // 500 oplogs while the device is offline: 10 backlog pages of 50, each
        // released by the ACK of the one before.
        for (b in 0 until 5) server.publishBatch("demo", "offline", (1..100).map { "b$b-$it" })
        val ev = Events(); val rec = Recorder()
        testClient(server, "offline", "offline-d1", mapOf("demo" to rec.handler), ev, store = FileStore(file)).use { c ->
            c.start()
            eventually("500 backlog oplogs") { rec.ops.size >= 500 }
            assertDense(rec.ids(), 500, "backlog")
        }
        assertTrue(file.readText().contains("\"demo/u/offline\":500"), file.readText())
        // A new process with the same file: nothing old again, only the new one.
        server.publish("demo", "offline", "after-restart")
        val rec2 = Recorder()
        testClient(server, "offline", "offline-d1", mapOf("demo" to rec2.handler), Events(), store = FileStore(file)).use { c ->
            c.start()
            eventually("oplog 501") { rec2.ops.isNotEmpty() }
            eventually("no more") { c.syncPoint("demo/u/offline") == 501L }
            assertEquals(listOf(501L), rec2.ids())
        }
        dir.deleteRecursively()
    }

    @Test fun secondDeviceGetsTheUserChannelAndOnlyItsOwnDeviceChannel() {
        val a = Recorder(); val b = Recorder()
        val ca = testClient(server, "two", "two-a", mapOf("demo" to a.handler, "cmd" to a.handler), Events())
        val cb = testClient(server, "two", "two-b", mapOf("demo" to b.handler, "cmd" to b.handler), Events())
        ca.use { cb.use {
            ca.start(); cb.start()
            eventually("both connected") { ca.connected && cb.connected }
            repeat(20) { server.publish("demo", "two", "x$it") }
            server.publish("cmd", "two-b", "only-b", ownerKey = "device")
            eventually("both devices got 20") { a.ids("demo/u/two").size >= 20 && b.ids("demo/u/two").size >= 20 }
            eventually("device b got its command") { b.ids("cmd/d/two-b").isNotEmpty() }
            assertDense(a.ids("demo/u/two"), 20, "device a")
            assertDense(b.ids("demo/u/two"), 20, "device b")
            assertEquals(listOf("only-b"), b.ops.filter { it.biz == "cmd" }.map { it.text })
            assertTrue(a.ops.none { it.biz == "cmd" }, "device a got b's command")
        } }
    }

    @Test fun handlerThatThrowsIsRetriedAndNothingIsSkipped() {
        val ev = Events()
        val attempts = ConcurrentHashMap<Long, AtomicInteger>()
        val delivered = java.util.concurrent.CopyOnWriteArrayList<Long>()
        val h = Handler { op ->
            val n = attempts.computeIfAbsent(op.id) { AtomicInteger() }.incrementAndGet()
            // 7 fails 3 times (retried in place); 15 fails 6 times, past
            // handlerRetries = 2, so the channel resyncs from the server.
            if (op.id == 7L && n <= 3) throw IllegalStateException("db locked")
            if (op.id == 15L && n <= 6) throw IllegalStateException("still locked")
            delivered.add(op.id)
        }
        testClient(server, "throws", "throws-d1", mapOf("demo" to h), ev, handlerRetries = 2).use { c ->
            c.start()
            eventually("connected") { c.connected }
            repeat(30) { server.publish("demo", "throws", "t$it") }
            eventually("30 delivered", 30_000) { delivered.size >= 30 }
            assertDense(delivered, 30, "delivered")
            assertEquals(4, attempts[7L]!!.get())
            assertEquals(7, attempts[15L]!!.get())
            assertTrue(attempts.filterKeys { it != 7L && it != 15L }.values.all { it.get() == 1 }, "others called once: $attempts")
            assertTrue(ev.of<Event.Error>().any { (it.error as? HandlerException)?.id == 15L }, ev.toString())
            assertEquals(30L, c.syncPoint("demo/u/throws"))
        }
    }

    @Test fun kickIsReportedAndTheClientReconnects() {
        val ev = Events(); val rec = Recorder()
        testClient(server, "kicked", "kicked-d1", mapOf("demo" to rec.handler), ev).use { c ->
            c.start()
            eventually("connected") { ev.count<Event.Connected>() == 1 }
            val r = server.post("/v1/kick", """{"device":"kicked-d1","reason":"support session ended"}""")
            assertEquals(200, r.statusCode(), r.body())
            eventually("kicked event") { ev.count<Event.Kicked>() == 1 }
            assertEquals(Event.Kicked(Codes.KICKED, "support session ended"), ev.of<Event.Kicked>()[0])
            eventually("reconnected") { ev.count<Event.Connected>() == 2 && c.connected }
            assertTrue(ev.of<Event.Disconnected>().any { (it.error as? KickedException)?.code == 1007 && it.retryInMs >= 0 }, ev.toString())
            server.publish("demo", "kicked", "after")
            eventually("delivered after the kick") { rec.ops.size == 1 }
        }
    }

    @Test fun pointAheadOfTheServerIsRewoundAndNewOplogsArrive() {
        repeat(3) { server.publish("demo", "ahead", "a$it") }
        // A point from another deployment (or before a store reset): 1000 > max id 3.
        val store = MemoryStore().apply { save("demo/u/ahead", 1000) }
        val ev = Events(); val rec = Recorder()
        testClient(server, "ahead", "ahead-d1", mapOf("demo" to rec.handler), ev, store = store).use { c ->
            c.start()
            eventually("rewound to the server's max") { c.syncPoint("demo/u/ahead") == 3L }
            assertEquals(listOf(Event.Rewound("demo", "demo/u/ahead", 1000, 3)), ev.of<Event.Rewound>())
            assertEquals(3L, store.load()["demo/u/ahead"], "the rewound point is saved")
            assertEquals(4L, server.publish("demo", "ahead", "a4"))
            eventually("the next oplog reaches the handler") { rec.ops.size >= 1 }
            assertEquals(listOf(4L), rec.ids())
        }
    }

    @Test fun latestNBacklogReportsSkipped() {
        repeat(20) { server.publish("latest", "skip", "s$it") }
        val ev = Events(); val rec = Recorder()
        testClient(server, "skip", "skip-d1", mapOf("latest" to rec.handler), ev).use { c ->
            c.start()
            eventually("the newest 5") { rec.ops.size >= 5 && c.syncPoint("latest/u/skip") == 20L }
            assertEquals((16L..20L).toList(), rec.ids())
            assertEquals(listOf(Event.Skipped("latest", "latest/u/skip", 15)), ev.of<Event.Skipped>())
        }
    }

    @Test fun pushesRoomsAndNonPersistentBizs() {
        val pushes = java.util.concurrent.CopyOnWriteArrayList<Push>()
        val rec = Recorder()
        testClient(server, "pusher", "pusher-d1", mapOf("demo" to Recorder().handler, "typing" to rec.handler), Events(),
            onPush = { pushes.add(it) }, rooms = listOf("lobby")).use { c ->
            c.start()
            eventually("connected") { c.connected }
            eventually("room push") {
                server.post("/v1/push", """{"room":"lobby","payload":"hello room"}""")
                pushes.any { it.room == "lobby" && it.text == "hello room" }
            }
            assertEquals(200, server.post("/v1/push", """{"device":"pusher-d1","payload":"to device"}""").statusCode())
            eventually("device push") { pushes.any { it.room == "" && it.text == "to device" } }
            c.leaveRoom("lobby")
            assertEquals(emptyList<String>(), c.rooms())
            server.publish("typing", "pusher", "bob is typing")
            eventually("non-persistent oplog to its handler") { rec.ops.isNotEmpty() }
            assertEquals(0L, rec.ops[0].id)
            assertEquals("bob is typing", rec.ops[0].text)
        }
    }

    /** A join over the server's max_rooms (3) is refused in ROOM_REPLY: no stop, no reconnect. */
    @Test fun roomLimitIsARefusalNotAStop() {
        val ev = Events()
        val pushes = java.util.concurrent.CopyOnWriteArrayList<Push>()
        testClient(server, "roomy", "roomy-d1", mapOf("demo" to Recorder().handler), ev,
            onPush = { pushes.add(it) }, rooms = listOf("r0", "r1", "r2", "r3")).use { c ->
            c.start()
            // Rooms are joined in sorted order after AUTH_REPLY: r3 is the fourth.
            eventually("a room refusal") { ev.count<Event.RoomRefused>() >= 1 }
            val r = ev.of<Event.RoomRefused>()
            assertEquals(1, r.size, ev.toString())
            assertEquals("r3", r[0].room)
            assertEquals(Codes.TOO_MANY_ROOMS, r[0].code)
            assertTrue(r[0].reason.isNotEmpty())
            assertEquals(listOf("r0", "r1", "r2"), c.rooms())
            // r2's ROOM_REPLY came before r3's refusal: the same session serves it.
            assertEquals(200, server.post("/v1/push", """{"room":"r2","payload":"still up"}""").statusCode())
            eventually("push to r2") { pushes.any { it.room == "r2" && it.text == "still up" } }
            assertTrue(c.connected)
            assertEquals(1, ev.count<Event.Connected>(), ev.toString())
            assertEquals(0, ev.count<Event.Stopped>(), ev.toString())
            assertEquals(0, ev.count<Event.Disconnected>(), ev.toString())
        }
    }

    @Test fun lifecycleBackgroundForegroundClearAndUpdateUser() {
        val ev = Events(); val rec = Recorder()
        testClient(server, "life", "life-d1", mapOf("demo" to rec.handler), ev).use { c ->
            c.start()
            eventually("connected") { c.connected }
            c.background()
            eventually("disconnected by background") { !c.connected && ev.of<Event.Disconnected>().any { (it.error as? LifecycleException)?.reason == LifecycleException.Reason.BACKGROUND } }
            repeat(3) { server.publish("demo", "life", "bg$it") }
            c.foreground()
            eventually("backlog after foreground") { rec.ops.size == 3 }
            c.clearUser()
            eventually("cleared") { !c.connected }
            server.publish("demo", "life", "while logged out")
            c.updateUser(server.token("life"))
            eventually("after login") { rec.ops.size == 4 }
            assertDense(rec.ids(), 4, "lifecycle")
        }
    }

    @Test fun networkMonitorDisconnectsOnLossAndReconnectsAtOnceOnANewNetwork() {
        var report: ((Boolean) -> Unit)? = null
        val watching = java.util.concurrent.atomic.AtomicBoolean(false)
        val monitor = NetworkMonitor { cb -> report = cb; watching.set(true); AutoCloseable { watching.set(false) } }
        val ev = Events(); val rec = Recorder()
        val c = MsyncClient(server.addr, Options(device = "net-d1", tokenProvider = { server.token("net") },
            backoffMinMs = 20_000, backoffMaxMs = 60_000, // a reconnect within the test can only be the monitor's doing
            onEvent = ev.sink, networkMonitor = monitor))
        c.registerBiz("demo", rec.handler)
        c.start()
        assertTrue(watching.get())
        eventually("connected") { c.connected }
        report!!(false)
        eventually("network lost") { ev.of<Event.Disconnected>().any { (it.error as? LifecycleException)?.reason == LifecycleException.Reason.NETWORK_LOST } }
        server.publish("demo", "net", "while offline")
        report!!(true)
        eventually("reconnected without waiting for the 20 s backoff", 10_000) { rec.ops.size == 1 }
        report!!(true) // a switch to another network while connected: reconnect on it
        eventually("reconnected after the switch", 10_000) { ev.count<Event.Connected>() == 3 }
        c.close()
        assertTrue(c.terminated, "coroutines left after close()")
        assertTrue(!watching.get(), "monitor not closed")
        c.close() // idempotent
    }

    @Test fun oplogWhoseHandlerNeverSucceededComesAgainAfterAnAppRestart() {
        val failing = AtomicInteger()
        val bad = Handler { op -> if (op.id >= 3) { failing.incrementAndGet(); throw IllegalStateException("disk full") } }
        testClient(server, "restart", "restart-d1", mapOf("demo" to bad), Events(), handlerRetries = 1).use { c ->
            c.start()
            eventually("connected") { c.connected }
            repeat(5) { server.publish("demo", "restart", "r$it") }
            eventually("oplog 3 failed a few times") { failing.get() >= 3 }
            assertEquals(2L, c.syncPoint("demo/u/restart"))
            // The comet saves ACKs in the background; wait until the server holds 2.
            eventually("server-side point 2") { serverPoint("restart-d1", "demo/u/restart") == 2L }
        }
        // A new process that lost its local points (MemoryStore): the server
        // starts from what this device acked, which must not include 3.
        val rec = Recorder()
        testClient(server, "restart", "restart-d1", mapOf("demo" to rec.handler), Events()).use { c ->
            c.start()
            eventually("3, 4, 5 again") { rec.ops.size >= 3 }
            assertEquals(listOf(3L, 4L, 5L), rec.ids())
        }
    }
}
