// MsyncClient: the browser SDK. It keeps one device connected to a comet over
// WebSocket, hands each registered biz's oplogs to the app in id order, once,
// and keeps the sync points that make that lossless. It follows
// docs/protocol.md exactly like the Go SDK (pkg/client), which is the
// reference; the names below mirror it (RegisterBiz -> registerBiz, ...).
//
// Concurrency: JavaScript runs on one thread, so "goroutines" become async
// loops: one connection loop per client, and per session a heartbeat timer, a
// read-deadline timer and one async worker per channel. The WebSocket
// message callback only decodes and enqueues, so a slow handler never stops
// heartbeat replies or other channels. Every loop ends when the client is
// closed; close() resolves once they all did (running handlers included).

import {
  Op, opName, MAX_CLIENT_FRAME, DEFAULT_MAX_FRAME, HEADER_SIZE, decodeFrames, encodeFrame,
  encodeAuth, encodePoints, encodeHeartbeat, decodeAuthReply, decodeHeartbeatReply, decodeSync,
  decodeKick, decodeError, decodePush, encodeRequest, decodeResponse,
  FLAG_COMPRESSED, COMPRESSION_DEFLATE, COMPRESS_MIN_BYTES, compressionSupported, inflateRaw, deflateRaw,
} from './codec.js';
import { MemoryStore } from './store.js';

export const DEFAULTS = Object.freeze({
  platform: 'web',
  backoffMin: 500,
  backoffMax: 30_000,
  dialTimeout: 10_000,
  maxFrame: DEFAULT_MAX_FRAME,
  handlerRetries: 5,
  compression: true,
});

// Heartbeat bounds, as in the Go SDK: a misconfigured server can neither
// make the page spin nor leave a dead connection unnoticed for hours.
const DEFAULT_HEARTBEAT = 30_000;
const MIN_HEARTBEAT = 100;
const MAX_HEARTBEAT = 10 * 60_000;
// The read deadline is 2 heartbeat intervals + this grace: the server answers
// every heartbeat, so that much silence means the path is dead.
const READ_GRACE = 5_000;
// Live pages queued per channel while its handler is busy; past either bound
// pages are dropped and the channel resyncs from its point once drained.
const MAX_QUEUED_PAGES = 256;
const MAX_QUEUED_BYTES = 16 << 20;
// Suppresses repeating the same SYNC_REQ: after a gap, the live pages already
// in flight look like gaps too and one request is enough.
const RESYNC_QUIET = 1_000;
// A send is refused (and the session ended) when this much is still unsent:
// the socket is not draining and the server will resend after a reconnect.
const MAX_BUFFERED = 4 << 20;
// Non-persistent oplogs waiting for their handlers in one session. They are
// never stored or resent, so past this bound newer ones are dropped (and
// logged) rather than letting memory grow.
const MAX_VOLATILE_QUEUED = 256;

/**
 * MsyncError is every error the SDK reports. kind says what happened:
 *   closed, background, user_cleared, user_updated  (the app asked)
 *   server (ERROR frame), kicked (KICK frame)        code = wire code
 *   protocol, transport, timeout, token, options
 *   call (msync answered a call() itself: status 601-609, see .status and
 *   .retryable), call_lost, bad_request, rpc_unsupported
 */
export class MsyncError extends Error {
  constructor(kind, message, code = 0) {
    super(`msync: ${message}`);
    this.name = 'MsyncError';
    this.kind = kind;
    this.code = code;
  }

  /**
   * reconnect: may the client reconnect by itself after this error? Per the
   * code table (docs/protocol.md §6): below 4000 yes (1xxx, 2xxx after a new
   * token, a 3xxx refusal should never end a session but if it did the safe
   * reading is 1xxx, unassigned codes below 1000 too); 4000 and up, including
   * unassigned codes from 5000, stop.
   */
  get reconnect() {
    return this.code < 4000;
  }

  /** needsToken: must the client fetch a new token first (2xxx)? */
  get needsToken() {
    return this.code >= 2000 && this.code < 3000;
  }
}

const BIZ_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
const VERSION_RE = /^\d+(\.\d+)*$/;
const encoder = new TextEncoder();
const textDecoder = new TextDecoder();

/**
 * backoff returns the delay before retry number attempt (1-based): capped
 * exponential (min, 2min, 4min ... max) with full jitter, uniform in
 * [0, cap], so a fleet that lost the same comet does not come back at once.
 */
export function backoff(min, max, attempt, random = Math.random) {
  let d = min;
  for (let i = 1; i < attempt && d < max; i++) d *= 2;
  d = Math.min(d, max);
  return d <= 0 ? 0 : Math.floor(random() * (d + 1));
}

