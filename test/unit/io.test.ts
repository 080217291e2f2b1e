/**
 * src/io: containerd's stdio contract on the host side, with real FIFOs
 * (mkfifo), real logging binaries (sh scripts) and a fake ProcessStreams.
 */
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ProcessIo, parseStdio, type ProcessStreams, type StdioConfig } from '../../src/io/index.js';
import { CancelledError, Code, StatusError, UnavailableError } from '../../src/errors/index.js';
import { silentLogger } from '../../src/log/index.js';

const log = silentLogger();
const KiB = 1024;
const MiB = 1024 * KiB;
const { O_RDONLY, O_WRONLY, O_NONBLOCK } = fs.constants;

// ---------------------------------------------------------------- helpers

const unhandled: unknown[] = [];
process.on('unhandledRejection', (err) => unhandled.push(err));

let dir = '';
let fdsBefore = 0;
beforeEach(() => {
  dir = fs.mkdtempSync(join(tmpdir(), 'io-test-'));
  fdsBefore = fdCount();
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
  assert.deepEqual(unhandled.splice(0), [], 'no unhandled rejection');
});

function fdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/** Every fd opened since beforeEach is closed (a little time for the test's own closes). */
async function assertNoFdLeak(): Promise<void> {
  for (let i = 0; i < 50 && fdCount() > fdsBefore; i++) await sleep(10);
  assert.equal(fdCount(), fdsBefore, 'fd count back to where the test began');
}

function mkfifo(name: string): string {
  const p = join(dir, name);
  execFileSync('mkfifo', [p]);
  return p;
}

function cfg(c: Partial<StdioConfig>): StdioConfig {
  return { stdin: '', stdout: '', stderr: '', terminal: false, ...c };
}

function open(c: Partial<StdioConfig>, extra: Partial<Parameters<typeof ProcessIo.open>[1]> = {}): Promise<ProcessIo> {
  return ProcessIo.open(cfg(c), { containerId: 'cid', namespace: 'ns', logger: log, ...extra });
}

async function waitFor(what: string, cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** 'resolved', 'rejected', or 'pending' after `ms`: a rejection is not an end. */
async function outcome(p: Promise<unknown>, ms: number): Promise<'resolved' | 'rejected' | 'pending'> {
  return Promise.race([p.then(() => 'resolved' as const, () => 'rejected' as const), sleep(ms, 'pending' as const)]);
}

async function expectCode(p: Promise<unknown>, code: Code, message?: string | RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof StatusError, `a StatusError, got ${String(e)}`);
    assert.equal(Code[e.code], Code[code], e.message);
    if (typeof message === 'string') assert.equal(e.message, message);
    else if (message) assert.match(e.message, message);
    return true;
  });
}

/** One output stream of the fake process: data pushed by the test, read as the agent serves it. */
class FakeOutput {
  private buf: Buffer[] = [];
  private ended = false;
  private failWith: Error | undefined;
  private wake: (() => void) | undefined;
  reads = 0;
  handedOut = 0;

  push(data: string | Buffer): void {
    this.buf.push(Buffer.from(data));
    this.wake?.();
  }

  end(): void {
    this.ended = true;
    this.wake?.();
  }

  fail(err: Error): void {
    this.failWith = err;
    this.wake?.();
  }

  async read(max: number, signal: AbortSignal): Promise<{ data: Buffer; eof: boolean }> {
    this.reads++;
    for (;;) {
      if (signal.aborted) throw new CancelledError('read cancelled');
      if (this.failWith) throw this.failWith;
      if (this.buf.length > 0) {
        const all = Buffer.concat(this.buf);
        const data = all.subarray(0, max);
        this.buf = all.length > max ? [all.subarray(max)] : [];
        this.handedOut += data.length;
        return { data, eof: false };
      }
      if (this.ended) return { data: Buffer.alloc(0), eof: true };
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.wake = undefined;
          signal.removeEventListener('abort', done);
          resolve();
        };
        this.wake = done;
        signal.addEventListener('abort', done, { once: true });
      });
    }
  }
}

