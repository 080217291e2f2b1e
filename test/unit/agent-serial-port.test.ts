/**
 * The agent channel over a virtio-serial port: handshake, host disconnects
 * and reconnects, stale bytes, backpressure. The port is a fake PortIo with
 * virtio-serial's semantics as measured in the guest:
 * - read() returns 0 at once while the host end is not connected, blocks
 *   while it is connected and idle, and returns 0 when the host goes away;
 * - write() blocks while the host is not connected and is delivered to the
 *   next host that connects;
 * - bytes the host sends reach the guest in pieces of at most 4 KiB.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { SerialPort, type PortIo } from '../../src/agent/serial-port-stream.js';
import { ChannelParser, ChannelSession, findReady, helloLine, readyLine, type ChannelConnection, type ChannelEvent } from '../../src/agent/channel.js';
import { TtrpcServer, unary, encodeFrame, MessageType } from '../../src/ttrpc/index.js';
import { AgentClient, agentHandshake } from '../../src/agent-client/index.js';
import { Code, StatusError } from '../../src/errors/index.js';
import { silentLogger } from '../../src/log/index.js';
import { ttrpc } from '../../src/proto/gen/ttrpc.js';
import { TtrpcClient } from '../../src/ttrpc/index.js';

const KV = ttrpc.KeyValue;
const SVC = 'test.v1.Port';

/** The host end of the fake port: what QEMU's chardev socket gives the shim. */
class HostEnd extends Duplex {
  constructor(private readonly port: FakePort) {
    super();
  }
  override _read(): void {}
  override _write(chunk: Buffer, _e: BufferEncoding, cb: () => void): void {
    if (this.port.host === this) this.port.fromHost(chunk);
    cb(); // a host writing while the guest is slow is buffered by QEMU
  }
}

class FakePort implements PortIo {
  host: HostEnd | undefined;
  private inbound: Buffer[] = [];
  private reader: ((n: number) => void) | undefined;
  private readerBuf: Buffer | undefined;
  private blockedWrites: Array<{ buf: Buffer; resolve(n: number): void }> = [];
  closed = false;
  reads = 0;

  /** A host connects; writes blocked meanwhile are delivered to it first. */
  connect(): HostEnd {
    const h = new HostEnd(this);
    this.host = h;
    for (const w of this.blockedWrites.splice(0)) {
      h.push(Buffer.from(w.buf));
      w.resolve(w.buf.length);
    }
    return h;
  }

  /**
   * The host goes away. notifyReader=false models the race where the guest's
   * blocked read has not woken up yet when the host is already back.
   */
  disconnect(notifyReader = true): void {
    const h = this.host;
    this.host = undefined;
    this.inbound = [];
    h?.push(null);
    h?.destroy();
    if (notifyReader) this.wake(0);
  }

  fromHost(chunk: Buffer): void {
    for (let off = 0; off < chunk.length; off += 4096) this.inbound.push(Buffer.from(chunk.subarray(off, off + 4096)));
    this.deliver();
  }

  read(buf: Buffer): Promise<number> {
    this.reads++;
    if (this.closed) return Promise.resolve(0);
    return new Promise((resolve) => {
      this.reader = resolve;
      this.readerBuf = buf;
      if (this.inbound.length) this.deliver();
      else if (!this.host) this.wake(0);
    });
  }

  write(buf: Buffer): Promise<number> {
    if (this.host) {
      this.host.push(Buffer.from(buf));
      return Promise.resolve(buf.length);
    }
    return new Promise((resolve) => this.blockedWrites.push({ buf: Buffer.from(buf), resolve }));
  }

  async close(): Promise<void> {
    this.closed = true;
    this.wake(0);
  }

  private deliver(): void {
    if (!this.reader || !this.readerBuf || !this.inbound.length) return;
    const chunk = this.inbound.shift()!;
    const n = Math.min(chunk.length, this.readerBuf.length);
    chunk.copy(this.readerBuf, 0, 0, n);
    if (n < chunk.length) this.inbound.unshift(chunk.subarray(n));
    this.wake(n);
  }

  private wake(n: number): void {
    const r = this.reader;
    this.reader = undefined;
    this.readerBuf = undefined;
    r?.(n);
  }
}

interface Rig {
  port: FakePort;
  serial: SerialPort;
  server: TtrpcServer;
  connections: ChannelConnection[];
  aborted: string[];
}

function rig(t: import('node:test').TestContext): Rig {
  const port = new FakePort();
  const serial = new SerialPort(port, { logger: silentLogger(), idleMinMs: 1, idleMaxMs: 4 });
  const server = new TtrpcServer({ drainTimeoutMs: 100 });
  const aborted: string[] = [];
  server.register(SVC, {
    Echo: unary(KV, KV, async (req) => ({ key: req.key, value: req.value })),
    Sleep: unary(KV, KV, async (req, ctx) => {
      try {
        await sleep(Number(req.value), undefined, { signal: ctx.signal });
      } catch (err) {
        aborted.push(req.key);
        throw err;
      }
      return { key: req.key, value: 'slept' };
    }),
  });
  const connections: ChannelConnection[] = [];
  serial.on('connection', (conn) => {
    connections.push(conn);
    server.serve(conn);
  });
  serial.start();
  t.after(async () => {
    await serial.close();
    await server.close();
  });
  return { port, serial, server, connections, aborted };
}