// sleep resolves true after ms, or false as soon as signal aborts.
function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve(false);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve(true);
    }, Math.max(0, ms));
    const onAbort = () => {
      clearTimeout(t);
      resolve(false);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

// parseChannel splits "biz/u/user", "biz/d/device" or "biz/g".
function parseChannel(ch) {
  const i = ch.indexOf('/');
  if (i <= 0) return null;
  const biz = ch.slice(0, i);
  const rest = ch.slice(i + 1);
  if (rest === 'g') return { biz, kind: 'g', owner: '' };
  if (rest.startsWith('u/') || rest.startsWith('d/')) return { biz, kind: rest[0], owner: rest.slice(2) };
  return null;
}

function validDevice(d) {
  if (typeof d !== 'string') return false;
  const n = encoder.encode(d).length;
  return n >= 1 && n <= 128 && !/[\u0000-\u001f\u007f]/.test(d);
}

/**
 * Oplog as a handler receives it. payload is the raw bytes; text decodes
 * them as UTF-8 (most apps publish JSON).
 */
class Oplog {
  constructor(biz, channel, o) {
    this.biz = biz;
    this.channel = channel;
    this.id = o.id;
    this.payload = o.payload;
    this.createdMs = o.createdMs;
    this.validUntilMs = o.validUntilMs;
  }

  get text() {
    return textDecoder.decode(this.payload);
  }
}

export class MsyncClient {
  /**
   * @param {string} url  ws:// or wss:// URL of a comet's WebSocket listener, e.g. ws://host:3102/sub
   * @param {object} options
   *   tokenProvider  async () => token of the current user. Required. Called
   *                  before the first connect, after a 2xxx code and by
   *                  updateUser; other reconnects reuse the last token.
   *   device         this installation's stable id (1-128 bytes). Required.
   *   platform       reported for platform filters; zero 'web'.
   *   appVersion     dotted numeric; zero: not reported (no oplog with a
   *                  version range is delivered).
   *   store          sync points; zero MemoryStore (lost on reload; the
   *                  server's stored points are used then). Use
   *                  LocalStorageStore to keep them.
   *   backoffMin/Max reconnect and handler-retry delays in ms; zero 500 / 30000.
   *   dialTimeout    ms for connect + AUTH handshake and token calls; zero 10000.
   *   maxFrame       largest frame accepted from the server; zero 4 MiB.
   *   handlerRetries retries of a failing oplog in place before the channel
   *                  resyncs from its point; zero 5.
   *   heartbeat      interval in ms this client would like (sent in AUTH; the
   *                  server clamps it and the client follows its answer);
   *                  zero: no preference.
   *   onPush         (push) => void for non-persistent pushes {room, biz,
   *                  payload, createdMs} (PUSH frames); zero: dropped. A push
   *                  whose biz has a registered handler goes to that handler
   *                  instead (id 0, no channel; errors are only logged:
   *                  nothing is stored, so nothing is redelivered).
   *   onEvent        (event) => void: connected, disconnected, kicked,
   *                  skipped, auth_rejected, stopped, store_error, rewound
   *                  ({biz, channel, from, to}: the point was above what
   *                  the server holds and moved back; ids above `to` will
   *                  be used again).
   *   logger         console-like {debug, info, warn, error}; zero: silent.
   *   WebSocket      constructor; zero globalThis.WebSocket (tests inject one).
   *   random         () => [0,1) for jitter; zero Math.random.
   *   compression    false: do not offer body compression (docs/protocol.md
   *                  §18). Zero: raw deflate is offered where the runtime
   *                  has DecompressionStream('deflate-raw'); the server
   *                  decides. compressionStats() counts compressed frames.
   */
  constructor(url, options = {}) {
    if (!/^wss?:\/\//.test(url ?? '')) {
      throw new MsyncError('options', `url ${JSON.stringify(url)}: want ws://host:port/sub or wss://...`);
    }
    const o = { ...DEFAULTS, ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined && v !== 0 && v !== '')) };
    if (typeof o.tokenProvider !== 'function') throw new MsyncError('options', 'tokenProvider is required');
    if (!validDevice(o.device)) throw new MsyncError('options', `device ${JSON.stringify(o.device)}: want 1-128 bytes without control characters`);
    o.platform = String(o.platform).trim().toLowerCase();
    if (o.platform.length > 32 || /[\s/]/.test(o.platform)) {
      throw new MsyncError('options', `platform ${JSON.stringify(o.platform)}: one short word like web or ios`);
    }
    if (o.appVersion !== undefined && !VERSION_RE.test(o.appVersion)) {
      throw new MsyncError('options', `appVersion ${JSON.stringify(o.appVersion)} is not dotted numeric`);
    }
    if (o.heartbeat !== undefined && (!Number.isSafeInteger(o.heartbeat) || o.heartbeat < 0 || o.heartbeat > 2 ** 31)) {
      throw new MsyncError('options', `heartbeat ${o.heartbeat}: want ms in [0, 2^31]`);
    }
    if (o.backoffMax < o.backoffMin) throw new MsyncError('options', `backoffMax ${o.backoffMax} < backoffMin ${o.backoffMin}`);
    o.store ??= new MemoryStore();
    o.WebSocket ??= globalThis.WebSocket;
    if (typeof o.WebSocket !== 'function') throw new MsyncError('options', 'no WebSocket implementation available');
    o.random ??= Math.random;
    const noop = () => {};
    o.logger ??= { debug: noop, info: noop, warn: noop, error: noop };
    this.url = url;
    this.opts = o;
    this.log = o.logger;
    this.handlers = new Map();
    this.points = new Map();
    this.state = {
      started: false, closed: false, foreground: true, userSet: true, stopped: false,
      skipBackoff: false, token: '',
    };
    this.session = null; // the running Session, if any
    this.wakeUp = null; // resolves the connection loop's wait
    this.done = null; // the loop's promise
    this.isConnected = false;
    this.calls = new CallRouter(this);
    this.zstats = { framesIn: 0, bytesInWire: 0, bytesInRaw: 0, framesOut: 0, bytesOutWire: 0, bytesOutRaw: 0 };
  }

  /**
   * compressionStats returns how many compressed frames this client got and
   * sent since it was made, with their bytes on the wire and inflated (or
   * before compressing), header included.
   */
  compressionStats() {
    return { ...this.zstats };
  }

  /** registerBiz routes biz's oplogs to handler(oplog, {signal}); call before start. */
  registerBiz(biz, handler) {
    if (!BIZ_RE.test(biz ?? '')) throw new MsyncError('options', `biz ${JSON.stringify(biz)}: 1-64 of [A-Za-z0-9_.:-]`);
    if (typeof handler !== 'function') throw new MsyncError('options', `nil handler for ${biz}`);
    if (this.state.closed) throw new MsyncError('closed', 'client closed');
    if (this.state.started) throw new MsyncError('options', 'already started');
    if (this.handlers.has(biz)) throw new MsyncError('options', `biz ${biz} registered twice`);
    this.handlers.set(biz, handler);
  }

  /** start loads the sync points and starts connecting; problems are reported as events. */
  start() {
    if (this.state.closed) throw new MsyncError('closed', 'client closed');
    if (this.state.started) throw new MsyncError('options', 'already started');
    if (this.handlers.size === 0) throw new MsyncError('options', 'no biz registered');
    for (const [ch, id] of this.opts.store.load()) this.points.set(ch, id);
    this.state.started = true;
    this.done = this.#loop();
  }

  /** close ends the connection, stops reconnecting and resolves when every loop and handler stopped. */
  async close() {
    this.state.closed = true;
    this.calls.close();
    this.session?.end(new MsyncError('closed', 'client closed'));
    this.#wake();
    if (this.done) await this.done;
  }

  /**
   * call sends a REQUEST to a service of the server's upstreams over the
   * connection (docs/protocol.md §17) and resolves with the upstream's answer
   * {status, headers, body (Uint8Array), text}. While disconnected it waits
   * for the next session. It rejects with MsyncError kind 'call' (msync's
   * own status 601-609, .status, .retryable), 'timeout' (the deadline
   * passed), 'call_lost' (the connection ended first: the upstream may have
   * run it), 'bad_request' (refused locally, nothing sent), 'rpc_unsupported'
   * or 'closed'.
   *   path     appended to the service's base URL; starts with "/"
   *   body     Uint8Array or string
   *   opts     {method ('POST'), headers ({}), timeoutMs (10000)}
   */
  call(service, path, body, opts = {}) {
    return this.calls.call(service, path, body, opts);
  }

  /** connected reports whether a session is authenticated right now. */
  get connected() {
    return this.isConnected;
  }

  /** background closes the connection until foreground (e.g. page hidden for long). */
  background() {
    this.state.foreground = false;
    this.session?.end(new MsyncError('background', 'in background'));
    this.#wake();
  }

  /** foreground resumes connecting, immediately (no backoff wait). */
  foreground() {
    this.state.foreground = true;
    this.state.skipBackoff = true;
    this.#wake();
  }

  /** updateUser fetches a token now and reconnects with it (login, user switch, after a 4xxx stop). */
  async updateUser() {
    if (this.state.closed) throw new MsyncError('closed', 'client closed');
    let tok;
    try {
      tok = await this.opts.tokenProvider();
    } catch (e) {
      throw new MsyncError('token', `token provider failed: ${e?.message ?? e}`);
    }
    Object.assign(this.state, { token: tok, userSet: true, stopped: false, skipBackoff: true });
    this.session?.end(new MsyncError('user_updated', 'user updated'));
    this.#wake();
  }

  /** clearUser disconnects until updateUser (logout). Sync points are kept. */
  clearUser() {
    Object.assign(this.state, { userSet: false, token: '' });
    this.session?.end(new MsyncError('user_cleared', 'user cleared'));
    this.#wake();
  }

  /** syncPoint returns the highest id of channel the app has processed (0 if none). */
  syncPoint(channel) {
    return this.points.get(channel) ?? 0;
  }

  // ---- internals (used by Session and Worker) ----

  emit(e) {
    try {
      this.opts.onEvent?.(e);
    } catch (err) {
      this.log.error('msync: onEvent threw', err);
    }
  }

  // rewind moves channel's point back to id and saves it: the server holds
  // nothing above id (a rewind page, docs/protocol.md §8).
  rewind(channel, id) {
    this.points.set(channel, id);
    try {
      this.opts.store.save(channel, id);
    } catch (err) {
      this.log.error('msync: save sync point', channel, id, err);
      this.emit({ kind: 'store_error', channel, error: err });
    }
  }

  // advance moves channel's point to id (never backwards) and saves it.
  advance(channel, id) {
    const cur = this.points.get(channel);
    if (cur !== undefined && cur >= id) return;
    this.points.set(channel, id);
    try {
      this.opts.store.save(channel, id);
    } catch (err) {
      // The in-memory point still advances, so this page never hands the
      // oplog to the app again; only a reload might (at-least-once, never a
      // loss). Stalling delivery on a full storage quota would be worse.
      this.log.error('msync: save sync point', channel, id, err);
      this.emit({ kind: 'store_error', channel, error: err });
    }
  }

  authMessage(token) {
    const m = {
      token, device: this.opts.device, platform: this.opts.platform, appVersion: this.opts.appVersion ?? '',
      bizs: [...this.handlers.keys()].sort(), points: [], heartbeatMs: this.opts.heartbeat ?? 0,
      compression: this.offersCompression() ? [COMPRESSION_DEFLATE] : [],
    };
    for (const [ch, id] of this.points) {
      const p = parseChannel(ch);
      if (!p || !this.handlers.has(p.biz) || (p.kind === 'd' && p.owner !== this.opts.device)) continue;
      m.points.push({ channel: ch, id });
    }
    m.points.sort((a, b) => (a.channel < b.channel ? -1 : a.channel > b.channel ? 1 : 0));
    // The server refuses frames over 64 KiB. Dropping points is safe: those
    // channels start from the server's stored point, and anything at or
    // below the local point is dropped here as a duplicate.
    let body = encodeAuth(m);
    while (m.points.length > 0 && HEADER_SIZE + body.length > MAX_CLIENT_FRAME) {
      m.points = m.points.slice(0, Math.floor(m.points.length / 2));
      body = encodeAuth(m);
    }
    return body;
  }

  offersCompression() {
    return this.opts.compression !== false && compressionSupported();
  }

  #wake() {
    const w = this.wakeUp;
    this.wakeUp = null;
    w?.();
  }

  #runnable() {
    const s = this.state;
    return !s.closed && s.foreground && s.userSet && !s.stopped;
  }

  // waitRunnable waits until connecting is allowed and retry ms elapsed
  // (foreground/updateUser cut the wait short). False once closed.
  async #waitRunnable(retry) {
    let due = retry > 0 ? Date.now() + retry : 0;
    for (;;) {
      if (this.state.closed) return false;
      if (this.state.skipBackoff) {
        this.state.skipBackoff = false;
        due = 0;
      }
      const left = due - Date.now();
      if (this.#runnable() && left <= 0) return true;
      let timer;
      await new Promise((resolve) => {
        this.wakeUp = resolve;
        if (this.#runnable() && left > 0) timer = setTimeout(resolve, left);
      });
      clearTimeout(timer); // woken early: no timer may outlive the wait
      this.wakeUp = null;
    }
  }

  async #loop() {
    let retry = 0;
    let failures = 0;
    for (;;) {
      if (!(await this.#waitRunnable(retry))) return;
      const session = new Session(this);
      this.session = session;
      let err;
      try {
        await session.run(await this.#token(session));
      } catch (e) {
        err = e;
      }
      err = session.cause ?? err;
      session.end(err); // token failures end the session here
      const up = session.upSince ? Date.now() - session.upSince : 0;
      await session.stopped();
      this.session = null;
      this.isConnected = false;
      if (this.state.closed) {
        this.emit({ kind: 'disconnected', error: new MsyncError('closed', 'client closed'), retryIn: 0 });
        return;
      }
      [retry, failures] = this.#afterSession(err, up, failures);
    }
  }

  async #token(session) {
    if (this.state.token) return this.state.token;
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new MsyncError('timeout', 'token provider timed out')), this.opts.dialTimeout);
    });
    try {
      const tok = await Promise.race([this.opts.tokenProvider(), timeout, session.endedPromise]);
      if (typeof tok !== 'string' || tok === '') throw new Error('empty token');
      // Do not overwrite a token that updateUser/clearUser set meanwhile;
      // that call also ended this session.
      if (!session.cause) this.state.token = tok;
      return tok;
    } catch (e) {
      if (session.cause) throw session.cause;
      if (e instanceof MsyncError) throw e;
      throw new MsyncError('token', `token provider failed: ${e?.message ?? e}`);
    } finally {
      clearTimeout(timer);
    }
  }

  // afterSession classifies why a session ended, reports it and returns
  // [delay before the next attempt, updated failure count].
  #afterSession(err, up, failures) {
    if (!(err instanceof MsyncError)) err = new MsyncError('transport', String(err?.message ?? err));
    if (['background', 'user_cleared', 'user_updated'].includes(err.kind)) {
      this.emit({ kind: 'disconnected', error: err, retryIn: 0 });
      return [0, 0];
    }
    if (err.code) {
      if (!err.reconnect) {
        this.state.stopped = true;
        this.log.error('msync: server refused the session; not reconnecting until updateUser', err.code, err.message);
        this.emit({ kind: 'disconnected', error: err, retryIn: 0 });
        this.emit({ kind: 'stopped', error: err, code: err.code });
        return [0, 0];
      }
      if (err.needsToken) this.state.token = '';
    }
    // A session that stayed up for a while resets the backoff; one that
    // keeps failing right after AUTH (two tabs sharing a device id
    // replacing each other) keeps growing it.
    if (up >= this.opts.backoffMax) failures = 0;
    failures++;
    const retry = backoff(this.opts.backoffMin, this.opts.backoffMax, failures, this.opts.random);
    this.log.warn('msync: disconnected', err.message, 'retry in', retry);
    this.emit({ kind: 'disconnected', error: err, retryIn: retry });
    return [retry, failures];
  }
}

