// Client tests against a fake comet (fakenet.js): each test follows one rule
// of docs/protocol.md §8-§11, the same checklist the Go SDK is tested on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Op, encodeAuthReply, encodeSync, encodeCoded, encodeHeartbeatReply, encodeFrame, encodePush,
} from '../src/codec.js';
import { MsyncClient, MsyncError, backoff, MemoryStore, LocalStorageStore } from '../src/index.js';
import { FakeNet, waitFor } from './fakenet.js';

const URL_ = 'ws://comet.test:3102/sub';

// setup returns a client wired to a fake net, recording events and what the
// handlers saw. opts override the client options.
function setup(opts = {}, handlers = {}) {
  const net = new FakeNet();
  const events = [];
  const seen = [];
  let tokens = 0;
  const c = new MsyncClient(URL_, {
    tokenProvider: async () => `tok-${++tokens}`,
    device: 'dev1',
    backoffMin: 5,
    backoffMax: 20,
    dialTimeout: 1000,
    WebSocket: net.WebSocket,
    onEvent: (e) => events.push(e),
    ...opts,
  });
  for (const biz of ['demo', 'cmd']) {
    c.registerBiz(biz, handlers[biz] ?? (async (op) => { seen.push(`${op.channel}#${op.id}:${op.text}`); }));
  }
  return { net, c, events, seen, tokens: () => tokens };
}

const reply = (seq, heartbeatMs = 30_000, channels = [{ biz: 'demo', channel: 'demo/u/alice', from: 0 }], rejected = []) =>
  [Op.AUTH_REPLY, seq, encodeAuthReply({ user: 'alice', session: 's1', heartbeatMs, channels, rejected })];

const page = (p) => [Op.SYNC, 0, encodeSync({ pages: [{ channel: 'demo/u/alice', biz: 'demo', ...p }] })];
const ops = (...ids) => ids.map((id) => ({ id, payload: `p${id}` }));

// connect starts c and completes the handshake on connection n.
async function connect(net, c, n = 0, args = []) {
  if (n === 0) c.start();
  const conn = await net.conn(n);
  const auth = await conn.expect(Op.AUTH);
  conn.push(...reply(auth.seq, ...args));
  await waitFor('connected', () => c.connected);
  return { conn, auth };
}

test('AUTH carries token, sorted bizs and only the points of registered bizs and this device', async () => {
  const store = new MemoryStore();
  store.save('demo/u/alice', 5);
  store.save('other/u/alice', 3); // biz not registered
  store.save('cmd/d/other-device', 2); // another device's channel
  store.save('cmd/d/dev1', 4);
  const { net, c, events } = setup({ store, appVersion: '1.2.3' });
  const { auth } = await connect(net, c, 0, [30_000, [
    { biz: 'demo', channel: 'demo/u/alice', from: 5 },
    { biz: 'cmd', channel: 'cmd/d/dev1', from: 4 },
  ]]);
  assert.deepEqual(auth.msg, {
    token: 'tok-1', device: 'dev1', platform: 'web', appVersion: '1.2.3', bizs: ['cmd', 'demo'],
    points: [{ channel: 'cmd/d/dev1', id: 4 }, { channel: 'demo/u/alice', id: 5 }], heartbeatMs: 0,
    compression: ['deflate'], // Node.js 20 has DecompressionStream('deflate-raw')
  });
  assert.equal(events[0].kind, 'connected');
  assert.equal(events[0].user, 'alice');
  await c.close();
  assert.equal(events.at(-1).kind, 'disconnected');
  assert.equal(events.at(-1).error.kind, 'closed');
});

test('a channel without a local point adopts the server\'s from; from 0 records nothing', async () => {
  const { net, c } = setup();
  const { conn } = await connect(net, c, 0, [30_000, [
    { biz: 'demo', channel: 'demo/u/alice', from: 7 },
    { biz: 'cmd', channel: 'cmd/d/dev1', from: 0 },
  ]]);
  assert.equal(c.syncPoint('demo/u/alice'), 7);
  assert.equal(c.points.has('cmd/d/dev1'), false);
  // The first page starts at from: not a gap.
  conn.push(...page({ after: 7, upto: 8, oplogs: ops(8) }));
  assert.deepEqual((await conn.expect(Op.ACK)).msg.points, [{ channel: 'demo/u/alice', id: 8 }]);
  await c.close();
});

