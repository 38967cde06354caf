package io.msync.client

import javax.net.ssl.SSLSocketFactory

/** Handles one oplog. Returning acks it; throwing makes the SDK retry the same oplog later. */
fun interface Handler {
    suspend fun handle(op: Oplog)
}

/** Where the SDK's logs go. The default drops them; on Android forward to android.util.Log. */
fun interface Logger {
    enum class Level { DEBUG, INFO, WARN, ERROR }

    fun log(level: Level, message: String, error: Throwable?)

    companion object {
        val NONE = Logger { _, _, _ -> }
    }
}

/**
 * Connectivity as the app's platform reports it (Android: a
 * ConnectivityManager.NetworkCallback, see README). The SDK calls [watch]
 * once at start and closes what it returns at [MsyncClient.close]. Report
 * `false` when the device has no usable network (the SDK disconnects and
 * stops dialing) and `true` when a network becomes the default one (the SDK
 * reconnects at once, on the new network, without waiting for a backoff).
 */
fun interface NetworkMonitor {
    fun watch(onChange: (available: Boolean) -> Unit): AutoCloseable
}

/**
 * Configuration of a [MsyncClient]. Only [device] and [tokenProvider] are
 * required; every default is written next to its field and equals the Go
 * SDK's.
 */
class Options(
    /** This installation's stable id, 1-128 bytes UTF-8 without control characters. Generate once, keep it. */
    val device: String,
    /**
     * Returns the signed client token of the current user. Called before the
     * first connection, after the server refused the token (codes 2xxx) and
     * by [MsyncClient.updateUser]; other reconnects reuse the last token.
     * Bounded by [dialTimeoutMs].
     */
    val tokenProvider: suspend () -> String,
    /** ios, android, harmony, web ... (lower-cased). Default "unknown": matches no platform-filtered oplog. */
    val platform: String = "unknown",
    /** Dotted numeric ("5.12.1"). Empty: not reported; no version-bounded oplog is delivered. */
    val appVersion: String = "",
    /** Sync points. Default [MemoryStore]; pass a [FileStore] so points survive restarts. */
    val store: SyncPointStore = MemoryStore(),
    /** Reconnect and handler-retry delays: capped exponential with full jitter. Default 500 ms ... 30 s. */
    val backoffMinMs: Long = 500,
    val backoffMaxMs: Long = 30_000,
    /** Bounds dialing (TLS handshake included), waiting for AUTH_REPLY and each token call. Default 10 s. */
    val dialTimeoutMs: Long = 10_000,
    /** Largest frame accepted from the server; a bigger one closes the connection. Default 4 MiB. */
    val maxFrame: Int = 4 shl 20,
    /** Heartbeat interval wish sent in AUTH (the server clamps it and the SDK follows the server). 0 = none. */
    val heartbeatMs: Int = 0,
    /** Retries of a failing oplog in place before the channel asks the server to resend. Default 5. */
    val handlerRetries: Int = 5,
    /** TLS for tls:// addresses. Null: the platform's default trust store. Host names are verified. */
    val sslSocketFactory: SSLSocketFactory? = null,
    /**
     * Connection events. Called from SDK threads, possibly from several at
     * once: be thread-safe, return quickly, do not call close() from it.
     */
    val onEvent: ((Event) -> Unit)? = null,
    /** Non-persistent pushes, from the read loop in arrival order. Null: dropped. */
    val onPush: ((Push) -> Unit)? = null,
    val logger: Logger = Logger.NONE,
    /** Optional connectivity source (Android network callbacks). */
    val networkMonitor: NetworkMonitor? = null,
    /** Replaces the TCP/TLS dialer (tests, custom transports). Null: dial the address. */
    val dialer: Dialer? = null,
    /** Offer raw deflate body compression in AUTH (docs/protocol.md §18); the server decides. Default on. */
    val compression: Boolean = true,
) {
    internal fun validate() {
        val d = device.toByteArray(Charsets.UTF_8)
        if (d.isEmpty() || d.size > 128 || device.any { it.isISOControl() }) {
            throw BadOptionsException("device \"$device\": 1-128 bytes UTF-8 without control characters")
        }
        val p = platform.trim().lowercase()
        if (p.length > 32 || p.any { it == ' ' || it == '/' || it.isISOControl() }) {
            throw BadOptionsException("platform \"$platform\": one short word like ios or android")
        }
        if (appVersion.isNotEmpty() && !appVersion.split('.').all { s -> s.isNotEmpty() && s.all { it in '0'..'9' } && (s.toLongOrNull() ?: -1) in 0..0xffffffffL }) {
            throw BadOptionsException("app version \"$appVersion\" is not dotted numeric")
        }
        if (backoffMinMs <= 0 || backoffMaxMs < backoffMinMs) throw BadOptionsException("backoff $backoffMinMs..$backoffMaxMs ms")
        if (dialTimeoutMs <= 0) throw BadOptionsException("dialTimeoutMs $dialTimeoutMs")
        if (maxFrame < FrameCodec.HEADER_SIZE) throw BadOptionsException("maxFrame $maxFrame")
        if (heartbeatMs < 0) throw BadOptionsException("heartbeatMs $heartbeatMs")
        if (handlerRetries < 0) throw BadOptionsException("handlerRetries $handlerRetries")
    }

    internal val normalizedPlatform: String get() = platform.trim().lowercase().ifEmpty { "unknown" }
}

