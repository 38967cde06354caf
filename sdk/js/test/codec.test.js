// Codec tests against frames encoded by the Go reference codec
// (testdata/frames.json, kept in sync by `go test ./web -run TestGoldenFrames`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  Op, CodecError, decodeFrames, encodeFrame, encodeAuth, decodeAuth, encodePoints, decodePoints,
  encodeAuthReply, decodeAuthReply, encodeHeartbeat, decodeHeartbeat, encodeHeartbeatReply,
  decodeHeartbeatReply, encodeSync, decodeSync, encodeCoded, decodeKick, decodeError, encodePush, decodePush,
  encodeRequest, decodeRequest, encodeResponse, decodeResponse,
} from '../src/codec.js';

const golden = JSON.parse(readFileSync(new URL('../testdata/frames.json', import.meta.url), 'utf8'));

const codecs = {
  [Op.AUTH]: [decodeAuth, encodeAuth],
  [Op.AUTH_REPLY]: [decodeAuthReply, encodeAuthReply],
  [Op.HEARTBEAT]: [decodeHeartbeat, encodeHeartbeat],
  [Op.HEARTBEAT_REPLY]: [decodeHeartbeatReply, encodeHeartbeatReply],
  [Op.ACK]: [decodePoints, encodePoints],
  [Op.SYNC]: [decodeSync, encodeSync],
  [Op.SYNC_REQ]: [decodePoints, encodePoints],
  [Op.PUSH]: [decodePush, encodePush],
  [Op.KICK]: [decodeKick, encodeCoded],
  [Op.ERROR]: [decodeError, encodeCoded],
  [Op.REQUEST]: [decodeRequest, encodeRequest],
  [Op.RESPONSE]: [decodeResponse, encodeResponse],
};

const hex = (b) => Buffer.from(b).toString('hex');
const unhex = (s) => new Uint8Array(Buffer.from(s, 'hex'));

// same compares a decoded JS value with the protobuf JSON mapping Go wrote:
// 64-bit integers are strings there, bytes are base64.
function same(want, got, path) {
  if (Array.isArray(want)) {
    assert.ok(Array.isArray(got), `${path}: want an array, got ${got}`);
    assert.equal(got.length, want.length, `${path}: length`);
    want.forEach((w, i) => same(w, got[i], `${path}[${i}]`));
    return;
  }
  if (want !== null && typeof want === 'object') {
    assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort(), `${path}: fields`);
    for (const k of Object.keys(want)) same(want[k], got[k], `${path}.${k}`);
    return;
  }
  if (got instanceof Uint8Array) {
    assert.equal(Buffer.from(got).toString('base64'), want, path);
    return;
  }
  if (typeof want === 'string' && typeof got === 'number') {
    assert.equal(got, Number(want), path);
    assert.ok(Number.isSafeInteger(got), `${path}: ${got} is not a safe integer`);
    return;
  }
  assert.equal(got, want, path);
}

for (const g of golden) {
  test(`golden frame ${g.name}`, () => {
    const frames = decodeFrames(unhex(g.hex));
    assert.equal(frames.length, 1);
    const [f] = frames;
    assert.equal(f.op, g.op);
    assert.equal(f.seq, g.seq);
    const [decode, encode] = codecs[f.op];
    const msg = decode(f.body);
    same(g.message, msg, g.name);
    // Re-encoding gives Go's bytes exactly (field order, omitted defaults),
    // except where Go appended unknown fields the codec skips on purpose.
    if (encode && !g.name.includes('unknown')) {
      assert.equal(hex(encodeFrame(g.op, g.seq, encode(msg))), g.hex);
    }
  });
}

test('doc example bytes (protocol.md §3) for the SDK-built frames', () => {
  const auth = encodeFrame(Op.AUTH, 1, encodeAuth({
    token: 'tkn', device: 'dev1', platform: 'android', appVersion: '5.12.1', bizs: ['chat'],
    points: [{ channel: 'chat/u/alice', id: 2 }],
  }));
  assert.equal(hex(auth), golden.find((g) => g.name === 'auth-doc').hex);
  assert.equal(hex(encodeFrame(Op.HEARTBEAT, 2, encodeHeartbeat())), '00000010001000010000000300000002');
  const ack = encodeFrame(Op.ACK, 3, encodePoints({ points: [{ channel: 'chat/u/alice', id: 3 }] }));
  assert.equal(hex(ack), golden.find((g) => g.name === 'ack-doc').hex);
});