/** A host connection through the handshake, as a ttrpc client. */
async function hostClient(port: FakePort, opts: { helloIntervalMs?: number } = {}): Promise<{ host: HostEnd; client: TtrpcClient; received: Buffer }> {
  const host = port.connect();
  // Everything the host received up to the handshake's end (stale bytes included).
  const seen: Buffer[] = [];
  const spy = (d: Buffer) => seen.push(Buffer.from(d));
  host.prependListener('data', spy);
  await agentHandshake(host, { timeoutMs: 5_000, helloIntervalMs: opts.helloIntervalMs ?? 20 });
  host.off('data', spy);
  const client = new TtrpcClient(host);
  host.resume();
  return { host, client, received: Buffer.concat(seen) };
}

const echo = (c: TtrpcClient, value: string) => c.request(SVC, 'Echo', KV, KV, { key: 'k', value }, { timeoutMs: 5_000 });

test('handshake, calls, and a fresh connection after the host reconnects', async (t) => {
  const r = rig(t);
  const a = await hostClient(r.port);
  assert.equal((await echo(a.client, 'one')).value, 'one');
  assert.equal(r.connections.length, 1);

  // The host goes away in the middle of a call: the agent ends that
  // connection (the handler's signal aborts) and the call fails UNAVAILABLE.
  const slow = a.client.request(SVC, 'Sleep', KV, KV, { key: 'slow', value: '10000' });
  await sleep(20);
  r.port.disconnect();
  await assert.rejects(slow, (e: StatusError) => e.code === Code.UNAVAILABLE);
  await waitUntil(() => r.aborted.includes('slow'));
  assert.ok(r.connections[0]!.destroyed);

  // While nobody is connected the loop keeps polling (0-byte reads).
  const before = r.port.reads;
  await sleep(30);
  assert.ok(r.port.reads > before);

  const b = await hostClient(r.port);
  assert.equal((await echo(b.client, 'two')).value, 'two');
  assert.equal(r.connections.length, 2);
  b.client.close();
});

test('a HELLO lost while the guest was not reading is retried; the retries are ignored', async (t) => {
  const port = new FakePort();
  // The host connects and says HELLO before the agent reads at all: drop it
  // (QEMU loses bytes sent while the guest port is closed).
  const host = port.connect();
  const hs = agentHandshake(host, { timeoutMs: 5_000, helloIntervalMs: 15 });
  await sleep(5);
  (port as unknown as { inbound: Buffer[] }).inbound = [];
  const serial = new SerialPort(port, { logger: silentLogger(), idleMinMs: 1, idleMaxMs: 4 });
  const conns: ChannelConnection[] = [];
  const server = new TtrpcServer();
  server.register(SVC, { Echo: unary(KV, KV, async (req) => ({ key: req.key, value: req.value })) });
  serial.on('connection', (c) => {
    conns.push(c);
    server.serve(c);
  });
  serial.start();
  t.after(async () => {
    await serial.close();
    await server.close();
  });
  await hs;
  const client = new TtrpcClient(host);
  host.resume();
  await sleep(60); // more HELLOs arrive after READY: same nonce, ignored
  assert.equal((await echo(client, 'after-retries')).value, 'after-retries');
  assert.equal(conns.length, 1);
  client.close();
});

test('stale bytes of an old connection never reach the new one', async (t) => {
  const r = rig(t);
  const a = await hostClient(r.port);
  // A call whose answer is written after the host left, before the agent
  // noticed: the write blocks and is delivered to the next host, ahead of
  // its READY. The new host's handshake must discard it.
  const slow = a.client.request(SVC, 'Sleep', KV, KV, { key: 'stale', value: '40' }).catch((e: unknown) => e);
  await sleep(5);
  r.port.disconnect(false); // the agent's read does not wake up
  await sleep(80); // the answer is written now, and blocks
  const b = await hostClient(r.port);
  const readyAt = b.received.indexOf('KATAAGENT1 READY');
  assert.ok(readyAt >= 10, `expected the stale answer before READY, got ${readyAt}`);
  assert.equal(b.received.readUInt32BE(4), 1, 'the stale bytes are the old stream-1 answer (the id the new client uses first)');
  // Stream id 1 again on the new client: a leaked answer would match it.
  const res = await b.client.request(SVC, 'Sleep', KV, KV, { key: 'fresh', value: '1' }, { timeoutMs: 5_000 });
  assert.equal(res.key, 'fresh');
  assert.equal((await echo(b.client, 'x')).value, 'x');
  assert.equal(r.connections.length, 2, 'the new HELLO started a new connection though no 0-byte read was seen');
  assert.ok(((await slow) as StatusError).code === Code.UNAVAILABLE);
  b.client.close();
});

