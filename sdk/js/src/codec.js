// msync wire codec: the 16-byte frame header and the protobuf bodies of
// docs/protocol.md, encoded by hand. Only the few messages of wire.proto are
// needed, so a ~300-line codec replaces a protobuf runtime (and its 100 KB).
//
// Integers: ids and times are JavaScript numbers. Oplog ids are dense per
// channel starting at 1, and times are unix milliseconds, so both stay far
// below Number.MAX_SAFE_INTEGER (2^53 - 1); a larger value on the wire is
// refused with a CodecError rather than silently rounded (a rounded id would
// break the duplicate and gap rules).

/** Header length written by protocol version 1. */
export const HEADER_SIZE = 16;
/** Protocol version this codec writes and accepts. */
export const VERSION = 1;
/** Largest frame a server accepts from a client (64 KiB, header included). */
export const MAX_CLIENT_FRAME = 64 << 10;
/** Default bound for frames read from the server (same as the Go SDK). */
export const DEFAULT_MAX_FRAME = 4 << 20;

/** Frame operations (docs/protocol.md §4). */
export const Op = Object.freeze({
  AUTH: 1,
  AUTH_REPLY: 2,
  HEARTBEAT: 3,
  HEARTBEAT_REPLY: 4,
  ACK: 5,
  SYNC: 6,
  SYNC_REQ: 7,
  PUSH: 8,
  ROOM_JOIN: 9,
  KICK: 10,
  ROOM_LEAVE: 11,
  ROOM_REPLY: 12,
  ERROR: 14,
  REQUEST: 15,
  RESPONSE: 16,
});

const opNames = new Map(Object.entries(Op).map(([k, v]) => [v, k]));

/** opName returns the protocol name of op, or OP(n) for an unknown one. */
export function opName(op) {
  return opNames.get(op) ?? `OP(${op})`;
}

/** CodecError is thrown for bytes that are not a valid frame or body. */
export class CodecError extends Error {
  constructor(message) {
    super(`msync codec: ${message}`);
    this.name = 'CodecError';
  }
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder('utf-8', { fatal: true });

// ---- writer ----

class Writer {
  constructor() {
    this.buf = new Uint8Array(64);
    this.len = 0;
  }

  ensure(n) {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const b = new Uint8Array(size);
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
  }

  byte(b) {
    this.ensure(1);
    this.buf[this.len++] = b;
  }

