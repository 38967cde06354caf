package io.msync.client

import java.io.DataInputStream
import java.io.IOException
import java.net.InetAddress
import java.net.ServerSocket
import java.net.Socket
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit

/**
 * A scripted comet on a real loopback socket, for faults a real server does
 * not produce (bad bytes, silence). [script] runs once per accepted
 * connection, on its own thread.
 */
class FakeServer(private val script: (FakeConn) -> Unit) : AutoCloseable {
    private val ss = ServerSocket(0, 50, InetAddress.getByName("127.0.0.1"))
    val addr = "127.0.0.1:${ss.localPort}"
    val conns = CopyOnWriteArrayList<FakeConn>()
    private val acceptor = Thread({
        while (!ss.isClosed) {
            val s = try { ss.accept() } catch (_: IOException) { break }
            val c = FakeConn(s, conns.size + 1)
            conns.add(c)
            Thread({ try { script(c) } catch (_: IOException) {} catch (_: InterruptedException) {} finally { }
            }, "fake-conn-${c.n}").apply { isDaemon = true; start() }
        }
    }, "fake-accept").apply { isDaemon = true; start() }

    override fun close() {
        ss.close()
        for (c in conns) c.close()
        acceptor.join(5000)
    }
}

class FakeConn(private val s: Socket, val n: Int) {
    private val input = DataInputStream(s.getInputStream())
    private val out = s.getOutputStream()
    /** Frames received after [readLoop] started. */
    val received = LinkedBlockingQueue<Frame>()

    fun read(): Frame {
        val hdr = ByteArray(16)
        input.readFully(hdr)
        val h = FrameCodec.parseHeader(hdr, 1 shl 20)
        val body = ByteArray(h.length - 16)
        input.readFully(body)
        return Frame(h.op, h.seq, body)
    }

    /** Reads AUTH and answers AUTH_REPLY with [channels] (biz to channel). */
    fun auth(vararg channels: Pair<String, String>, heartbeatMs: Int = 30_000): Auth {
        val f = read()
        check(f.op == Op.AUTH) { "first frame ${Op.name(f.op)}" }
        val a = Auth.decode(f)
        send(Op.AUTH_REPLY, f.seq, AuthReply("alice", "fake/$n", heartbeatMs, channels.map { ChannelInfo(it.first, it.second, 0) }))
        return a
    }

    fun send(op: Int, seq: Int, m: WireMessage) = raw(FrameCodec.encode(op, seq, m))
    fun raw(b: ByteArray) { synchronized(out) { out.write(b); out.flush() } }

    /** Reads frames into [received] until the client closes. */
    fun readLoop() {
        try { while (true) received.add(read()) } catch (_: IOException) {}
    }

    /** The next received frame of [op], skipping heartbeats, within [timeoutMs]. */
    fun next(op: Int, timeoutMs: Long = 10_000): Frame {
        val deadline = System.nanoTime() + timeoutMs * 1_000_000
        while (true) {
            val left = (deadline - System.nanoTime()) / 1_000_000
            val f = received.poll(left.coerceAtLeast(0), TimeUnit.MILLISECONDS) ?: throw AssertionError("no ${Op.name(op)} within $timeoutMs ms")
            if (f.op == op) return f
        }
    }

    fun close() { try { s.close() } catch (_: IOException) {} }
}
