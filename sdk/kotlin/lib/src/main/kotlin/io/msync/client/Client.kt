package io.msync.client

import io.msync.client.Logger.Level
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CoroutineName
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.cancelAndJoin
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.delay
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import kotlinx.coroutines.withTimeoutOrNull
import java.util.concurrent.atomic.AtomicBoolean
import kotlin.random.Random

/**
 * One device's connection to msync (docs/protocol.md). Create it, register a
 * handler per biz, then [start]. Each registered biz's oplogs reach its
 * handler in id order per channel, one at a time; a handler that returns
 * acknowledges the oplog (the sync point is saved in the store, then ACK is
 * sent); one that throws is retried with backoff and the oplogs after it
 * wait: nothing is skipped. Oplogs at or below the sync point are dropped,
 * so the app sees each one once as long as the store keeps its points.
 *
 * The client owns a coroutine scope: one coroutine connects and reads, and
 * per session one sends heartbeats and one per channel runs its handler.
 * [close] stops and waits for all of them. Every method is thread-safe.
 *
 * @param address `host:port` or `tcp://host:port` (msync frames on TCP), `tls://host:port` (on TLS).
 */
class MsyncClient(address: String, options: Options) : AutoCloseable {
    private val opts = options.also { it.validate() }
    private val zstats = CompressionCounters() // Compression.kt

    /** Compressed frames received and sent since this client was made (docs/protocol.md §18). */
    fun compressionStats(): CompressionStats = zstats.snapshot()
    private val dialer: Dialer = opts.dialer ?: SocketDialer(Address.parse(address), opts.sslSocketFactory)
    private val log = opts.logger
    private val platform = opts.normalizedPlatform

    private val handlers = HashMap<String, Handler>() // written before start only
    private val scope = CoroutineScope(SupervisorJob() + Dispatchers.IO + CoroutineName("msync"))
    private val wake = Channel<Unit>(Channel.CONFLATED)
    private var loopJob: Job? = null
    private var networkWatch: AutoCloseable? = null

    private val lock = Any()
    // All guarded by lock.
    private var started = false
    private var closed = false
    private var foreground = true
    private var userSet = true
    private var stopped = false
    private var networkUp = true
    private var skipBackoff = false
    private var token: String? = null
    private var current: Session? = null
    private val rooms = sortedSetOf<String>()

    private val pointsLock = Any()
    private val points = HashMap<String, Long>() // mirrors the store

    private val connectedFlag = AtomicBoolean(false)
    private val calls = CallRouter() // Call.kt

    /** True once [close] finished: every coroutine the client started has ended (for tests). */
    internal val terminated: Boolean get() = scope.coroutineContext[Job]!!.isCompleted

    /** Whether a session is authenticated right now. */
    val connected: Boolean get() = connectedFlag.get()

    /** Routes the oplogs of [biz] (1-64 of `[A-Za-z0-9_.:-]`) to [handler]. Call before [start]. */
    fun registerBiz(biz: String, handler: Handler) {
        if (biz.isEmpty() || biz.length > 64 || !biz.all { it.isLetterOrDigit() && it.code < 128 || it in "_.:-" }) {
            throw BadOptionsException("biz name \"$biz\": 1-64 of [A-Za-z0-9_.:-]")
        }
        synchronized(lock) {
            if (closed) throw IllegalStateException("client closed")
            if (started) throw IllegalStateException("register bizs before start()")
            if (handlers.containsKey(biz)) throw BadOptionsException("biz $biz registered twice")
            handlers[biz] = handler
        }
    }

    /**
     * Loads the sync points and starts connecting in the background.
     * Connection problems are reported through events and retried, never
     * thrown here.
     */
    fun start() {
        synchronized(lock) {
            check(!closed) { "client closed" }
            check(!started) { "already started" }
            if (handlers.isEmpty()) throw BadOptionsException("no biz registered")
            val loaded = opts.store.load()
            synchronized(pointsLock) { points.putAll(loaded) }
            started = true
            loopJob = scope.launch(CoroutineName("msync-loop")) { loop() }
        }
        opts.networkMonitor?.let { m -> networkWatch = m.watch { up -> networkChanged(up) } }
    }