test('in order, duplicates dropped, filtered ids advance, point saved before ACK', async () => {
  const log = [];
  const store = new MemoryStore();
  const save = store.save.bind(store);
  store.save = (ch, id) => { log.push(`save ${id}`); save(ch, id); };
  const { net, c, seen } = setup({ store });
  const { conn } = await connect(net, c);
  const recv = conn.receive.bind(conn);
  conn.receive = (d) => { recv(d); const f = conn.frames.at(-1); if (f.op === Op.ACK) log.push(`ack ${f.msg.points[0].id}`); };

  conn.push(...page({ after: 0, upto: 3, oplogs: ops(1, 2, 3), more: true }));
  await conn.expect(Op.ACK);
  // 4 and 6 filtered out by the server: not listed, still processed.
  conn.push(...page({ after: 3, upto: 6, oplogs: ops(5) }));
  await conn.expect(Op.ACK);
  // An old page, entirely at or below the point: nothing to the app, but acked.
  conn.push(...page({ after: 2, upto: 5, oplogs: ops(3, 5) }));
  assert.deepEqual((await conn.expect(Op.ACK)).msg.points, [{ channel: 'demo/u/alice', id: 5 }]);
  conn.push(...page({ after: 6, upto: 7, oplogs: ops(7), live: true }));
  await conn.expect(Op.ACK);

  assert.deepEqual(seen, ['demo/u/alice#1:p1', 'demo/u/alice#2:p2', 'demo/u/alice#3:p3', 'demo/u/alice#5:p5', 'demo/u/alice#7:p7']);
  assert.equal(c.syncPoint('demo/u/alice'), 7);
  assert.deepEqual(log, ['save 1', 'save 2', 'save 3', 'ack 3', 'save 6', 'ack 6', 'ack 5', 'save 7', 'ack 7']);
  await c.close();
});

test('a gap sends one SYNC_REQ from the point, repeats are suppressed, the resent backlog fills it', async () => {
  const { net, c, seen } = setup();
  const { conn } = await connect(net, c);
  conn.push(...page({ after: 0, upto: 1, oplogs: ops(1), live: true }));
  await conn.expect(Op.ACK);
  conn.push(...page({ after: 2, upto: 3, oplogs: ops(3), live: true })); // 2 was lost
  conn.push(...page({ after: 3, upto: 4, oplogs: ops(4), live: true })); // in flight: a gap too
  const req = await conn.expect(Op.SYNC_REQ);
  assert.deepEqual(req.msg.points, [{ channel: 'demo/u/alice', id: 1 }]);
  conn.push(...page({ after: 1, upto: 4, oplogs: ops(2, 3, 4) }));
  await conn.expect(Op.ACK);
  assert.equal(conn.sent(Op.SYNC_REQ).length, 1);
  assert.deepEqual(seen.map((s) => s.split('#')[1]), ['1:p1', '2:p2', '3:p3', '4:p4']);
  await c.close();
});

test('a failing handler is retried with backoff; later oplogs wait; no ACK before success', async () => {
  let fails = 2;
  const calls = [];
  const { net, c } = setup({}, {
    demo: async (op) => {
      calls.push(op.id);
      if (op.id === 2 && fails-- > 0) throw new Error('db locked');
    },
  });
  const { conn } = await connect(net, c);
  conn.push(...page({ after: 0, upto: 3, oplogs: ops(1, 2, 3) }));
  const ack = await conn.expect(Op.ACK);
  assert.deepEqual(ack.msg.points, [{ channel: 'demo/u/alice', id: 3 }]);
  assert.deepEqual(calls, [1, 2, 2, 2, 3]);
  assert.equal(conn.sent(Op.ACK).length, 1);
  await c.close();
});

test('retries exhausted: ack the progress, resync from the point, never skip the oplog', async () => {
  let broken = true;
  const calls = [];
  const { net, c, events } = setup({ handlerRetries: 1 }, {
    demo: async (op) => {
      calls.push(op.id);
      if (op.id === 2 && broken) throw new Error('still broken');
    },
  });
  const { conn } = await connect(net, c);
  conn.push(...page({ after: 0, upto: 3, oplogs: ops(1, 2, 3) }));
  assert.deepEqual((await conn.expect(Op.ACK)).msg.points, [{ channel: 'demo/u/alice', id: 1 }]);
  const req = await conn.expect(Op.SYNC_REQ);
  assert.deepEqual(req.msg.points, [{ channel: 'demo/u/alice', id: 1 }]);
  assert.equal(c.syncPoint('demo/u/alice'), 1);
  broken = false;
  conn.push(...page({ after: 1, upto: 3, oplogs: ops(2, 3) }));
  assert.deepEqual((await conn.expect(Op.ACK)).msg.points, [{ channel: 'demo/u/alice', id: 3 }]);
  assert.deepEqual(calls, [1, 2, 2, 2, 3]);
  assert.ok(!events.some((e) => e.kind === 'disconnected'));
  await c.close();
});

