// Body compression (docs/protocol.md §18) against the fake comet: compressed
// frames are inflated in arrival order, bombs and unnegotiated compressed
// frames end the session, big REQUEST bodies go out compressed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Op, FLAG_COMPRESSED, encodeAuthReply, encodeSync, decodeRequest, deflateRaw, inflateRaw,
  CompressionError,
} from '../src/codec.js';
import { MsyncClient } from '../src/index.js';
import { FakeNet, waitFor } from './fakenet.js';

const big = JSON.stringify({ order: 'ord_1', items: Array.from({ length: 40 }, (_, i) => ({ sku: `SKU-${i}`, name: 'Organic green tea, 100 g', qty: 2 })) });

function setup(opts = {}) {
  const net = new FakeNet();
  const events = [];
  const seen = [];
  const c = new MsyncClient('ws://comet.test:3102/sub', {
    tokenProvider: async () => 'tok', device: 'dev1', backoffMin: 5, backoffMax: 20, dialTimeout: 1000,
    WebSocket: net.WebSocket, onEvent: (e) => events.push(e), ...opts,
  });
  c.registerBiz('demo', async (op) => { seen.push([op.id, op.text]); });
  return { net, c, events, seen };
}

async function connect(net, c, compression, n = 0) {
  if (n === 0) c.start();
  const conn = await net.conn(n);
  const auth = await conn.expect(Op.AUTH);
  conn.push(Op.AUTH_REPLY, auth.seq, encodeAuthReply({ user: 'alice', session: 's1', heartbeatMs: 30_000,
    channels: [{ biz: 'demo', channel: 'demo/u/alice', from: 0 }], maxRequests: 4, compression }));
  await waitFor('connected', () => c.connected);
  return { conn, auth };
}

const syncBody = (after, upto, payload) => encodeSync({ pages: [{ channel: 'demo/u/alice', biz: 'demo', after, upto,
  oplogs: [{ id: upto, payload }], live: true }] });

test('a compressed page and the plain one after it arrive in order and exact', async () => {
  const { net, c, seen } = setup();
  const { conn, auth } = await connect(net, c, 'deflate');
  assert.deepEqual(auth.msg.compression, ['deflate']);
  conn.push(Op.SYNC + FLAG_COMPRESSED, 0, await deflateRaw(syncBody(0, 1, big)));
  conn.push(Op.SYNC, 0, syncBody(1, 2, 'small'));
  await waitFor('both oplogs', () => seen.length === 2);
  assert.deepEqual(seen, [[1, big], [2, 'small']]);
  const st = c.compressionStats();
  assert.equal(st.framesIn, 1);
  assert.ok(st.bytesInWire * 2 < st.bytesInRaw, JSON.stringify(st));
  await c.close();
});

test('a bomb from the server ends the session with a protocol error', async () => {
  const { net, c, events } = setup({ maxFrame: 64 << 10 });
  const { conn } = await connect(net, c, 'deflate');
  conn.push(Op.SYNC + FLAG_COMPRESSED, 0, await deflateRaw(new Uint8Array(1 << 20)));
  await waitFor('disconnected', () => events.some((e) => e.kind === 'disconnected'));
  const e = events.find((x) => x.kind === 'disconnected');
  assert.equal(e.error.kind, 'protocol');
  assert.match(e.error.message, /inflates past/);
  await net.conn(1); // it reconnects (a 1xxx-like failure, not a stop)
  await c.close();
});

test('compression: false offers nothing and refuses a compressed frame', async () => {
  const { net, c, events } = setup({ compression: false });
  const { conn, auth } = await connect(net, c, '');
  assert.deepEqual(auth.msg.compression, []);
  conn.push(Op.SYNC + FLAG_COMPRESSED, 0, await deflateRaw(syncBody(0, 1, big)));
  await waitFor('disconnected', () => events.some((e) => e.kind === 'disconnected'));
  assert.match(events.find((x) => x.kind === 'disconnected').error.message, /without negotiated compression/);
  await c.close();
});

test('a big REQUEST body goes compressed, a small one plain', async () => {
  const { net, c } = setup();
  const { conn } = await connect(net, c, 'deflate');
  const a = c.call('svc', '/big', big);
  const b = c.call('svc', '/small', 'x');
  const f1 = await conn.expect(Op.REQUEST);
  const f2 = await conn.expect(Op.REQUEST);
  const [zf, pf] = f1.compressed ? [f1, f2] : [f2, f1];
  assert.equal(zf.compressed, true);
  assert.equal(pf.compressed, false);
  const r = decodeRequest(await inflateRaw(zf.body, 64 << 10));
  assert.equal(new TextDecoder().decode(r.body), big);
  assert.equal(pf.msg.path, '/small');
  assert.equal(c.compressionStats().framesOut, 1);
  await c.close(); // the calls fail as lost: only their frames matter here
  await Promise.allSettled([a, b]);
});

test('inflateRaw refuses corrupt bodies and bodies past the limit', async () => {
  await assert.rejects(inflateRaw(new Uint8Array([0xde, 0xad, 0xbe, 0xef]), 1000), (e) => e instanceof CompressionError && !e.tooLarge);
  await assert.rejects(inflateRaw(await deflateRaw(new Uint8Array(5000)), 4999), (e) => e instanceof CompressionError && e.tooLarge);
  assert.equal((await inflateRaw(await deflateRaw(new Uint8Array(5000)), 5000)).length, 5000);
});