// Session is one WebSocket connection: handshake, frames in, heartbeats,
// one Worker per channel. end(cause) stops all of it; stopped() resolves once
// the workers' handlers returned.
class Session {
  constructor(client) {
    this.c = client;
    this.log = client.log;
    this.abort = new AbortController();
    this.signal = this.abort.signal;
    this.cause = null;
    this.upSince = 0; // when AUTH_REPLY arrived, 0 before
    this.seq = 0;
    this.workers = new Map();
    this.ws = null;
    this.interval = DEFAULT_HEARTBEAT;
    this.hbTimer = null;
    this.readTimer = null;
    this.endedPromise = new Promise((_, reject) => { this.rejectEnded = reject; });
    this.endedPromise.catch(() => {}); // observed through cause
  }

  // end records the first cause and tears the connection down. Idempotent.
  end(cause) {
    if (this.cause) return;
    this.cause = cause;
    clearTimeout(this.hbTimer);
    clearTimeout(this.readTimer);
    this.abort.abort(cause);
    this.c.calls.detach(this);
    if (this.ws) {
      this.ws.onmessage = null;
      try {
        this.ws.close();
      } catch {
        // already closed
      }
    }
    this.rejectEnded(cause);
  }

  async stopped() {
    await Promise.all([...this.workers.values()].map((w) => w.done).concat(this.volatile ?? []));
  }

