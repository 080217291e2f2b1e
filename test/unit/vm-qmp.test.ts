// QMP codec and client against a fake QMP server on a real unix socket.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mock, test, type TestContext } from 'node:test';
import { Code, StatusError } from '../../src/errors/index.js';
import { QmpDecoder, encodeCommand, parseMessage, type QmpMessage } from '../../src/vm/qmp-codec.js';
import { QmpClient, QmpError, type QmpEvent } from '../../src/vm/qmp-client.js';

const GREETING = '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}}\r\n';

interface Cmd {
  execute: string;
  arguments?: Record<string, unknown>;
  id?: string;
}

/** What a fake server does with each command after qmp_capabilities. */
type Handler = (cmd: Cmd, conn: FakeConn) => void;

interface FakeConn {
  socket: Socket;
  send(obj: unknown): void;
  reply(cmd: Cmd, value?: unknown): void;
  received: Cmd[];
}

/** A QMP server speaking just enough of the protocol. */
async function fakeQmp(t: TestContext, handler: Handler, opts: { greet?: boolean } = {}): Promise<{ path: string; server: Server; conns: FakeConn[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'vm-qmp-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'qmp.sock');
  const conns: FakeConn[] = [];
  const server = createServer((socket) => {
    const conn: FakeConn = {
      socket,
      received: [],
      send: (obj) => socket.write(typeof obj === 'string' ? obj : JSON.stringify(obj) + '\r\n'),
      reply: (cmd, value = {}) => conn.send({ return: value, id: cmd.id }),
    };
    conns.push(conn);
    socket.on('error', () => {});
    if (opts.greet !== false) socket.write(GREETING);
    let buf = '';
    socket.on('data', (d) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const cmd = JSON.parse(buf.slice(0, nl)) as Cmd;
        buf = buf.slice(nl + 1);
        conn.received.push(cmd);
        if (cmd.execute === 'qmp_capabilities') conn.reply(cmd);
        else handler(cmd, conn);
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  t.after(() => {
    for (const c of conns) c.socket.destroy();
    server.close();
  });
  return { path, server, conns };
}

async function connect(t: TestContext, path: string): Promise<QmpClient> {
  const c = await QmpClient.connect(path, { timeoutMs: 2000 });
  t.after(() => c.close());
  return c;
}

/** Spins the event loop (no timers: they may be mocked) until `cond` holds. */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 10_000 && !cond(); i++) await new Promise((r) => setImmediate(r));
  assert.ok(cond(), 'condition never held');
}

function hasCode(code: Code) {
  return (err: unknown): boolean => err instanceof StatusError && err.code === code;
}

// ---------------------------------------------------------------------------
// codec

const STREAM = [
  GREETING,
  '{"return": {}, "id": "c1"}\r\n',
  '{"timestamp": {"seconds": 1700000000, "microseconds": 123456}, "event": "STOP"}\r\n',
  '{"return": {"status": "paused", "singlestep": false, "running": false}, "id": "c2"}\r\n',
  '{"error": {"class": "GenericError", "desc": "caf\u00e9 \u2603 not here"}, "id": "c3"}\r\n',
  '{"timestamp": {"seconds": 1700000001, "microseconds": 5}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}\r\n',
].join('');

function expectedStream(msgs: QmpMessage[]): void {
  assert.equal(msgs.length, 6);
  assert.equal(msgs[0]!.type, 'greeting');
  assert.deepEqual(msgs[1], { type: 'return', id: 'c1', value: {} });
  assert.equal(msgs[2]!.type, 'event');
  assert.deepEqual(msgs[3], { type: 'return', id: 'c2', value: { status: 'paused', singlestep: false, running: false } });
  assert.deepEqual(msgs[4], { type: 'error', id: 'c3', errorClass: 'GenericError', desc: 'caf\u00e9 \u2603 not here' });
  const ev = msgs[5]!;
  assert.ok(ev.type === 'event');
  assert.equal(ev.event.event, 'SHUTDOWN');
  assert.deepEqual(ev.event.data, { guest: true, reason: 'guest-shutdown' });
  assert.equal(ev.event.timestamp.getTime(), 1_700_000_001_000);
  assert.equal(ev.event.microseconds, 5);
}

test('codec: one chunk holding several messages', () => {
  expectedStream(new QmpDecoder().push(Buffer.from(STREAM)));
});

test('codec: split at every byte offset (one and two cuts)', () => {
  const bytes = Buffer.from(STREAM);
  for (let i = 0; i <= bytes.length; i++) {
    const d = new QmpDecoder();
    const msgs = [...d.push(bytes.subarray(0, i)), ...d.push(bytes.subarray(i))];
    expectedStream(msgs);
    assert.equal(d.buffered, 0);
  }
  for (let i = 0; i < bytes.length; i += 7) {
    for (let j = i; j <= bytes.length; j += 5) {
      const d = new QmpDecoder();
      expectedStream([...d.push(bytes.subarray(0, i)), ...d.push(bytes.subarray(i, j)), ...d.push(bytes.subarray(j))]);
    }
  }
});

test('codec: byte by byte', () => {
  const bytes = Buffer.from(STREAM);
  const d = new QmpDecoder();
  const msgs: QmpMessage[] = [];
  for (let i = 0; i < bytes.length; i++) msgs.push(...d.push(bytes.subarray(i, i + 1)));
  expectedStream(msgs);
});

test('codec: event fields and timestamps', () => {
  const m = parseMessage('{"timestamp": {"seconds": 1700000000, "microseconds": 123456}, "event": "STOP"}');
  assert.ok(m.type === 'event');
  assert.deepEqual(m.event.data, {});
  assert.equal(m.event.timestamp.toISOString(), '2023-11-14T22:13:20.123Z');
  assert.equal(m.event.microseconds, 123456);
});

test('codec: garbage is a protocol error', () => {
  assert.throws(() => new QmpDecoder().push(Buffer.from('not json\n')), /invalid JSON line/);
  assert.throws(() => new QmpDecoder().push(Buffer.from('[1,2]\n')), /not an object/);
  assert.throws(() => new QmpDecoder().push(Buffer.from('{"what": 1}\n')), /unknown message/);
});

test('codec: encodes a command with arguments and id', () => {
  assert.equal(encodeCommand('stop', undefined, 'c1'), '{"execute":"stop","id":"c1"}\n');
  assert.equal(
    encodeCommand('human-monitor-command', { 'command-line': 'info status' }, 'c9'),
    '{"execute":"human-monitor-command","arguments":{"command-line":"info status"},"id":"c9"}\n',
  );
});

// ---------------------------------------------------------------------------
// client

test('client: greeting, qmp_capabilities first, typed helpers', async (t) => {
  const f = await fakeQmp(t, (cmd, conn) => {
    switch (cmd.execute) {
      case 'query-status': conn.reply(cmd, { status: 'running', singlestep: false, running: true }); break;
      case 'query-cpus-fast':
        conn.reply(cmd, [{ 'cpu-index': 0, 'thread-id': 4242, 'qom-path': '/machine/unattached/device[0]', target: 'x86_64' }]);
        break;
      case 'human-monitor-command': conn.reply(cmd, `echo:${String(cmd.arguments?.['command-line'])}`); break;
      default: conn.reply(cmd);
    }
  });
  const c = await connect(t, f.path);
  assert.equal(c.greeting.version.qemu.major, 7);
  assert.equal(c.greeting.version.qemu.minor, 2);
  assert.deepEqual(c.greeting.capabilities, ['oob']);
  assert.deepEqual(await c.queryStatus(), { status: 'running', running: true });
  await c.stop();
  await c.cont();
  await c.systemPowerdown();
  assert.deepEqual(await c.queryCpusFast(), [{ cpuIndex: 0, threadId: 4242, qomPath: '/machine/unattached/device[0]', target: 'x86_64' }]);
  assert.equal(await c.humanMonitorCommand({ commandLine: 'info status' }), 'echo:info status');
  const names = f.conns[0]!.received.map((r) => r.execute);
  assert.deepEqual(names, ['qmp_capabilities', 'query-status', 'stop', 'cont', 'system_powerdown', 'query-cpus-fast', 'human-monitor-command']);
  const ids = f.conns[0]!.received.map((r) => r.id);
  assert.equal(new Set(ids).size, ids.length, 'ids are unique');
  assert.equal(c.outstanding, 0);
});

test('client: greeting and replies written one byte at a time', async (t) => {
  const dribble = async (s: Socket, text: string): Promise<void> => {
    for (const ch of Buffer.from(text)) {
      s.write(Buffer.from([ch]));
      await new Promise((r) => setImmediate(r));
    }
  };
  const f = await fakeQmp(t, (cmd, conn) => {
    void dribble(conn.socket, `{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME"}\r\n{"return": {"status": "running", "running": true}, "id": "${cmd.id}"}\r\n`);
  }, { greet: false });
  f.server.on('connection', (s) => void dribble(s, GREETING));
  const c = await connect(t, f.path);
  const events: QmpEvent[] = [];
  c.on('event', (e) => events.push(e));
  assert.deepEqual(await c.queryStatus(), { status: 'running', running: true });
  assert.equal(events.length, 1);
  assert.equal(events[0]!.event, 'RESUME');
});

test('client: events interleaved with replies, with data and timestamp', async (t) => {
  const f = await fakeQmp(t, (cmd, conn) => {
    conn.send(
      '{"timestamp": {"seconds": 1700000000, "microseconds": 1}, "event": "STOP"}\r\n' +
        `{"return": {}, "id": "${cmd.id}"}\r\n` +
        '{"timestamp": {"seconds": 1700000002, "microseconds": 3}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}\r\n',
    );
  });
  const c = await connect(t, f.path);
  const events: QmpEvent[] = [];
  c.on('event', (e) => events.push(e));
  await c.stop();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(events.map((e) => e.event), ['STOP', 'SHUTDOWN']);
  assert.deepEqual(events[1]!.data, { guest: false, reason: 'host-qmp-quit' });
  assert.equal(events[1]!.timestamp.getTime(), 1_700_000_002_000);
});

test('client: out-of-order replies are matched by id', async (t) => {
  const held: Cmd[] = [];
  const f = await fakeQmp(t, (cmd, conn) => {
    held.push(cmd);
    if (held.length === 3) {
      // answer in reverse order, all in one write
      conn.send(held.slice().reverse().map((h) => JSON.stringify({ return: { echo: h.arguments?.['n'] }, id: h.id }) + '\r\n').join(''));
    }
  });
  const c = await connect(t, f.path);
  const rs = await Promise.all([1, 2, 3].map((n) => c.execute<{ echo: number }>('echo', { n })));
  assert.deepEqual(rs.map((r) => r.echo), [1, 2, 3]);
});

test('client: error replies become QmpError with class and desc', async (t) => {
  const f = await fakeQmp(t, (cmd, conn) => {
    if (cmd.execute === 'nope') conn.send({ error: { class: 'CommandNotFound', desc: "The command nope has not been found" }, id: cmd.id });
    else conn.send({ error: { class: 'GenericError', desc: 'Cannot do that now' }, id: cmd.id });
  });
  const c = await connect(t, f.path);
  await assert.rejects(c.cont(), (err: unknown) => {
    assert.ok(err instanceof QmpError);
    assert.equal(err.code, Code.UNKNOWN);
    assert.equal(err.qmpClass, 'GenericError');
    assert.equal(err.desc, 'Cannot do that now');
    assert.equal(err.message, 'qmp cont: GenericError: Cannot do that now');
    return true;
  });
  await assert.rejects(c.execute('nope'), (err: unknown) => {
    assert.ok(err instanceof QmpError);
    assert.equal(err.code, Code.UNIMPLEMENTED);
    assert.match(err.message, /CommandNotFound: The command nope has not been found/);
    return true;
  });
});

test('client: per-command timeout (fake timers), late reply dropped, client still usable', async (t) => {
  let late: (() => void) | undefined;
  const f = await fakeQmp(t, (cmd, conn) => {
    if (cmd.execute === 'slow') late = () => conn.reply(cmd, 'late');
    else conn.reply(cmd, 'fast');
  });
  const c = await connect(t, f.path);
  mock.timers.enable({ apis: ['setTimeout'] });
  t.after(() => mock.timers.reset());
  const p = c.execute('slow', undefined, { timeoutMs: 30_000 });
  await until(() => late !== undefined);
  assert.equal(c.outstanding, 1);
  mock.timers.tick(30_000);
  await assert.rejects(p, (err: unknown) => {
    assert.ok(hasCode(Code.DEADLINE_EXCEEDED)(err));
    assert.match((err as Error).message, /^qmp slow: timed out after 30000 ms/);
    return true;
  });
  assert.equal(c.outstanding, 0);
  mock.timers.reset();
  late!();
  assert.equal(await c.execute('quick'), 'fast');
});

test('client: AbortSignal cancels one call', async (t) => {
  const f = await fakeQmp(t, () => {});
  const c = await connect(t, f.path);
  const ac = new AbortController();
  const p = c.execute('hang', undefined, { signal: ac.signal });
  ac.abort();
  await assert.rejects(p, hasCode(Code.CANCELLED));
  await assert.rejects(c.execute('x', undefined, { signal: AbortSignal.abort() }), hasCode(Code.CANCELLED));
  await assert.rejects(c.execute('x', undefined, { signal: AbortSignal.timeout(1) }), (err: unknown) => {
    assert.ok(hasCode(Code.DEADLINE_EXCEEDED)(err));
    return true;
  });
});

test('client: socket closed mid-command fails every outstanding call with UNAVAILABLE', async (t) => {
  let seen = 0;
  const f = await fakeQmp(t, (_cmd, conn) => {
    if (++seen === 2) conn.socket.destroy();
  });
  const c = await connect(t, f.path);
  let closeEvents = 0;
  c.on('close', () => closeEvents++);
  const a = c.execute('a');
  const b = c.execute('b');
  await assert.rejects(a, (err: unknown) => hasCode(Code.UNAVAILABLE)(err) && /qmp a: connection closed/.test((err as Error).message));
  await assert.rejects(b, hasCode(Code.UNAVAILABLE));
  await c.closed;
  assert.equal(c.isClosed, true);
  assert.equal(closeEvents, 1);
  await assert.rejects(c.execute('after'), hasCode(Code.UNAVAILABLE));
  // quit() treats a closed connection as done
  await c.quit();
});

test('client: quit resolves when QEMU closes before replying', async (t) => {
  const f = await fakeQmp(t, (cmd, conn) => {
    if (cmd.execute === 'quit') conn.socket.destroy();
  });
  const c = await connect(t, f.path);
  await c.quit();
  await c.closed;
});

test('client: our own close() fails outstanding calls at once', async (t) => {
  const f = await fakeQmp(t, () => {});
  const c = await connect(t, f.path);
  const p = c.execute('hang');
  c.close();
  await assert.rejects(p, hasCode(Code.UNAVAILABLE));
  await c.closed;
  c.close(); // idempotent
});

test('client: connect errors — nothing listening, no greeting, garbage', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vm-qmp-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  await assert.rejects(QmpClient.connect(join(dir, 'missing.sock')), (err: unknown) => {
    assert.ok(hasCode(Code.UNAVAILABLE)(err));
    assert.match((err as Error).message, /missing\.sock: ENOENT/);
    return true;
  });
  const silent = await fakeQmp(t, () => {}, { greet: false });
  await assert.rejects(QmpClient.connect(silent.path, { timeoutMs: 100 }), (err: unknown) => {
    assert.ok(hasCode(Code.DEADLINE_EXCEEDED)(err));
    assert.match((err as Error).message, /qmp connect .*qmp\.sock: timed out after 100 ms/);
    return true;
  });
  const garbage = await fakeQmp(t, () => {}, { greet: false });
  garbage.server.on('connection', (s) => s.write('this is not QMP\n'));
  await assert.rejects(QmpClient.connect(garbage.path, { timeoutMs: 2000 }), hasCode(Code.UNAVAILABLE));
  const hangup = await fakeQmp(t, () => {}, { greet: false });
  hangup.server.on('connection', (s) => s.destroy());
  await assert.rejects(QmpClient.connect(hangup.path, { timeoutMs: 2000 }), (err: unknown) => {
    assert.ok(hasCode(Code.UNAVAILABLE)(err));
    assert.match((err as Error).message, /before the greeting/);
    return true;
  });
});