class FakeStreams implements ProcessStreams {
  readonly stdout = new FakeOutput();
  readonly stderr = new FakeOutput();
  readonly written: Buffer[] = [];
  closeStdinCalls = 0;
  writeCalls = 0;
  inFlight = 0;
  maxInFlight = 0;
  /** When set, each writeStdin waits for it. */
  gate: Promise<void> | undefined;
  writeDelayMs = 0;
  writeError: Error | undefined;

  readStdout(n: number, s: AbortSignal) { return this.stdout.read(n, s); }
  readStderr(n: number, s: AbortSignal) { return this.stderr.read(n, s); }

  async writeStdin(data: Buffer, signal: AbortSignal): Promise<number> {
    this.writeCalls++;
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      if (this.gate) await this.gate;
      if (this.writeDelayMs) await sleep(this.writeDelayMs);
      if (signal.aborted) throw new CancelledError('write cancelled');
      if (this.writeError) throw this.writeError;
      this.written.push(Buffer.from(data));
      return data.length;
    } finally {
      this.inFlight--;
    }
  }

  async closeStdin(): Promise<void> {
    this.closeStdinCalls++;
  }

  get stdinText(): string {
    return Buffer.concat(this.written).toString();
  }
}

/** A reader of a FIFO, as ctr is: opened O_RDONLY|O_NONBLOCK, collects until EOF. */
class FifoReader {
  readonly sock: net.Socket;
  readonly chunks: Buffer[] = [];
  readonly ended: Promise<Buffer>;
  constructor(path: string) {
    const fd = fs.openSync(path, O_RDONLY | O_NONBLOCK);
    this.sock = new net.Socket({ fd, readable: true, writable: false });
    this.sock.on('data', (c: Buffer) => this.chunks.push(c));
    this.ended = new Promise((resolve, reject) => {
      this.sock.on('end', () => resolve(this.data));
      this.sock.on('error', reject);
    });
  }
  get data(): Buffer {
    return Buffer.concat(this.chunks);
  }
  get text(): string {
    return this.data.toString();
  }
  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.sock.closed) resolve();
      else this.sock.destroy().once('close', () => resolve());
    });
  }
}

function writeScript(name: string, body: string): string {
  const p = join(dir, name);
  fs.writeFileSync(p, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  return p;
}

function pidGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch {
    return true;
  }
}

// ---------------------------------------------------------------- parseStdio

describe('parseStdio', () => {
  test('null IO, FIFO paths and terminal', () => {
    assert.deepEqual(parseStdio(cfg({})), { stdin: null, stdout: null, stderr: null, log: null, terminal: false });
    assert.deepEqual(parseStdio(cfg({ stdin: '/a', stdout: '/b', stderr: '/c', terminal: true })),
      { stdin: '/a', stdout: '/b', stderr: '/c', log: null, terminal: true });
  });

  test('binary:// gives the path and containerd-style args; stderr may be empty or the same URI', () => {
    const uri = 'binary:///usr/local/bin/my%20logger?a=1&flag&b=two%20words&a=2&c=x+y';
    const want = {
      kind: 'binary', uri, path: '/usr/local/bin/my logger', args: ['a', '1', 'flag', '', 'b', 'two words', 'c', 'x y'],
    };
    assert.deepEqual(parseStdio(cfg({ stdout: uri, stderr: uri })).log, want);
    const p = parseStdio(cfg({ stdout: uri, stdin: '/in' }));
    assert.deepEqual(p.log, want);
    assert.equal(p.stdin, '/in');
    assert.equal(p.stdout, null);
    assert.deepEqual(parseStdio(cfg({ stdout: 'BINARY:///x' })).log, { kind: 'binary', uri: 'BINARY:///x', path: '/x', args: [] });
  });

  test('file:// gives the decoded path', () => {
    assert.deepEqual(parseStdio(cfg({ stdout: 'file:///var/log/a%20b.log', stderr: 'file:///var/log/a%20b.log' })).log,
      { kind: 'file', uri: 'file:///var/log/a%20b.log', path: '/var/log/a b.log' });
  });

  test('bad values are INVALID_ARGUMENT naming the field', () => {
    const bad: [Partial<StdioConfig>, string | RegExp][] = [
      [{ stdout: 'http://x/y' }, 'stdout: unsupported URI scheme "http"'],
      [{ stdout: 'fifo:///x' }, 'stdout: unsupported URI scheme "fifo"'],
      [{ stdout: 'relative/path' }, /^stdout: path "relative\/path" is not absolute/],
      [{ stderr: 'x' }, /^stderr: path "x" is not absolute/],
      [{ stdin: 'binary:///x' }, /^stdin: must be a fifo path, not a URI/],
      [{ stdin: 'in' }, /^stdin: path "in" is not absolute/],
      [{ stdout: 'binary:///x', stderr: '/other' }, /^stderr: must be empty or the same log URI/],
      [{ stdout: 'binary:///x', stderr: 'binary:///y' }, /^stderr: must be empty or the same log URI/],
      [{ stdout: '/out', stderr: 'file:///x' }, /^stderr: a log URI must be given as stdout too/],
      [{ stdout: 'binary://host/x' }, /^stdout: binary URI must have an empty host/],
      [{ stdout: 'binary:relative' }, /^stdout: binary URI must name an absolute path/],
      [{ stdout: 'file:///' }, /^stdout: file URI must name an absolute path/],
      [{ stdout: 'file:///a%zz' }, /^stdout: invalid URI/],
    ];
    for (const [c, msg] of bad) {
      assert.throws(() => parseStdio(cfg(c)), (e: unknown) => {
        assert.ok(e instanceof StatusError);
        assert.equal(e.code, Code.INVALID_ARGUMENT);
        if (typeof msg === 'string') assert.equal(e.message, msg);
        else assert.match(e.message, msg);
        return true;
      }, JSON.stringify(c));
    }
  });
});