  // run connects, authenticates and serves until the session ends; it
  // always rejects, with why it ended.
  async run(token) {
    const c = this.c;
    const ws = new c.opts.WebSocket(c.url);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    let authSeq = 0;
    const handshake = new Promise((resolve, reject) => {
      this.endedPromise.catch(reject);
      const timer = setTimeout(() => this.end(new MsyncError('timeout', `no AUTH_REPLY within ${c.opts.dialTimeout} ms`)), c.opts.dialTimeout);
      this.signal.addEventListener('abort', () => clearTimeout(timer), { once: true });
      ws.onopen = () => {
        authSeq = this.nextSeq();
        this.write(encodeFrame(Op.AUTH, authSeq, c.authMessage(token)));
      };
      ws.onerror = () => {}; // a close event always follows with the details
      ws.onclose = (ev) => {
        this.end(new MsyncError('transport', `connection closed (code ${ev?.code ?? 0}${ev?.reason ? `, ${ev.reason}` : ''})`));
      };
      ws.onmessage = (ev) => {
        let frames;
        try {
          frames = decodeFrames(new Uint8Array(ev.data), c.opts.maxFrame);
        } catch (e) {
          this.end(new MsyncError('protocol', e.message));
          return;
        }
        for (const f of frames) {
          if (this.cause) return;
          if (this.upSince === 0) {
            switch (f.op) {
              case Op.AUTH_REPLY:
                if (f.seq !== authSeq) {
                  this.end(new MsyncError('protocol', `AUTH_REPLY seq ${f.seq}, sent AUTH seq ${authSeq}`));
                  return;
                }
                try {
                  const r = decodeAuthReply(f.body);
                  clearTimeout(timer);
                  this.upSince = Date.now();
                  this.setup(r);
                  resolve();
                } catch (e) {
                  this.end(new MsyncError('protocol', `AUTH_REPLY: ${e.message}`));
                  return;
                }
                break;
              case Op.ERROR:
              case Op.KICK:
                this.end(this.serverClosed(f));
                return;
              case Op.HEARTBEAT_REPLY:
              case Op.PUSH:
                break; // harmless before AUTH_REPLY
              default:
                this.end(new MsyncError('protocol', `${opName(f.op)} before AUTH_REPLY`));
                return;
            }
            continue;
          }
          this.deliver(f);
        }
      };
    });
    await handshake;
    await this.endedPromise.catch(() => {});
    throw this.cause;
  }