    /**
     * Closes the connection, stops reconnecting and waits for every coroutine
     * the client started (running handlers are cancelled). Idempotent.
     */
    suspend fun shutdown() {
        val job: Job?
        synchronized(lock) {
            closed = true
            current?.end(LifecycleException(LifecycleException.Reason.CLOSED))
            job = loopJob
        }
        calls.close()
        try { networkWatch?.close() } catch (e: Exception) { log.log(Level.WARN, "network monitor close", e) }
        networkWatch = null
        wake.trySend(Unit)
        job?.join()
        scope.coroutineContext[Job]!!.cancelAndJoin()
    }

    /**
     * Sends a REQUEST to [service] of the server's `upstreams` over the
     * connection (docs/protocol.md §17) and returns the upstream's answer, like
     * the Go SDK's Client.Call and the JS SDK's call(). [path] is appended to
     * the service's base URL and starts with "/"; [method] "" means POST.
     * While disconnected it waits for the next session, all within [timeoutMs]
     * (which the server is told, so it gives up at the same time).
     * Throws [CallException] (msync's own status 601-609, with `retryable`),
     * [CallTimeoutException], [CallLostException] (the connection ended
     * first: the upstream may have run it), [CallBadRequestException] (refused
     * locally, nothing sent), [RpcUnsupportedException] or
     * [ClientClosedException].
     */
    suspend fun call(
        service: String, path: String, body: ByteArray = ByteArray(0), method: String = "",
        headers: Map<String, String> = emptyMap(), timeoutMs: Long = DEFAULT_CALL_TIMEOUT_MS,
    ): CallResponse = calls.call(service, method, path, headers, body, timeoutMs)

    /** [call] with a UTF-8 body. */
    suspend fun call(
        service: String, path: String, body: String, method: String = "",
        headers: Map<String, String> = emptyMap(), timeoutMs: Long = DEFAULT_CALL_TIMEOUT_MS,
    ): CallResponse = calls.call(service, method, path, headers, body.toByteArray(Charsets.UTF_8), timeoutMs)

    /** [shutdown] from blocking code (not from the main thread on Android: it waits for handlers). */
    override fun close() = runBlocking { shutdown() }

    /** The app left the screen: close the connection and stop until [foreground]. */
    fun background() {
        synchronized(lock) {
            foreground = false
            current?.end(LifecycleException(LifecycleException.Reason.BACKGROUND))
        }
        wake.trySend(Unit)
    }

    /** The app is back: connect now, without waiting for a backoff. */
    fun foreground() {
        synchronized(lock) { foreground = true; skipBackoff = true }
        wake.trySend(Unit)
    }

    /**
     * Login or user switch: fetches a token now and reconnects with it at
     * once. Also resumes after [clearUser] or a 4xxx stop.
     */
    suspend fun updateUser() {
        synchronized(lock) { check(!closed) { "client closed" } }
        val t = try { opts.tokenProvider() } catch (e: CancellationException) { throw e } catch (e: Exception) { throw TokenException(e) }
        synchronized(lock) {
            token = t
            userSet = true
            stopped = false
            skipBackoff = true
            current?.end(LifecycleException(LifecycleException.Reason.USER_UPDATED))
        }
        wake.trySend(Unit)
    }

    /** [updateUser] with a token the app already has (e.g. from its login response). */
    fun updateUser(token: String) {
        if (token.isEmpty()) throw BadOptionsException("empty token")
        synchronized(lock) {
            check(!closed) { "client closed" }
            this.token = token
            userSet = true
            stopped = false
            skipBackoff = true
            current?.end(LifecycleException(LifecycleException.Reason.USER_UPDATED))
        }
        wake.trySend(Unit)
    }

    /** Logout: disconnect and stop until [updateUser]. Sync points are kept (channels are per user). */
    fun clearUser() {
        synchronized(lock) {
            userSet = false
            token = null
            current?.end(LifecycleException(LifecycleException.Reason.USER_CLEARED))
        }
        wake.trySend(Unit)
    }

    /**
     * Connectivity changed (what [Options.networkMonitor] reports; apps may
     * call it directly). Lost: disconnect and wait. Available: reconnect now,
     * also when connected (the old socket may be bound to the old network).
     */
    fun networkChanged(available: Boolean) {
        synchronized(lock) {
            val wasUp = networkUp
            networkUp = available
            if (!available) {
                current?.end(LifecycleException(LifecycleException.Reason.NETWORK_LOST))
            } else {
                skipBackoff = true
                if (wasUp) current?.end(LifecycleException(LifecycleException.Reason.NETWORK_CHANGED))
            }
        }
        wake.trySend(Unit)
    }