// ---------------------------------------------------------------- FIFOs: output

describe('stdout/stderr FIFOs', () => {
  test('copied in order, EOF seen by the readers, drained, no fd left', async () => {
    const out = mkfifo('out');
    const err = mkfifo('err');
    const ro = new FifoReader(out);
    const re = new FifoReader(err);
    const io = await open({ stdout: out, stderr: err });
    assert.equal(io.hasStdin, false);
    const s = new FakeStreams();
    io.start(s);
    for (const c of ['one ', 'two ', 'three']) s.stdout.push(c);
    for (const c of ['e1 ', 'e2']) s.stderr.push(c);
    s.stdout.end();
    s.stderr.end();
    assert.equal((await ro.ended).toString(), 'one two three');
    assert.equal((await re.ended).toString(), 'e1 e2');
    await io.drained;
    await io.close();
    await Promise.all([ro.close(), re.close()]);
    await assertNoFdLeak();
  });

  test('a FIFO with no reader yet opens at once; what was written waits for the reader', async () => {
    const out = mkfifo('out');
    const t0 = Date.now();
    const io = await open({ stdout: out });
    assert.ok(Date.now() - t0 < 10_000, 'open did not wait for a reader'); // a blocked open never returns: a generous bound
    const s = new FakeStreams();
    io.start(s);
    s.stderr.end();
    s.stdout.push('hello');
    await waitFor('the first chunk to be read', () => s.stdout.handedOut === 5);
    await sleep(50);
    const r = new FifoReader(out);
    s.stdout.push(' world');
    s.stdout.end();
    assert.equal((await r.ended).toString(), 'hello world');
    await io.drained;
    await io.close();
    await r.close();
    await assertNoFdLeak();
  });

  test('the reader going away and coming back neither breaks nor loses the copy (FIFO held read-write)', async () => {
    const out = mkfifo('out');
    const io = await open({ stdout: out });
    const s = new FakeStreams();
    io.start(s);
    s.stderr.end();
    const r1 = new FifoReader(out);
    s.stdout.push('A');
    await waitFor('reader 1 to get A', () => r1.text === 'A');
    await r1.close();
    s.stdout.push('B'); // no reader now: must not EPIPE
    await waitFor('B to be read from the agent', () => s.stdout.handedOut === 2);
    await sleep(100);
    const r2 = new FifoReader(out);
    s.stdout.push('C');
    s.stdout.end();
    assert.equal((await r2.ended).toString(), 'BC');
    await io.drained;
    await io.close();
    await r2.close();
    await assertNoFdLeak();
  });

  test('backpressure: a slow reader stalls readStdout; the shim holds a bounded amount', async () => {
    const out = mkfifo('out');
    const io = await open({ stdout: out }, { readChunk: 64 * 1024 }); // the bound scales with the chunk
    const s = new FakeStreams();
    const total = 4 * MiB;
    const payload = Buffer.alloc(total);
    for (let i = 0; i < total; i++) payload[i] = (i * 7 + (i >> 12)) & 0xff;
    s.stdout.push(payload);
    s.stdout.end();
    // The reader is a raw non-blocking fd: what it has read is exactly what left the pipe.
    const fd = fs.openSync(out, O_RDONLY | O_NONBLOCK);
    io.start(s);
    s.stderr.end();
    await sleep(300);
    const stalledAt = s.stdout.reads;
    const held = s.stdout.handedOut;
    await sleep(200);
    assert.equal(s.stdout.reads, stalledAt, 'no more readStdout calls while nobody reads');
    assert.ok(held <= 256 * KiB, `read ${held} bytes from the agent with no reader`);
    const got: Buffer[] = [];
    let consumed = 0;
    let maxAhead = 0;
    const buf = Buffer.alloc(64 * KiB);
    for (;;) {
      let n: number;
      try {
        n = fs.readSync(fd, buf, 0, buf.length, null);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
        await sleep(2);
        continue;
      }
      if (n === 0) break; // EOF: the shim closed its end
      got.push(Buffer.from(buf.subarray(0, n)));
      consumed += n;
      maxAhead = Math.max(maxAhead, s.stdout.handedOut - consumed);
      await sleep(1);
    }
    fs.closeSync(fd);
    assert.ok(maxAhead <= 256 * KiB, `the shim + pipe held up to ${maxAhead} bytes`);
    assert.equal(consumed, total);
    assert.ok(Buffer.concat(got).equals(payload), 'content intact');
    await io.drained;
    await io.close();
    await assertNoFdLeak();
  });

  test('null IO: stdout and stderr are read and dropped until EOF', async () => {
    const io = await open({});
    const s = new FakeStreams();
    io.start(s);
    s.stdout.push(Buffer.alloc(MiB));
    s.stderr.push(Buffer.alloc(MiB / 2));
    s.stdout.end();
    s.stderr.end();
    await io.drained;
    assert.equal(s.stdout.handedOut, MiB);
    assert.equal(s.stderr.handedOut, MiB / 2);
    await io.close();
    await assertNoFdLeak();
  });

  test('terminal: stderr is not read, a stderr FIFO gets EOF at once', async () => {
    const out = mkfifo('out');
    const err = mkfifo('err');
    const ro = new FifoReader(out);
    const re = new FifoReader(err);
    const io = await open({ stdout: out, stderr: err, terminal: true });
    const s = new FakeStreams();
    io.start(s);
    assert.equal((await re.ended).length, 0);
    s.stdout.push('tty output');
    s.stdout.end();
    assert.equal((await ro.ended).toString(), 'tty output');
    await io.drained;
    assert.equal(s.stderr.reads, 0);
    await io.close();
    await Promise.all([ro.close(), re.close()]);
    await assertNoFdLeak();
  });

  test('a stream error ends the copy: the reader sees EOF, drained resolves, nothing thrown', async () => {
    const out = mkfifo('out');
    const ro = new FifoReader(out);
    const io = await open({ stdout: out });
    const s = new FakeStreams();
    io.start(s);
    s.stdout.push('partial');
    await waitFor('partial read', () => s.stdout.handedOut === 7);
    s.stdout.fail(new UnavailableError('agent connection closed'));
    s.stderr.fail(new UnavailableError('agent connection closed'));
    assert.equal((await ro.ended).toString(), 'partial');
    await io.drained;
    await io.close();
    await ro.close();
    await assertNoFdLeak();
  });

  test('an existing regular file as stdout is appended to', async () => {
    const f = join(dir, 'out.log');
    fs.writeFileSync(f, 'old\n');
    const io = await open({ stdout: f });
    const s = new FakeStreams();
    io.start(s);
    s.stdout.push('new\n');
    s.stdout.end();
    s.stderr.end();
    await io.drained;
    await io.close();
    assert.equal(fs.readFileSync(f, 'utf8'), 'old\nnew\n');
    await assertNoFdLeak();
  });

  test('close() while the copy is stuck (nobody reads) returns within the timeout', async () => {
    const out = mkfifo('out');
    const io = await open({ stdout: out });
    const s = new FakeStreams();
    io.start(s);
    s.stderr.end();
    s.stdout.push(Buffer.alloc(2 * MiB));
    await sleep(100);
    assert.ok(s.stdout.handedOut < 2 * MiB, 'stuck');
    let drained = false;
    void io.drained.then(() => { drained = true; });
    const t0 = Date.now();
    await io.close(500);
    assert.ok(Date.now() - t0 < 10_000, `close took ${Date.now() - t0} ms`); // bounded, not timed: generous for a loaded machine
    await sleep(0);
    assert.ok(drained, 'drained resolves after close()');
    await io.close(); // idempotent
    assert.throws(() => io.start(s), (e: StatusError) => e.code === Code.FAILED_PRECONDITION);
    await assertNoFdLeak();
  });
});