test('heartbeat wish in AUTH; pushes go to onPush or, with a registered biz, to its handler', async () => {
  const pushes = [];
  const { net, c, seen } = setup({ heartbeat: 5000, onPush: (p) => pushes.push(p) });
  const { conn, auth } = await connect(net, c);
  assert.equal(auth.msg.heartbeatMs, 5000);
  conn.push(Op.PUSH, 0, encodePush({ room: 'lobby', payload: 'hello', createdMs: 1 }));
  conn.push(Op.PUSH, 0, encodePush({ biz: 'demo', payload: 'typing' }));
  conn.push(Op.PUSH, 0, encodePush({ biz: 'unregistered', payload: 'x' }));
  conn.push(Op.ROOM_REPLY, 1, new Uint8Array(0)); // ignored
  await waitFor('volatile oplog', () => seen.length === 1);
  assert.deepEqual(seen, ['#0:typing']);
  assert.equal(pushes.length, 1);
  assert.equal(pushes[0].room, 'lobby');
  assert.equal(new TextDecoder().decode(pushes[0].payload), 'hello');
  assert.ok(c.connected);
  await c.close();
});

test('skipped pages are reported as an event', async () => {
  const { net, c, events } = setup();
  const { conn } = await connect(net, c);
  conn.push(...page({ after: 0, upto: 100, skipped: 90, oplogs: ops(99, 100) }));
  await conn.expect(Op.ACK);
  assert.deepEqual(events.find((e) => e.kind === 'skipped'), { kind: 'skipped', biz: 'demo', channel: 'demo/u/alice', count: 90 });
  await c.close();
});

test('a rewind page (upto < after) moves the point back and is reported', async () => {
  const store = new MemoryStore();
  store.save('demo/u/alice', 1000);
  const { net, c, events } = setup({ store });
  const { conn } = await connect(net, c);
  conn.push(...page({ after: 1000, upto: 3 }));
  const ack = await conn.expect(Op.ACK);
  assert.equal(Number(ack.msg.points[0].id), 3);
  assert.deepEqual(events.find((e) => e.kind === 'rewound'), { kind: 'rewound', biz: 'demo', channel: 'demo/u/alice', from: 1000, to: 3 });
  assert.equal(store.points.get('demo/u/alice'), 3);
  conn.push(...page({ after: 3, upto: 4, oplogs: ops(4) }));
  await conn.expect(Op.ACK);
  assert.equal(store.points.get('demo/u/alice'), 4);
  await c.close();
});

test('heartbeats at the server interval; HEARTBEAT_REPLY changes it', async () => {
  const { net, c } = setup();
  const { conn } = await connect(net, c, 0, [100]);
  const t0 = Date.now();
  const hb1 = await conn.expect(Op.HEARTBEAT);
  assert.ok(hb1.at - t0 >= 80 && hb1.at - t0 < 1000, `first heartbeat after ${hb1.at - t0} ms`);
  conn.push(Op.HEARTBEAT_REPLY, hb1.seq, encodeHeartbeatReply({ intervalMs: 400 }));
  const hb2 = await conn.expect(Op.HEARTBEAT);
  assert.ok(hb2.at - hb1.at >= 350, `second heartbeat ${hb2.at - hb1.at} ms after the first`);
  assert.ok(hb2.seq > hb1.seq);
  await c.close();
});

test('silence past 2 intervals + 5 s ends the session and reconnects with the same token', async () => {
  const { net, c, events, tokens } = setup();
  await connect(net, c, 0, [100]);
  const conn2 = await net.conn(1, 8000);
  const auth = await conn2.expect(Op.AUTH);
  assert.equal(auth.msg.token, 'tok-1');
  assert.equal(tokens(), 1);
  const d = events.find((e) => e.kind === 'disconnected');
  assert.equal(d.error.kind, 'timeout');
  assert.ok(d.retryIn >= 0 && d.retryIn <= 20);
  await c.close();
});

