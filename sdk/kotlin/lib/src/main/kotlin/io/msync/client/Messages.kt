package io.msync.client

import io.msync.client.ProtoWriter.Companion.boolSize
import io.msync.client.ProtoWriter.Companion.messageSize
import io.msync.client.ProtoWriter.Companion.stringAlwaysSize
import io.msync.client.ProtoWriter.Companion.stringSize
import io.msync.client.ProtoWriter.Companion.tagSize
import io.msync.client.ProtoWriter.Companion.uintSize
import io.msync.client.ProtoWriter.Companion.varintSize

// The messages of pkg/protocol/pb/wire.proto (package msync.wire.v1). Field
// numbers are the .proto's; each class encodes and decodes itself. Integer
// ids are Long: a uint64 above 2^63-1 is refused as malformed.

private fun bytesSize(field: Int, b: ByteArray) =
    if (b.isEmpty()) 0 else tagSize(field) + varintSize(b.size.toLong()) + b.size

private fun ProtoWriter.bytes(field: Int, b: ByteArray) {
    if (b.isEmpty()) return
    tag(field, WT_LEN); varint(b.size.toLong()); System.arraycopy(b, 0, buf, pos, b.size); pos += b.size
}

private fun reader(f: Frame) = ProtoReader(f.body, f.bodyOff, f.bodyOff + f.bodyLen)

data class ChannelPoint(val channel: String, val id: Long) : WireMessage {
    override fun size() = stringSize(1, channel) + uintSize(2, id)
    override fun writeTo(w: ProtoWriter) { w.string(1, channel); w.uint(2, id) }

    companion object {
        fun read(r: ProtoReader): ChannelPoint {
            var ch = ""; var id = 0L
            while (r.next()) when (r.field) { 1 -> ch = r.string(); 2 -> id = r.id(); else -> r.skip() }
            return ChannelPoint(ch, id)
        }
    }
}

private fun pointsSize(field: Int, ps: List<ChannelPoint>) = ps.sumOf { messageSize(field, it) }

data class Auth(
    val token: String = "", val device: String = "", val platform: String = "", val appVersion: String = "",
    val bizs: List<String> = emptyList(), val points: List<ChannelPoint> = emptyList(), val heartbeatMs: Int = 0,
    /** Body compressions this client decodes (docs/protocol.md §18), field 8. */
    val compression: List<String> = emptyList(),
) : WireMessage {
    override fun size() = stringSize(1, token) + stringSize(2, device) + stringSize(3, platform) +
        stringSize(4, appVersion) + bizs.sumOf { stringAlwaysSize(5, it) } + pointsSize(6, points) +
        uintSize(7, heartbeatMs.toLong() and 0xffffffffL) + compression.sumOf { stringAlwaysSize(8, it) }

    override fun writeTo(w: ProtoWriter) {
        w.string(1, token); w.string(2, device); w.string(3, platform); w.string(4, appVersion)
        for (b in bizs) w.stringAlways(5, b)
        for (p in points) w.message(6, p)
        w.uint(7, heartbeatMs.toLong() and 0xffffffffL)
        for (a in compression) w.stringAlways(8, a)
    }

    companion object {
        fun decode(f: Frame): Auth {
            val r = reader(f)
            var a = Auth(); val bizs = ArrayList<String>(); val pts = ArrayList<ChannelPoint>(); val algs = ArrayList<String>()
            while (r.next()) when (r.field) {
                1 -> a = a.copy(token = r.string()); 2 -> a = a.copy(device = r.string())
                3 -> a = a.copy(platform = r.string()); 4 -> a = a.copy(appVersion = r.string())
                5 -> bizs.add(r.string()); 6 -> pts.add(ChannelPoint.read(r.sub()))
                7 -> a = a.copy(heartbeatMs = r.uint32()); 8 -> algs.add(r.string()); else -> r.skip()
            }
            return a.copy(bizs = bizs, points = pts, compression = algs)
        }
    }
}

data class ChannelInfo(val biz: String, val channel: String, val from: Long) : WireMessage {
    override fun size() = stringSize(1, biz) + stringSize(2, channel) + uintSize(3, from)
    override fun writeTo(w: ProtoWriter) { w.string(1, biz); w.string(2, channel); w.uint(3, from) }
}

/** A biz the server refused in AUTH_REPLY (it does not know it), with its reason. */
data class RejectedBiz(val biz: String, val reason: String) : WireMessage {
    override fun size() = stringSize(1, biz) + stringSize(2, reason)
    override fun writeTo(w: ProtoWriter) { w.string(1, biz); w.string(2, reason) }
}