// ---------------------------------------------------------------- stdin

describe('stdin FIFO', () => {
  test('stdin: data is forwarded; the writer closing is not EOF (held read-write, as the runc shim); CloseIO is, once', async () => {
    const inp = mkfifo('in');
    const io = await open({ stdin: inp });
    assert.equal(io.hasStdin, true);
    const s = new FakeStreams();
    io.start(s);
    s.stdout.end();
    s.stderr.end();
    await sleep(200);
    assert.equal(s.closeStdinCalls, 0, 'no EOF before any writer came');
    assert.equal(s.writeCalls, 0);
    const w = fs.openSync(inp, O_WRONLY | O_NONBLOCK);
    fs.writeSync(w, 'hello\n');
    fs.closeSync(w);
    await waitFor('stdin forwarded', () => s.stdinText === 'hello\n');
    await sleep(200);
    assert.equal(s.closeStdinCalls, 0, 'the writer going away is not EOF');
    await io.closeStdin(); // CloseIO
    await io.closeStdin();
    assert.equal(s.closeStdinCalls, 1);
    await io.close();
    await assertNoFdLeak();
  });

  test('1 MiB through a slow writeStdin: one write in flight at a time, all bytes, then closeStdin once', async () => {
    const inp = mkfifo('in');
    const src = join(dir, 'src.bin');
    const payload = Buffer.alloc(MiB);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 13) & 0xff;
    fs.writeFileSync(src, payload);
    const io = await open({ stdin: inp });
    const s = new FakeStreams();
    s.writeDelayMs = 1;
    io.start(s);
    const cat = spawn('sh', ['-c', 'cat "$1" > "$2"', 'sh', src, inp], { stdio: 'ignore' });
    const catExit = new Promise<number | null>((resolve) => cat.on('exit', resolve));
    assert.equal(await catExit, 0);
    await waitFor('all stdin', () => Buffer.concat(s.written).length === payload.length, 10_000);
    await io.closeStdin();
    assert.equal(s.closeStdinCalls, 1);
    assert.equal(s.maxInFlight, 1);
    assert.ok(Buffer.concat(s.written).equals(payload), 'stdin intact');
    await io.close();
    await assertNoFdLeak();
  });

  test('CloseIO waits for the write in flight, closes the process stdin once and the FIFO', async () => {
    const inp = mkfifo('in');
    const io = await open({ stdin: inp });
    const s = new FakeStreams();
    let release!: () => void;
    s.gate = new Promise((r) => { release = r; });
    io.start(s);
    const w = fs.openSync(inp, O_WRONLY | O_NONBLOCK);
    fs.writeSync(w, 'abc');
    await waitFor('writeStdin', () => s.writeCalls === 1);
    const c1 = io.closeStdin();
    const c2 = io.closeStdin();
    await sleep(50);
    assert.equal(s.closeStdinCalls, 0, 'waits for the write in flight');
    release();
    await Promise.all([c1, c2]);
    assert.equal(s.closeStdinCalls, 1);
    assert.equal(s.stdinText, 'abc');
    // Our read end is gone: the writer now gets EPIPE (and no process dies of it).
    assert.throws(() => fs.writeSync(w, 'more'), (e: NodeJS.ErrnoException) => e.code === 'EPIPE');
    fs.closeSync(w);
    await io.closeStdin();
    assert.equal(s.closeStdinCalls, 1);
    await io.close();
    await assertNoFdLeak();
  });

  test('CloseIO right after the writer closed (CRI stdinOnce) forwards what the FIFO still held', async () => {
    const inp = mkfifo('in');
    const io = await open({ stdin: inp });
    const s = new FakeStreams();
    let release!: () => void;
    s.gate = new Promise((r) => { release = r; });
    io.start(s);
    const w = fs.openSync(inp, O_WRONLY | O_NONBLOCK);
    fs.writeSync(w, 'first ');
    await waitFor('writeStdin', () => s.writeCalls === 1);
    fs.writeSync(w, 'second');
    fs.closeSync(w);
    const closed = io.closeStdin();
    await sleep(20);
    release();
    await closed;
    assert.equal(s.stdinText, 'first second');
    assert.equal(s.closeStdinCalls, 1);
    await io.close();
    await assertNoFdLeak();
  });

  test('CloseIO while a writer is still streaming 1 MiB: nothing lost, closeStdin once after its EOF', async () => {
    const inp = mkfifo('in');
    const src = join(dir, 'src.bin');
    const payload = Buffer.alloc(MiB);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 31) & 0xff;
    fs.writeFileSync(src, payload);
    const io = await open({ stdin: inp });
    const s = new FakeStreams();
    s.writeDelayMs = 1;
    io.start(s);
    const cat = spawn('sh', ['-c', 'cat "$1" > "$2"', 'sh', src, inp], { stdio: 'ignore' });
    const catExit = new Promise<number | null>((resolve) => cat.on('exit', resolve));
    await waitFor('some stdin', () => s.written.length > 0);
    await io.closeStdin();
    assert.equal(await catExit, 0);
    assert.equal(s.closeStdinCalls, 1);
    assert.ok(Buffer.concat(s.written).equals(payload), 'stdin intact');
    await io.close();
    await assertNoFdLeak();
  });

  test('CloseIO with a writer that never stops is cut after the grace period', async () => {
    const inp = mkfifo('in');
    const io = await open({ stdin: inp }, { stdinCloseGraceMs: 300 });
    const s = new FakeStreams();
    s.writeDelayMs = 1;
    io.start(s);
    const yes = spawn('sh', ['-c', 'exec yes > "$1"', 'sh', inp], { stdio: 'ignore' });
    const yesExit = new Promise<unknown>((resolve) => yes.on('exit', (code, sig) => resolve(sig ?? code)));
    await waitFor('some stdin', () => s.written.length > 0);
    const t0 = Date.now();
    await io.closeStdin();
    const took = Date.now() - t0;
    assert.ok(took >= 250 && took < 10_000, `CloseIO took ${took} ms`); // it waited for the grace, and ended
    assert.equal(s.closeStdinCalls, 1);
    assert.equal(await yesExit, 'SIGPIPE', 'the writer gets EPIPE once the FIFO is closed');
    await io.close();
    await assertNoFdLeak();
  });

  test('CloseIO before start: the FIFO is closed now, the process stdin as soon as start() comes', async () => {
    const inp = mkfifo('in');
    const io = await open({ stdin: inp });
    await io.closeStdin();
    const s = new FakeStreams();
    io.start(s);
    await waitFor('closeStdin', () => s.closeStdinCalls === 1);
    assert.equal(s.writeCalls, 0);
    await io.close();
    await assertNoFdLeak();
  });

  test('a write error ends the stdin copy: closeStdin once, nothing thrown', async () => {
    const inp = mkfifo('in');
    const io = await open({ stdin: inp });
    const s = new FakeStreams();
    s.writeError = new UnavailableError('agent connection closed');
    io.start(s);
    const w = fs.openSync(inp, O_WRONLY | O_NONBLOCK);
    fs.writeSync(w, 'x');
    await waitFor('closeStdin', () => s.closeStdinCalls === 1);
    fs.closeSync(w);
    await io.close();
    await assertNoFdLeak();
  });

  test('close() with a stdin write stuck returns at once and calls no closeStdin', async () => {
    const inp = mkfifo('in');
    const io = await open({ stdin: inp });
    const s = new FakeStreams();
    s.gate = new Promise(() => {});
    io.start(s);
    const w = fs.openSync(inp, O_WRONLY | O_NONBLOCK);
    fs.writeSync(w, 'stuck');
    await waitFor('writeStdin', () => s.writeCalls === 1);
    const t0 = Date.now();
    // A stuck stdin write does not hold close() for its bound at all (a bound long enough to tell, on a loaded machine).
    await io.close(5_000);
    assert.ok(Date.now() - t0 < 5_000, `close waited ${Date.now() - t0} ms for a stuck stdin write`);
    assert.equal(s.closeStdinCalls, 0);
    fs.closeSync(w);
    await assertNoFdLeak();
  });
});

