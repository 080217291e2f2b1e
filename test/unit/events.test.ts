/**
 * The event path to containerd: EventQueue ordering, retries, backpressure,
 * against a fake containerd Events service on a real ttrpc socket and a fake
 * `containerd publish` binary.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { TtrpcServer, unary } from '../../src/ttrpc/index.js';
import { Code, InvalidArgumentError, UnavailableError } from '../../src/errors/index.js';
import { containerd, google } from '../../src/proto/gen/containerd.js';
import {
  BinaryEventPublisher, EVENTS_SERVICE, EventQueue, Topics, TtrpcEventPublisher, createEventPublisher, typeNameOf,
  type EventEnvelope, type EventPublisher,
} from '../../src/events/index.js';
import { expectCode } from '../harness/status.js';

const ev = containerd.events;
const ForwardRequest = containerd.services.events.ttrpc.v1.ForwardRequest;
const Empty = google.protobuf.Empty;
const NS = 'k8s.io';

type Envelope = containerd.services.events.ttrpc.v1.Envelope;

async function tempDir(t: import('node:test').TestContext, prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A fake containerd: an Events service that records every envelope it is forwarded. */
async function fakeContainerd(t: import('node:test').TestContext, path: string, received: Envelope[] = []) {
  const server = new TtrpcServer();
  server.register(EVENTS_SERVICE, {
    Forward: unary(ForwardRequest, Empty, async (req) => {
      received.push(req.envelope as Envelope);
      return {};
    }),
  });
  await server.listen(path);
  t.after(() => server.close());
  return { server, received };
}

/** A logger whose records the test can read. */
function recordingLogger() {
  const records: Array<{ level: number; msg: string }> = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split('\n')) if (line) records.push(JSON.parse(line));
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), records };
}

function seconds(v: number | { toNumber(): number } | null | undefined): number {
  if (v == null) return 0;
  return typeof v === 'number' ? v : v.toNumber();
}

function exitEvent(i: number) {
  return { containerId: `c${i}`, id: `c${i}`, pid: 100 + i, exitStatus: i, exitedAt: { seconds: 1_700_000_000 + i, nanos: 5 } };
}

test('typeNameOf gives the bare full name containerd 1.6 looks up', () => {
  assert.equal(typeNameOf(ev.TaskExit), 'containerd.events.TaskExit');
  assert.equal(typeNameOf(ev.TaskCreate), 'containerd.events.TaskCreate');
});

test('events reach containerd Forward decoded, in order, with bare type URLs and the namespace', async (t) => {
  const dir = await tempDir(t, 'events-');
  const path = join(dir, 'containerd.sock.ttrpc');
  const { received } = await fakeContainerd(t, path);
  const q = new EventQueue({ publisher: new TtrpcEventPublisher(path), namespace: NS });
  t.after(() => q.close());

  const before = Date.now();
  await q.publishMessage(Topics.TaskCreate, ev.TaskCreate, { containerId: 'c1', bundle: '/b/c1', pid: 42 });
  await q.publishMessage(Topics.TaskStart, ev.TaskStart, { containerId: 'c1', pid: 42 });
  await q.publish(Topics.TaskExit, { typeName: 'containerd.events.TaskExit', value: ev.TaskExit.encode(exitEvent(1)).finish() });
  await q.publishMessage(Topics.TaskDelete, ev.TaskDelete, { containerId: 'c1', pid: 42, exitStatus: 1, id: 'c1' });
  assert.equal(await q.flush(5000), 0);
  assert.equal(q.pending, 0);
  const after = Date.now();

  assert.deepEqual(received.map((e) => e.topic), ['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete']);
  assert.deepEqual(received.map((e) => e.event?.type_url),
    ['containerd.events.TaskCreate', 'containerd.events.TaskStart', 'containerd.events.TaskExit', 'containerd.events.TaskDelete']);
  for (const e of received) {
    assert.equal(e.namespace, NS);
    const ms = seconds(e.timestamp?.seconds) * 1000 + Math.floor((e.timestamp?.nanos ?? 0) / 1e6);
    assert.ok(ms >= before - 1 && ms <= after + 1, `timestamp ${ms} not in [${before}, ${after}]`);
  }
  const create = ev.TaskCreate.decode(received[0]!.event!.value!);
  assert.deepEqual([create.containerId, create.bundle, create.pid], ['c1', '/b/c1', 42]);
  const exit = ev.TaskExit.decode(received[2]!.event!.value!);
  assert.deepEqual([exit.containerId, exit.pid, exit.exitStatus, seconds(exit.exitedAt?.seconds)], ['c1', 101, 1, 1_700_000_001]);
});