  nextSeq() {
    this.seq = (this.seq + 1) >>> 0 || 1;
    return this.seq;
  }

  write(frame) {
    const ws = this.ws;
    if (this.cause || !ws) return false;
    if (ws.readyState !== 1 /* OPEN */) {
      this.end(new MsyncError('transport', 'write on a closed connection'));
      return false;
    }
    if (ws.bufferedAmount > MAX_BUFFERED) {
      this.end(new MsyncError('transport', `send buffer over ${MAX_BUFFERED} bytes: connection not draining`));
      return false;
    }
    try {
      ws.send(frame);
      return true;
    } catch (e) {
      this.end(new MsyncError('transport', `write: ${e?.message ?? e}`));
      return false;
    }
  }

  send(op, body) {
    return this.write(encodeFrame(op, this.nextSeq(), body));
  }

  // sendCompressible sends REQUEST bodies of COMPRESS_MIN_BYTES and more
  // compressed when the session negotiated it (compression is async; a
  // REQUEST has no ordering relation to other frames, §17).
  sendCompressible(op, body) {
    if (!this.compress || body.length < COMPRESS_MIN_BYTES) return this.send(op, body);
    deflateRaw(body).then((z) => {
      if (this.cause) return;
      const st = this.c.zstats;
      if (z.length >= body.length) {
        this.send(op, body);
        return;
      }
      st.framesOut++;
      st.bytesOutWire += HEADER_SIZE + z.length;
      st.bytesOutRaw += HEADER_SIZE + body.length;
      this.write(encodeFrame(op + FLAG_COMPRESSED, this.nextSeq(), z));
    }, (e) => this.end(new MsyncError('protocol', `compress ${opName(op)}: ${e?.message ?? e}`)));
    return true;
  }

  // deliver hands frames to onFrame in arrival order. A compressed frame is
  // inflated first (async, bounded by maxFrame); frames after it wait for it
  // in a chain, plain frames with nothing pending go through at once.
  deliver(f) {
    if (!f.compressed && !this.inbox) {
      this.onFrame(f);
      return;
    }
    const p = (this.inbox ?? Promise.resolve()).then(async () => {
      if (this.cause) return;
      let g = f;
      if (f.compressed) {
        if (!this.compress) throw new Error(`compressed ${opName(f.op)} without negotiated compression`);
        const body = await inflateRaw(f.body, this.c.opts.maxFrame - HEADER_SIZE);
        const st = this.c.zstats;
        st.framesIn++;
        st.bytesInWire += HEADER_SIZE + f.body.length;
        st.bytesInRaw += HEADER_SIZE + body.length;
        g = { op: f.op, seq: f.seq, body, compressed: false };
      }
      if (!this.cause) this.onFrame(g);
    }).catch((e) => this.end(new MsyncError('protocol', `${opName(f.op)}: ${e?.message ?? e}`)));
    this.inbox = p;
    p.then(() => { if (this.inbox === p) this.inbox = null; });
  }