// ---------------------------------------------------------------- errors

describe('open errors', () => {
  test('missing FIFOs are NOT_FOUND naming the field; what was opened is released', async () => {
    await expectCode(open({ stdin: join(dir, 'nope') }), Code.NOT_FOUND, `stdin: fifo ${join(dir, 'nope')}: no such file`);
    const out = mkfifo('out');
    await expectCode(open({ stdout: out, stderr: join(dir, 'nope') }), Code.NOT_FOUND,
      `stderr: fifo ${join(dir, 'nope')}: no such file`);
    const inp = mkfifo('in');
    await expectCode(open({ stdin: inp, stdout: join(dir, 'x', 'y') }), Code.NOT_FOUND, /^stdout: fifo/);
    await assertNoFdLeak();
  });

  test('wrong kinds of files and schemes are INVALID_ARGUMENT naming the field', async () => {
    const f = join(dir, 'regular');
    fs.writeFileSync(f, '');
    await expectCode(open({ stdin: f }), Code.INVALID_ARGUMENT, `stdin: ${f} is not a fifo`);
    await expectCode(open({ stdout: dir }), Code.INVALID_ARGUMENT, `stdout: ${dir} is not a fifo or a regular file`);
    await expectCode(open({ stdout: 'http://x' }), Code.INVALID_ARGUMENT, 'stdout: unsupported URI scheme "http"');
    await expectCode(open({ stdout: `binary://${join(dir, 'missing')}` }), Code.NOT_FOUND,
      `stdout: logging binary ${join(dir, 'missing')}: no such file`);
    await expectCode(open({ stdout: `binary://${f}` }), Code.PERMISSION_DENIED, /^stdout: logging binary/);
    await assertNoFdLeak();
  });
});