test('AgentClient over the port: handshake then typed calls; UNAVAILABLE once the port drops', async (t) => {
  const r = rig(t);
  const host = r.port.connect();
  await agentHandshake(host, { timeoutMs: 5_000, helloIntervalMs: 20 });
  const client = new AgentClient(host, { timeoutMs: 2_000 });
  // The test server has no AgentService: the agent answers UNIMPLEMENTED,
  // proving the call went through the channel and back.
  await assert.rejects(client.check(), (e: StatusError) => e.code === Code.UNIMPLEMENTED);
  r.port.disconnect();
  await client.closed;
  await assert.rejects(client.check(), (e: StatusError) => e.code === Code.UNAVAILABLE);
});

test('backpressure: the read loop stops while the connection is not read', async (t) => {
  const port = new FakePort();
  const serial = new SerialPort(port, { logger: silentLogger(), idleMinMs: 1, idleMaxMs: 4 });
  let conn: ChannelConnection | undefined;
  serial.on('connection', (c) => {
    conn = c; // nobody reads it
  });
  serial.start();
  t.after(() => serial.close());
  const host = port.connect();
  host.on('data', () => {});
  host.write(helloLine('abcdef0123456789'));
  await waitUntil(() => conn !== undefined);
  // One big frame: 1 MiB of payload.
  host.write(encodeFrame(1, MessageType.Request, 0, Buffer.alloc(1 << 20)));
  await sleep(50);
  const buffered = conn!.readableLength;
  const reads = port.reads;
  await sleep(50);
  assert.equal(port.reads, reads, 'the loop went on reading although the connection is full');
  assert.ok(buffered < 256 * 1024, `buffered ${buffered}`);
  // Reading resumes the loop.
  let got = 0;
  conn!.on('data', (d: Buffer) => (got += d.length));
  await waitUntil(() => got >= (1 << 20) + 10);
});

test('ChannelParser: same events whatever the split', () => {
  const frame = (id: number, n: number) => encodeFrame(id, MessageType.Request, 0, Buffer.alloc(n, id));
  const input = Buffer.concat([
    Buffer.from('garbage KATA noise\n'),
    helloLine('nonce00001'),
    frame(1, 30),
    helloLine('nonce00001'),
    frame(3, 5),
    helloLine('nonce00002'),
    frame(5, 0),
  ]);
  const summarize = (evs: ChannelEvent[]) => {
    const out: string[] = [];
    let data: Buffer[] = [];
    const flush = () => {
      if (data.length) out.push(`data:${Buffer.concat(data).toString('hex')}`);
      data = [];
    };
    for (const e of evs) {
      if (e.kind === 'hello') {
        flush();
        out.push(`hello:${e.nonce}`);
      } else {
        data.push(Buffer.from(e.data));
      }
    }
    flush();
    return out;
  };
  const whole = summarize(new ChannelParser().push(input));
  assert.deepEqual(whole, [
    'hello:nonce00001', `data:${frame(1, 30).toString('hex')}`,
    'hello:nonce00001', `data:${frame(3, 5).toString('hex')}`,
    'hello:nonce00002', `data:${frame(5, 0).toString('hex')}`,
  ]);
  for (let cut = 1; cut < input.length; cut++) {
    const p = new ChannelParser();
    const evs = [...p.push(input.subarray(0, cut)), ...p.push(input.subarray(cut))];
    assert.deepEqual(summarize(evs), whole, `split at ${cut}`);
  }
  // Byte by byte.
  const p = new ChannelParser();
  const evs: ChannelEvent[] = [];
  for (const b of input) evs.push(...p.push(Buffer.from([b])));
  assert.deepEqual(summarize(evs), whole);
});

test('ChannelSession: one connection per nonce, READY for each, retries ignored', async () => {
  const writes: string[] = [];
  const session = new ChannelSession(async (_c, data) => {
    writes.push(data.toString('latin1'));
  });
  const conns: ChannelConnection[] = [];
  session.on('connection', (c) => conns.push(c));
  session.input(Buffer.concat([helloLine('aaaaaaaa'), helloLine('aaaaaaaa')]));
  assert.equal(conns.length, 1);
  session.input(helloLine('bbbbbbbb'));
  assert.equal(conns.length, 2);
  await sleep(1);
  assert.ok(conns[0]!.destroyed);
  assert.deepEqual(writes, [readyLine('aaaaaaaa').toString('latin1'), readyLine('bbbbbbbb').toString('latin1')]);
  session.hostGone();
  await sleep(1);
  assert.ok(conns[1]!.destroyed);
  assert.equal(session.connection, undefined);
  // findReady: the offset past the READY line, stale bytes before it.
  const buf = Buffer.concat([Buffer.from('stale'), readyLine('cccccccc'), Buffer.from('rest')]);
  assert.equal(buf.subarray(findReady(buf, 'cccccccc')).toString(), 'rest');
  assert.equal(findReady(buf, 'dddddddd'), -1);
});

async function waitUntil(fn: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(2);
  }
}