test('several frames in one message, and a longer header', () => {
  const a = encodeFrame(Op.HEARTBEAT_REPLY, 5, encodeHeartbeatReply({ intervalMs: 1000 }));
  // A header length of 20: a reader must skip the 4 extra bytes.
  const body = encodeCoded({ code: 1007, reason: 'bye' });
  const b = new Uint8Array(20 + body.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, b.length); v.setUint16(4, 20); v.setUint16(6, 1); v.setUint32(8, Op.KICK); v.setUint32(12, 0);
  b.set([0xde, 0xad, 0xbe, 0xef], 16);
  b.set(body, 20);
  const both = new Uint8Array(a.length + b.length);
  both.set(a); both.set(b, a.length);
  const frames = decodeFrames(both);
  assert.equal(frames.length, 2);
  assert.deepEqual(decodeHeartbeatReply(frames[0].body), { intervalMs: 1000 });
  assert.equal(frames[0].seq, 5);
  assert.deepEqual(decodeKick(frames[1].body), { code: 1007, reason: 'bye' });
});

test('bad headers are refused before the body is read', () => {
  const ok = encodeFrame(Op.HEARTBEAT, 1);
  const mutate = (f) => { const c = ok.slice(); f(new DataView(c.buffer)); return c; };
  const cases = {
    short: ok.subarray(0, 15),
    version: mutate((v) => v.setUint16(6, 2)),
    'header length': mutate((v) => v.setUint16(4, 15)),
    'length < header': mutate((v) => v.setUint32(0, 10)),
    truncated: mutate((v) => v.setUint32(0, 17)),
  };
  for (const [name, b] of Object.entries(cases)) {
    assert.throws(() => decodeFrames(b), CodecError, name);
  }
  // A frame announcing 5 MB is refused for its size, although only the
  // header is there: the limit is checked first.
  const huge = mutate((v) => v.setUint32(0, 5 << 20));
  assert.throws(() => decodeFrames(huge), /over the limit/);
  assert.throws(() => decodeFrames(encodeFrame(Op.SYNC, 0, new Uint8Array(100)), 64), /over the limit/);
});

test('bad bodies throw CodecError', () => {
  const cases = {
    'truncated varint': [0x08, 0x80],
    'varint over 10 bytes': [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    'length beyond body': [0x12, 0x05, 0x61],
    'wrong wire type': [0x0a, 0x01], // field 1 (code) as bytes
    'field 0': [0x00, 0x01],
  };
  for (const [name, b] of Object.entries(cases)) {
    assert.throws(() => decodeError(new Uint8Array(b)), CodecError, name);
  }
  assert.throws(() => decodeError(new Uint8Array([0x12, 0x02, 0xc3, 0x28])), /UTF-8/);
  // 2^53 as an oplog id: not representable exactly, so refused.
  const big = [0x10, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10];
  assert.throws(() => decodePoints(new Uint8Array([0x0a, big.length, ...big])), /MAX_SAFE_INTEGER/);
  assert.throws(() => encodePoints({ points: [{ channel: 'c', id: 2 ** 53 }] }), CodecError);
  assert.throws(() => encodePoints({ points: [{ channel: 'c', id: -1 }] }), CodecError);
});

test('unknown fields of every wire type are skipped', () => {
  // field 9 fixed64, field 10 fixed32, field 11 varint, then code=7
  const b = new Uint8Array([0x49, 1, 2, 3, 4, 5, 6, 7, 8, 0x55, 1, 2, 3, 4, 0x58, 0x96, 0x01, 0x08, 0x07]);
  assert.deepEqual(decodeError(b), { code: 7, message: '' });
  assert.throws(() => decodeError(new Uint8Array([0x4b])), /wire type 3/); // groups are not proto3
});
