/**
 * ttrpc client and server against each other over real unix sockets,
 * including every failure case: each asserts the status code.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { TtrpcClient, TtrpcServer, unary, FrameDecoder, MessageType, encodeFrame, MESSAGE_LENGTH_MAX } from '../../src/ttrpc/index.js';
import { Code, NotFoundError } from '../../src/errors/index.js';
import { ttrpc } from '../../src/proto/gen/ttrpc.js';
import { decodeResponse, encodeRequest } from '../../src/ttrpc/messages.js';
import { expectCode } from '../harness/status.js';

const KV = ttrpc.KeyValue;
const SVC = 'test.v1.Echo';

interface Fixture {
  path: string;
  server: TtrpcServer;
  /** Abort reasons seen by Sleep handlers. */
  aborted: string[];
}

async function fixture(t: import('node:test').TestContext, drainTimeoutMs = 2000): Promise<Fixture> {
  const dir = await mkdtemp(join(tmpdir(), 'ttrpc-test-'));
  const path = join(dir, 's.sock');
  const aborted: string[] = [];
  const server = new TtrpcServer({ drainTimeoutMs });
  server.register(SVC, {
    Echo: unary(KV, KV, async (req) => ({ key: req.key, value: req.value })),
    Sleep: unary(KV, KV, async (req, ctx) => {
      try {
        await sleep(Number(req.value), undefined, { signal: ctx.signal });
      } catch (err) {
        aborted.push(String((ctx.signal.reason as Error)?.message ?? err));
        throw err;
      }
      return { key: req.key, value: req.value };
    }),
    Throw: async () => {
      throw new Error('boom');
    },
    NotFound: async () => {
      throw new NotFoundError('container c1 not found');
    },
    Big: async () => Buffer.alloc(MESSAGE_LENGTH_MAX + 1),
    Meta: unary(KV, KV, async (req, ctx) => ({ key: req.key, value: (ctx.metadata.get(req.key) ?? []).join(',') })),
  });
  await server.listen(path);
  t.after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { path, server, aborted };
}

async function client(t: import('node:test').TestContext, path: string): Promise<TtrpcClient> {
  const c = await TtrpcClient.connect(path, { timeoutMs: 2000 });
  t.after(() => c.close());
  return c;
}

function echo(c: TtrpcClient, method: string, key: string, value: string, opts = {}) {
  return c.request(SVC, method, KV, KV, { key, value }, opts);
}

/** A raw connection that writes hand-made frames and collects responses by stream id. */
async function rawConn(t: import('node:test').TestContext, path: string) {
  const sock = net.createConnection({ path });
  await new Promise((r) => sock.once('connect', r));
  t.after(() => sock.destroy());
  const decoder = new FrameDecoder();
  const responses = new Map<number, { code: Code; message: string; payload: Uint8Array }>();
  const waiters = new Map<number, () => void>();
  let closed = false;
  sock.on('data', (chunk: Buffer) => {
    for (const f of decoder.push(chunk)) {
      if (f.kind !== 'frame' || f.type !== MessageType.Response) continue;
      responses.set(f.streamId, decodeResponse(f.payload));
      waiters.get(f.streamId)?.();
    }
  });
  const closedP = new Promise<void>((r) => sock.on('close', () => { closed = true; r(); }));
  return {
    sock,
    get closed() { return closed; },
    closedP,
    async response(id: number, ms = 2000) {
      if (!responses.has(id)) {
        await Promise.race([
          new Promise<void>((r) => waiters.set(id, r)),
          sleep(ms).then(() => { throw new Error(`no response on stream ${id}`); }),
        ]);
      }
      return responses.get(id)!;
    },
    request(id: number, method: string, value: string, timeoutNano = 0) {
      const payload = encodeRequest({
        service: SVC, method, payload: KV.encode({ key: 'k', value }).finish(), timeoutNano, metadata: new Map(),
      });
      sock.write(encodeFrame(id, MessageType.Request, 0, payload));
    },
  };
}

test('a unary call round-trips, with metadata', async (t) => {
  const f = await fixture(t);
  const c = await client(t, f.path);
  assert.deepEqual({ ...(await echo(c, 'Echo', 'a', 'b')) }, { key: 'a', value: 'b' });
  const m = await c.request(SVC, 'Meta', KV, KV, { key: 'x-id', value: '' }, { metadata: { 'x-id': ['1', '2'] } });
  assert.equal(m.value, '1,2');
});

