package io.msync.client

import java.io.BufferedInputStream
import java.io.DataInputStream
import java.io.EOFException
import java.io.IOException
import java.io.OutputStream
import java.net.InetSocketAddress
import java.net.Socket
import java.net.SocketTimeoutException
import javax.net.SocketFactory
import javax.net.ssl.SSLSocket
import javax.net.ssl.SSLSocketFactory

/**
 * One transport connection carrying whole frames. [readFrame] is called from
 * one thread; [write] calls are serialized by the caller; [close] may be
 * called from any thread at any time and unblocks both (that is how a
 * session is stopped: blocking socket I/O does not notice coroutine
 * cancellation).
 */
interface FrameConn : AutoCloseable {
    /** Reads one frame, waiting at most [timeoutMs] for each read from the socket. */
    fun readFrame(timeoutMs: Long): Frame
    fun write(frame: ByteArray)
    override fun close()
}

/** Opens connections; the default dials TCP or TLS, tests plug in scripted ones. */
fun interface Dialer {
    fun dial(timeoutMs: Long, maxFrame: Int): FrameConn
}

/** An address the SDK dials: `host:port`, `tcp://host:port` or `tls://host:port`. */
internal class Address(val tls: Boolean, val host: String, val port: Int) {
    companion object {
        fun parse(addr: String): Address {
            val (scheme, rest) = addr.indexOf("://").let { if (it < 0) "tcp" to addr else addr.substring(0, it) to addr.substring(it + 3) }
            if (scheme != "tcp" && scheme != "tls") {
                throw BadOptionsException("address $addr: scheme $scheme not supported (tcp or tls; WebSocket is not in this SDK)")
            }
            val colon = rest.lastIndexOf(':')
            if (colon <= 0 || rest.contains('/')) throw BadOptionsException("address $addr: want host:port")
            var host = rest.substring(0, colon)
            if (host.startsWith("[") && host.endsWith("]")) host = host.substring(1, host.length - 1)
            val port = rest.substring(colon + 1).toIntOrNull()
            if (port == null || port !in 1..65535) throw BadOptionsException("address $addr: bad port")
            return Address(scheme == "tls", host, port)
        }
    }
}

/** Dials msync frames over TCP, or TLS with [sslFactory] (null: the platform's default trust). */
internal class SocketDialer(private val addr: Address, private val sslFactory: SSLSocketFactory?) : Dialer {
    override fun dial(timeoutMs: Long, maxFrame: Int): FrameConn {
        val plain = SocketFactory.getDefault().createSocket()
        try {
            plain.tcpNoDelay = true // acks and heartbeats are tiny; Nagle would hold them back
            plain.connect(InetSocketAddress(addr.host, addr.port), timeoutMs.toInt().coerceAtLeast(1))
            if (!addr.tls) return SocketConn(plain, maxFrame)
            val f = sslFactory ?: (SSLSocketFactory.getDefault() as SSLSocketFactory)
            val s = f.createSocket(plain, addr.host, addr.port, true) as SSLSocket
            // SSLSocket checks the chain but not the host name unless asked.
            s.sslParameters = s.sslParameters.apply { endpointIdentificationAlgorithm = "HTTPS" }
            s.soTimeout = timeoutMs.toInt().coerceAtLeast(1)
            s.startHandshake()
            return SocketConn(s, maxFrame)
        } catch (e: IOException) {
            try { plain.close() } catch (_: IOException) {}
            throw ConnectionException("dial ${if (addr.tls) "tls://" else ""}${addr.host}:${addr.port}: ${e.message}", e)
        }
    }
}

/** Frames read back to back from a socket's byte stream. */
internal class SocketConn(private val socket: Socket, private val maxFrame: Int) : FrameConn {
    private val input = DataInputStream(BufferedInputStream(socket.getInputStream(), 32 shl 10))
    private val output: OutputStream = socket.getOutputStream()
    private val hdr = ByteArray(FrameCodec.HEADER_SIZE)

    override fun readFrame(timeoutMs: Long): Frame {
        try {
            socket.soTimeout = timeoutMs.coerceIn(1, Int.MAX_VALUE.toLong()).toInt()
            input.readFully(hdr)
            // Checked before the body is allocated: a hostile length cannot
            // make the app allocate or wait for gigabytes.
            val h = FrameCodec.parseHeader(hdr, maxFrame)
            if (h.headerLen > FrameCodec.HEADER_SIZE) input.skipNBytesCompat(h.headerLen - FrameCodec.HEADER_SIZE)
            // A fresh buffer per frame: oplogs' payloads are copied out of it,
            // but the frame itself may be kept by a caller.
            val body = ByteArray(h.length - h.headerLen)
            input.readFully(body)
            return Frame(h.op, h.seq, body)
        } catch (e: SocketTimeoutException) {
            throw ReadTimeoutException(timeoutMs)
        } catch (e: EOFException) {
            throw ConnectionException("server closed the connection", e)
        } catch (e: IOException) {
            throw ConnectionException("read: ${e.message}", e)
        }
    }

    private fun DataInputStream.skipNBytesCompat(n: Int) {
        var left = n
        while (left > 0) { readByte(); left-- }
    }

    override fun write(frame: ByteArray) {
        try {
            output.write(frame)
            output.flush()
        } catch (e: IOException) {
            throw ConnectionException("write: ${e.message}", e)
        }
    }

    override fun close() {
        try { socket.close() } catch (_: IOException) {}
    }
}
