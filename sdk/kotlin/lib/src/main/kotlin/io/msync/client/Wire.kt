package io.msync.client

import java.nio.ByteBuffer
import java.nio.charset.CharacterCodingException
import java.nio.charset.CodingErrorAction
import java.nio.charset.StandardCharsets

/**
 * The frame header and the protobuf bodies of docs/protocol.md, by hand (no
 * generated code, no reflection): the 16-byte big-endian header, then a
 * proto3 body of pkg/protocol/pb/wire.proto. Encoders write fields in field
 * number order and leave defaults out, like the Go codec, so frames are byte
 * for byte what pkg/protocol writes (tested against its golden frames).
 */
object Op {
    const val AUTH = 1
    const val AUTH_REPLY = 2
    const val HEARTBEAT = 3
    const val HEARTBEAT_REPLY = 4
    const val ACK = 5
    const val SYNC = 6
    const val SYNC_REQ = 7
    const val PUSH = 8
    const val ROOM_JOIN = 9
    const val KICK = 10
    const val ROOM_LEAVE = 11
    const val ROOM_REPLY = 12
    const val ERROR = 14

    fun name(op: Int): String = when (op) {
        AUTH -> "AUTH"; AUTH_REPLY -> "AUTH_REPLY"; HEARTBEAT -> "HEARTBEAT"
        HEARTBEAT_REPLY -> "HEARTBEAT_REPLY"; ACK -> "ACK"; SYNC -> "SYNC"; SYNC_REQ -> "SYNC_REQ"
        PUSH -> "PUSH"; ROOM_JOIN -> "ROOM_JOIN"; KICK -> "KICK"; ROOM_LEAVE -> "ROOM_LEAVE"
        ROOM_REPLY -> "ROOM_REPLY"; ERROR -> "ERROR"; else -> "OP($op)"
    }
}

/** One frame: op, seq and its body (which may alias a larger buffer). */
class Frame(val op: Int, val seq: Int, val body: ByteArray, val bodyOff: Int = 0, val bodyLen: Int = body.size)

object FrameCodec {
    const val HEADER_SIZE = 16
    const val VERSION = 1
    /** The server refuses client frames over 64 KiB (header included). */
    const val SERVER_MAX_FRAME = 64 shl 10

    /**
     * Checks a 16-byte header at [b] and returns the whole frame length. The
     * length is checked against [maxFrame] here, before any body is read.
     */
    fun parseHeader(b: ByteArray, maxFrame: Int): Header {
        require(b.size >= HEADER_SIZE)
        val bb = ByteBuffer.wrap(b, 0, HEADER_SIZE)
        val length = bb.getInt(0).toLong() and 0xffffffffL
        val headerLen = bb.getShort(4).toInt() and 0xffff
        val version = bb.getShort(6).toInt() and 0xffff
        val op = bb.getInt(8)
        val seq = bb.getInt(12)
        if (version != VERSION) throw MalformedFrameException("version $version, want $VERSION")
        if (headerLen < HEADER_SIZE) throw MalformedFrameException("header length $headerLen < $HEADER_SIZE")
        if (length < headerLen) throw MalformedFrameException("length $length < header length $headerLen")
        if (length > maxFrame) throw FrameTooLargeException(length, maxFrame)
        return Header(length.toInt(), headerLen, op, seq)
    }

    class Header(val length: Int, val headerLen: Int, val op: Int, val seq: Int)

    /** Decodes one whole frame held in [b] (for tests and byte dumps). */
    fun decode(b: ByteArray, maxFrame: Int = Int.MAX_VALUE): Frame {
        if (b.size < HEADER_SIZE) throw MalformedFrameException("short frame: ${b.size} bytes")
        val h = parseHeader(b, maxFrame)
        if (b.size != h.length) throw MalformedFrameException("frame says ${h.length} bytes, have ${b.size}")
        return Frame(h.op, h.seq, b, h.headerLen, h.length - h.headerLen)
    }

