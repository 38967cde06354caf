package io.msync.client

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout
import java.lang.management.ManagementFactory
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicLong

/**
 * Receives N oplogs of one channel and reports oplogs/s and bytes allocated
 * per oplog (all JVM threads, minus the scripted server's). N is
 * -Dmsync.bench.oplogs (default 5,000). Not part of `mvn verify` (the class
 * name is outside surefire's *Test pattern); run it by name, see
 * docs/benchmarks.md for the command and the 100,000-oplog figures. Figures
 * are printed, never asserted; it only checks that every oplog arrived.
 */
@Timeout(600)
class ReceiveBenchmark {
    private val n = System.getProperty("msync.bench.oplogs")?.toInt() ?: 5_000
    private val payload = ByteArray(100) { ('a' + it % 26).code.toByte() }
    private val mx = ManagementFactory.getThreadMXBean() as com.sun.management.ThreadMXBean

    private fun allocatedAllThreads(): Long = mx.getThreadAllocatedBytes(mx.allThreadIds).filter { it > 0 }.sum()

    private class Run(val oplogs: Int, val seconds: Double, val bytes: Long) {
        val rate get() = oplogs / seconds
        val perOplog get() = bytes.toDouble() / oplogs
    }

    /**
     * The SDK alone: a scripted comet on a loopback socket sends backlog pages
     * of 200 oplogs (pre-encoded), each after the ACK of the one before, as
     * the real comet's flow control does.
     */
    private fun runScripted(count: Int, pageSize: Int = 200): Run {
        val ch = "bench/u/alice"
        val frames = (0 until count step pageSize).map { start ->
            val ops = (start + 1..minOf(start + pageSize, count)).map { Oplog("bench", ch, it.toLong(), payload, 1763780000000L + it) }
            FrameCodec.encode(Op.SYNC, 0, Sync(listOf(ChannelPage(ch, "bench", start.toLong(), ops.last().id, ops, more = ops.last().id < count))))
        }
        val serverAlloc = AtomicLong()
        val done = CountDownLatch(1)
        FakeServer { c ->
            val t0 = mx.getThreadAllocatedBytes(Thread.currentThread().id)
            c.auth("bench" to ch)
            for (f in frames) {
                c.raw(f)
                while (true) { val a = c.read(); if (a.op == Op.ACK) break }
            }
            serverAlloc.set(mx.getThreadAllocatedBytes(Thread.currentThread().id) - t0)
            done.countDown()
            c.readLoop()
        }.use { fs ->
            var last = 0L
            val c = MsyncClient(fs.addr, Options(device = "bench-1", tokenProvider = { "t" }))
            c.registerBiz("bench") { op -> last = op.id }
            val a0 = allocatedAllThreads()
            val t0 = System.nanoTime()
            c.start()
            check(done.await(300, TimeUnit.SECONDS)) { "benchmark did not finish" }
            val secs = (System.nanoTime() - t0) / 1e9
            val bytes = allocatedAllThreads() - a0 - serverAlloc.get()
            c.close()
            assertEquals(count.toLong(), last)
            return Run(count, secs, bytes)
        }
    }

    @Test fun receiveFromScriptedComet() {
        runScripted(minOf(n, 20_000)) // warm-up: JIT
        val r = runScripted(n)
        println("BENCH kotlin-sdk scripted-comet oplogs=${r.oplogs} seconds=${"%.3f".format(r.seconds)} " +
            "oplogs_per_s=${"%.0f".format(r.rate)} alloc_bytes_per_oplog=${"%.0f".format(r.perOplog)} (payload ${payload.size} B, pages of 200, MemoryStore)")
    }

    /**
     * Through a real `msync all`: N oplogs published while the device is
     * offline, then timed from start() to the last one handled (backlog pages
     * of 200, Pebble reads and the comet included).
     */
    @Test fun receiveBacklogFromRealServer() {
        MsyncServer(pageLimit = 200).use { server ->
            val text = String(payload)
            var published = 0
            while (published < n) {
                val k = minOf(500, n - published)
                server.publishBatch("demo", "bench", List(k) { text })
                published += k
            }
            val done = CountDownLatch(1)
            var last = 0L
            val c = testClient(server, "bench", "bench-d1", mapOf("demo" to Handler { op -> last = op.id; if (op.id == n.toLong()) done.countDown() }), Events())
            val a0 = allocatedAllThreads()
            val t0 = System.nanoTime()
            c.start()
            check(done.await(300, TimeUnit.SECONDS)) { "only $last of $n" }
            val secs = (System.nanoTime() - t0) / 1e9
            val bytes = allocatedAllThreads() - a0
            c.close()
            println("BENCH kotlin-sdk real-msync-backlog oplogs=$n seconds=${"%.3f".format(secs)} oplogs_per_s=${"%.0f".format(n / secs)} " +
                "alloc_bytes_per_oplog=${"%.0f".format(bytes.toDouble() / n)} (client JVM incl. test HTTP idle threads, MemoryStore)")
        }
    }
}
