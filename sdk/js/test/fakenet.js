// A fake WebSocket "network" for the client tests: the client under test gets
// FakeNet.WebSocket as its constructor, and the test plays the comet through
// the FakeConn objects it hands out (push frames, expect frames, drop).
import {
  Op, opName, decodeFrames, encodeFrame, decodeAuth, decodePoints, decodeHeartbeat, decodeRequest,
} from '../src/codec.js';

const decoders = {
  [Op.AUTH]: decodeAuth,
  [Op.ACK]: decodePoints,
  [Op.SYNC_REQ]: decodePoints,
  [Op.HEARTBEAT]: decodeHeartbeat,
  [Op.REQUEST]: decodeRequest,
};

// waitFor polls cond every 5 ms until it is truthy or ms pass.
export async function waitFor(what, cond, ms = 3000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export class FakeNet {
  constructor() {
    this.conns = [];
    this.refuse = false; // new connections fail before opening
    const net = this;
    this.WebSocket = class {
      constructor(url) {
        this.conn = new FakeConn(this, url);
        this.readyState = 0;
        this.bufferedAmount = 0;
        this.binaryType = 'blob';
        net.conns.push(this.conn);
        setTimeout(() => {
          if (this.readyState !== 0) return;
          if (net.refuse) {
            this.readyState = 3;
            this.onclose?.({ code: 1006, reason: '' });
            return;
          }
          this.readyState = 1;
          this.onopen?.();
        }, 0);
      }

      send(data) {
        if (this.readyState !== 1) throw new Error('InvalidStateError');
        this.conn.receive(data);
      }

      close() {
        if (this.readyState === 3) return;
        this.readyState = 3;
        this.conn.closedByClient = true;
        setTimeout(() => this.onclose?.({ code: 1005, reason: '' }), 0);
      }
    };
  }

  // conn waits for the n-th connection (0-based).
  async conn(n, ms = 3000) {
    return waitFor(`connection #${n}`, () => this.conns[n], ms);
  }
}

export class FakeConn {
  constructor(ws, url) {
    this.ws = ws;
    this.url = url;
    this.frames = []; // every frame the client sent, decoded: {op, seq, msg, at}
    this.read = 0; // frames consumed by expect
    this.closedByClient = false;
  }

  receive(data) {
    for (const f of decodeFrames(new Uint8Array(data))) {
      const d = decoders[f.op];
      // A compressed frame is kept as it came (tests inflate it themselves).
      this.frames.push({ op: f.op, seq: f.seq, msg: d && !f.compressed ? d(f.body) : null, at: Date.now(), compressed: f.compressed, body: f.body.slice() });
    }
  }

  // expect returns the next frame the client sent with op, skipping
  // heartbeats (unless op is HEARTBEAT); any other op in between fails.
  async expect(op, ms = 3000) {
    return waitFor(`${opName(op)} from the client`, () => {
      while (this.read < this.frames.length) {
        const f = this.frames[this.read++];
        if (f.op === op) return f;
        if (f.op === Op.HEARTBEAT) continue;
        throw new Error(`want ${opName(op)}, client sent ${opName(f.op)} ${JSON.stringify(f.msg)}`);
      }
      return null;
    }, ms);
  }

  // sent lists the frames of op sent so far (all of them, read or not).
  sent(op) {
    return this.frames.filter((f) => f.op === op);
  }

  push(op, seq, body) {
    const b = encodeFrame(op, seq, body);
    this.ws.onmessage?.({ data: b.buffer.slice(b.byteOffset, b.byteOffset + b.length) });
  }

  pushRaw(bytes) {
    this.ws.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) });
  }

  // drop closes the connection from the server side.
  drop(code = 1006) {
    if (this.ws.readyState === 3) return;
    this.ws.readyState = 3;
    this.ws.onclose?.({ code, reason: 'dropped by test' });
  }
}