    /** Encodes a frame: header, then [m]'s body. */
    fun encode(op: Int, seq: Int, m: WireMessage): ByteArray {
        val size = m.size()
        val w = ProtoWriter(ByteArray(HEADER_SIZE + size))
        w.u32be(HEADER_SIZE + size); w.u16be(HEADER_SIZE); w.u16be(VERSION); w.u32be(op); w.u32be(seq)
        m.writeTo(w)
        check(w.pos == w.buf.size) { "size mismatch encoding ${Op.name(op)}" }
        return w.buf
    }
}

/** A body this SDK writes. size() must equal what writeTo writes. */
interface WireMessage {
    fun size(): Int
    fun writeTo(w: ProtoWriter)
}

// ---- protobuf primitives ----

internal const val WT_VARINT = 0
internal const val WT_I64 = 1
internal const val WT_LEN = 2
internal const val WT_I32 = 5

class ProtoWriter(val buf: ByteArray) {
    var pos = 0

    fun u32be(v: Int) { buf[pos++] = (v ushr 24).toByte(); buf[pos++] = (v ushr 16).toByte(); buf[pos++] = (v ushr 8).toByte(); buf[pos++] = v.toByte() }
    fun u16be(v: Int) { buf[pos++] = (v ushr 8).toByte(); buf[pos++] = v.toByte() }

    fun varint(v: Long) {
        var x = v
        while (x and 0x7fL.inv() != 0L) { buf[pos++] = ((x and 0x7f) or 0x80).toByte(); x = x ushr 7 }
        buf[pos++] = x.toByte()
    }

    fun tag(field: Int, wt: Int) = varint(((field shl 3) or wt).toLong())
    fun uint(field: Int, v: Long) { if (v != 0L) { tag(field, WT_VARINT); varint(v) } }
    fun bool(field: Int, v: Boolean) { if (v) { tag(field, WT_VARINT); varint(1) } }
    fun string(field: Int, v: String) { if (v.isNotEmpty()) stringAlways(field, v) }
    /** A repeated string element: written even when empty. */
    fun stringAlways(field: Int, v: String) {
        val b = v.toByteArray(StandardCharsets.UTF_8)
        tag(field, WT_LEN); varint(b.size.toLong()); System.arraycopy(b, 0, buf, pos, b.size); pos += b.size
    }
    fun message(field: Int, m: WireMessage) { tag(field, WT_LEN); varint(m.size().toLong()); m.writeTo(this) }

    companion object {
        fun varintSize(v: Long): Int { var n = 1; var x = v ushr 7; while (x != 0L) { n++; x = x ushr 7 }; return n }
        fun tagSize(field: Int) = varintSize((field shl 3).toLong())
        fun uintSize(field: Int, v: Long) = if (v == 0L) 0 else tagSize(field) + varintSize(v)
        fun boolSize(field: Int, v: Boolean) = if (v) tagSize(field) + 1 else 0
        fun stringSize(field: Int, v: String) = if (v.isEmpty()) 0 else stringAlwaysSize(field, v)
        fun stringAlwaysSize(field: Int, v: String): Int { val n = utf8Len(v); return tagSize(field) + varintSize(n.toLong()) + n }
        fun messageSize(field: Int, m: WireMessage): Int { val n = m.size(); return tagSize(field) + varintSize(n.toLong()) + n }

        fun utf8Len(s: String): Int {
            var n = 0; var i = 0
            while (i < s.length) {
                val c = s[i]
                when {
                    c.code < 0x80 -> n += 1
                    c.code < 0x800 -> n += 2
                    Character.isHighSurrogate(c) && i + 1 < s.length && Character.isLowSurrogate(s[i + 1]) -> { n += 4; i++ }
                    Character.isSurrogate(c) -> n += 1 // a lone surrogate: toByteArray writes '?'
                    else -> n += 3
                }
                i++
            }
            return n
        }
    }
}