test('many concurrent calls on one connection complete in any order', async (t) => {
  const f = await fixture(t);
  const c = await client(t, f.path);
  const n = 200;
  const order: number[] = [];
  const calls = Array.from({ length: n }, (_, i) => {
    const delay = (n - i) % 17; // later calls often finish first
    return echo(c, 'Sleep', String(i), String(delay)).then((r) => {
      order.push(Number(r.key));
      return r;
    });
  });
  const results = await Promise.all(calls);
  results.forEach((r, i) => assert.equal(r.key, String(i)));
  assert.notDeepEqual(order, [...order].sort((a, b) => a - b), 'completions were reordered');
});

test('unknown service and unknown method answer UNIMPLEMENTED', async (t) => {
  const f = await fixture(t);
  const c = await client(t, f.path);
  await expectCode(c.call('no.such.Service', 'Echo', new Uint8Array()), Code.UNIMPLEMENTED, /service no.such.Service/);
  await expectCode(c.call(SVC, 'NoSuchMethod', new Uint8Array()), Code.UNIMPLEMENTED, /method NoSuchMethod/);
  await expectCode(c.call(SVC, 'constructor', new Uint8Array()), Code.UNIMPLEMENTED);
  assert.equal((await echo(c, 'Echo', 'still', 'alive')).key, 'still');
});

test('a handler error becomes INTERNAL; a carried status is kept', async (t) => {
  const f = await fixture(t);
  const c = await client(t, f.path);
  await expectCode(c.call(SVC, 'Throw', new Uint8Array()), Code.INTERNAL, /boom/);
  await expectCode(c.call(SVC, 'NotFound', new Uint8Array()), Code.NOT_FOUND, /container c1 not found/);
  assert.equal((await echo(c, 'Echo', 'x', 'y')).key, 'x');
});

test('an oversized request frame gets RESOURCE_EXHAUSTED and the connection survives', async (t) => {
  const f = await fixture(t);
  const raw = await rawConn(t, f.path);
  const header = Buffer.alloc(10);
  header.writeUInt32BE(MESSAGE_LENGTH_MAX + 1, 0);
  header.writeUInt32BE(1, 4);
  header.writeUInt8(MessageType.Request, 8);
  raw.sock.write(header);
  raw.sock.write(Buffer.alloc(MESSAGE_LENGTH_MAX + 1, 0x55));
  const r = await raw.response(1, 5000);
  assert.equal(Code[r.code], 'RESOURCE_EXHAUSTED');
  assert.match(r.message, /exceed maximum message size/);
  raw.request(3, 'Echo', 'after');
  const ok = await raw.response(3);
  assert.equal(r.code === Code.RESOURCE_EXHAUSTED && ok.code, Code.OK);
  assert.equal(KV.decode(ok.payload).value, 'after');
});

test('an oversized request or response is refused without sending it', async (t) => {
  const f = await fixture(t);
  const c = await client(t, f.path);
  await expectCode(c.call(SVC, 'Echo', Buffer.alloc(MESSAGE_LENGTH_MAX)), Code.RESOURCE_EXHAUSTED);
  await expectCode(c.call(SVC, 'Big', new Uint8Array()), Code.RESOURCE_EXHAUSTED);
  assert.equal((await echo(c, 'Echo', 'x', 'y')).key, 'x');
});

test('an undecodable request payload gets INVALID_ARGUMENT and the connection survives', async (t) => {
  const f = await fixture(t);
  const raw = await rawConn(t, f.path);
  raw.sock.write(encodeFrame(1, MessageType.Request, 0, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])));
  assert.equal(Code[(await raw.response(1)).code], 'INVALID_ARGUMENT');
  // A valid envelope whose inner message is garbage fails in the typed handler.
  raw.sock.write(encodeFrame(3, MessageType.Request, 0, encodeRequest({
    service: SVC, method: 'Echo', payload: Buffer.from([0x0a, 0xff]), timeoutNano: 0, metadata: new Map(),
  })));
  const r = await raw.response(3);
  assert.equal(Code[r.code], 'INVALID_ARGUMENT');
  raw.request(5, 'Echo', 'fine');
  assert.equal((await raw.response(5)).code, Code.OK);
});