    /** The highest id of [channel] the app has processed, 0 if none. */
    fun syncPoint(channel: String): Long = synchronized(pointsLock) { points[channel] ?: 0 }

    /**
     * Joins [room] now if connected and on every later connection until
     * [leaveRoom]. Names: 1-128 bytes UTF-8, no whitespace or control
     * characters; at most 64 rooms (the server's default limit).
     */
    fun joinRoom(room: String) {
        validRoom(room)
        val s: Session?
        synchronized(lock) {
            check(!closed) { "client closed" }
            if (room !in rooms && rooms.size >= MAX_ROOMS) throw BadOptionsException("at most $MAX_ROOMS rooms")
            rooms.add(room)
            s = current?.takeIf { it.authed }
        }
        s?.send(Op.ROOM_JOIN, Room(room))
    }

    /** Leaves [room]; leaving a room the client is not in is not an error. */
    fun leaveRoom(room: String) {
        validRoom(room)
        val s: Session?
        val was: Boolean
        synchronized(lock) { was = rooms.remove(room); s = current?.takeIf { it.authed } }
        if (was) s?.send(Op.ROOM_LEAVE, Room(room))
    }

    /** The rooms the client is in (or joins on connecting), sorted. */
    fun rooms(): List<String> = synchronized(lock) { rooms.toList() }

    // ---- the connect loop ----

    private suspend fun loop() {
        var retry = 0L
        var failures = 0
        while (true) {
            if (!waitRunnable(retry)) return
            val s = beginSession()
            if (s == null) { retry = 0; continue }
            var err: MsyncException
            var upMs = 0L
            try {
                err = s.run(tokenFor(s))
                if (s.authedAt != 0L) upMs = (System.nanoTime() - s.authedAt) / 1_000_000
            } catch (e: MsyncException) {
                err = s.endCause ?: e
            }
            synchronized(lock) { if (current === s) current = null }
            if (synchronized(lock) { closed }) {
                emit(Event.Disconnected(LifecycleException(LifecycleException.Reason.CLOSED), 0))
                return
            }
            val next = afterSession(err, upMs, failures)
            retry = next.first
            failures = next.second
        }
    }

    /** Waits until connecting is allowed and [retryMs] elapsed; false once closed. */
    private suspend fun waitRunnable(retryMs: Long): Boolean {
        var deadline = if (retryMs > 0) System.nanoTime() + retryMs * 1_000_000 else 0L
        while (true) {
            val runnable: Boolean
            synchronized(lock) {
                if (closed) return false
                runnable = foreground && userSet && !stopped && networkUp
                if (skipBackoff) { skipBackoff = false; deadline = 0 }
            }
            val left = if (deadline == 0L) 0L else (deadline - System.nanoTime()) / 1_000_000
            if (runnable && left <= 0) return true
            if (runnable) withTimeoutOrNull(left.coerceAtLeast(1)) { wake.receive() } else wake.receive()
        }
    }

    private fun beginSession(): Session? = synchronized(lock) {
        if (closed || !foreground || !userSet || stopped || !networkUp) return null
        Session().also { current = it }
    }

    /** The cached token, or a fresh one when there is none (first connect, after 2xxx). */
    private suspend fun tokenFor(s: Session): String {
        synchronized(lock) { token }?.let { return it }
        val t = try {
            withTimeout(opts.dialTimeoutMs) { opts.tokenProvider() }
        } catch (e: CancellationException) {
            throw s.endCause ?: TokenException(e)
        } catch (e: Exception) {
            throw TokenException(e)
        }
        synchronized(lock) { if (s.endCause == null) token = t }
        return t
    }

