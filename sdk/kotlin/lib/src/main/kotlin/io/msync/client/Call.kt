package io.msync.client

import io.msync.client.ProtoWriter.Companion.messageSize
import io.msync.client.ProtoWriter.Companion.stringSize
import io.msync.client.ProtoWriter.Companion.tagSize
import io.msync.client.ProtoWriter.Companion.uintSize
import io.msync.client.ProtoWriter.Companion.varintSize
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.TimeoutCancellationException
import kotlinx.coroutines.withTimeout

// RPC over the connection (docs/protocol.md §17), as the Go SDK's
// Client.Call and the JS SDK's call(): a REQUEST on the current session,
// answered by a RESPONSE with the same id, several in flight up to the
// server's AuthReply.max_requests, answers in any order. Calls never delay
// the sync path: the read loop hands each RESPONSE to its waiting caller
// without blocking.

/** Ops of RPC frames (pkg/protocol/frame.go). */
object RpcOp {
    const val REQUEST = 15
    const val RESPONSE = 16
}

/** The upstream's answer (status 100-599). */
class CallResponse(val status: Int, val headers: Map<String, String>, val body: ByteArray) {
    val text: String get() = String(body, Charsets.UTF_8)
    override fun toString() = "CallResponse(status=$status, ${body.size} bytes)"
}

/**
 * msync answered the call itself (status 601-609, docs/protocol.md §17): the
 * upstream did not answer. [retryable]: sending the same call again may work.
 */
class CallException(val status: Int, val reason: String) : MsyncException("call refused: status $status: $reason") {
    val retryable: Boolean get() = status in RETRYABLE

    companion object {
        const val UNKNOWN_SERVICE = 601
        const val UNAVAILABLE = 602
        const val TIMEOUT = 603
        const val TOO_MANY_REQUESTS = 604
        const val SERVICE_BUSY = 605
        const val REQUEST_TOO_LARGE = 606
        const val RESPONSE_TOO_LARGE = 607
        const val BAD_REQUEST = 608
        const val SHUTTING_DOWN = 609
        private val RETRYABLE = setOf(UNAVAILABLE, TIMEOUT, TOO_MANY_REQUESTS, SERVICE_BUSY, SHUTTING_DOWN)
    }
}

/** The connection ended before the answer: the upstream may or may not have run the call. */
class CallLostException : MsyncException("connection lost before the answer")

/** No answer within the call's timeout. */
class CallTimeoutException(timeoutMs: Long) : MsyncException("no answer within $timeoutMs ms")

/** Refused locally (what the server would answer 608, or too large for a frame); nothing was sent. */
class CallBadRequestException(message: String) : MsyncException(message)

/** The server does not serve RPC (AuthReply.max_requests is 0). */
class RpcUnsupportedException : MsyncException("server does not serve RPC")

/** The client was closed. */
class ClientClosedException : MsyncException("client closed")

/** Default timeout of [MsyncClient.call]. */
const val DEFAULT_CALL_TIMEOUT_MS = 10_000L

internal data class RpcRequest(
    val id: Int, val service: String, val method: String, val path: String,
    val headers: Map<String, String>, val body: ByteArray, val timeoutMs: Int,
) : WireMessage {
    private val sortedHeaders = headers.entries.sortedBy { it.key }.map { HeaderEntry(it.key, it.value) }

    override fun size() = uintSize(1, id.toLong() and 0xffffffffL) + stringSize(2, service) + stringSize(3, method) +
        stringSize(4, path) + sortedHeaders.sumOf { messageSize(5, it) } + rpcBytesSize(6, body) +
        uintSize(7, timeoutMs.toLong() and 0xffffffffL)

    override fun writeTo(w: ProtoWriter) {
        w.uint(1, id.toLong() and 0xffffffffL); w.string(2, service); w.string(3, method); w.string(4, path)
        for (h in sortedHeaders) w.message(5, h)
        w.rpcBytes(6, body)
        w.uint(7, timeoutMs.toLong() and 0xffffffffL)
    }

    // data class equality on ByteArray is by identity: fine for a wire message.
    override fun equals(other: Any?) = this === other
    override fun hashCode() = id
}

