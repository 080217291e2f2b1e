/**
 * The agent's pull-based stdio: reads served in call order, nothing read
 * ahead beyond the pipe's high-water mark until the host reads (then up to
 * the last read's size), cancelled reads consume nothing,
 * EOF for everyone at the end; stdin writes answered once accepted.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough, Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { OutputStream, StdinSink, MAX_READ_LEN } from '../../src/agent/stdio.js';
import { Code, StatusError } from '../../src/errors/index.js';

test('reads wait for data, are served in order, and end with EOF', async () => {
  const out = new OutputStream();
  const r1 = out.read(3);
  const r2 = out.read(100);
  const src = new PassThrough();
  out.attach(src);
  src.write('abcdef');
  assert.deepEqual(await r1, { data: Buffer.from('abc'), eof: false });
  assert.deepEqual(await r2, { data: Buffer.from('def'), eof: false });
  const r3 = out.read(10);
  const r4 = out.read(10);
  src.end();
  assert.deepEqual(await r3, { data: Buffer.alloc(0), eof: true });
  assert.deepEqual(await r4, { data: Buffer.alloc(0), eof: true });
  assert.equal((await out.read(10)).eof, true);
});

test('a cancelled read leaves the data for the next one', async () => {
  const out = new OutputStream();
  const src = new PassThrough();
  out.attach(src);
  const ac = new AbortController();
  const cancelled = out.read(10, ac.signal);
  ac.abort();
  await assert.rejects(cancelled, (e: StatusError) => e.code === Code.CANCELLED);
  assert.equal(out.pendingReads, 0);
  src.write('kept');
  assert.equal((await out.read(10)).data.toString(), 'kept');
});

test('nothing is read from the source beyond its high-water mark while no read is pending', async () => {
  let produced = 0;
  const src = new Readable({
    highWaterMark: 1024,
    read() {
      produced += 512;
      this.push(Buffer.alloc(512));
    },
  });
  const out = new OutputStream();
  out.attach(src);
  await sleep(20);
  assert.ok(produced <= 2048, `read ahead ${produced} bytes`);
  const got = await out.read(MAX_READ_LEN * 4);
  assert.ok(got.data.length > 0 && got.data.length <= MAX_READ_LEN);
});

test('close() ends reads that wait for a process that never started', async () => {
  const out = new OutputStream();
  const r = out.read(1);
  out.close();
  assert.equal((await r).eof, true);
});

test('stdin: writes resolve once the sink took them; close ends it; late writes fail', async () => {
  const chunks: string[] = [];
  let release: (() => void) | undefined;
  const sink = new Writable({
    highWaterMark: 1,
    write(chunk: Buffer, _e, cb) {
      chunks.push(chunk.toString());
      release = cb; // the child has not read it yet
    },
  });
  const stdin = new StdinSink('c1', true);
  const early = stdin.write(Buffer.from('early')); // before the process exists
  stdin.attach(sink);
  let done = false;
  void early.then(() => (done = true));
  await sleep(5);
  assert.equal(done, false, 'answered before the child took the bytes');
  release!();
  assert.equal(await early, 5);
  stdin.close();
  await assert.rejects(stdin.write(Buffer.from('x')), (e: StatusError) => e.code === Code.FAILED_PRECONDITION);
  assert.deepEqual(chunks, ['early']);

  const none = new StdinSink('c2', false);
  await assert.rejects(none.write(Buffer.from('x')), /has no stdin/);
  const gone = new StdinSink('c3', true);
  const pending = gone.write(Buffer.from('x'));
  gone.detach('process c3 has exited');
  await assert.rejects(pending, (e: StatusError) => e.code === Code.FAILED_PRECONDITION);
});

test('once read, the stream reads ahead up to the last read size, so a fast producer gets big answers', async () => {
  let produced = 0;
  const src = new Readable({
    highWaterMark: 1024,
    read() {
      produced += 512;
      this.push(Buffer.alloc(512, 1));
    },
  });
  const out = new OutputStream();
  out.attach(src);
  await sleep(10);
  const before = produced;
  assert.ok(before <= 2048, `read ahead ${before} bytes before any read`);
  const first = await out.read(64 * 1024);
  assert.ok(first.data.length > 0);
  // While the next read is on its way, up to 64 KiB (plus one chunk of the source) are taken.
  await sleep(50);
  assert.ok(produced >= 64 * 1024 && produced <= 64 * 1024 + 4096, `produced ${produced}`);
  const second = await out.read(64 * 1024);
  assert.equal(second.data.length, 64 * 1024);
  assert.ok(second.data.every((b) => b === 1));
  src.destroy();
});

test('held bytes are handed out before EOF, in order; close() drops them', async () => {
  const src = new PassThrough();
  const out = new OutputStream();
  out.attach(src);
  src.write('a'.repeat(10));
  assert.equal((await out.read(4)).data.toString(), 'aaaa');
  src.write('b'.repeat(10));
  src.end();
  await sleep(10);
  assert.equal(out.isEof, false, 'bytes are still held');
  let all = '';
  for (;;) {
    const r = await out.read(5);
    if (r.eof) break;
    all += r.data.toString();
  }
  assert.equal(all, 'aaaaaa' + 'b'.repeat(10));
  assert.equal(out.isEof, true);
  // close() drops whatever is held.
  const s2 = new PassThrough();
  const o2 = new OutputStream();
  o2.attach(s2);
  s2.write('xyz');
  assert.equal((await o2.read(1)).data.toString(), 'x');
  await sleep(10);
  o2.close();
  assert.equal((await o2.read(10)).eof, true);
});
