// call(): RPC over the connection (docs/protocol.md §17) against the fake comet.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Op, encodeAuthReply, encodeResponse } from '../src/codec.js';
import { MsyncClient } from '../src/index.js';
import { FakeNet, waitFor } from './fakenet.js';

// connected returns a client past AUTH; it is closed after the test, also
// when the test fails (open timers would keep node running).
async function connected(t, maxRequests) {
  const net = new FakeNet();
  const c = new MsyncClient('ws://comet.test:3102/sub', {
    tokenProvider: async () => 'tok', device: 'dev1', backoffMin: 5, backoffMax: 20, dialTimeout: 1000, WebSocket: net.WebSocket,
  });
  c.registerBiz('demo', async () => {});
  t.after(() => c.close());
  c.start();
  const conn = await net.conn(0);
  const auth = await conn.expect(Op.AUTH);
  conn.push(Op.AUTH_REPLY, auth.seq, encodeAuthReply({ user: 'alice', session: 's1', heartbeatMs: 30_000, channels: [], maxRequests }));
  await waitFor('connected', () => c.connected);
  return { net, c, conn };
}

test('calls are matched by id in any order, at most max_requests in flight', async (t) => {
  const { c, conn } = await connected(t, 2);
  const a = c.call('svc', '/a', 'A', { headers: { 'x-t': '1' } });
  const b = c.call('svc', '/b', new Uint8Array([1]), { method: 'GET' });
  const ra = await conn.expect(Op.REQUEST);
  const rb = await conn.expect(Op.REQUEST);
  const third = c.call('svc', '/c', '');
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(conn.sent(Op.REQUEST).length, 2, 'the third waits for a slot');
  assert.equal(ra.msg.path, '/a');
  assert.deepEqual(ra.msg.headers, { 'x-t': '1' });
  assert.equal(new TextDecoder().decode(ra.msg.body), 'A');
  assert.equal(rb.msg.method, 'GET');
  assert.notEqual(ra.msg.id, rb.msg.id);
  assert.ok(ra.msg.timeoutMs > 0 && ra.msg.timeoutMs <= 10_000);
  // Answer b first, then a: ids route them.
  conn.push(Op.RESPONSE, rb.seq, encodeResponse({ id: rb.msg.id, status: 404, body: 'nope' }));
  const rc = await conn.expect(Op.REQUEST); // the freed slot lets the third go
  conn.push(Op.RESPONSE, ra.seq, encodeResponse({ id: ra.msg.id, status: 200, headers: { 'content-type': 'text/plain' }, body: 'okA' }));
  conn.push(Op.RESPONSE, rc.seq, encodeResponse({ id: rc.msg.id, status: 605, body: 'busy' }));
  const [va, vb] = await Promise.all([a, b]);
  assert.equal(va.status, 200);
  assert.equal(va.text, 'okA');
  assert.equal(va.headers['content-type'], 'text/plain');
  assert.equal(vb.status, 404);
  await assert.rejects(third, (e) => e.kind === 'call' && e.status === 605 && e.retryable === true);
  await c.close();
});

test('deadline, lost connection, local refusals, old server', async (t) => {
  const { c, conn } = await connected(t, 4);
  await assert.rejects(c.call('svc', '/slow', '', { timeoutMs: 30 }), (e) => e.kind === 'timeout');
  await assert.rejects(c.call('svc', 'no-slash', ''), (e) => e.kind === 'bad_request');
  await assert.rejects(c.call('svc', '/', '', { headers: { Host: 'x' } }), (e) => e.kind === 'bad_request');
  await assert.rejects(c.call('bad name', '/', ''), (e) => e.kind === 'bad_request');
  await assert.rejects(c.call('svc', '/', new Uint8Array(64 << 10)), (e) => e.kind === 'bad_request');
  const lost = c.call('svc', '/lost', '');
  await conn.expect(Op.REQUEST); // /slow
  await conn.expect(Op.REQUEST); // /lost
  conn.drop();
  await assert.rejects(lost, (e) => e.kind === 'call_lost');
  await c.close();
  await assert.rejects(c.call('svc', '/', ''), (e) => e.kind === 'closed');

  const old = await connected(t, 0);
  await assert.rejects(old.c.call('svc', '/', ''), (e) => e.kind === 'rpc_unsupported');
  await old.c.close();
});
