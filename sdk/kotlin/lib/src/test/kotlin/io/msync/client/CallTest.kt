package io.msync.client

import com.sun.net.httpserver.HttpServer
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.Timeout
import org.junit.jupiter.api.assertThrows
import java.net.InetSocketAddress
import java.util.concurrent.CountDownLatch
import java.util.concurrent.Executors
import java.util.concurrent.TimeUnit

/**
 * MsyncClient.call against a real `msync all` whose upstreams point at a
 * real HTTP server this test runs (the JDK's): echo, slow, failing, and a
 * service nothing listens on. Mirrors e2e/rpc_test.go.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@Timeout(90)
class CallTest {
    private val release = CountDownLatch(1)
    private val upstream = HttpServer.create(InetSocketAddress("127.0.0.1", 0), 64).apply {
        executor = Executors.newFixedThreadPool(16)
        createContext("/echo") { ex ->
            val body = ex.requestBody.readBytes()
            val h = ex.requestHeaders
            val answer = listOf(h.getFirst("X-Msync-User"), h.getFirst("X-Msync-Device"), h.getFirst("X-Msync-Platform"),
                h.getFirst("X-Msync-App-Version"), ex.requestMethod, ex.requestURI.toString(), h.getFirst("X-Trace") ?: "",
                String(body, Charsets.UTF_8)).joinToString("|")
            val b = answer.toByteArray(Charsets.UTF_8)
            ex.responseHeaders.add("X-Echo", "yes")
            ex.sendResponseHeaders(200, b.size.toLong()); ex.responseBody.use { it.write(b) }
        }
        createContext("/slow") { ex ->
            release.await(30, TimeUnit.SECONDS)
            ex.sendResponseHeaders(200, -1); ex.close()
        }
        createContext("/fail") { ex ->
            val b = "upstream broke".toByteArray()
            ex.sendResponseHeaders(502, b.size.toLong()); ex.responseBody.use { it.write(b) }
        }
        start()
    }
    private val up = "127.0.0.1:${upstream.address.port}"
    private val deadPort = freePort()
    private val server = MsyncServer(extraConfig = """
        |upstreams:
        |  echo: {url: "http://$up/echo"}
        |  slow: {url: "http://$up", timeout: 1m}
        |  fail: {url: "http://$up"}
        |  down: {url: "http://127.0.0.1:$deadPort"}
        |""".trimMargin())

    @AfterAll fun stop() {
        release.countDown()
        server.close()
        upstream.stop(0)
        (upstream.executor as java.util.concurrent.ExecutorService).shutdownNow()
    }

    private fun client(user: String, device: String, ev: Events = Events()) =
        testClient(server, user, device, mapOf("demo" to Recorder().handler), ev)

    @Test fun echoWithTheVerifiedIdentity() = runBlocking {
        client("rpc-alice", "rpc-d1").use { c ->
            c.start()
            val r = c.call("echo", "/orders?page=2", "hello", headers = mapOf("X-Trace" to "t-1"))
            assertEquals(200, r.status)
            assertEquals("rpc-alice|rpc-d1|android|5.12.1|POST|/echo/orders?page=2|t-1|hello", r.text)
            assertEquals("yes", r.headers["x-echo"] ?: r.headers["X-Echo"], "headers: ${r.headers}")
            val g = c.call("echo", "/x", method = "GET")
            assertTrue(g.text.contains("|GET|/echo/x|"), g.text)
        }
    }

    @Test fun manyCallsInFlightMatchedToTheirIds() = runBlocking {
        client("rpc-many", "rpc-many-d1").use { c ->
            c.start()
            val answers = (1..200).map { i -> async { i to c.call("echo", "/n/$i", "body-$i").text } }.awaitAll()
            for ((i, text) in answers) assertTrue(text.endsWith("|/echo/n/$i||body-$i"), "call $i got $text")
        }
    }

    @Test fun deadlineAndMsyncStatuses() = runBlocking {
        client("rpc-err", "rpc-err-d1").use { c ->
            c.start()
            // The deadline: told to the server, which gives up at the same
            // time (603), or the client's own timeout fires first.
            val t0 = System.nanoTime()
            val e = runCatching { c.call("slow", "/slow", timeoutMs = 300) }.exceptionOrNull()
            val ms = (System.nanoTime() - t0) / 1_000_000
            assertTrue(e is CallTimeoutException || (e is CallException && e.status == CallException.TIMEOUT), "slow call: $e")
            assertTrue(ms in 250..20_000, "gave up after $ms ms, want about 300")
            val unknown = assertThrows<CallException> { runBlocking { c.call("nosuch", "/x") } }
            assertEquals(CallException.UNKNOWN_SERVICE, unknown.status); assertFalse(unknown.retryable)
            val down = assertThrows<CallException> { runBlocking { c.call("down", "/x") } }
            assertEquals(CallException.UNAVAILABLE, down.status); assertTrue(down.retryable)
            // An upstream's own error status is its answer, not an exception.
            val fail = c.call("fail", "/fail")
            assertEquals(502, fail.status); assertEquals("upstream broke", fail.text)
            // Refused before sending: the connection is unaffected.
            assertThrows<CallBadRequestException> { runBlocking { c.call("echo", "no-slash") } }
            assertThrows<CallBadRequestException> { runBlocking { c.call("echo", "/a/../b") } }
            assertThrows<CallBadRequestException> { runBlocking { c.call("echo", "/x", headers = mapOf("Host" to "evil")) } }
            assertThrows<CallBadRequestException> { runBlocking { c.call("echo", "/x", ByteArray(70_000)) } }
            assertEquals(200, c.call("echo", "/still-up").status)
        }
    }

    @Test fun aCallBeforeTheSessionWaitsForIt() {
        runBlocking {
            client("rpc-early", "rpc-early-d1").use { c ->
                val pending = async { c.call("echo", "/early", "x", timeoutMs = 20_000) }
                c.start()
                assertTrue(pending.await().text.endsWith("|/echo/early||x"))
            }
        }
        // After close, calls fail at once.
        val c = client("rpc-early", "rpc-early-d2")
        c.start(); c.close()
        assertThrows<ClientClosedException> { runBlocking { c.call("echo", "/late") } }
    }
}