/**
 * Reads a protobuf body in [buf] from [pos] to [limit]. Every failure is a
 * [MalformedFrameException]; unknown fields are skipped.
 */
class ProtoReader(private val buf: ByteArray, var pos: Int, private val limit: Int) {
    var field = 0; private set
    var wireType = 0; private set

    fun more() = pos < limit

    fun next(): Boolean {
        if (pos >= limit) return false
        val t = varint()
        field = (t ushr 3).toInt()
        wireType = (t and 7).toInt()
        if (field <= 0 || t ushr 3 > 0x1fffffffL) throw MalformedFrameException("bad field number ${t ushr 3}")
        return true
    }

    fun varint(): Long {
        var result = 0L
        var shift = 0
        while (true) {
            if (pos >= limit) throw MalformedFrameException("truncated varint")
            val b = buf[pos++].toInt()
            if (shift == 63 && (b and 0x7e) != 0) throw MalformedFrameException("varint overflow")
            result = result or ((b and 0x7f).toLong() shl shift)
            if (b and 0x80 == 0) return result
            shift += 7
            if (shift > 63) throw MalformedFrameException("varint overflow")
        }
    }

    private fun expect(wt: Int) {
        if (wireType != wt) throw MalformedFrameException("field $field: wire type $wireType, want $wt")
    }

    fun uint64(): Long { expect(WT_VARINT); return varint() }
    /** A uint64 used as an id or count: above 2^63-1 is refused, never wrapped. */
    fun id(): Long { val v = uint64(); if (v < 0) throw MalformedFrameException("field $field: ${v.toULong()} out of range"); return v }
    fun int64(): Long { expect(WT_VARINT); return varint() }
    fun uint32(): Int { expect(WT_VARINT); return varint().toInt() }
    fun bool(): Boolean { expect(WT_VARINT); return varint() != 0L }

    /** Start and length of a length-delimited field; pos moves past it. */
    fun lenDelim(): Int {
        expect(WT_LEN)
        val n = varint()
        if (n < 0 || n > limit - pos) throw MalformedFrameException("field $field: length $n beyond the body")
        val start = pos
        pos += n.toInt()
        return start
    }

    fun lastLen(start: Int) = pos - start

    fun string(): String {
        val start = lenDelim()
        return utf8(buf, start, pos - start)
    }

    fun bytes(): ByteArray {
        val start = lenDelim()
        return buf.copyOfRange(start, pos)
    }

    /** A reader over the nested message just read with [lenDelim]. */
    fun sub(): ProtoReader { val start = lenDelim(); return ProtoReader(buf, start, pos) }

    fun skip() {
        when (wireType) {
            WT_VARINT -> varint()
            WT_I64 -> advance(8)
            WT_LEN -> { val n = varint(); if (n < 0 || n > limit - pos) throw MalformedFrameException("field $field: length $n beyond the body"); pos += n.toInt() }
            WT_I32 -> advance(4)
            else -> throw MalformedFrameException("field $field: unsupported wire type $wireType")
        }
    }

    private fun advance(n: Int) {
        if (n > limit - pos) throw MalformedFrameException("field $field: truncated")
        pos += n
    }

    companion object {
        private val decoder = ThreadLocal.withInitial {
            StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT).onUnmappableCharacter(CodingErrorAction.REPORT)
        }

        /** Strict UTF-8, as proto3 strings require (the Go codec refuses bad UTF-8 too). */
        fun utf8(b: ByteArray, off: Int, len: Int): String {
            if (len == 0) return ""
            var ascii = true
            for (i in off until off + len) if (b[i] < 0) { ascii = false; break }
            if (ascii) return String(b, off, len, StandardCharsets.ISO_8859_1)
            return try {
                decoder.get().decode(ByteBuffer.wrap(b, off, len)).toString()
            } catch (e: CharacterCodingException) {
                throw MalformedFrameException("invalid UTF-8 in a string field")
            }
        }
    }
}