data class AuthReply(
    val user: String = "", val session: String = "", val heartbeatMs: Int = 0,
    val channels: List<ChannelInfo> = emptyList(), val rejected: List<RejectedBiz> = emptyList(),
    /** RPC requests the session may have in flight (docs/protocol.md §17; MsyncClient.call). */
    val maxRequests: Int = 0,
    /** The compression the server chose for this session ("" = none; docs/protocol.md §18), field 7. */
    val compression: String = "",
) : WireMessage {
    override fun size() = stringSize(1, user) + stringSize(2, session) + uintSize(3, heartbeatMs.toLong() and 0xffffffffL) +
        channels.sumOf { messageSize(4, it) } + rejected.sumOf { messageSize(5, it) } + uintSize(6, maxRequests.toLong() and 0xffffffffL) +
        stringSize(7, compression)

    override fun writeTo(w: ProtoWriter) {
        w.string(1, user); w.string(2, session); w.uint(3, heartbeatMs.toLong() and 0xffffffffL)
        for (c in channels) w.message(4, c)
        for (x in rejected) w.message(5, x)
        w.uint(6, maxRequests.toLong() and 0xffffffffL)
        w.string(7, compression)
    }

    companion object {
        fun decode(f: Frame): AuthReply {
            val r = reader(f)
            var user = ""; var session = ""; var hb = 0; var maxReq = 0; var comp = ""
            val chans = ArrayList<ChannelInfo>(); val rej = ArrayList<RejectedBiz>()
            while (r.next()) when (r.field) {
                1 -> user = r.string(); 2 -> session = r.string(); 3 -> hb = r.uint32(); 6 -> maxReq = r.uint32()
                7 -> comp = r.string()
                4 -> {
                    val s = r.sub(); var biz = ""; var ch = ""; var from = 0L
                    while (s.next()) when (s.field) { 1 -> biz = s.string(); 2 -> ch = s.string(); 3 -> from = s.id(); else -> s.skip() }
                    chans.add(ChannelInfo(biz, ch, from))
                }
                5 -> {
                    val s = r.sub(); var biz = ""; var reason = ""
                    while (s.next()) when (s.field) { 1 -> biz = s.string(); 2 -> reason = s.string(); else -> s.skip() }
                    rej.add(RejectedBiz(biz, reason))
                }
                else -> r.skip()
            }
            return AuthReply(user, session, hb, chans, rej, maxReq, comp)
        }
    }
}

/** HEARTBEAT (interval wish, 0 = none) and HEARTBEAT_REPLY (the interval the server wants). */
data class Heartbeat(val intervalMs: Int = 0) : WireMessage {
    override fun size() = uintSize(1, intervalMs.toLong() and 0xffffffffL)
    override fun writeTo(w: ProtoWriter) = w.uint(1, intervalMs.toLong() and 0xffffffffL)

    companion object {
        fun decode(f: Frame): Heartbeat {
            val r = reader(f); var v = 0
            while (r.next()) if (r.field == 1) v = r.uint32() else r.skip()
            return Heartbeat(v)
        }
    }
}

/**
 * One oplog as the app receives it. An oplog of a non-persistent biz has id
 * 0 and an empty channel. Times are unix milliseconds, 0 when not set.
 */
class Oplog(
    val biz: String,
    val channel: String,
    val id: Long,
    val payload: ByteArray,
    val createdMs: Long = 0,
    val validUntilMs: Long = 0,
) : WireMessage {
    /** The payload as UTF-8 text (most apps send JSON). */
    val text: String get() = String(payload, Charsets.UTF_8)

    override fun size() = uintSize(1, id) + bytesSize(2, payload) + uintSize(3, createdMs) + uintSize(4, validUntilMs)
    override fun writeTo(w: ProtoWriter) { w.uint(1, id); w.bytes(2, payload); w.uint(3, createdMs); w.uint(4, validUntilMs) }
    override fun toString() = "Oplog($channel#$id, ${payload.size} bytes)"
}