  setup(r) {
    const c = this.c;
    this.compress = r.compression === COMPRESSION_DEFLATE && c.offersCompression();
    this.setHeartbeat(r.heartbeatMs);
    for (const ch of r.channels) {
      const h = c.handlers.get(ch.biz);
      if (!h || this.workers.has(ch.channel)) {
        this.log.warn('msync: AUTH_REPLY names a channel of an unregistered biz; ignored', ch.biz, ch.channel);
        continue;
      }
      // A channel without a local point starts where the server starts it,
      // so the first page (after = from) is not a gap. from == 0 records
      // nothing: the next AUTH still sends no point for it.
      if (!c.points.has(ch.channel) && ch.from > 0) c.advance(ch.channel, ch.from);
      this.workers.set(ch.channel, new Worker(this, ch.biz, ch.channel, h));
    }
    c.isConnected = true;
    this.log.info('msync: connected', r.user, r.session, 'channels', this.workers.size, 'heartbeat', this.interval);
    c.emit({ kind: 'connected', user: r.user, session: r.session, channels: r.channels });
    if (r.rejected.length > 0) {
      this.log.warn('msync: server rejected bizs', r.rejected);
      c.emit({ kind: 'auth_rejected', rejected: r.rejected });
    }
    for (const w of this.workers.values()) w.start();
    this.armRead();
    this.armHeartbeat();
    c.calls.attach(this, r.maxRequests);
  }

  setHeartbeat(ms) {
    this.interval = Math.min(Math.max(ms || DEFAULT_HEARTBEAT, MIN_HEARTBEAT), MAX_HEARTBEAT);
  }

  // armHeartbeat schedules the next HEARTBEAT one interval from now; a
  // HEARTBEAT_REPLY with a new interval re-arms it with that interval.
  armHeartbeat() {
    clearTimeout(this.hbTimer);
    if (this.cause) return;
    this.hbTimer = setTimeout(() => {
      if (this.send(Op.HEARTBEAT, encodeHeartbeat())) this.armHeartbeat();
    }, this.interval);
  }

  armRead() {
    clearTimeout(this.readTimer);
    if (this.cause) return;
    const limit = 2 * this.interval + READ_GRACE;
    this.readTimer = setTimeout(() => this.end(new MsyncError('timeout', `nothing from the server for ${limit} ms`)), limit);
  }

  onFrame(f) {
    this.armRead();
    try {
      switch (f.op) {
        case Op.SYNC:
          for (const p of decodeSync(f.body).pages) {
            const w = this.workers.get(p.channel);
            if (!w) {
              this.log.warn('msync: page for a channel not in this session; ignored', p.channel);
              continue;
            }
            w.enqueue(p);
          }
          break;
        case Op.HEARTBEAT_REPLY: {
          const m = decodeHeartbeatReply(f.body);
          if (m.intervalMs > 0) {
            const before = this.interval;
            this.setHeartbeat(m.intervalMs);
            if (this.interval !== before) this.armHeartbeat();
          }
          break;
        }
        case Op.ERROR:
        case Op.KICK:
          this.end(this.serverClosed(f));
          break;
        case Op.PUSH:
          this.onPush(decodePush(f.body));
          break;
        case Op.RESPONSE:
          this.c.calls.onResponse(this, decodeResponse(f.body));
          break;
        default:
          // ROOM_REPLY and ops of later versions: ignoring them keeps old
          // pages working with newer servers.
          this.log.debug('msync: ignored frame', opName(f.op), f.body.length);
      }
    } catch (e) {
      this.end(new MsyncError('protocol', `${opName(f.op)}: ${e.message}`));
    }
  }

  onPush(m) {
    const h = m.biz ? this.c.handlers.get(m.biz) : undefined;
    if (!h) {
      if (!m.biz) this.c.opts.onPush?.(m);
      return; // a non-persistent oplog of a biz this client did not register
    }
    if (this.volatileQueued >= MAX_VOLATILE_QUEUED) {
      this.log.warn('msync: non-persistent oplog dropped: handlers too slow', m.biz);
      return;
    }
    this.volatileQueued = (this.volatileQueued ?? 0) + 1;
    const o = new Oplog(m.biz, '', { id: 0, payload: m.payload, createdMs: m.createdMs, validUntilMs: 0 });
    // One at a time, in arrival order, like a channel worker; stopped()
    // waits for the chain.
    this.volatile = (this.volatile ?? Promise.resolve()).then(async () => {
      this.volatileQueued--;
      if (this.signal.aborted) return;
      try {
        await h(o, { signal: this.signal });
      } catch (err) {
        this.log.warn('msync: handler failed on a non-persistent oplog; it is not redelivered', m.biz, err);
      }
    });
  }

  serverClosed(f) {
    try {
      if (f.op === Op.KICK) {
        const k = decodeKick(f.body);
        this.log.warn('msync: kicked', k.code, k.reason);
        this.c.emit({ kind: 'kicked', code: k.code, reason: k.reason });
        return new MsyncError('kicked', `kicked ${k.code}: ${k.reason}`, k.code);
      }
      const e = decodeError(f.body);
      return new MsyncError('server', `server error ${e.code}: ${e.message}`, e.code);
    } catch (e) {
      return new MsyncError('protocol', `${opName(f.op)}: ${e.message}`);
    }
  }
}

// pageBytes approximates a page's memory for the queue bound.
function pageBytes(p) {
  let n = 64 + p.channel.length;
  for (const o of p.oplogs) n += 48 + o.payload.length;
  return n;
}

// Worker runs one channel's handler for one session: pages one at a time in
// arrival order, so a channel's handlers never overlap and see ids in order.
class Worker {
  constructor(session, biz, channel, handler) {
    this.s = session;
    this.c = session.c;
    this.biz = biz;
    this.channel = channel;
    this.handler = handler;
    this.queue = [];
    this.bytes = 0;
    this.overflow = false;
    this.wakeUp = null;
    this.lastReqPoint = -1;
    this.lastReqAt = 0;
    this.failures = 0;
    this.done = Promise.resolve();
  }

