package io.msync.client

/**
 * Base of every exception the SDK reports. The SDK never throws these into
 * the app's threads from its own coroutines: they arrive as the `error` of
 * [Event.Disconnected], [Event.Stopped] or [Event.Error]. Only the methods
 * the app calls (constructor, [MsyncClient.registerBiz], [FileStore]) throw.
 */
open class MsyncException(message: String, cause: Throwable? = null) : Exception(message, cause)

/** An [Options] value or an argument is invalid. */
class BadOptionsException(message: String) : MsyncException(message)

/** The server sent bytes this SDK cannot follow; the SDK reconnects. */
open class ProtocolException(message: String, cause: Throwable? = null) : MsyncException(message, cause)

/** A header or body that does not decode (bad length, version, varint, UTF-8 ...). */
class MalformedFrameException(message: String) : ProtocolException(message)

/** A frame whose length is over the reader's limit; refused before its body is read. */
class FrameTooLargeException(val length: Long, val limit: Int) :
    ProtocolException("frame of $length bytes over the limit of $limit")

/** An op this SDK does not know where only a known one is allowed (before AUTH_REPLY). */
class UnexpectedOpException(val op: Int, message: String) : ProtocolException(message)

/** The server did not answer AUTH within [Options.dialTimeoutMs]. */
class AuthTimeoutException(timeoutMs: Long) : MsyncException("no AUTH_REPLY within $timeoutMs ms")

/** Nothing arrived from the server within the read deadline (2 x heartbeat + 5 s). */
class ReadTimeoutException(timeoutMs: Long) : MsyncException("nothing from the server within $timeoutMs ms")

/** The server closed the session with an ERROR frame. */
class ServerErrorException(val code: Int, val serverMessage: String) :
    MsyncException("server error $code: $serverMessage")

/** The server closed the session with a KICK frame. */
class KickedException(val code: Int, val reason: String) : MsyncException("kicked ($code): $reason")

/** The connection failed (dial, TLS, read or write). */
class ConnectionException(message: String, cause: Throwable? = null) : MsyncException(message, cause)

/** The token provider failed. */
class TokenException(cause: Throwable) : MsyncException("token provider failed: ${cause.message}", cause)

/** A sync point file that does not parse; the SDK never silently resets points. */
class StoreFileException(message: String, cause: Throwable? = null) : MsyncException(message, cause)

/** A handler kept failing on an oplog; the SDK asks the server to resend it. */
class HandlerException(val channel: String, val id: Long, cause: Throwable) :
    MsyncException("handler failed on $channel/$id: ${cause.message}", cause)

/** Why a session ended when the app asked for it (not an error). */
class LifecycleException(val reason: Reason) : MsyncException(reason.text) {
    enum class Reason(val text: String) {
        CLOSED("client closed"), BACKGROUND("in background"), USER_CLEARED("user cleared"),
        USER_UPDATED("user updated"), NETWORK_LOST("network lost"), NETWORK_CHANGED("network changed"),
    }
}

/** What a server code tells the client to do (docs/protocol.md §6). */
object Codes {
    const val SERVER_SHUTDOWN = 1000
    const val SLOW_CONSUMER = 1001
    const val HEARTBEAT_TIMEOUT = 1002
    const val ACK_TIMEOUT = 1003
    const val UNAVAILABLE = 1004
    const val AUTH_TIMEOUT = 1005
    const val REPLACED = 1006
    const val KICKED = 1007
    const val TOKEN_EXPIRED = 2001
    const val TOKEN_INVALID = 2002
    const val TOO_MANY_ROOMS = 3001
    const val BAD_FRAME = 4000
    const val FRAME_TOO_LARGE = 4001
    const val UNKNOWN_OP = 4002
    const val NOT_AUTHED = 4003
    const val BAD_AUTH = 4004
    const val OUT_OF_ORDER = 4005
    const val FORBIDDEN = 4006

    /**
     * Below 4000 the client reconnects (1xxx, 2xxx, a 3xxx that ended a session, and unassigned
     * codes below 1000); 4000 and up stop, unassigned codes from 5000 too (docs/protocol.md §6).
     */
    fun reconnects(code: Int): Boolean = code in 0 until 4000

    /** 3xxx: a request was refused by a limit (in a ROOM_REPLY); the connection stays up. */
    fun refusal(code: Int): Boolean = code in 3000..3999

    /** 2xxx: fetch a new token before reconnecting. */
    fun needsToken(code: Int): Boolean = code in 2000..2999
}