test('with containerd down the queue retries and, once it is up, delivers everything in order', async (t) => {
  const dir = await tempDir(t, 'events-');
  const path = join(dir, 'containerd.sock.ttrpc');
  const { logger, records } = recordingLogger();
  const q = new EventQueue({
    publisher: new TtrpcEventPublisher(path, logger), namespace: NS, logger, minBackoffMs: 5, maxBackoffMs: 40,
  });
  t.after(() => q.close());

  for (let i = 0; i < 10; i++) await q.publishMessage(Topics.TaskExit, ev.TaskExit, exitEvent(i));
  await sleep(200); // several failed attempts
  assert.equal(q.pending, 10);
  assert.equal(await q.flush(50), 10, 'flush times out and reports what is left');

  const { received } = await fakeContainerd(t, path);
  assert.equal(await q.flush(5000), 0);
  assert.deepEqual(received.map((e) => ev.TaskExit.decode(e.event!.value!).containerId),
    Array.from({ length: 10 }, (_, i) => `c${i}`));

  const warns = records.filter((r) => r.level === 40);
  const infos = records.filter((r) => r.level === 30 && /again/.test(r.msg));
  assert.equal(warns.length, 1, 'one warning per outage');
  assert.equal(infos.length, 1, 'one info when delivery resumes');
});

test('after containerd restarts the publisher reconnects; nothing is lost', async (t) => {
  const dir = await tempDir(t, 'events-');
  const path = join(dir, 'containerd.sock.ttrpc');
  const received: Envelope[] = [];
  const first = await fakeContainerd(t, path, received);
  const q = new EventQueue({ publisher: new TtrpcEventPublisher(path), namespace: NS, minBackoffMs: 5, maxBackoffMs: 40 });
  t.after(() => q.close());

  await q.publishMessage(Topics.TaskExit, ev.TaskExit, exitEvent(0));
  assert.equal(await q.flush(5000), 0);
  await first.server.close();
  for (let i = 1; i <= 5; i++) await q.publishMessage(Topics.TaskExit, ev.TaskExit, exitEvent(i));
  await sleep(100);
  assert.ok(q.pending > 0);
  await fakeContainerd(t, path, received);
  assert.equal(await q.flush(5000), 0);
  assert.deepEqual(received.map((e) => ev.TaskExit.decode(e.event!.value!).containerId), ['c0', 'c1', 'c2', 'c3', 'c4', 'c5']);
});

/** A publisher the test delivers by hand: each forward waits for release(). */
function gatedPublisher() {
  const delivered: EventEnvelope[] = [];
  const gates: Array<() => void> = [];
  let failNext: Error | undefined;
  const publisher: EventPublisher = {
    async forward(env, signal) {
      if (failNext) {
        const err = failNext;
        failNext = undefined;
        throw err;
      }
      await new Promise<void>((resolve, reject) => {
        gates.push(resolve);
        signal.addEventListener('abort', () => reject(signal.reason), { once: true });
      });
      delivered.push(env);
    },
  };
  return {
    publisher,
    delivered,
    failNextWith(err: Error) { failNext = err; },
    /** Lets the forward in flight finish. */
    async release() {
      while (gates.length === 0) await sleep(1);
      gates.shift()!();
      await sleep(5);
    },
  };
}

function raw(i: number) {
  return { typeName: 'containerd.events.TaskExit', value: ev.TaskExit.encode(exitEvent(i)).finish() };
}