    /** Classifies why a session ended; returns the delay before the next attempt and the failure count. */
    private fun afterSession(err: MsyncException, upMs: Long, failuresIn: Int): Pair<Long, Int> {
        if (err is LifecycleException) {
            emit(Event.Disconnected(err, 0))
            return 0L to 0
        }
        val code = when (err) { is ServerErrorException -> err.code; is KickedException -> err.code; else -> -1 }
        if (code >= 0) {
            if (!Codes.reconnects(code)) {
                synchronized(lock) { stopped = true }
                log.log(Level.ERROR, "server refused the session (code $code); not reconnecting until updateUser", err)
                emit(Event.Disconnected(err, 0))
                emit(Event.Stopped(code, err))
                return 0L to 0
            }
            if (Codes.needsToken(code)) synchronized(lock) { token = null }
        }
        if (err is ProtocolException || err is AuthTimeoutException) emit(Event.Error(err))
        // A session that stayed up for a while resets the backoff; one that
        // fails right after AUTH (two installs replacing each other) keeps growing it.
        var failures = if (upMs >= opts.backoffMaxMs) 0 else failuresIn
        failures++
        val retry = backoff(opts.backoffMinMs, opts.backoffMaxMs, failures)
        log.log(Level.WARN, "disconnected; retry in $retry ms", err)
        emit(Event.Disconnected(err, retry))
        return retry to failures
    }

    internal fun emit(e: Event) {
        val f = opts.onEvent ?: return
        try { f(e) } catch (t: Throwable) { log.log(Level.ERROR, "onEvent threw", t) }
    }

    private fun point(channel: String): Long? = synchronized(pointsLock) { points[channel] }

    /** Moves channel's point to [id] (never back, unless [rewind]) and saves it. Only the channel's worker calls it. */
    private fun advance(channel: String, id: Long, rewind: Boolean = false) {
        synchronized(pointsLock) {
            val cur = points[channel]
            if (!rewind && cur != null && cur >= id) return
            points[channel] = id
        }
        try {
            opts.store.save(channel, id)
        } catch (e: Exception) {
            // The in-memory point still advances, so this process never hands
            // the oplog to the app again; only a restart might (at least once,
            // never a loss). Stalling delivery on a full disk would be worse.
            log.log(Level.ERROR, "save sync point $channel=$id", e)
            emit(Event.StoreError(channel, e))
        }
    }

    private fun authMessage(tok: String): Auth {
        val bizs = handlers.keys.sorted()
        val pts = synchronized(pointsLock) {
            points.entries.filter { (ch, _) ->
                val parts = ch.split('/')
                val biz = parts[0]
                handlers.containsKey(biz) && !(parts.size >= 3 && parts[1] == "d" && ch.substring(biz.length + 3) != opts.device)
            }.map { ChannelPoint(it.key, it.value) }
        }.sortedBy { it.channel }
        var a = Auth(tok, opts.device, platform, opts.appVersion, bizs, pts, opts.heartbeatMs,
            compression = if (opts.compression) listOf(Compression.DEFLATE) else emptyList())
        // The server refuses frames over 64 KiB. Dropping points is safe: the
        // server starts those channels from its stored point, and what is at
        // or below the local point is dropped here as a duplicate.
        while (a.points.isNotEmpty() && FrameCodec.HEADER_SIZE + a.size() > FrameCodec.SERVER_MAX_FRAME) {
            a = a.copy(points = a.points.subList(0, a.points.size / 2))
        }
        return a
    }

    // ---- one connection ----