test('KICK 1007: kicked event, backoff, reconnect with the points', async () => {
  const { net, c, events } = setup();
  const { conn } = await connect(net, c);
  conn.push(...page({ after: 0, upto: 4, oplogs: ops(4) }));
  await conn.expect(Op.ACK);
  conn.push(Op.KICK, 0, encodeCoded({ code: 1007, reason: 'support session ended' }));
  const conn2 = await net.conn(1);
  const auth = await conn2.expect(Op.AUTH);
  assert.deepEqual(auth.msg.points, [{ channel: 'demo/u/alice', id: 4 }]);
  assert.equal(auth.msg.token, 'tok-1');
  assert.deepEqual(events.find((e) => e.kind === 'kicked'), { kind: 'kicked', code: 1007, reason: 'support session ended' });
  const d = events.find((e) => e.kind === 'disconnected');
  assert.equal(d.error.code, 1007);
  assert.ok(conn.closedByClient);
  await c.close();
});

test('ERROR 2001 fetches a new token; ERROR 4xxx stops until updateUser', async () => {
  const { net, c, events, tokens } = setup();
  c.start();
  const conn = await net.conn(0);
  const a1 = await conn.expect(Op.AUTH);
  conn.push(Op.ERROR, a1.seq, encodeCoded({ code: 2001, message: 'token expired' }));
  const conn2 = await net.conn(1);
  const a2 = await conn2.expect(Op.AUTH);
  assert.equal(a2.msg.token, 'tok-2');
  assert.equal(tokens(), 2);
  conn2.push(Op.ERROR, a2.seq, encodeCoded({ code: 4004, message: 'bad app version' }));
  await waitFor('stopped', () => events.find((e) => e.kind === 'stopped'));
  assert.equal(events.find((e) => e.kind === 'stopped').code, 4004);
  await new Promise((r) => setTimeout(r, 100)); // 5x backoffMax: nothing may happen
  assert.equal(net.conns.length, 2);
  await c.updateUser();
  const conn3 = await net.conn(2);
  assert.equal((await conn3.expect(Op.AUTH)).msg.token, 'tok-3');
  await c.close();
});

test('background closes and stays idle; foreground reconnects at once', async () => {
  const { net, c, events } = setup({ backoffMin: 10_000, backoffMax: 30_000 });
  await connect(net, c);
  c.background();
  await waitFor('disconnected', () => events.find((e) => e.kind === 'disconnected'));
  assert.equal(events.find((e) => e.kind === 'disconnected').error.kind, 'background');
  assert.equal(c.connected, false);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(net.conns.length, 1);
  c.foreground();
  await connect(net, c, 1); // well before backoffMin
  await c.close();
});

test('a dropped connection reconnects with backoff and the resent backlog has no duplicates', async () => {
  const { net, c, seen } = setup();
  const { conn } = await connect(net, c);
  conn.push(...page({ after: 0, upto: 2, oplogs: ops(1, 2) }));
  await conn.expect(Op.ACK);
  conn.drop();
  const { conn: conn2, auth } = await connect(net, c, 1, [30_000, [{ biz: 'demo', channel: 'demo/u/alice', from: 2 }]]);
  assert.deepEqual(auth.msg.points, [{ channel: 'demo/u/alice', id: 2 }]);
  conn2.push(...page({ after: 1, upto: 3, oplogs: ops(2, 3) })); // 2 again: a duplicate
  await conn2.expect(Op.ACK);
  assert.deepEqual(seen.map((s) => s.split('#')[1]), ['1:p1', '2:p2', '3:p3']);
  await c.close();
});

test('a frame over maxFrame or a bad frame ends the session, not the client', async () => {
  const { net, c, events } = setup({ maxFrame: 1024 });
  const { conn } = await connect(net, c);
  conn.push(...page({ after: 0, upto: 1, oplogs: [{ id: 1, payload: 'x'.repeat(2000) }] }));
  await connect(net, c, 1);
  assert.equal(events.find((e) => e.kind === 'disconnected').error.kind, 'protocol');
  const conn2 = net.conns[1];
  conn2.pushRaw(encodeFrame(Op.SYNC, 0, new Uint8Array([0x0a, 0x05, 0x01])));
  await connect(net, c, 2);
  await c.close();
});