test('a full queue makes publish wait until delivery frees room; abort gives up waiting', async (t) => {
  const g = gatedPublisher();
  const q = new EventQueue({ publisher: g.publisher, namespace: NS, capacity: 3 });
  t.after(() => q.close());

  for (let i = 0; i < 3; i++) await q.publish(Topics.TaskExit, raw(i));
  assert.equal(q.pending, 3);

  let fourthQueued = false;
  const fourth = q.publish(Topics.TaskExit, raw(3)).then(() => { fourthQueued = true; });
  const ac = new AbortController();
  const fifth = q.publish(Topics.TaskExit, raw(4), { signal: ac.signal });
  let sixthQueued = false;
  const sixth = q.publish(Topics.TaskExit, raw(5)).then(() => { sixthQueued = true; });
  await sleep(20);
  assert.equal(fourthQueued, false, 'publish beyond capacity waits');
  assert.equal(q.waiting, 3);

  ac.abort();
  await expectCode(fifth, Code.CANCELLED);
  assert.equal(q.waiting, 2);

  await g.release(); // c0 delivered: room for c3
  await fourth;
  assert.equal(fourthQueued, true);
  assert.equal(sixthQueued, false);
  await g.release(); // c1 delivered: room for c5
  await sixth;
  for (let i = 0; i < 3; i++) await g.release(); // c2, c3, c5
  assert.equal(await q.flush(1000), 0);
  assert.deepEqual(g.delivered.map((e) => ev.TaskExit.decode(e.value).containerId), ['c0', 'c1', 'c2', 'c3', 'c5']);

  // An already aborted signal only matters when publish would have to wait.
  const pre = AbortSignal.abort();
  await q.publish(Topics.TaskExit, raw(6), { signal: pre });
  await g.release();
  assert.equal(g.delivered.length, 6);
});

test('an event containerd rejects as invalid is dropped, later ones still go; other failures are retried', async (t) => {
  const g = gatedPublisher();
  const q = new EventQueue({ publisher: g.publisher, namespace: NS, minBackoffMs: 1, maxBackoffMs: 2 });
  t.after(() => q.close());
  g.failNextWith(new InvalidArgumentError('bad topic'));
  await q.publish(Topics.TaskExit, raw(0));
  await q.publish(Topics.TaskExit, raw(1));
  await g.release();
  g.failNextWith(new UnavailableError('down'));
  await q.publish(Topics.TaskExit, raw(2));
  await g.release();
  assert.equal(await q.flush(1000), 0);
  assert.deepEqual(g.delivered.map((e) => ev.TaskExit.decode(e.value).containerId), ['c1', 'c2']);
});

test('publish checks topic and type name; close rejects waiters and later publishes', async (t) => {
  const g = gatedPublisher();
  const q = new EventQueue({ publisher: g.publisher, namespace: NS, capacity: 1 });
  await expectCode(q.publish('tasks/exit', raw(0)), Code.INVALID_ARGUMENT);
  await expectCode(q.publish('/tasks/exit', { typeName: 'type.googleapis.com/containerd.events.TaskExit', value: new Uint8Array() }),
    Code.INVALID_ARGUMENT);
  assert.throws(() => new EventQueue({ publisher: g.publisher, namespace: '' }));

  await q.publish(Topics.TaskExit, raw(0));
  const waiting = q.publish(Topics.TaskExit, raw(1));
  const flushed = q.flush(10_000);
  await sleep(10);
  await q.close();
  await expectCode(waiting, Code.UNAVAILABLE);
  assert.equal(await flushed, 2, 'flush reports what close dropped');
  await expectCode(q.publish(Topics.TaskExit, raw(2)), Code.UNAVAILABLE);
  assert.equal(g.delivered.length, 0);
});

/** A fake `containerd` binary that records its argv and stdin, then exits with `status`. */
async function fakeBinary(dir: string, body = 'exit 0'): Promise<string> {
  const bin = join(dir, 'containerd');
  await writeFile(bin, [
    '#!/bin/sh',
    `for a in "$@"; do printf '%s\\n' "$a"; done > '${dir}/argv'`,
    `cat > '${dir}/stdin'`,
    body,
    '',
  ].join('\n'));
  await chmod(bin, 0o755);
  return bin;
}