/** What [Options.onEvent] receives. */
sealed class Event {
    /** AUTH_REPLY arrived: the session is up. */
    data class Connected(val user: String, val session: String, val heartbeatMs: Long) : Event()

    /**
     * A connection attempt or session ended. [retryInMs] is the delay before
     * the next attempt; 0 when the SDK will not retry by itself (closed,
     * background, user cleared, stopped) or reconnects at once.
     */
    data class Disconnected(val error: MsyncException, val retryInMs: Long) : Event()

    /** The server sent KICK (1006 replaced, 1007 kicked, 4006 forbidden). A Disconnected follows. */
    data class Kicked(val code: Int, val reason: String) : Event()

    /** The server skipped [count] older oplogs of [channel] by the biz's backlog policy (latest:N). */
    data class Skipped(val biz: String, val channel: String, val count: Long) : Event()

    /**
     * The sync point of [channel] was above everything the server holds (its
     * store was reset, or the point came from another deployment): the SDK
     * moved it back [from] -> [to] (docs/protocol.md, rewind page). Ids above
     * [to] will be used again for new oplogs: an app that keys data by oplog
     * id should refresh that channel's data.
     */
    data class Rewound(val biz: String, val channel: String, val from: Long, val to: Long) : Event()

    /** The server does not sync these bizs (unknown to it). */
    data class AuthRejected(val rejected: List<RejectedBiz>) : Event()

    /** A 4xxx code: the SDK does not reconnect until [MsyncClient.updateUser]. */
    data class Stopped(val code: Int, val error: MsyncException) : Event()

    /**
     * The server refused to join [room] ([code] 3xxx, e.g. [Codes.TOO_MANY_ROOMS]). The
     * connection stays up; the room is no longer in [MsyncClient.rooms]: join it again
     * once under the limit.
     */
    data class RoomRefused(val room: String, val code: Int, val reason: String) : Event()

    /** Saving a sync point failed. Delivery goes on; after a restart those oplogs may come again. */
    data class StoreError(val channel: String, val error: Throwable) : Event()

    /**
     * Something went wrong that the SDK handles by itself: bad bytes from the
     * server ([ProtocolException]: it reconnects), no AUTH_REPLY in time, a
     * handler that keeps failing ([HandlerException]: the oplog is resent).
     */
    data class Error(val error: MsyncException) : Event()
}
