// The msync browser demo: connect with the SDK, show received oplogs live,
// publish through POST /v1/sync. With ?autotest=1 it runs a self-test
// (publish, drop the connection, publish more, reconnect, check order) and
// writes the verdict as JSON into #result; web/browser_test.go reads it.
import { MsyncClient, LocalStorageStore } from './sdk/index.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

async function loadConfig() {
  const r = await fetch('config.json');
  if (!r.ok) throw new Error(`config.json: HTTP ${r.status}`);
  return r.json();
}

function wsURL(cfg) {
  if (!cfg.ws_port) return '';
  let host = cfg.ws_host || location.hostname;
  if (host.includes(':') && !host.startsWith('[')) host = `[${host}]`;
  return `ws://${host}:${cfg.ws_port}${cfg.ws_path}`;
}

async function devToken(user) {
  const r = await fetch(`token?user=${encodeURIComponent(user)}`);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error?.message ?? `token: HTTP ${r.status}`);
  return body.token;
}

// publish posts one oplog to biz for user; it resolves with {id, channel}.
async function publish(apiKey, biz, user, payload) {
  const r = await fetch('/v1/sync', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${apiKey}` },
    body: JSON.stringify({ biz, user, payload }),
  });
  const body = await r.json();
  if (!r.ok) throw new Error(`publish: HTTP ${r.status}: ${body.error?.message ?? JSON.stringify(body)}`);
  return body;
}

function randomID() {
  return Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, '0')).join('');
}

function logEvent(e) {
  const line = document.createElement('div');
  const extra = { ...e };
  delete extra.kind;
  if (extra.error) extra.error = `${extra.error.kind ?? ''} ${extra.error.message}`;
  line.textContent = `${new Date().toISOString().slice(11, 23)} ${e.kind} ${JSON.stringify(extra)}`;
  $('events').prepend(line);
}

// ---- interactive page ----

let client = null;

function setStatus(on, text) {
  $('status').textContent = text;
  $('status').className = on ? 'on' : 'off';
}

async function connect(cfg) {
  const user = $('user').value.trim();
  const device = $('device').value.trim();
  const biz = $('biz').value.trim();
  let token = $('token').value.trim();
  if (!token && cfg.dev) {
    token = await devToken(user);
    $('token').value = token;
  }
  if (!token) throw new Error('paste a token first');
  sessionStorage.setItem('msync-demo-device', device);
  client = new MsyncClient($('wsurl').value.trim(), {
    // The demo keeps the token it was given; a real app asks its server.
    tokenProvider: async () => $('token').value.trim() || token,
    device,
    appVersion: '1.0.0',
    store: new LocalStorageStore(`msync:${device}:`),
    onEvent: (e) => {
      logEvent(e);
      if (e.kind === 'connected') setStatus(true, `connected as ${e.user} (session ${e.session})`);
      if (e.kind === 'disconnected') setStatus(false, `disconnected: ${e.error.message}${e.retryIn ? `, retry in ${e.retryIn} ms` : ''}`);
    },
  });
  client.registerBiz(biz, async (op) => {
    const tr = document.createElement('tr');
    for (const v of [op.channel, op.id, op.createdMs ? new Date(op.createdMs).toISOString() : '', op.text]) {
      const td = document.createElement('td');
      td.textContent = String(v);
      tr.append(td);
    }
    tr.lastChild.className = 'payload';
    $('oplogs').prepend(tr);
  });
  client.start();
  $('connect').disabled = true;
  $('disconnect').disabled = false;
}

async function interactive() {
  const cfg = await loadConfig();
  $(cfg.dev ? 'devwarn' : 'nodev').classList.remove('hidden');
  $('gettoken').disabled = !cfg.dev;
  $('apikey').value = new URLSearchParams(location.search).get('key') ?? '';
  $('wsurl').value = wsURL(cfg) || 'ws://localhost:3102/sub';
  $('device').value = sessionStorage.getItem('msync-demo-device') ?? `web-${randomID()}`;
  const guard = (f) => async () => {
    try {
      await f();
    } catch (e) {
      logEvent({ kind: 'page_error', error: { message: e.message } });
    }
  };
  $('gettoken').onclick = guard(async () => { $('token').value = await devToken($('user').value.trim()); });
  $('connect').onclick = guard(() => connect(cfg));
  $('disconnect').onclick = guard(async () => {
    const c = client;
    client = null;
    await c?.close();
    $('connect').disabled = false;
    $('disconnect').disabled = true;
    setStatus(false, 'disconnected');
  });
  $('publish').onclick = guard(async () => {
    const r = await publish($('apikey').value.trim(), $('biz').value.trim(), $('user').value.trim(), $('payload').value);
    $('pubresult').textContent = `published id ${r.id} to ${r.channel}${r.duplicate ? ' (duplicate)' : ''}`;
  });
}

// ---- ?autotest=1 ----

function until(what, cond, ms) {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (cond()) return resolve();
      if (Date.now() > deadline) return reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      setTimeout(tick, 10);
    };
    tick();
  });
}

async function autotest() {
  const n = Number(params.get('n') ?? 20);
  const biz = params.get('biz') ?? 'demo';
  const failOnce = Number(params.get('fail_once') ?? 3); // this oplog's handler fails once
  const result = { status: 'fail', n, steps: [] };
  const step = (s) => { result.steps.push(s); $('status').textContent = s; };
  let c = null;
  try {
    const cfg = await loadConfig();
    if (!cfg.dev) throw new Error('autotest needs development mode (dev: true: it mints a token)');
    const apiKey = new URLSearchParams(location.search).get('key');
    if (!apiKey) throw new Error('autotest needs an API key to publish with: add &key=<key> to the URL');
    const url = wsURL(cfg);
    if (!url) throw new Error('the server has no WebSocket listener (comet.ws_addr)');
    const user = `autotest-${randomID()}`;
    const device = `browser-${randomID()}`;
    const channel = `${biz}/u/${user}`;
    result.user = user;
    result.device = device;
    result.url = url;
    const got = []; // {id, payload} in handler-success order
    const calls = new Map(); // id -> handler calls
    const events = [];
    let failed = false;
    c = new MsyncClient(url, {
      tokenProvider: () => devToken(user),
      device,
      appVersion: '1.0.0',
      store: new LocalStorageStore(`msync:${device}:`),
      backoffMin: 50,
      backoffMax: 500,
      onEvent: (e) => { events.push(e.kind); logEvent(e); },
    });
    c.registerBiz(biz, async (op) => {
      calls.set(op.id, (calls.get(op.id) ?? 0) + 1);
      if (op.id === failOnce && !failed) {
        failed = true;
        throw new Error('autotest: this handler fails once on purpose');
      }
      got.push({ id: op.id, payload: op.text });
    });
    c.start();
    await until('connected', () => c.connected, 10_000);
    step('connected');

    const published = [];
    const half = Math.floor(n / 2);
    for (let i = 1; i <= half; i++) published.push((await publish(apiKey, biz, user, JSON.stringify({ i }))).id);
    await until(`${half} live oplogs`, () => got.length >= half, 15_000);
    step(`received ${half} live`);

    // Go offline: what is published now must come as backlog on reconnect.
    c.background();
    await until('disconnected', () => !c.connected, 5_000);
    for (let i = half + 1; i <= n; i++) published.push((await publish(apiKey, biz, user, JSON.stringify({ i }))).id);
    step(`published ${n - half} while offline`);
    c.foreground();
    await until(`all ${n} oplogs`, () => got.length >= n, 20_000);
    // Give late duplicates a chance to show up before judging.
    await new Promise((r) => setTimeout(r, 300));
    step(`received ${got.length}`);

    const ids = got.map((g) => g.id);
    result.received = ids;
    result.published = published;
    result.events = events;
    const problems = [];
    if (JSON.stringify(ids) !== JSON.stringify(published)) problems.push(`received ids ${ids} != published ${published}`);
    got.forEach((g, k) => {
      if (JSON.parse(g.payload).i !== k + 1) problems.push(`oplog ${g.id}: payload ${g.payload}, want i=${k + 1}`);
    });
    for (let k = 1; k < ids.length; k++) if (ids[k] <= ids[k - 1]) problems.push(`out of order at ${k}: ${ids[k - 1]} then ${ids[k]}`);
    if (new Set(ids).size !== ids.length) problems.push('duplicates delivered');
    if (failOnce <= n && calls.get(published[failOnce - 1]) !== 2) problems.push(`failing oplog handled ${calls.get(published[failOnce - 1])} times, want 2 (one failure, one retry)`);
    const last = published.at(-1);
    if (c.syncPoint(channel) !== last) problems.push(`syncPoint ${c.syncPoint(channel)}, want ${last}`);
    const stored = localStorage.getItem(`msync:${device}:${channel}`);
    if (stored !== String(last)) problems.push(`localStorage point ${stored}, want ${last}`);
    if (events.filter((e) => e === 'connected').length < 2) problems.push(`events ${events}: want two connects`);
    result.problems = problems;
    result.status = problems.length === 0 ? 'pass' : 'fail';
  } catch (e) {
    result.error = String(e?.stack ?? e);
  } finally {
    try {
      await c?.close();
    } catch (e) {
      result.status = 'fail';
      result.error = `close: ${e}`;
    }
    $('result').textContent = JSON.stringify(result);
    $('result').dataset.status = result.status;
    $('result').style.display = 'block';
  }
}

if (params.has('autotest')) {
  autotest();
} else {
  interactive().catch((e) => logEvent({ kind: 'page_error', error: { message: e.message } }));
}