    private inner class Session {
        @Volatile var endCause: MsyncException? = null
        @Volatile private var conn: FrameConn? = null
        @Volatile var authed = false
        var authedAt = 0L
        private val seq = java.util.concurrent.atomic.AtomicInteger(0)
        private val writeLock = Any()
        @Volatile private var heartbeatMs = DEFAULT_HEARTBEAT_MS
        private val hbChanged = Channel<Unit>(Channel.CONFLATED)
        private val job = SupervisorJob(scope.coroutineContext[Job])
        private val sscope = CoroutineScope(scope.coroutineContext + job)
        private val workers = HashMap<String, Worker>()
        private val volatile = Channel<Push>(MAX_VOLATILE_QUEUED)
        // Compression.kt: set by setup from AUTH_REPLY; the inflater is the read loop's.
        @Volatile private var compress = false
        private val inflater = FrameInflater(zstats)
        @Volatile private var callTable: CallTable? = null // Call.kt; set after AUTH_REPLY

        /** Ends the session with [cause] (the first cause wins); closing the socket unblocks I/O. */
        fun end(cause: MsyncException) {
            synchronized(this) { if (endCause == null) endCause = cause }
            conn?.close()
        }

        suspend fun run(tok: String): MsyncException {
            try {
                val c = try {
                    dialer.dial(opts.dialTimeoutMs, opts.maxFrame)
                } catch (e: MsyncException) {
                    return endCause ?: e
                } catch (e: Exception) {
                    return endCause ?: ConnectionException("dial: ${e.message}", e)
                }
                conn = c
                endCause?.let { c.close(); return it }
                val reply = try { handshake(c, tok) } catch (e: MsyncException) { return endCause ?: e }
                setup(reply)
                return try { readLoop(c) } catch (e: MsyncException) { endCause ?: e }
            } finally {
                connectedFlag.set(false)
                authed = false
                callTable?.let { calls.detach(it) }
                conn?.close()
                job.cancelAndJoin()
                inflater.close()
            }
        }

        private fun handshake(c: FrameConn, tok: String): AuthReply {
            val deadline = System.nanoTime() + opts.dialTimeoutMs * 1_000_000
            c.write(FrameCodec.encode(Op.AUTH, seq.incrementAndGet(), authMessage(tok)))
            while (true) {
                val left = (deadline - System.nanoTime()) / 1_000_000
                if (left <= 0) throw AuthTimeoutException(opts.dialTimeoutMs)
                val f = try { c.readFrame(left) } catch (e: ReadTimeoutException) { throw AuthTimeoutException(opts.dialTimeoutMs) }
                when (f.op) {
                    Op.AUTH_REPLY -> return AuthReply.decode(f)
                    Op.ERROR, Op.KICK -> throw serverClosed(f)
                    Op.HEARTBEAT_REPLY, Op.PUSH -> {} // harmless before AUTH_REPLY
                    else -> throw UnexpectedOpException(f.op, "${Op.name(f.op)} before AUTH_REPLY")
                }
            }
        }

        private fun setup(r: AuthReply) {
            compress = opts.compression && r.compression == Compression.DEFLATE
            setHeartbeat(r.heartbeatMs)
            for (ch in r.channels) {
                val h = handlers[ch.biz]
                if (h == null || workers.containsKey(ch.channel)) {
                    log.log(Level.WARN, "AUTH_REPLY names channel ${ch.channel} of an unregistered biz ${ch.biz}; ignored", null)
                    continue
                }
                // A channel without a local point starts where the server
                // starts it, so its first page is not a gap. With from == 0
                // nothing is recorded: the next AUTH still sends no point.
                if (point(ch.channel) == null && ch.from > 0) advance(ch.channel, ch.from)
                workers[ch.channel] = Worker(this, ch.biz, ch.channel, h)
            }
            connectedFlag.set(true)
            authed = true
            authedAt = System.nanoTime()
            log.log(Level.INFO, "connected as ${r.user} (${r.session}), ${workers.size} channels, heartbeat $heartbeatMs ms", null)
            emit(Event.Connected(r.user, r.session, heartbeatMs))
            if (r.rejected.isNotEmpty()) {
                log.log(Level.WARN, "server rejected bizs ${r.rejected}", null)
                emit(Event.AuthRejected(r.rejected))
            }
            callTable = calls.attach(r.maxRequests) { m -> send(RpcOp.REQUEST, m) }
            for (w in workers.values) guarded("msync-${w.channel}") { w.run() }
            guarded("msync-heartbeat") { heartbeatLoop() }
            guarded("msync-volatile") { volatileLoop() }
            val rs = synchronized(lock) { rooms.toList() }
            for (room in rs) if (!send(Op.ROOM_JOIN, Room(room))) break
        }

        /** Launches a session coroutine; an unexpected exception (an SDK bug) ends the session instead of stalling it. */
        private fun guarded(name: String, body: suspend () -> Unit) {
            sscope.launch(CoroutineName(name)) {
                try {
                    body()
                } catch (e: CancellationException) {
                    throw e
                } catch (t: Throwable) {
                    log.log(Level.ERROR, "$name failed", t)
                    end(ProtocolException("$name failed: $t", t))
                }
            }
        }

        private fun setHeartbeat(ms: Int) {
            val v = if (ms == 0) DEFAULT_HEARTBEAT_MS else (ms.toLong() and 0xffffffffL).coerceIn(MIN_HEARTBEAT_MS, MAX_HEARTBEAT_MS)
            if (v != heartbeatMs) { heartbeatMs = v; hbChanged.trySend(Unit) }
        }

        /** HEARTBEAT every interval; a reply with a new interval restarts the wait with it. */
        private suspend fun heartbeatLoop() {
            while (true) {
                val changed = withTimeoutOrNull(heartbeatMs) { hbChanged.receive() }
                if (changed != null) continue
                if (!send(Op.HEARTBEAT, Heartbeat())) return
            }
        }

        /** Writes one frame; a failure ends the session. */
        fun send(op: Int, m: WireMessage): Boolean {
            val c = conn ?: return false
            return try {
                val b = deflateIfWorth(op, FrameCodec.encode(op, seq.incrementAndGet(), m))
                synchronized(writeLock) { c.write(b) }
                true
            } catch (e: MsyncException) {
                end(e)
                false
            }
        }

        private fun readLoop(c: FrameConn): MsyncException {
            while (true) {
                val f = inflateIfCompressed(c.readFrame(2 * heartbeatMs + READ_GRACE_MS))
                when (f.op) {
                    Op.SYNC -> for (p in Sync.decode(f).pages) {
                        val w = workers[p.channel]
                        if (w == null) log.log(Level.WARN, "page for channel ${p.channel} not in this session; ignored", null)
                        else w.enqueue(p)
                    }
                    Op.HEARTBEAT_REPLY -> Heartbeat.decode(f).intervalMs.let { if (it != 0) setHeartbeat(it) }
                    Op.ERROR, Op.KICK -> return serverClosed(f)
                    Op.PUSH -> {
                        val m = Push.decode(f)
                        if (m.biz.isNotEmpty()) {
                            if (handlers.containsKey(m.biz) && !volatile.trySend(m).isSuccess) {
                                log.log(Level.WARN, "non-persistent oplog of ${m.biz} dropped: handlers too slow", null)
                            }
                        } else opts.onPush?.let { cb ->
                            try { cb(m) } catch (t: Throwable) { log.log(Level.ERROR, "onPush threw", t) }
                        }
                    }
                    Op.ROOM_REPLY -> {
                        // A refusal (3xxx, e.g. over the server's comet.max_rooms)
                        // keeps the connection: drop the room so it is not joined
                        // again on every reconnect, and tell the app.
                        val r = Room.decode(f)
                        if (r.code != 0) {
                            synchronized(lock) { rooms.remove(r.room) }
                            log.log(Level.WARN, "room ${r.room} refused: ${r.code} ${r.message}", null)
                            emit(Event.RoomRefused(r.room, r.code, r.message))
                        }
                    }
                    RpcOp.RESPONSE -> if (callTable?.answer(RpcResponse.decode(f)) != true) {
                        log.log(Level.WARN, "RESPONSE for no request in flight; ignored", null)
                    }
                    // Ops of later protocol versions: ignoring them keeps old apps
                    // working with newer servers (docs/protocol.md §4).
                    else -> log.log(Level.DEBUG, "ignored ${Op.name(f.op)}", null)
                }
            }
        }

        /** Compression.kt: a compressed frame is inflated, or refused when not negotiated. */
        private fun inflateIfCompressed(f: Frame): Frame {
            if (!Compression.isCompressed(f.op)) return f
            if (!compress) throw MalformedFrameException("compressed ${Op.name(f.op and Compression.FLAG.inv())} without negotiated compression")
            return inflater.inflate(f, opts.maxFrame)
        }

        /** REQUEST bodies of Compression.MIN_BYTES and more go compressed once negotiated. */
        private fun deflateIfWorth(op: Int, b: ByteArray): ByteArray {
            if (!compress || op != Compression.OP_REQUEST) return b
            val z = Compression.deflate(b) ?: return b
            zstats.framesOut.incrementAndGet(); zstats.bytesOutWire.addAndGet(z.size.toLong()); zstats.bytesOutRaw.addAndGet(b.size.toLong())
            return z
        }

        private fun serverClosed(f: Frame): MsyncException {
            val m = CodeMessage.decode(f)
            if (f.op == Op.KICK) {
                log.log(Level.WARN, "kicked (${m.code}): ${m.message}", null)
                emit(Event.Kicked(m.code, m.message))
                return KickedException(m.code, m.message)
            }
            return ServerErrorException(m.code, m.message)
        }

        /** Non-persistent bizs' oplogs (PUSH with biz), one at a time; errors are logged, not retried. */
        private suspend fun volatileLoop() {
            for (m in volatile) {
                val h = handlers[m.biz] ?: continue
                try {
                    h.handle(Oplog(m.biz, "", 0, m.payload, m.createdMs))
                } catch (e: CancellationException) {
                    throw e
                } catch (t: Throwable) {
                    log.log(Level.WARN, "handler failed on a non-persistent oplog of ${m.biz}; it is not redelivered", t)
                }
            }
        }

        // ---- one channel ----

        inner class Worker(private val s: Session, val biz: String, val channel: String, private val handler: Handler) {
            private val wake = Channel<Unit>(Channel.CONFLATED)
            private val queue = ArrayDeque<ChannelPage>() // guarded by itself
            private var queuedBytes = 0
            private var overflow = false
            private var lastReqPoint = -1L
            private var lastReqAt = 0L
            private var failures = 0

            /** From the read loop; never blocks, so a slow handler cannot stall heartbeats or other channels. */
            fun enqueue(p: ChannelPage) {
                synchronized(queue) {
                    if (queue.size >= MAX_QUEUED_PAGES || (queue.isNotEmpty() && queuedBytes + p.wireSize > MAX_QUEUED_BYTES)) {
                        if (!overflow) log.log(Level.WARN, "$channel: handler too slow, dropping pages; will resync", null)
                        overflow = true
                    } else {
                        queue.addLast(p)
                        queuedBytes += p.wireSize
                    }
                }
                wake.trySend(Unit)
            }

            private fun dropQueued() = synchronized(queue) { queue.clear(); queuedBytes = 0; overflow = false }

            suspend fun run() {
                while (true) {
                    var page: ChannelPage? = null
                    var resync = false
                    synchronized(queue) {
                        if (queue.isNotEmpty()) {
                            page = queue.removeFirst()
                            queuedBytes -= page!!.wireSize
                        } else if (overflow) {
                            overflow = false
                            resync = true
                        }
                    }
                    val p = page
                    when {
                        p != null -> process(p)
                        resync -> requestSync(pointNow(), false)
                        else -> wake.receive()
                    }
                }
            }

            private fun pointNow() = point(channel) ?: 0L

            /** The client rules of docs/protocol.md §8. */
            private suspend fun process(p: ChannelPage) {
                var pt = pointNow()
                if (p.upto < p.after) {
                    // A rewind page: our point is ahead of everything the server
                    // holds. Adopt the server's max only if the page answers the
                    // point we hold (a stale one is ignored), as the Go SDK does.
                    if (p.after == pt) {
                        log.log(Level.WARN, "$channel: sync point $pt ahead of the server; rewinding to ${p.upto}", null)
                        advance(channel, p.upto, rewind = true)
                        emit(Event.Rewound(biz, channel, pt, p.upto))
                        s.send(Op.ACK, Points(listOf(ChannelPoint(channel, p.upto))))
                    }
                    return
                }
                if (p.after > pt) { // gap: something between pt and after never arrived
                    requestSync(pt, false)
                    return
                }
                if (p.skipped > 0 && p.upto > pt) {
                    log.log(Level.INFO, "$channel: server skipped ${p.skipped} oplogs by backlog policy", null)
                    emit(Event.Skipped(biz, channel, p.skipped))
                }
                val ops = p.oplogs
                for (i in ops.indices) {
                    val op = ops[i]
                    if (op.id <= pt) continue // duplicate: never to the app
                    if (op.id > p.upto) { log.log(Level.WARN, "$channel: oplog ${op.id} beyond its page's upto ${p.upto}; ignored", null); break }
                    val err = deliver(op)
                    if (err != null) {
                        giveUp(p, pt, op.id, err)
                        return
                    }
                    pt = op.id
                    // The last listed oplog and the filtered ids after it are saved in one write.
                    if (i == ops.size - 1 && p.upto > pt) pt = p.upto
                    advance(channel, pt)
                }
                if (p.upto > pt) { pt = p.upto; advance(channel, pt) }
                failures = 0
                // ACK upto, not the local point: the server refuses an ACK beyond
                // what it sent (4005); upto also releases the next backlog page.
                s.send(Op.ACK, Points(listOf(ChannelPoint(channel, p.upto))))
            }

            /** Calls the handler, retrying in place with backoff; returns the last error, null on success. */
            private suspend fun deliver(op: Oplog): Throwable? {
                var attempt = 0
                while (true) {
                    try {
                        handler.handle(op)
                        return null
                    } catch (e: CancellationException) {
                        if (!job.isActive) throw e // the session ended; the next one resyncs from the point
                        log.log(Level.WARN, "$channel: handler threw CancellationException on ${op.id}; treated as a failure", e)
                        if (attempt >= opts.handlerRetries) return e
                    } catch (t: Throwable) {
                        log.log(Level.WARN, "$channel: handler failed on ${op.id} (attempt ${attempt + 1})", t)
                        if (attempt >= opts.handlerRetries) return t
                    }
                    attempt++
                    delay(backoff(opts.backoffMinMs, opts.backoffMaxMs, attempt))
                }
            }

            /**
             * Retries exhausted: ack what succeeded, drop the page and what
             * queued behind it, wait, and ask the server to resend from the
             * point. The failed oplog comes again: it is never skipped.
             */
            private suspend fun giveUp(p: ChannelPage, pt: Long, failed: Long, err: Throwable) {
                val he = HandlerException(channel, failed, err)
                log.log(Level.ERROR, "$channel: handler keeps failing on $failed; resyncing the channel", err)
                emit(Event.Error(he))
                if (pt > p.after) s.send(Op.ACK, Points(listOf(ChannelPoint(channel, pt))))
                failures++
                dropQueued()
                delay(backoff(opts.backoffMinMs, opts.backoffMaxMs, failures))
                dropQueued() // pages that arrived meanwhile are stale
                requestSync(pt, true)
            }

            /** SYNC_REQ{channel, point}, unless the same one went out less than a second ago. */
            private fun requestSync(pt: Long, force: Boolean) {
                val now = System.nanoTime()
                if (!force && pt == lastReqPoint && now - lastReqAt < RESYNC_QUIET_NS) return
                lastReqPoint = pt
                lastReqAt = now
                s.send(Op.SYNC_REQ, Points(listOf(ChannelPoint(channel, pt))))
            }
        }
    }