// ---------------------------------------------------------------- log URIs

describe('binary:// and file://', () => {
  test('binary://: stdout on fd 3, stderr on fd 4, env and query args; close waits for its exit', async () => {
    const logger = writeScript('logger.sh', [
      `echo "$CONTAINER_ID $CONTAINER_NAMESPACE" > ${dir}/env`,
      `for a in "$@"; do printf '[%s]' "$a"; done > ${dir}/args`,
      `echo $$ > ${dir}/pid`,
      'exec 5>&-',
      `cat <&3 > ${dir}/out &`,
      `cat <&4 > ${dir}/err`,
      'wait',
      `echo done > ${dir}/done`,
    ].join('\n'));
    const uri = `binary://${logger}?a=1&flag&b=two%20words`;
    const io = await open({ stdout: uri, stderr: uri }, { containerId: 'c1', namespace: 'k8s.io' });
    const s = new FakeStreams();
    io.start(s);
    s.stdout.push('out 1\n');
    s.stderr.push('err 1\n');
    s.stdout.push('out 2\n');
    s.stdout.end();
    s.stderr.end();
    await io.drained;
    await io.close(5000);
    assert.equal(fs.readFileSync(join(dir, 'env'), 'utf8'), 'c1 k8s.io\n');
    assert.equal(fs.readFileSync(join(dir, 'args'), 'utf8'), '[a][1][flag][][b][two words]');
    assert.equal(fs.readFileSync(join(dir, 'out'), 'utf8'), 'out 1\nout 2\n');
    assert.equal(fs.readFileSync(join(dir, 'err'), 'utf8'), 'err 1\n');
    assert.equal(fs.readFileSync(join(dir, 'done'), 'utf8'), 'done\n', 'the binary exited by itself at EOF');
    assert.ok(pidGone(Number(fs.readFileSync(join(dir, 'pid'), 'utf8'))));
    await assertNoFdLeak();
  });

  test('binary:// that is never ready: DEADLINE_EXCEEDED, killed, nothing left', async () => {
    const logger = writeScript('slow.sh', `echo $$ > ${dir}/pid\nexec sleep 100`);
    await expectCode(open({ stdout: `binary://${logger}` }, { loggerReadyTimeoutMs: 300 }), Code.DEADLINE_EXCEEDED,
      /^stdout: logging binary .* within 300 ms$/);
    assert.ok(pidGone(Number(fs.readFileSync(join(dir, 'pid'), 'utf8'))));
    await assertNoFdLeak();
  });

  test('binary:// that ignores EOF and SIGTERM is killed when close() times out', async () => {
    const logger = writeScript('stubborn.sh', `trap '' TERM\necho $$ > ${dir}/pid\nexec 5>&-\nexec sleep 100`);
    const io = await open({ stdout: `binary://${logger}` });
    const s = new FakeStreams();
    io.start(s);
    s.stdout.push('x');
    s.stdout.end();
    s.stderr.end();
    await io.drained;
    const t0 = Date.now();
    await io.close(600);
    const took = Date.now() - t0;
    assert.ok(took >= 550 && took < 10_000, `close took ${took} ms`); // it waited for the bound, and ended
    assert.ok(pidGone(Number(fs.readFileSync(join(dir, 'pid'), 'utf8'))));
    await assertNoFdLeak();
  });

  test('binary:// that dies: output is dropped, the copy goes on to EOF, nothing thrown', async () => {
    const logger = writeScript('dies.sh', 'exec 5>&-\nexit 0');
    const io = await open({ stdout: `binary://${logger}` });
    const s = new FakeStreams();
    io.start(s);
    await sleep(100);
    for (let i = 0; i < 20; i++) s.stdout.push(Buffer.alloc(64 * KiB));
    s.stdout.end();
    s.stderr.push('e');
    s.stderr.end();
    await io.drained;
    assert.equal(s.stdout.handedOut, 20 * 64 * KiB);
    await io.close(1000);
    await assertNoFdLeak();
  });

  test('file://: parent dirs created, file 0644, stdout and stderr appended, a second process appends', async () => {
    const f = join(dir, 'logs', 'sub', 'c.log');
    const uri = `file://${f}`;
    for (const [o, e] of [['out1\n', 'err1\n'], ['out2\n', '']]) {
      const io = await open({ stdout: uri, stderr: uri });
      const s = new FakeStreams();
      io.start(s);
      s.stdout.push(o);
      if (e) s.stderr.push(e);
      s.stdout.end();
      s.stderr.end();
      await io.drained;
      await io.close();
    }
    const text = fs.readFileSync(f, 'utf8');
    assert.deepEqual(text.split('\n').filter(Boolean).sort(), ['err1', 'out1', 'out2']);
    assert.ok(text.endsWith('out2\n'));
    assert.equal(fs.statSync(f).mode & 0o777, 0o644);
    await assertNoFdLeak();
  });
});

// ---------------------------------------------------------------- everything at once

test('all three FIFOs at once: no fd leak after close(), even without EOF', async () => {
  const inp = mkfifo('in');
  const out = mkfifo('out');
  const err = mkfifo('err');
  const ro = new FifoReader(out);
  const io = await open({ stdin: inp, stdout: out, stderr: err });
  const s = new FakeStreams();
  io.start(s);
  s.stdout.push('x');
  await waitFor('x', () => ro.text === 'x');
  await io.close(500);
  assert.equal(await outcome(ro.ended, 1000), 'resolved', 'the reader sees EOF (not an error) after close()');
  await ro.close();
  await assertNoFdLeak();
});