test('even stream ids are refused; unknown frame types are ignored', async (t) => {
  const f = await fixture(t);
  const raw = await rawConn(t, f.path);
  raw.request(2, 'Echo', 'even');
  assert.equal(Code[(await raw.response(2)).code], 'INVALID_ARGUMENT');
  raw.sock.write(encodeFrame(9, 0x7f, 0xff, Buffer.from('garbage header type')));
  raw.sock.write(encodeFrame(11, MessageType.Data, 0, Buffer.from('stray data')));
  raw.request(13, 'Echo', 'ok');
  assert.equal((await raw.response(13)).code, Code.OK);
});

test('a truncated frame ends only that connection; the server keeps serving others', async (t) => {
  const f = await fixture(t);
  const raw = await rawConn(t, f.path);
  const frame = encodeFrame(1, MessageType.Request, 0, encodeRequest({
    service: SVC, method: 'Echo', payload: new Uint8Array(), timeoutNano: 0, metadata: new Map(),
  }));
  raw.sock.end(frame.subarray(0, frame.length - 3));
  await raw.closedP;
  const c = await client(t, f.path);
  assert.equal((await echo(c, 'Echo', 'other', 'conn')).key, 'other');
});

test('a garbage header that claims a huge length is discarded, the server keeps serving', async (t) => {
  const f = await fixture(t);
  const raw = await rawConn(t, f.path);
  raw.sock.write(Buffer.from([0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1, 1, 0, 1, 2, 3]));
  raw.sock.end();
  await raw.closedP;
  const c = await client(t, f.path);
  assert.equal((await echo(c, 'Echo', 'a', 'b')).value, 'b');
});

test('timeout_nano is enforced by the server: DEADLINE_EXCEEDED and the handler is cancelled', async (t) => {
  const f = await fixture(t);
  const raw = await rawConn(t, f.path);
  raw.request(1, 'Sleep', '5000', 50e6);
  const r = await raw.response(1);
  assert.equal(Code[r.code], 'DEADLINE_EXCEEDED');
  await sleep(20);
  assert.equal(f.aborted.length, 1);
  assert.match(f.aborted[0]!, /deadline/);
});

test('a client timeout fails with DEADLINE_EXCEEDED; an AbortSignal with CANCELLED', async (t) => {
  const f = await fixture(t);
  const c = await client(t, f.path);
  await expectCode(echo(c, 'Sleep', 'a', '5000', { timeoutMs: 50 }), Code.DEADLINE_EXCEEDED);
  const ac = new AbortController();
  const p = echo(c, 'Sleep', 'a', '5000', { signal: ac.signal });
  setTimeout(() => ac.abort(), 20);
  await expectCode(p, Code.CANCELLED);
  await expectCode(echo(c, 'Echo', 'a', 'b', { signal: AbortSignal.abort() }), Code.CANCELLED);
  assert.equal((await echo(c, 'Echo', 'a', 'b')).value, 'b');
});

test('calls on a dropped connection fail with UNAVAILABLE instead of hanging', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ttrpc-drop-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 's.sock');
  const conns: net.Socket[] = [];
  const srv = net.createServer((s) => conns.push(s)).listen(path);
  await new Promise((r) => srv.once('listening', r));
  t.after(() => srv.close());
  const c = await TtrpcClient.connect(path);
  const p1 = echo(c, 'Echo', 'a', 'b');
  const p2 = echo(c, 'Sleep', 'a', '100');
  await sleep(20);
  for (const s of conns) s.destroy();
  await expectCode(p1, Code.UNAVAILABLE);
  await expectCode(p2, Code.UNAVAILABLE);
  await c.closed;
  await expectCode(echo(c, 'Echo', 'a', 'b'), Code.UNAVAILABLE);
});

test('connecting to a missing socket fails with UNAVAILABLE', async () => {
  await expectCode(TtrpcClient.connect('/nonexistent/ttrpc.sock'), Code.UNAVAILABLE);
});

test('close() lets in-flight calls finish, then refuses new connections', async (t) => {
  const f = await fixture(t);
  const c = await client(t, f.path);
  const p = echo(c, 'Sleep', 'late', '100');
  await sleep(10);
  await f.server.close();
  assert.equal((await p).key, 'late');
  await c.closed;
  await expectCode(TtrpcClient.connect(f.path, { timeoutMs: 500 }), Code.UNAVAILABLE);
});

test('close() cuts calls that outlive the drain timeout', async (t) => {
  const f = await fixture(t, 50);
  const c = await client(t, f.path);
  const p = echo(c, 'Sleep', 'a', '10000');
  await sleep(10);
  await f.server.close();
  await expectCode(p, Code.UNAVAILABLE);
  assert.equal(f.aborted.length, 1);
});