    companion object {
        /** Used when AUTH_REPLY carries no interval. */
        const val DEFAULT_HEARTBEAT_MS = 30_000L
        /** The server's interval is clamped to this range, so a bad config can neither spin a phone nor hide a dead NAT for hours. */
        const val MIN_HEARTBEAT_MS = 100L
        const val MAX_HEARTBEAT_MS = 600_000L
        /** Read deadline = 2 x heartbeat + this: the server answers every heartbeat. */
        const val READ_GRACE_MS = 5_000L
        /** Bound of the pages waiting for one channel's handler (only live pages pile up). */
        const val MAX_QUEUED_PAGES = 256
        const val MAX_QUEUED_BYTES = 16 shl 20
        const val MAX_VOLATILE_QUEUED = 256
        const val MAX_ROOMS = 64
        private const val RESYNC_QUIET_NS = 1_000_000_000L

        /** Capped exponential (min, 2 min, 4 min ... max) with full jitter: uniform in [0, cap]. */
        fun backoff(minMs: Long, maxMs: Long, attempt: Int): Long {
            var d = minMs
            var i = 1
            while (i < attempt && d < maxMs) { d *= 2; i++ }
            if (d > maxMs) d = maxMs
            return if (d <= 0) 0 else Random.nextLong(d + 1)
        }

        internal fun validRoom(room: String) {
            val n = room.toByteArray(Charsets.UTF_8).size
            if (n == 0 || n > 128 || room.any { it.isWhitespace() || it.isISOControl() || Character.isSurrogate(it) && !room.isValidUtf16() }) {
                throw BadOptionsException("room \"$room\": 1-128 bytes UTF-8 without whitespace or control characters")
            }
        }

        private fun String.isValidUtf16(): Boolean {
            var i = 0
            while (i < length) {
                val c = this[i]
                if (Character.isHighSurrogate(c)) { if (i + 1 >= length || !Character.isLowSurrogate(this[i + 1])) return false; i += 2; continue }
                if (Character.isLowSurrogate(c)) return false
                i++
            }
            return true
        }
    }
}