  bytes(b) {
    this.ensure(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  // varint writes a non-negative safe integer as a base-128 varint.
  varint(v) {
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new CodecError(`varint ${v}: want a non-negative safe integer`);
    }
    // Numbers above 2^31 cannot use bit operators; divide instead.
    while (v >= 0x80) {
      this.byte((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    this.byte(v);
  }

  tag(field, wireType) {
    this.varint(field * 8 + wireType);
  }

  // The field writers below skip proto3 defaults (0, "", empty), exactly as
  // the Go marshaller does, so encoded frames are byte-identical to Go's.
  uintField(field, v) {
    if (!v) return;
    this.tag(field, 0);
    this.varint(v);
  }

  stringField(field, s) {
    if (!s) return;
    this.bytesField(field, textEncoder.encode(s));
  }

  bytesField(field, b) {
    if (!b || b.length === 0) return;
    this.tag(field, 2);
    this.varint(b.length);
    this.bytes(b);
  }

  // messageField writes a nested message, even when it is empty (a present
  // element of a repeated field must be written).
  messageField(field, encode) {
    const w = new Writer();
    encode(w);
    this.tag(field, 2);
    this.varint(w.len);
    this.bytes(w.finish());
  }

  finish() {
    return this.buf.slice(0, this.len);
  }
}

// ---- reader ----

class Reader {
  constructor(buf) {
    this.buf = buf;
    this.pos = 0;
  }

  done() {
    return this.pos >= this.buf.length;
  }

  // varint reads a base-128 varint of up to 10 bytes. It returns a number;
  // values above 2^53 - 1 throw unless signed64 is set, in which case the
  // 64-bit two's complement is applied first (int64 fields).
  varint(signed64 = false) {
    let lo = 0; // bits 0..27, exact in a number
    let hi = 0n; // bits 28..63
    let shift = 0;
    for (let i = 0; ; i++) {
      if (this.pos >= this.buf.length) throw new CodecError('truncated varint');
      if (i >= 10) throw new CodecError('varint longer than 10 bytes');
      const b = this.buf[this.pos++];
      if (shift < 28) {
        lo += (b & 0x7f) * 2 ** shift;
      } else {
        hi |= BigInt(b & 0x7f) << BigInt(shift - 28);
      }
      shift += 7;
      if ((b & 0x80) === 0) break;
    }
    if (hi === 0n) return lo;
    let v = (hi << 28n) | BigInt(lo);
    v = BigInt.asUintN(64, v);
    if (signed64) v = BigInt.asIntN(64, v);
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw new CodecError(`integer ${v} beyond Number.MAX_SAFE_INTEGER`);
    }
    return Number(v);
  }

  lengthDelimited() {
    const n = this.varint();
    if (n > this.buf.length - this.pos) throw new CodecError('truncated length-delimited field');
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  string() {
    try {
      return textDecoder.decode(this.lengthDelimited());
    } catch (e) {
      if (e instanceof CodecError) throw e;
      throw new CodecError('string field is not UTF-8');
    }
  }

  // skip skips a field of an unknown number (forward compatibility).
  skip(wireType) {
    switch (wireType) {
      case 0:
        this.varint(true);
        return;
      case 1:
        this.advance(8);
        return;
      case 2:
        this.lengthDelimited();
        return;
      case 5:
        this.advance(4);
        return;
    }
    throw new CodecError(`unsupported wire type ${wireType}`);
  }

  advance(n) {
    if (n > this.buf.length - this.pos) throw new CodecError('truncated fixed field');
    this.pos += n;
  }
}

// decodeMessage walks the fields of buf and calls fields[number](reader,
// wireType) for known numbers; unknown fields are skipped. A known field
// with the wrong wire type is an error (it would be misparsed otherwise).
function decodeMessage(buf, target, fields) {
  const r = new Reader(buf);
  while (!r.done()) {
    const key = r.varint();
    const field = Math.floor(key / 8);
    const wireType = key % 8;
    if (field === 0) throw new CodecError('field number 0');
    const f = fields[field];
    if (!f) {
      r.skip(wireType);
      continue;
    }
    if (wireType !== f[0]) {
      throw new CodecError(`field ${field}: wire type ${wireType}, want ${f[0]}`);
    }
    f[1](r, target);
  }
  return target;
}

// Field decoders: [wire type, apply(reader, target)].
const u = (name) => [0, (r, t) => { t[name] = r.varint(); }];
const i64 = (name) => [0, (r, t) => { t[name] = r.varint(true); }];
const bool = (name) => [0, (r, t) => { t[name] = r.varint(true) !== 0; }];
const str = (name) => [2, (r, t) => { t[name] = r.string(); }];
const bin = (name) => [2, (r, t) => { t[name] = r.lengthDelimited().slice(); }];
const strList = (name) => [2, (r, t) => { t[name].push(r.string()); }];
const msgList = (name, decode) => [2, (r, t) => { t[name].push(decode(r.lengthDelimited())); }];

// ---- bodies (wire.proto) ----

function writePoint(w, p) {
  w.stringField(1, p.channel);
  w.uintField(2, p.id);
}

function decodePoint(b) {
  return decodeMessage(b, { channel: '', id: 0 }, { 1: str('channel'), 2: u('id') });
}

/** encodeAuth encodes Auth{token, device, platform, appVersion, bizs, points, heartbeatMs}. */
export function encodeAuth(m) {
  const w = new Writer();
  w.stringField(1, m.token);
  w.stringField(2, m.device);
  w.stringField(3, m.platform);
  w.stringField(4, m.appVersion);
  for (const b of m.bizs ?? []) {
    w.tag(5, 2); // repeated strings are written even when empty
    const e = textEncoder.encode(b);
    w.varint(e.length);
    w.bytes(e);
  }
  for (const p of m.points ?? []) w.messageField(6, (x) => writePoint(x, p));
  w.uintField(7, m.heartbeatMs);
  for (const a of m.compression ?? []) {
    w.tag(8, 2);
    const e = textEncoder.encode(a);
    w.varint(e.length);
    w.bytes(e);
  }
  return w.finish();
}

export function decodeAuth(b) {
  return decodeMessage(b, { token: '', device: '', platform: '', appVersion: '', bizs: [], points: [], heartbeatMs: 0, compression: [] }, {
    1: str('token'), 2: str('device'), 3: str('platform'), 4: str('appVersion'),
    5: strList('bizs'), 6: msgList('points', decodePoint), 7: u('heartbeatMs'), 8: strList('compression'),
  });
}

/** encodeHeartbeat encodes Heartbeat{intervalMs}; 0 (the SDK's default) is an empty body. */
export function encodeHeartbeat(m = {}) {
  const w = new Writer();
  w.uintField(1, m.intervalMs);
  return w.finish();
}

export function decodeHeartbeat(b) {
  return decodeMessage(b, { intervalMs: 0 }, { 1: u('intervalMs') });
}

/** encodePoints encodes Ack and SyncReq: {points: [{channel, id}]}. */
export function encodePoints(m) {
  const w = new Writer();
  for (const p of m.points ?? []) w.messageField(1, (x) => writePoint(x, p));
  return w.finish();
}

export function decodePoints(b) {
  return decodeMessage(b, { points: [] }, { 1: msgList('points', decodePoint) });
}

export function encodeAuthReply(m) {
  const w = new Writer();
  w.stringField(1, m.user);
  w.stringField(2, m.session);
  w.uintField(3, m.heartbeatMs);
  for (const c of m.channels ?? []) {
    w.messageField(4, (x) => {
      x.stringField(1, c.biz);
      x.stringField(2, c.channel);
      x.uintField(3, c.from);
    });
  }
  for (const r of m.rejected ?? []) {
    w.messageField(5, (x) => {
      x.stringField(1, r.biz);
      x.stringField(2, r.reason);
    });
  }
  w.uintField(6, m.maxRequests);
  w.stringField(7, m.compression);
  return w.finish();
}

export function decodeAuthReply(b) {
  return decodeMessage(b, { user: '', session: '', heartbeatMs: 0, channels: [], rejected: [], maxRequests: 0, compression: '' }, {
    1: str('user'), 2: str('session'), 3: u('heartbeatMs'), 6: u('maxRequests'), 7: str('compression'),
    4: msgList('channels', (x) => decodeMessage(x, { biz: '', channel: '', from: 0 }, { 1: str('biz'), 2: str('channel'), 3: u('from') })),
    5: msgList('rejected', (x) => decodeMessage(x, { biz: '', reason: '' }, { 1: str('biz'), 2: str('reason') })),
  });
}

export function encodeHeartbeatReply(m) {
  const w = new Writer();
  w.uintField(1, m.intervalMs);
  return w.finish();
}

export function decodeHeartbeatReply(b) {
  return decodeMessage(b, { intervalMs: 0 }, { 1: u('intervalMs') });
}

// int64 fields: proto3 writes negative values as 10-byte two's complement.
function writeInt64(w, field, v) {
  if (!v) return;
  if (!Number.isSafeInteger(v)) throw new CodecError(`int64 ${v}: want a safe integer`);
  if (v > 0) {
    w.uintField(field, v);
    return;
  }
  w.tag(field, 0);
  let x = BigInt.asUintN(64, BigInt(v));
  while (x >= 0x80n) {
    w.byte(Number(x & 0x7fn) | 0x80);
    x >>= 7n;
  }
  w.byte(Number(x));
}

function writeBool(w, field, v) {
  if (!v) return;
  w.tag(field, 0);
  w.byte(1);
}

function decodeOplog(b) {
  return decodeMessage(b, { id: 0, payload: new Uint8Array(0), createdMs: 0, validUntilMs: 0 }, {
    1: u('id'), 2: bin('payload'), 3: i64('createdMs'), 4: i64('validUntilMs'),
  });
}

function decodePage(b) {
  return decodeMessage(b, { channel: '', biz: '', after: 0, upto: 0, oplogs: [], more: false, skipped: 0, live: false }, {
    1: str('channel'), 2: str('biz'), 3: u('after'), 4: u('upto'),
    5: msgList('oplogs', decodeOplog), 6: bool('more'), 7: u('skipped'), 8: bool('live'),
  });
}

/** encodeSync encodes Sync{pages}; the SDK only decodes it, tests and fake servers encode it. */
export function encodeSync(m) {
  const w = new Writer();
  for (const p of m.pages ?? []) {
    w.messageField(1, (x) => {
      x.stringField(1, p.channel);
      x.stringField(2, p.biz);
      x.uintField(3, p.after);
      x.uintField(4, p.upto);
      for (const o of p.oplogs ?? []) {
        x.messageField(5, (y) => {
          y.uintField(1, o.id);
          y.bytesField(2, typeof o.payload === 'string' ? textEncoder.encode(o.payload) : o.payload);
          writeInt64(y, 3, o.createdMs);
          writeInt64(y, 4, o.validUntilMs);
        });
      }
      writeBool(x, 6, p.more);
      x.uintField(7, p.skipped);
      writeBool(x, 8, p.live);
    });
  }
  return w.finish();
}

export function decodeSync(b) {
  return decodeMessage(b, { pages: [] }, { 1: msgList('pages', decodePage) });
}

/** encodeCoded encodes Kick{code, reason} and Error{code, message} (same shape). */
export function encodeCoded(m) {
  const w = new Writer();
  w.uintField(1, m.code);
  w.stringField(2, m.message ?? m.reason);
  return w.finish();
}

export function decodeKick(b) {
  return decodeMessage(b, { code: 0, reason: '' }, { 1: u('code'), 2: str('reason') });
}

export function decodeError(b) {
  return decodeMessage(b, { code: 0, message: '' }, { 1: u('code'), 2: str('message') });
}

export function encodePush(m) {
  const w = new Writer();
  w.stringField(1, m.room);
  w.bytesField(2, typeof m.payload === 'string' ? textEncoder.encode(m.payload) : m.payload);
  writeInt64(w, 3, m.createdMs);
  w.stringField(4, m.biz);
  return w.finish();
}

export function decodePush(b) {
  return decodeMessage(b, { room: '', payload: new Uint8Array(0), createdMs: 0, biz: '' }, {
    1: str('room'), 2: bin('payload'), 3: i64('createdMs'), 4: str('biz'),
  });
}

// map<string, string> (RPC headers): one entry message per key. Go writes
// key and value even when empty, and so does this; entries are written in
// sorted key order (Go's order is unspecified, so only single-entry maps are
// byte-identical test vectors).
function writeStringMap(w, field, m) {
  for (const k of Object.keys(m ?? {}).sort()) {
    w.messageField(field, (x) => {
      const kb = textEncoder.encode(k);
      const vb = textEncoder.encode(m[k]);
      x.tag(1, 2); x.varint(kb.length); x.bytes(kb);
      x.tag(2, 2); x.varint(vb.length); x.bytes(vb);
    });
  }
}

const strMap = (name) => [2, (r, t) => {
  const e = decodeMessage(r.lengthDelimited(), { key: '', value: '' }, { 1: str('key'), 2: str('value') });
  t[name][e.key] = e.value;
}];

const asBytes = (b) => (typeof b === 'string' ? textEncoder.encode(b) : b);

/** Request (op REQUEST, docs/protocol.md §17). */
export function encodeRequest(m) {
  const w = new Writer();
  w.uintField(1, m.id);
  w.stringField(2, m.service);
  w.stringField(3, m.method);
  w.stringField(4, m.path);
  writeStringMap(w, 5, m.headers);
  w.bytesField(6, asBytes(m.body));
  w.uintField(7, m.timeoutMs);
  return w.finish();
}

export function decodeRequest(b) {
  return decodeMessage(b, { id: 0, service: '', method: '', path: '', headers: {}, body: new Uint8Array(0), timeoutMs: 0 }, {
    1: u('id'), 2: str('service'), 3: str('method'), 4: str('path'), 5: strMap('headers'), 6: bin('body'), 7: u('timeoutMs'),
  });
}

/** Response (op RESPONSE). */
export function encodeResponse(m) {
  const w = new Writer();
  w.uintField(1, m.id);
  w.uintField(2, m.status);
  writeStringMap(w, 3, m.headers);
  w.bytesField(4, asBytes(m.body));
  return w.finish();
}

export function decodeResponse(b) {
  return decodeMessage(b, { id: 0, status: 0, headers: {}, body: new Uint8Array(0) }, {
    1: u('id'), 2: u('status'), 3: strMap('headers'), 4: bin('body'),
  });
}

// ---- frames ----

/**
 * encodeFrame returns header + body as one Uint8Array (one WebSocket
 * message).
 */
export function encodeFrame(op, seq, body = new Uint8Array(0)) {
  const out = new Uint8Array(HEADER_SIZE + body.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, out.length);
  v.setUint16(4, HEADER_SIZE);
  v.setUint16(6, VERSION);
  v.setUint32(8, op);
  v.setUint32(12, seq >>> 0);
  out.set(body, HEADER_SIZE);
  return out;
}

/**
 * decodeFrames splits one WebSocket message into frames. A message normally
 * holds exactly one frame, but back-to-back frames are accepted like on TCP.
 * The header is checked against maxFrame before the body is touched.
 * Returns [{op, seq, body}], bodies aliasing buf.
 */
export function decodeFrames(buf, maxFrame = DEFAULT_MAX_FRAME) {
  const b = buf instanceof Uint8Array ? buf : new Uint8Array(buf);
  const frames = [];
  let off = 0;
  while (off < b.length) {
    if (b.length - off < HEADER_SIZE) throw new CodecError(`short frame: ${b.length - off} bytes`);
    const v = new DataView(b.buffer, b.byteOffset + off, HEADER_SIZE);
    const length = v.getUint32(0);
    const headerLen = v.getUint16(4);
    const version = v.getUint16(6);
    if (version !== VERSION) throw new CodecError(`version ${version}`);
    if (headerLen < HEADER_SIZE) throw new CodecError(`header length ${headerLen}`);
    if (length < headerLen) throw new CodecError(`length ${length} < header length ${headerLen}`);
    if (length > maxFrame) throw new CodecError(`frame of ${length} bytes over the limit of ${maxFrame}`);
    if (length > b.length - off) throw new CodecError(`frame of ${length} bytes, message holds ${b.length - off}`);
    const word = v.getUint32(8);
    const compressed = word >= FLAG_COMPRESSED;
    frames.push({ op: compressed ? word - FLAG_COMPRESSED : word, seq: v.getUint32(12), body: b.subarray(off + headerLen, off + length), compressed });
    off += length;
  }
  return frames;
}

// ---- compression (docs/protocol.md §18) ----

/** FLAG_COMPRESSED is the top bit of the op field: the body is compressed. */
export const FLAG_COMPRESSED = 0x80000000;
/** COMPRESSION_DEFLATE is raw deflate (RFC 1951), the one algorithm of §18. */
export const COMPRESSION_DEFLATE = 'deflate';
/** COMPRESS_MIN_BYTES: smaller bodies are not worth compressing. */
export const COMPRESS_MIN_BYTES = 1024;

/**
 * compressionSupported reports whether this runtime has the streams the
 * codec needs (browsers since 2023, Node.js 18+): without them the SDK does
 * not offer compression and every frame stays plain.
 */
export function compressionSupported() {
  try {
    new DecompressionStream('deflate-raw');
    new CompressionStream('deflate-raw');
    return true;
  } catch {
    return false;
  }
}

/** CompressionError: a compressed body that is corrupt or inflates past the limit. */
export class CompressionError extends CodecError {
  constructor(message, tooLarge) {
    super(message);
    this.name = 'CompressionError';
    this.tooLarge = tooLarge; // true: over the frame limit (a bomb), code 4008 on a server
  }
}

/**
 * inflateRaw decompresses a raw deflate body. It stops reading as soon as
 * the output passes maxBytes (the frame limit minus the header) and throws
 * a CompressionError with tooLarge set, so a small hostile frame cannot make
 * the page allocate more than its frame limit.
 */
export async function inflateRaw(body, maxBytes) {
  const ds = new DecompressionStream('deflate-raw');
  const writer = ds.writable.getWriter();
  writer.write(body).catch(() => {});
  writer.close().catch(() => {});
  const reader = ds.readable.getReader();
  const chunks = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > maxBytes) {
        reader.cancel().catch(() => {});
        throw new CompressionError(`compressed body inflates past ${maxBytes} bytes`, true);
      }
      chunks.push(value);
    }
  } catch (e) {
    if (e instanceof CompressionError) throw e;
    throw new CompressionError(`bad compressed body: ${e?.message ?? e}`, false);
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/** deflateRaw compresses b with raw deflate. */
export async function deflateRaw(b) {
  const cs = new CompressionStream('deflate-raw');
  const writer = cs.writable.getWriter();
  writer.write(b).catch(() => {});
  writer.close().catch(() => {});
  const buf = await new Response(cs.readable).arrayBuffer();
  return new Uint8Array(buf);
}
