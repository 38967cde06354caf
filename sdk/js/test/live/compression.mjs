// Run by web/compression_test.go against a real msync node (not part of
// `node --test`): node --experimental-websocket compression.mjs <base> <ws> <key>
// base: the logic HTTP address (serves /demo/token in dev mode and /v1/sync),
// ws: the comet's WebSocket URL, key: an API key. Prints one JSON line.
import { MsyncClient } from '../../src/index.js';
import { Op, FLAG_COMPRESSED, encodeFrame, encodeAuth, decodeFrames, decodeAuthReply, decodeError, deflateRaw } from '../../src/codec.js';

const [base, ws, key] = process.argv.slice(2);
const order = JSON.stringify({
  type: 'order.updated',
  order: {
    id: 'ord_000042', status: 'shipped', currency: 'EUR',
    customer: { id: 'cus_1029', name: 'Alice Martin', email: 'alice.martin@example.com' },
    items: Array.from({ length: 12 }, (_, i) => ({ sku: `SKU-042-${i}`, name: 'Organic green tea, 100 g', quantity: (i % 3) + 1, unit_price: '4.90' })),
  },
});

async function token(user) {
  const r = await fetch(`${base}/demo/token?user=${user}`);
  return (await r.json()).token;
}

async function publish(user, payload) {
  const r = await fetch(`${base}/v1/sync`, {
    method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${key}` },
    body: JSON.stringify({ biz: 'demo', user, payload }),
  });
  if (!r.ok) throw new Error(`publish: HTTP ${r.status}`);
  return (await r.json()).id;
}

const until = async (what, cond, ms = 10_000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

const result = {};
// 1. The SDK: a small oplog plain, a ~2 KB JSON oplog compressed, exact bytes.
const got = new Map();
const tok = await token('jsz');
const c = new MsyncClient(ws, { tokenProvider: async () => tok, device: 'jsz-node', WebSocket });
c.registerBiz('demo', async (op) => { got.set(op.id, op.text); });
c.start();
await until('connected', () => c.connected);
const small = await publish('jsz', '{"type":"chat","text":"hi"}');
await until('small oplog', () => got.has(small));
result.smallCompressed = c.compressionStats().framesIn;
const bigID = await publish('jsz', order);
await until('big oplog', () => got.has(bigID));
result.bigExact = got.get(bigID) === order;
result.stats = c.compressionStats();
await c.close();

// 2. A raw client that negotiated deflate sends a bomb: ERROR 4008.
const raw = new WebSocket(ws);
raw.binaryType = 'arraybuffer';
const frames = [];
raw.onmessage = (ev) => frames.push(...decodeFrames(new Uint8Array(ev.data)));
await new Promise((resolve, reject) => { raw.onopen = resolve; raw.onerror = reject; });
raw.send(encodeFrame(Op.AUTH, 1, encodeAuth({ token: await token('jsbomb'), device: 'jsbomb-node', platform: 'web', bizs: ['demo'], compression: ['deflate'] })));
await until('AUTH_REPLY', () => frames.some((f) => f.op === Op.AUTH_REPLY));
result.rawChosen = decodeAuthReply(frames.find((f) => f.op === Op.AUTH_REPLY).body).compression;
raw.send(encodeFrame(Op.HEARTBEAT + FLAG_COMPRESSED, 2, await deflateRaw(new Uint8Array(1 << 20))));
await until('ERROR', () => frames.some((f) => f.op === Op.ERROR));
result.bombCode = decodeError(frames.find((f) => f.op === Op.ERROR).body).code;
raw.close();
console.log(JSON.stringify(result));
process.exit(0);