test('close waits for a running handler, which sees its signal aborted', async () => {
  let aborted = false;
  let started = false;
  const { net, c } = setup({}, {
    demo: (op, { signal }) => new Promise((resolve, reject) => {
      started = true;
      signal.addEventListener('abort', () => { aborted = true; setTimeout(() => reject(new Error('aborted')), 20); });
    }),
  });
  const { conn } = await connect(net, c);
  conn.push(...page({ after: 0, upto: 1, oplogs: ops(1) }));
  await waitFor('handler start', () => started);
  await c.close();
  assert.ok(aborted);
  assert.equal(conn.sent(Op.ACK).length, 0);
  assert.equal(c.syncPoint('demo/u/alice'), 0);
});

test('unreachable server: backoff with full jitter, capped', async () => {
  const { net, c, events } = setup({ random: () => 0.999999 });
  net.refuse = true;
  c.start();
  await waitFor('4 attempts', () => events.filter((e) => e.kind === 'disconnected').length >= 4);
  assert.deepEqual(events.filter((e) => e.kind === 'disconnected').slice(0, 4).map((e) => e.retryIn), [5, 10, 20, 20]);
  await c.close();
});

test('backoff is uniform in [0, cap] with a doubling, capped cap', () => {
  assert.equal(backoff(500, 30_000, 1, () => 0), 0);
  assert.equal(backoff(500, 30_000, 1, () => 0.999999), 500);
  assert.equal(backoff(500, 30_000, 3, () => 0.999999), 2000);
  assert.equal(backoff(500, 30_000, 20, () => 0.999999), 30_000);
});

test('options are validated', () => {
  const net = new FakeNet();
  const base = { tokenProvider: async () => 't', device: 'd', WebSocket: net.WebSocket };
  assert.throws(() => new MsyncClient('http://x', base), MsyncError);
  assert.throws(() => new MsyncClient(URL_, { ...base, tokenProvider: undefined }), /tokenProvider/);
  assert.throws(() => new MsyncClient(URL_, { ...base, device: 'a\nb' }), /device/);
  assert.throws(() => new MsyncClient(URL_, { ...base, device: 'x'.repeat(129) }), /device/);
  assert.throws(() => new MsyncClient(URL_, { ...base, appVersion: '1.x' }), /appVersion/);
  const c = new MsyncClient(URL_, base);
  assert.throws(() => c.registerBiz('bad biz', async () => {}), /biz/);
  assert.throws(() => c.start(), /no biz/);
  c.registerBiz('demo', async () => {});
  assert.throws(() => c.registerBiz('demo', async () => {}), /twice/);
});

test('LocalStorageStore: one key per channel, prefix-scoped, corrupt values refused', () => {
  const m = new Map();
  const storage = {
    get length() { return m.size; },
    key: (i) => [...m.keys()][i] ?? null,
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => m.set(k, String(v)),
  };
  const s = new LocalStorageStore('msync:dev1:', storage);
  s.save('demo/u/alice', 12);
  s.save('cmd/d/dev1', 3);
  storage.setItem('other', 'x');
  storage.setItem('msync:dev2:demo/u/bob', '9');
  assert.deepEqual([...s.load()].sort(), [['cmd/d/dev1', 3], ['demo/u/alice', 12]]);
  assert.equal(storage.getItem('msync:dev1:demo/u/alice'), '12');
  storage.setItem('msync:dev1:demo/g', 'garbage');
  assert.throws(() => s.load(), /bad sync point/);
});

test('every code of docs/protocol.md §6 gets the client action the table gives it', async () => {
  const { readFileSync } = await import('node:fs');
  const doc = readFileSync(new URL('../../../docs/protocol.md', import.meta.url), 'utf8');
  const sec = doc.slice(doc.indexOf('## 6. Codes'), doc.indexOf('## 7. '));
  const rows = [...sec.matchAll(/^\| (\d{4}) \|.*\| ([a-z ]+) \|$/gm)];
  assert.ok(rows.length >= 20, `only ${rows.length} code rows found`);
  for (const [, code, action] of rows) {
    const e = new MsyncError('server', 'x', Number(code));
    const got = e.needsToken ? 'new token' : (Number(code) >= 3000 && Number(code) < 4000) ? 'retry later' : e.reconnect ? 'reconnect' : 'stop';
    assert.equal(got, action, `code ${code}`);
    if (action === 'retry later') assert.ok(e.reconnect, `a ${code} in an ERROR reads as 1xxx`);
  }
  // Unassigned codes: from 5000 stop, below 1000 reconnect (§6).
  assert.equal(new MsyncError('server', 'x', 5001).reconnect, false);
  assert.equal(new MsyncError('server', 'x', 999).reconnect, true);
});
