package io.msync.client

import java.util.concurrent.atomic.AtomicLong
import java.util.zip.DataFormatException
import java.util.zip.Deflater
import java.util.zip.Inflater

/**
 * Body compression (docs/protocol.md §18). Unless [Options.compression] is
 * false the SDK lists raw deflate in AUTH; when AUTH_REPLY names it, a frame
 * whose op has the top bit ([FLAG]) set carries a raw deflate body (RFC 1951,
 * java.util.zip with nowrap), inflated here before it is handled, bounded by
 * [Options.maxFrame] so a small frame cannot make the app allocate more.
 */
object Compression {
    /** The top bit of the header's op field: the body is compressed. */
    const val FLAG: Int = Int.MIN_VALUE // 0x80000000
    const val DEFLATE = "deflate"
    /** Bodies below this are not worth compressing (the server's default too). */
    const val MIN_BYTES = 1024
    /** REQUEST (docs/protocol.md §17): the client frame worth compressing. */
    internal const val OP_REQUEST = 15

    fun isCompressed(op: Int) = (op and FLAG) != 0

    /** Compresses [frame] (a whole frame) with raw deflate, or returns null when it is small or would not shrink. */
    fun deflate(frame: ByteArray, level: Int = Deflater.BEST_SPEED): ByteArray? {
        val bodyLen = frame.size - FrameCodec.HEADER_SIZE
        if (bodyLen < MIN_BYTES || isCompressed(readInt(frame, 8))) return null
        val d = Deflater(level, true)
        try {
            d.setInput(frame, FrameCodec.HEADER_SIZE, bodyLen)
            d.finish()
            val out = ByteArray(frame.size) // no room for more: then it does not shrink
            var n = FrameCodec.HEADER_SIZE
            while (!d.finished() && n < out.size) n += d.deflate(out, n, out.size - n)
            if (!d.finished() || n >= frame.size) return null
            val z = out.copyOf(n)
            System.arraycopy(frame, 0, z, 0, FrameCodec.HEADER_SIZE)
            writeInt(z, 0, n)
            writeInt(z, 8, readInt(frame, 8) or FLAG)
            return z
        } finally {
            d.end()
        }
    }

    private fun readInt(b: ByteArray, off: Int) =
        ((b[off].toInt() and 0xff) shl 24) or ((b[off + 1].toInt() and 0xff) shl 16) or ((b[off + 2].toInt() and 0xff) shl 8) or (b[off + 3].toInt() and 0xff)

    private fun writeInt(b: ByteArray, off: Int, v: Int) {
        b[off] = (v ushr 24).toByte(); b[off + 1] = (v ushr 16).toByte(); b[off + 2] = (v ushr 8).toByte(); b[off + 3] = v.toByte()
    }
}

/** A compressed body inflates past the frame limit (a decompression bomb). */
class InflateTooLargeException(val limit: Int) : ProtocolException("compressed body inflates past $limit bytes")

/** Compressed frames this client got and sent, with their bytes on the wire and inflated (header included). */
data class CompressionStats(
    val framesIn: Long, val bytesInWire: Long, val bytesInRaw: Long,
    val framesOut: Long, val bytesOutWire: Long, val bytesOutRaw: Long,
)

internal class CompressionCounters {
    val framesIn = AtomicLong(); val bytesInWire = AtomicLong(); val bytesInRaw = AtomicLong()
    val framesOut = AtomicLong(); val bytesOutWire = AtomicLong(); val bytesOutRaw = AtomicLong()
    fun snapshot() = CompressionStats(framesIn.get(), bytesInWire.get(), bytesInRaw.get(), framesOut.get(), bytesOutWire.get(), bytesOutRaw.get())
}

/** One reusable inflater (the read loop is one thread); [close] frees its native state. */
internal class FrameInflater(private val stats: CompressionCounters) : AutoCloseable {
    private val inf = Inflater(true)

    /**
     * Returns [f] inflated with [Compression.FLAG] cleared. More than
     * [maxFrame] bytes (header included) is [InflateTooLargeException], found
     * after producing at most one byte past the limit; a corrupt or truncated
     * stream, or bytes after its end, is [MalformedFrameException].
     */
    fun inflate(f: Frame, maxFrame: Int): Frame {
        val limit = maxFrame - FrameCodec.HEADER_SIZE
        inf.reset()
        inf.setInput(f.body, f.bodyOff, f.bodyLen)
        var out = ByteArray(minOf(limit + 1, maxOf(512, 4 * f.bodyLen)))
        var n = 0
        try {
            while (!inf.finished()) {
                if (n == out.size) {
                    if (n > limit) break
                    out = out.copyOf(minOf(limit + 1, out.size * 2))
                }
                val k = inf.inflate(out, n, out.size - n)
                n += k
                if (k == 0 && !inf.finished() && (inf.needsInput() || inf.needsDictionary())) {
                    throw MalformedFrameException("compressed ${Op.name(f.op and Compression.FLAG.inv())}: truncated deflate stream")
                }
            }
        } catch (e: DataFormatException) {
            throw MalformedFrameException("compressed ${Op.name(f.op and Compression.FLAG.inv())}: ${e.message}")
        }
        if (n > limit) throw InflateTooLargeException(maxFrame)
        if (inf.remaining > 0) throw MalformedFrameException("compressed ${Op.name(f.op and Compression.FLAG.inv())}: ${inf.remaining} bytes after the deflate stream")
        stats.framesIn.incrementAndGet()
        stats.bytesInWire.addAndGet((f.bodyLen + FrameCodec.HEADER_SIZE).toLong())
        stats.bytesInRaw.addAndGet((n + FrameCodec.HEADER_SIZE).toLong())
        return Frame(f.op and Compression.FLAG.inv(), f.seq, out, 0, n)
    }

    override fun close() = inf.end()
}