/** The ids (after, upto] of one channel; see docs/protocol.md §8. */
class ChannelPage(
    val channel: String, val biz: String, val after: Long, val upto: Long, val oplogs: List<Oplog>,
    val more: Boolean = false, val skipped: Long = 0, val live: Boolean = false,
) : WireMessage {
    /** Bytes this page held on the wire, for the per-channel queue bound. */
    internal var wireSize = 0

    override fun size() = stringSize(1, channel) + stringSize(2, biz) + uintSize(3, after) + uintSize(4, upto) +
        oplogs.sumOf { messageSize(5, it) } + boolSize(6, more) + uintSize(7, skipped) + boolSize(8, live)

    override fun writeTo(w: ProtoWriter) {
        w.string(1, channel); w.string(2, biz); w.uint(3, after); w.uint(4, upto)
        for (o in oplogs) w.message(5, o)
        w.bool(6, more); w.uint(7, skipped); w.bool(8, live)
    }

    companion object {
        /**
         * Two passes over the page: the scalars first, then the oplogs, so
         * each Oplog is built once with its channel and biz (one object and
         * one payload array per oplog, nothing else).
         */
        fun read(r: ProtoReader): ChannelPage {
            val start = r.pos
            var channel = ""; var biz = ""; var after = 0L; var upto = 0L; var more = false; var skipped = 0L; var live = false
            var n = 0
            while (r.next()) when (r.field) {
                1 -> channel = r.string(); 2 -> biz = r.string(); 3 -> after = r.id(); 4 -> upto = r.id()
                5 -> { r.skip(); n++ }
                6 -> more = r.bool(); 7 -> skipped = r.id(); 8 -> live = r.bool(); else -> r.skip()
            }
            val end = r.pos
            val oplogs = ArrayList<Oplog>(n)
            if (n > 0) {
                r.pos = start
                while (r.next()) {
                    if (r.field != 5) { r.skip(); continue }
                    val s = r.sub()
                    var id = 0L; var payload = EMPTY; var created = 0L; var until = 0L
                    while (s.next()) when (s.field) {
                        1 -> id = s.id(); 2 -> payload = s.bytes(); 3 -> created = s.int64(); 4 -> until = s.int64(); else -> s.skip()
                    }
                    oplogs.add(Oplog(biz, channel, id, payload, created, until))
                }
                r.pos = end
            }
            val p = ChannelPage(channel, biz, after, upto, oplogs, more, skipped, live)
            p.wireSize = end - start
            return p
        }

        private val EMPTY = ByteArray(0)
    }
}

data class Sync(val pages: List<ChannelPage>) : WireMessage {
    override fun size() = pages.sumOf { messageSize(1, it) }
    override fun writeTo(w: ProtoWriter) { for (p in pages) w.message(1, p) }

    companion object {
        fun decode(f: Frame): Sync {
            val r = reader(f); val pages = ArrayList<ChannelPage>(1)
            while (r.next()) if (r.field == 1) pages.add(ChannelPage.read(r.sub())) else r.skip()
            return Sync(pages)
        }
    }
}

/** ACK and SYNC_REQ bodies: a list of channel points. */
data class Points(val points: List<ChannelPoint>) : WireMessage {
    override fun size() = pointsSize(1, points)
    override fun writeTo(w: ProtoWriter) { for (p in points) w.message(1, p) }

    companion object {
        fun decode(f: Frame): Points {
            val r = reader(f); val ps = ArrayList<ChannelPoint>()
            while (r.next()) if (r.field == 1) ps.add(ChannelPoint.read(r.sub())) else r.skip()
            return Points(ps)
        }
    }
}

/** A non-persistent PUSH: never stored, never resent, not acked. */
class Push(val room: String, val payload: ByteArray, val createdMs: Long, val biz: String = "") : WireMessage {
    val text: String get() = String(payload, Charsets.UTF_8)
    override fun size() = stringSize(1, room) + bytesSize(2, payload) + uintSize(3, createdMs) + stringSize(4, biz)
    override fun writeTo(w: ProtoWriter) { w.string(1, room); w.bytes(2, payload); w.uint(3, createdMs); w.string(4, biz) }

    companion object {
        private val EMPTY = ByteArray(0)
        fun decode(f: Frame): Push {
            val r = reader(f); var room = ""; var payload = EMPTY; var created = 0L; var biz = ""
            while (r.next()) when (r.field) {
                1 -> room = r.string(); 2 -> payload = r.bytes(); 3 -> created = r.int64(); 4 -> biz = r.string(); else -> r.skip()
            }
            return Push(room, payload, created, biz)
        }
    }
}

/** KICK {code, reason} and ERROR {code, message}: the same shape on the wire. */
data class CodeMessage(val code: Int, val message: String) : WireMessage {
    override fun size() = uintSize(1, code.toLong() and 0xffffffffL) + stringSize(2, message)
    override fun writeTo(w: ProtoWriter) { w.uint(1, code.toLong() and 0xffffffffL); w.string(2, message) }

    companion object {
        fun decode(f: Frame): CodeMessage {
            val r = reader(f); var code = 0; var msg = ""
            while (r.next()) when (r.field) { 1 -> code = r.uint32(); 2 -> msg = r.string(); else -> r.skip() }
            return CodeMessage(code, msg)
        }
    }
}

/** ROOM_JOIN/ROOM_LEAVE/ROOM_REPLY; [code] non-zero in a ROOM_REPLY: the join was refused (a 3xxx code). */
data class Room(val room: String, val code: Int = 0, val message: String = "") : WireMessage {
    override fun size() = stringSize(1, room) + uintSize(2, code.toLong()) + stringSize(3, message)
    override fun writeTo(w: ProtoWriter) { w.string(1, room); w.uint(2, code.toLong()); w.string(3, message) }

    companion object {
        fun decode(f: Frame): Room {
            val r = reader(f); var room = ""; var code = 0; var msg = ""
            while (r.next()) when (r.field) { 1 -> room = r.string(); 2 -> code = r.uint32(); 3 -> msg = r.string(); else -> r.skip() }
            return Room(room, code, msg)
        }
    }
}