/** One map<string, string> entry. */
private class HeaderEntry(val key: String, val value: String) : WireMessage {
    // Map entries keep both fields even when empty, as Go's codec does.
    override fun size() = ProtoWriter.stringAlwaysSize(1, key) + ProtoWriter.stringAlwaysSize(2, value)
    override fun writeTo(w: ProtoWriter) { w.stringAlways(1, key); w.stringAlways(2, value) }
}

internal class RpcResponse(val id: Int, val status: Int, val headers: Map<String, String>, val body: ByteArray) {
    companion object {
        fun decode(f: Frame): RpcResponse {
            val r = ProtoReader(f.body, f.bodyOff, f.bodyOff + f.bodyLen)
            var id = 0; var status = 0; var body = ByteArray(0)
            val headers = HashMap<String, String>()
            while (r.next()) when (r.field) {
                1 -> id = r.uint32(); 2 -> status = r.uint32(); 4 -> body = r.bytes()
                3 -> {
                    val s = r.sub(); var k = ""; var v = ""
                    while (s.next()) when (s.field) { 1 -> k = s.string(); 2 -> v = s.string(); else -> s.skip() }
                    headers[k] = v
                }
                else -> r.skip()
            }
            return RpcResponse(id, status, headers, body)
        }
    }
}

private fun rpcBytesSize(field: Int, b: ByteArray) =
    if (b.isEmpty()) 0 else tagSize(field) + varintSize(b.size.toLong()) + b.size

private fun ProtoWriter.rpcBytes(field: Int, b: ByteArray) {
    if (b.isEmpty()) return
    tag(field, WT_LEN); varint(b.size.toLong()); System.arraycopy(b, 0, buf, pos, b.size); pos += b.size
}

private val CALL_METHODS = setOf("", "GET", "POST", "PUT", "PATCH", "DELETE")
private val HOP_HEADERS = setOf(
    "connection", "content-length", "host", "keep-alive", "proxy-authorization",
    "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "http2-settings",
)
private val SERVICE_RE = Regex("^[A-Za-z0-9_.-]{1,64}$")
private val TOKEN_RE = Regex("^[!#$%&'*+\\-.^_`|~0-9A-Za-z]{1,64}$")

/** Mirrors pkg/protocol.CheckRequest plus the service name: "" when the server would accept it. */
internal fun checkCall(service: String, method: String, path: String, headers: Map<String, String>, body: ByteArray): String {
    if (!SERVICE_RE.matches(service)) return "service \"$service\": want 1-64 of [A-Za-z0-9_.-]"
    if (method !in CALL_METHODS) return "method $method: want GET, POST, PUT, PATCH or DELETE"
    if (path.isEmpty() || path[0] != '/' || ProtoWriter.utf8Len(path) > 2048) return "path: must start with / and be at most 2048 bytes"
    val route = path.substringBefore('?')
    if (route.contains("..") || route.contains("//") || path.contains('\\') || path.contains('#')) return "path $path: no '..', '//', '\\' or '#'"
    if (path.any { it <= ' ' || it == '\u007f' }) return "path: control character or space"
    if (headers.size > 16) return "headers: ${headers.size}, at most 16"
    for ((k, v) in headers) {
        if (!TOKEN_RE.matches(k)) return "header name $k: want an HTTP token of at most 64 bytes"
        if (k.lowercase() in HOP_HEADERS) return "header $k: a hop-by-hop header cannot be set"
        if (ProtoWriter.utf8Len(v) > 1024 || v.any { it == '\r' || it == '\n' || it == '\u0000' }) return "header $k: value over 1024 bytes or with CR, LF or NUL"
    }
    if (body.size + ProtoWriter.utf8Len(path) + service.length + 1024 > FrameCodec.SERVER_MAX_FRAME) return "body of ${body.size} bytes does not fit a frame"
    return ""
}

/**
 * One session's calls in flight: at most maxRequests (a slot is held until
 * the server answers, also after the caller gave up: the server counts the
 * request until then), matched by id.
 */
internal class CallTable(val maxRequests: Int) {
    private val lock = Any()
    private var next = 0
    private val pending = HashMap<Int, CompletableDeferred<RpcResponse>>()
    private var ended = false
    // Callers waiting for a slot.
    private val slotWaiters = ArrayDeque<CompletableDeferred<Unit>>()