  start() {
    this.done = this.run().catch((e) => {
      this.s.end(new MsyncError('protocol', `worker ${this.channel}: ${e?.message ?? e}`));
    });
  }

  // enqueue is called from the WebSocket callback; it never waits.
  enqueue(p) {
    const size = pageBytes(p);
    if (this.queue.length >= MAX_QUEUED_PAGES || (this.queue.length > 0 && this.bytes + size > MAX_QUEUED_BYTES)) {
      if (!this.overflow) this.c.log.warn('msync: handler too slow, dropping pages; will resync', this.channel);
      this.overflow = true;
    } else {
      this.queue.push(p);
      this.bytes += size;
    }
    this.wake();
  }

  wake() {
    const w = this.wakeUp;
    this.wakeUp = null;
    w?.();
  }

  dropQueued() {
    this.queue = [];
    this.bytes = 0;
    this.overflow = false;
  }

  point() {
    return this.c.points.get(this.channel) ?? 0;
  }

  async run() {
    const signal = this.s.signal;
    const onAbort = () => this.wake();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      while (!signal.aborted) {
        if (this.queue.length > 0) {
          const p = this.queue.shift();
          this.bytes -= pageBytes(p);
          await this.process(p, signal);
          continue;
        }
        if (this.overflow) {
          this.overflow = false;
          this.requestSync(this.point(), false);
          continue;
        }
        await new Promise((resolve) => { this.wakeUp = resolve; });
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  // process applies one page with the client rules of docs/protocol.md §8.
  async process(p, signal) {
    let point = this.point();
    if (p.upto < p.after) {
      // Rewind: our point is above everything the server holds for the
      // channel (its store was reset, or the point came from elsewhere);
      // adopt upto, or every new oplog would look like a duplicate.
      if (p.after === point) {
        this.c.log.warn('msync: sync point ahead of the server; rewinding', this.channel, point, '->', p.upto);
        this.c.rewind(this.channel, p.upto);
        this.c.emit({ kind: 'rewound', biz: this.biz, channel: this.channel, from: point, to: p.upto });
        this.s.send(Op.ACK, encodePoints({ points: [{ channel: this.channel, id: p.upto }] }));
      }
      return;
    }
    if (p.after > point) {
      this.c.log.debug('msync: gap', this.channel, 'point', point, 'after', p.after);
      this.requestSync(point, false);
      return;
    }
    if (p.skipped > 0 && p.upto > point) {
      this.c.emit({ kind: 'skipped', biz: this.biz, channel: this.channel, count: p.skipped });
    }
    for (let i = 0; i < p.oplogs.length; i++) {
      const op = p.oplogs[i];
      if (op.id <= point) continue; // duplicate: never to the app
      if (op.id > p.upto) {
        this.c.log.warn('msync: oplog beyond its page; ignored', op.id, p.upto);
        break;
      }
      const err = await this.deliver(op, signal);
      if (signal.aborted) return; // the next session resyncs from point
      if (err) {
        await this.giveUp(p, point, op.id, err, signal);
        return;
      }
      point = op.id;
      // The last listed oplog and the filtered ids after it up to upto are
      // saved in one write.
      if (i === p.oplogs.length - 1 && p.upto > point) point = p.upto;
      this.c.advance(this.channel, point);
    }
    if (p.upto > point) {
      point = p.upto;
      this.c.advance(this.channel, point);
    }
    this.failures = 0;
    // ACK upto, not the local point: the server refuses an ACK beyond what
    // this session sent (4005), and upto releases the next backlog page.
    this.s.send(Op.ACK, encodePoints({ points: [{ channel: this.channel, id: p.upto }] }));
  }

  // deliver calls the handler, retrying in place with backoff; it returns
  // the last error, or null on success.
  async deliver(op, signal) {
    const o = new Oplog(this.biz, this.channel, op);
    const { backoffMin, backoffMax, handlerRetries, random } = this.c.opts;
    for (let attempt = 0; ; attempt++) {
      try {
        await this.handler(o, { signal });
        return null;
      } catch (err) {
        if (signal.aborted) return err;
        this.c.log.warn('msync: handler failed', this.channel, op.id, 'attempt', attempt + 1, err);
        if (attempt >= handlerRetries) return err;
        if (!(await sleep(backoff(backoffMin, backoffMax, attempt + 1, random), signal))) return err;
      }
    }
  }

  // giveUp: retries exhausted. Acknowledge what succeeded, drop the page and
  // what queued behind it, wait, and ask the server to resend from the
  // point: the failed oplog comes again, so it is retried forever, never
  // skipped.
  async giveUp(p, point, failed, err, signal) {
    this.c.log.error('msync: handler keeps failing; resyncing the channel', this.channel, failed, err);
    if (point > p.after) this.s.send(Op.ACK, encodePoints({ points: [{ channel: this.channel, id: point }] }));
    this.failures++;
    this.dropQueued();
    const { backoffMin, backoffMax, random } = this.c.opts;
    if (!(await sleep(backoff(backoffMin, backoffMax, this.failures, random), signal))) return;
    this.dropQueued(); // pages that arrived meanwhile are stale
    this.requestSync(point, true);
  }

  requestSync(point, force) {
    const now = Date.now();
    if (!force && point === this.lastReqPoint && now - this.lastReqAt < RESYNC_QUIET) return;
    this.lastReqPoint = point;
    this.lastReqAt = now;
    this.s.send(Op.SYNC_REQ, encodePoints({ points: [{ channel: this.channel, id: point }] }));
  }
}

// ---- RPC over the connection (docs/protocol.md §17) ----

export const DEFAULT_CALL_TIMEOUT = 10_000;
const CALL_METHODS = new Set(['', 'GET', 'POST', 'PUT', 'PATCH', 'DELETE']);
const HOP_HEADERS = new Set(['connection', 'content-length', 'host', 'keep-alive', 'proxy-authorization',
  'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings']);
const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}$/;
const SERVICE_RE = /^[A-Za-z0-9_.-]{1,64}$/;

// checkRequest mirrors pkg/protocol.CheckRequest: what the server answers 608.
export function checkRequest(m) {
  if (!CALL_METHODS.has(m.method)) return `method ${m.method}: want GET, POST, PUT, PATCH or DELETE`;
  const p = m.path;
  if (typeof p !== 'string' || p[0] !== '/' || encoder.encode(p).length > 2048) return 'path: must start with / and be at most 2048 bytes';
  const route = p.split('?', 1)[0];
  if (route.includes('..') || route.includes('//') || /[\\#]/.test(p)) return `path ${p}: no '..', '//', '\\' or '#'`;
  if (/[\x00-\x20\x7f]/.test(p)) return 'path: control character or space';
  const hs = Object.entries(m.headers ?? {});
  if (hs.length > 16) return `headers: ${hs.length}, at most 16`;
  for (const [k, v] of hs) {
    if (!TOKEN_RE.test(k)) return `header name ${k}: want an HTTP token of at most 64 bytes`;
    if (HOP_HEADERS.has(k.toLowerCase())) return `header ${k}: a hop-by-hop header cannot be set`;
    if (typeof v !== 'string' || encoder.encode(v).length > 1024 || /[\r\n\0]/.test(v)) return `header ${k}: value over 1024 bytes or with CR, LF or NUL`;
  }
  return '';
}

// CallRouter sends calls on the current session, at most its max_requests
// in flight (a slot is held until the server answers, also after the caller
// gave up: the server counts it until then), queues the rest, and matches
// RESPONSE frames to callers by id, in any order.
class CallRouter {
  constructor(client) {
    this.c = client;
    this.s = null; // the authenticated session
    this.max = 0;
    this.nextId = 0;
    this.pending = new Map(); // id -> job, in flight on this.s
    this.queue = []; // jobs waiting for a session or a slot
  }

  call(service, path, body, opts) {
    const m = { service, method: opts.method ?? '', path, headers: opts.headers ?? {}, body: typeof body === 'string' ? encoder.encode(body) : (body ?? new Uint8Array(0)) };
    const bad = !SERVICE_RE.test(service ?? '') ? `service ${JSON.stringify(service)}: want 1-64 of [A-Za-z0-9_.-]` : checkRequest(m);
    if (bad) return Promise.reject(new MsyncError('bad_request', bad));
    if (m.body.length + 1024 > MAX_CLIENT_FRAME) return Promise.reject(new MsyncError('bad_request', `body of ${m.body.length} bytes does not fit a frame`));
    if (this.c.state.closed) return Promise.reject(new MsyncError('closed', 'client closed'));
    const timeoutMs = opts.timeoutMs || DEFAULT_CALL_TIMEOUT;
    return new Promise((resolve, reject) => {
      const job = { m, deadline: Date.now() + timeoutMs, resolve, reject, done: false };
      job.timer = setTimeout(() => {
        const i = this.queue.indexOf(job);
        if (i >= 0) this.queue.splice(i, 1);
        this.finish(job, null, new MsyncError('timeout', `no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.queue.push(job);
      this.pump();
    });
  }

  finish(job, value, err) {
    if (job.done) return;
    job.done = true;
    clearTimeout(job.timer);
    if (err) job.reject(err);
    else job.resolve(value);
  }

  attach(s, max) {
    this.s = s;
    this.max = max;
    this.pending = new Map();
    this.pump();
  }

  detach(s) {
    if (this.s !== s) return;
    this.s = null;
    for (const job of this.pending.values()) this.finish(job, null, new MsyncError('call_lost', 'connection lost before the answer'));
    this.pending.clear();
  }

  close() {
    for (const job of this.queue.splice(0)) this.finish(job, null, new MsyncError('closed', 'client closed'));
  }

  pump() {
    const s = this.s;
    if (!s) return;
    if (this.max === 0) {
      for (const job of this.queue.splice(0)) this.finish(job, null, new MsyncError('rpc_unsupported', 'server does not serve RPC'));
      return;
    }
    while (this.pending.size < this.max && this.queue.length > 0) {
      const job = this.queue.shift();
      if (job.done) continue;
      let id;
      do { id = this.nextId = (this.nextId + 1) >>> 0; } while (id === 0 || this.pending.has(id));
      this.pending.set(id, job);
      const timeoutMs = Math.max(1, job.deadline - Date.now());
      if (!s.sendCompressible(Op.REQUEST, encodeRequest({ ...job.m, id, timeoutMs }))) return; // the session ended: detach failed it
    }
  }

  onResponse(s, r) {
    if (this.s !== s) return;
    const job = this.pending.get(r.id);
    if (!job) {
      this.c.log.warn('msync: RESPONSE for no request in flight; ignored', r.id);
      return;
    }
    this.pending.delete(r.id);
    if (r.status >= 100 && r.status < 600) {
      const body = r.body;
      this.finish(job, { status: r.status, headers: r.headers, body, get text() { return textDecoder.decode(body); } });
    } else {
      const e = new MsyncError('call', `call refused: status ${r.status}: ${textDecoder.decode(r.body)}`);
      e.status = r.status;
      e.retryable = [602, 603, 604, 605, 609].includes(r.status);
      this.finish(job, null, e);
    }
    this.pump();
  }
}