test('BinaryEventPublisher runs `<bin> --address A publish --topic T --namespace NS` with the Any on stdin', async (t) => {
  const dir = await tempDir(t, 'events-bin-');
  const bin = await fakeBinary(dir);
  const pub = new BinaryEventPublisher(bin, '/run/containerd/containerd.sock');
  const value = ev.TaskExit.encode(exitEvent(7)).finish();
  await pub.forward({ timestamp: new Date(), namespace: NS, topic: '/tasks/exit', typeUrl: 'containerd.events.TaskExit', value },
    new AbortController().signal);

  const argv = (await readFile(join(dir, 'argv'), 'utf8')).split('\n').slice(0, -1);
  assert.deepEqual(argv, ['--address', '/run/containerd/containerd.sock', 'publish', '--topic', '/tasks/exit', '--namespace', NS]);
  const any = google.protobuf.Any.decode(await readFile(join(dir, 'stdin')));
  assert.equal(any.type_url, 'containerd.events.TaskExit');
  const exit = ev.TaskExit.decode(any.value);
  assert.deepEqual([exit.containerId, exit.pid, exit.exitStatus], ['c7', 107, 7]);
});

test('BinaryEventPublisher through the queue: events go in order, one process each', async (t) => {
  const dir = await tempDir(t, 'events-bin-');
  const bin = await fakeBinary(dir, `cat '${dir}/stdin' >> '${dir}/all'`);
  const q = new EventQueue({ publisher: new BinaryEventPublisher(bin, '/run/c.sock'), namespace: NS });
  t.after(() => q.close());
  for (let i = 0; i < 3; i++) await q.publishMessage(Topics.TaskExit, ev.TaskExit, exitEvent(i));
  assert.equal(await q.flush(10_000), 0);
  // The file holds the three stdin payloads back to back: cut it by their known lengths.
  const all = await readFile(join(dir, 'all'));
  const ids: string[] = [];
  let off = 0;
  for (let i = 0; i < 3; i++) {
    const len = google.protobuf.Any.encode({ type_url: 'containerd.events.TaskExit', value: ev.TaskExit.encode(exitEvent(i)).finish() }).finish().length;
    ids.push(ev.TaskExit.decode(google.protobuf.Any.decode(all.subarray(off, off + len)).value).containerId);
    off += len;
  }
  assert.deepEqual(ids, ['c0', 'c1', 'c2']);
  assert.equal(off, all.length);
});

test('BinaryEventPublisher failures: non-zero exit with stderr, timeout, missing binary, abort', async (t) => {
  const dir = await tempDir(t, 'events-bin-');
  const env: EventEnvelope = { timestamp: new Date(), namespace: NS, topic: '/tasks/oom', typeUrl: 'containerd.events.TaskOOM', value: new Uint8Array() };
  const never = new AbortController().signal;

  const failing = await fakeBinary(dir, 'echo "containerd: failed to dial" >&2; exit 1');
  await expectCode(new BinaryEventPublisher(failing, '/x').forward(env, never), Code.UNAVAILABLE, /exit status 1: containerd: failed to dial/);

  const slowDir = await tempDir(t, 'events-bin-');
  const slow = await fakeBinary(slowDir, 'exec sleep 30');
  const started = Date.now();
  await expectCode(new BinaryEventPublisher(slow, '/x', undefined, { timeoutMs: 200 }).forward(env, never), Code.DEADLINE_EXCEEDED);
  assert.ok(Date.now() - started < 5000);

  await expectCode(new BinaryEventPublisher(join(dir, 'nope'), '/x').forward(env, never), Code.UNAVAILABLE, /cannot run/);

  const ac = new AbortController();
  const p = new BinaryEventPublisher(slow, '/x').forward(env, ac.signal);
  setTimeout(() => ac.abort(), 50);
  await expectCode(p, Code.CANCELLED);
});

test('createEventPublisher: ttrpc when TTRPC_ADDRESS is set, else the publish binary', () => {
  assert.ok(createEventPublisher({ ttrpcAddress: '/run/containerd/containerd.sock.ttrpc', publishBinary: '/usr/bin/containerd', containerdAddress: '/a' })
    instanceof TtrpcEventPublisher);
  assert.ok(createEventPublisher({ publishBinary: '/usr/bin/containerd', containerdAddress: '/a' }) instanceof BinaryEventPublisher);
  assert.throws(() => createEventPublisher({}));
});