    /** Takes a slot and an id, waiting for a slot; null when the session ended. */
    suspend fun register(): Pair<Int, CompletableDeferred<RpcResponse>>? {
        while (true) {
            val wait: CompletableDeferred<Unit>
            synchronized(lock) {
                if (ended) return null
                if (pending.size < maxRequests) {
                    do { next++ } while (next == 0 || pending.containsKey(next))
                    val d = CompletableDeferred<RpcResponse>()
                    pending[next] = d
                    return next to d
                }
                wait = CompletableDeferred()
                slotWaiters.addLast(wait)
            }
            try {
                wait.await()
            } finally {
                synchronized(lock) { slotWaiters.remove(wait) }
            }
        }
    }

    /** Hands a RESPONSE to its caller and frees its slot (read loop; never blocks). */
    fun answer(r: RpcResponse): Boolean {
        val d = synchronized(lock) {
            val d = pending.remove(r.id) ?: return false
            slotWaiters.removeFirstOrNull()?.complete(Unit)
            d
        }
        d.complete(r)
        return true
    }

    /** The session ended: every caller in flight or waiting gets [CallLostException]. */
    fun end() {
        val (ds, ws) = synchronized(lock) {
            ended = true
            val ds = pending.values.toList(); pending.clear()
            val ws = slotWaiters.toList(); slotWaiters.clear()
            ds to ws
        }
        for (d in ds) d.completeExceptionally(CallLostException())
        for (w in ws) w.complete(Unit)
    }
}

/** Sends calls on the client's current session (one per client). */
internal class CallRouter {
    private val lock = Any()
    private var cur: CallTable? = null
    private var send: ((RpcRequest) -> Boolean)? = null
    private var closed = false
    private var ready = CompletableDeferred<Unit>()

    /** After AUTH_REPLY: calls go to this session. */
    fun attach(maxRequests: Int, sender: (RpcRequest) -> Boolean): CallTable {
        val t = CallTable(maxRequests)
        val r = synchronized(lock) {
            cur = t; send = sender
            ready
        }
        r.complete(Unit)
        return t
    }

    /** The session ended: its calls are lost; new ones wait for the next session. */
    fun detach(t: CallTable) {
        synchronized(lock) {
            if (cur === t) { cur = null; send = null; ready = CompletableDeferred() }
        }
        t.end()
    }

    fun close() {
        val (t, r) = synchronized(lock) {
            closed = true
            val t = cur; cur = null; send = null
            t to ready
        }
        t?.end()
        r.complete(Unit)
    }

    suspend fun call(
        service: String, method: String, path: String, headers: Map<String, String>, body: ByteArray, timeoutMs: Long,
    ): CallResponse {
        if (timeoutMs <= 0) throw CallBadRequestException("timeoutMs $timeoutMs: want > 0")
        val bad = checkCall(service, method, path, headers, body)
        if (bad.isNotEmpty()) throw CallBadRequestException(bad)
        val deadline = System.nanoTime() + timeoutMs * 1_000_000
        return try {
            withTimeout(timeoutMs) {
                while (true) {
                    val (t, sender, r) = synchronized(lock) {
                        if (closed) throw ClientClosedException()
                        Triple(cur, send, ready)
                    }
                    if (t == null || sender == null) { r.await(); continue } // wait for a session
                    if (t.maxRequests == 0) throw RpcUnsupportedException()
                    val (id, answer) = t.register() ?: throw CallLostException()
                    val left = ((deadline - System.nanoTime()) / 1_000_000).coerceIn(1, Int.MAX_VALUE.toLong()).toInt()
                    if (!sender(RpcRequest(id, service, method, path, headers, body, left))) throw CallLostException()
                    val resp = answer.await()
                    if (resp.status in 100..599) return@withTimeout CallResponse(resp.status, resp.headers, resp.body)
                    throw CallException(resp.status, String(resp.body, Charsets.UTF_8))
                }
                @Suppress("UNREACHABLE_CODE")
                throw IllegalStateException("unreachable")
            }
        } catch (e: TimeoutCancellationException) {
            throw CallTimeoutException(timeoutMs)
        }
    }
}
