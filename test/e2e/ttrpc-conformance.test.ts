/**
 * Our ttrpc client against the REAL containerd binaries (Debian's 1.6.20).
 *
 * 1. The runc shim (`containerd-shim-runc-v2`), started through its CLI exactly
 *    as containerd 1.6 starts a shim (runtime/v2/binary.go, runtime/v2/shim/util.go
 *    Command, runtime/v2/shim_unix.go openShimLog):
 *
 *      cwd   = the bundle dir (its basename is the task id; `delete` relies on it)
 *      argv  = <shim> -namespace <ns> -address <containerd grpc socket>
 *                     -publish-binary <containerd binary> -id <id> [-debug] start
 *      env   = containerd's environment + GOMAXPROCS=2 + TTRPC_ADDRESS=<containerd ttrpc socket>
 *      stdin = the task options Any (protobuf) when there are any, else empty
 *      before the start, containerd creates the FIFO <bundle>/log and holds it
 *      open O_RDWR|O_NONBLOCK: the shim daemon's logger opens it O_WRONLY and
 *      blocks (or, when it is missing, exits) without it.
 *      stdout (combined with stderr) = the socket address, e.g.
 *      unix:///run/containerd/s/<sha256(address/ns/id)>, no newline; exit 0.
 *
 *    Then the Task API over our client: Create/Start/State/Exec/Wait/Kill/
 *    Delete/Connect/Shutdown with exact statuses and codes, the events the shim
 *    publishes through TTRPC_ADDRESS as `ctr events` shows them, and the shim's
 *    `delete` subcommand (protobuf DeleteResponse on stdout).
 * 2. containerd's own ttrpc server: Events/Forward (what our shim will call to
 *    publish events) as `ctr events` prints it, validation errors, and the
 *    status of an unknown service/method.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { constants, existsSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';

import { containerd, google } from '../../src/proto/gen/containerd.js';
import { TtrpcClient } from '../../src/ttrpc/index.js';
import { int64ToNumber } from '../../src/ttrpc/messages.js';
import { Code, StatusError } from '../../src/errors/index.js';
import { makeBundle, type OciSpec } from '../harness/busybox.js';
import {
  startContainerd,
  waitFor,
  pidAlive,
  procCmdline,
  procStat,
  mountsUnder,
  withLogOnFailure,
  type Containerd,
} from '../harness/containerd.js';
import { snapshot, assertNoLeaks } from '../harness/leaks.js';

const SHIM = '/usr/bin/containerd-shim-runc-v2';
const CONTAINERD_BIN = '/usr/bin/containerd';
const TASK = 'containerd.task.v2.Task';
const EVENTS = 'containerd.services.events.ttrpc.v1.Events';
const T = containerd.task.v2;
const Status = containerd.v1.types.Status;
const Empty = google.protobuf.Empty;
const CALL = { timeoutMs: 15_000 };

// ---------------------------------------------------------------------------
// helpers

/** LIFO cleanup: node:test runs t.after hooks in registration order, teardown needs the reverse. */
class Cleanup {
  private readonly fns: { what: string; fn: () => unknown }[] = [];
  constructor(t: TestContext) {
    t.after(() => this.run());
  }
  add(what: string, fn: () => unknown): void {
    this.fns.push({ what, fn });
  }
  async run(): Promise<void> {
    const errors: string[] = [];
    while (this.fns.length) {
      const { what, fn } = this.fns.pop()!;
      try {
        await fn();
      } catch (e) {
        errors.push(`${what}: ${String(e)}`);
      }
    }
    if (errors.length) throw new Error('cleanup failed:\n' + errors.join('\n'));
  }
}

/** Run `fn`; if it throws, print `text()` to stderr under a heading, then rethrow. */
async function withTextOnFailure<T>(heading: string, text: () => string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    process.stderr.write(`\n----- ${heading} -----\n${text()}\n-----\n`);
    throw e;
  }
}

/** Expect a promise to fail with a StatusError of `code`; returns the error. */
async function rejectsWith(p: Promise<unknown>, code: Code, what: string): Promise<StatusError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof StatusError, `${what}: expected a StatusError, got ${String(e)}`);
    assert.equal(Code[e.code], Code[code], `${what}: ${e.message}`);
    return e;
  }
  assert.fail(`${what}: expected ${Code[code]}, got success`);
}

function killPid(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}

function tsMillis(ts: { seconds?: number | { toNumber(): number } | null; nanos?: number | null } | null | undefined): number {
  if (!ts) return 0;
  return int64ToNumber(ts.seconds) * 1000 + Math.floor((ts.nanos ?? 0) / 1e6);
}

function nowTimestamp(): { seconds: number; nanos: number } {
  const ms = Date.now();
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
}

function anyOf(typeUrl: string, value: Uint8Array): { type_url: string; value: Uint8Array } {
  return { type_url: typeUrl, value };
}

/** Run a command to completion (SIGKILL after timeoutMs). */
function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<{ code: number | null; stdout: Buffer; stderr: string; pid: number }> {
  return new Promise((res, rej) => {
    const p = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    p.stdout.on('data', (b: Buffer) => out.push(b));
    p.stderr.on('data', (b: Buffer) => (stderr += b));
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 20_000);
    p.once('error', rej);
    p.once('close', (code) => {
      clearTimeout(timer);
      res({ code, stdout: Buffer.concat(out), stderr, pid: p.pid! });
    });
  });
}

/** A running `ctr events`, its stdout split into lines. */
interface CtrEvents {
  lines: string[];
  stderr(): string;
  /** Wait for a line matching every pattern; returns it. */
  waitLine(patterns: (string | RegExp)[], what: string, timeoutMs?: number): Promise<string>;
  stop(): Promise<void>;
}

function ctrEvents(c: Containerd, cleanup: Cleanup): CtrEvents {
  const p: ChildProcess = spawn('ctr', ['--address', c.address, '--namespace', c.namespace, 'events'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((r) => p.once('close', () => r()));
  cleanup.add('ctr events', async () => {
    killPid(p.pid);
    await exited;
  });
  const lines: string[] = [];
  let buf = '';
  let err = '';
  p.stdout!.setEncoding('utf8');
  p.stdout!.on('data', (s: string) => {
    buf += s;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
  p.stderr!.setEncoding('utf8');
  p.stderr!.on('data', (s: string) => (err += s));
  const matches = (l: string, pats: (string | RegExp)[]) => pats.every((x) => (typeof x === 'string' ? l.includes(x) : x.test(l)));
  return {
    lines,
    stderr: () => err,
    waitLine: (patterns, what, timeoutMs = 10_000) =>
      waitFor(() => lines.find((l) => matches(l, patterns)), { what: `ctr events line: ${what}`, timeoutMs, intervalMs: 20 }).catch((e: Error) => {
        throw new Error(`${e.message}\nctr events stdout:\n${lines.join('\n')}\nstderr:\n${err}`);
      }),
    stop: async () => {
      killPid(p.pid);
      await exited;
    },
  };
}

/** Forward an event to containerd's ttrpc server. */
function forward(client: TtrpcClient, env: containerd.services.events.ttrpc.v1.Envelope.$Properties): Promise<unknown> {
  return client.request(EVENTS, 'Forward', containerd.services.events.ttrpc.v1.ForwardRequest, Empty, { envelope: env }, CALL);
}

/**
 * Make sure `ctr events` has subscribed: forward uniquely named probe events
 * until one shows up (events forwarded before the subscription are lost).
 */
async function syncEvents(ev: CtrEvents, client: TtrpcClient, namespace: string): Promise<void> {
  let n = 0;
  const tag = 'probe-' + randomBytes(3).toString('hex');
  await waitFor(
    async () => {
      await forward(client, {
        timestamp: nowTimestamp(),
        namespace,
        topic: '/tasks/oom',
        event: anyOf('containerd.events.TaskOOM', containerd.events.TaskOOM.encode({ containerId: `${tag}-${n++}` }).finish()),
      });
      return ev.lines.some((l) => l.includes(tag));
    },
    { what: 'ctr events subscribed', intervalMs: 100 },
  );
}

/** The runc shim's socket address for (containerd address, namespace, id): runtime/v2/shim/util_unix.go SocketAddress. */
function shimSocketAddress(address: string, ns: string, id: string): string {
  return 'unix:///run/containerd/s/' + createHash('sha256').update(join(address, ns, id)).digest('hex');
}

interface StartedShim {
  /** What `start` printed: unix:///run/containerd/s/<hash>. */
  address: string;
  socketPath: string;
  /** Everything the shim daemon wrote to the bundle's `log` FIFO so far. */
  log(): string;
  /** Pid of the `start` process (it has exited). */
  startPid: number;
}

/**
 * `containerd-shim-runc-v2 … start` as containerd 1.6 runs it. Registers the
 * cleanup of what it creates (log FIFO reader, daemon, socket file).
 */
async function startShim(c: Containerd, bundleDir: string, id: string, cleanup: Cleanup): Promise<StartedShim> {
  // containerd: fifo.OpenFifo(<bundle>/log, O_RDWR|O_CREAT|O_NONBLOCK, 0700) before starting the shim.
  const logPath = join(bundleDir, 'log');
  execFileSync('mkfifo', ['-m', '0700', logPath]);
  const fd = openSync(logPath, constants.O_RDWR | constants.O_NONBLOCK);
  const logSock = new net.Socket({ fd, readable: true, writable: false });
  let log = '';
  logSock.setEncoding('utf8');
  logSock.on('data', (s: string) => (log += s));
  logSock.on('error', () => undefined);
  cleanup.add('shim log fifo', () => logSock.destroy());

  const expected = shimSocketAddress(c.address, c.namespace, id);
  const socketPath = expected.slice('unix://'.length);
  cleanup.add('shim socket file', () => {
    try {
      if (statSync(socketPath).isSocket()) unlinkSync(socketPath);
    } catch {
      /* gone */
    }
  });
  // The daemon is found by its argv (-address <our socket> -id <id>, no "start"); end it if still there.
  cleanup.add('shim daemon', () => {
    for (const pid of c.shimPids()) {
      const argv = procCmdline(pid);
      if (argv[argv.indexOf('-id') + 1] === id) killPid(pid);
    }
  });

  const r = await run(
    SHIM,
    ['-namespace', c.namespace, '-address', c.address, '-publish-binary', CONTAINERD_BIN, '-id', id, 'start'],
    { cwd: bundleDir, env: { ...process.env, GOMAXPROCS: '2', TTRPC_ADDRESS: c.ttrpcAddress } },
  );
  const out = r.stdout.toString('utf8');
  assert.equal(r.code, 0, `shim start failed: ${out}${r.stderr}\nlog:\n${log}`);
  assert.equal(r.stderr, '', 'start writes nothing to stderr');
  assert.equal(out, expected, 'start prints the socket address, exactly, with no newline');
  // The shim also records it in <bundle>/address (read back by containerd on restart, and by the daemon).
  assert.equal(readFileSync(join(bundleDir, 'address'), 'utf8'), expected);
  assert.ok(statSync(socketPath).isSocket(), 'socket exists when start returns');
  assert.equal((statSync(socketPath).mode & 0o777).toString(8), '600');
  return { address: out, socketPath, log: () => log, startPid: r.pid };
}

// ---------------------------------------------------------------------------
// 1. the runc shim

test('runc shim: CLI start contract and the Task API over our ttrpc client', { timeout: 120_000 }, async (t) => {
  const cleanup = new Cleanup(t);
  const c = await startContainerd();
  cleanup.add('containerd', () => c.stop());
  const before = snapshot(c.dir);
  let shimLog = () => '';

  await withLogOnFailure(c, () => withTextOnFailure('runc shim log (<bundle>/log)', () => shimLog(), async () => {
    const ns = c.namespace;
    const idA = 'conf-a-' + randomBytes(3).toString('hex');
    const idB = 'conf-b-' + randomBytes(3).toString('hex');
    // Like containerd's <state>/io.containerd.runtime.v2.task/<ns>/<id>: the basename is the id.
    const bundles = join(c.dir, 'bundles', ns);
    mkdirSync(bundles, { recursive: true });
    const cgroup = (id: string) => (spec: OciSpec) => {
      spec.linux.cgroupsPath = `/${ns}/${id}`; // harness stop() removes cgroups under /<ns>
    };
    const bA = await makeBundle(join(bundles, idA), { args: ['sleep', '100'], mutate: cgroup(idA) });
    const bB = await makeBundle(join(bundles, idB), { args: ['sh', '-c', 'exit 3'], mutate: cgroup(idB) });
    const runcOptions = anyOf('containerd.runc.v1.Options', containerd.runc.v1.Options.encode({ root: c.runcRoot }).finish());

    // Our own client on containerd's ttrpc socket (to sync `ctr events`).
    const cd = await TtrpcClient.connect(c.ttrpcAddress, { timeoutMs: 5000 });
    cleanup.add('containerd ttrpc client', () => cd.close());
    const ev = ctrEvents(c, cleanup);
    await syncEvents(ev, cd, ns);

    // ---- start
    const shim = await startShim(c, bA.dir, idA, cleanup);
    shimLog = shim.log;
    assert.equal(pidAlive(shim.startPid), false, '`start` has exited');
    const client = await TtrpcClient.connect(shim.socketPath, { timeoutMs: 5000 });
    cleanup.add('shim client', () => client.close());

    // ---- Create / Start / State
    const created = await client.request(TASK, 'Create', T.CreateTaskRequest, T.CreateTaskResponse, {
      id: idA, bundle: bA.dir, rootfs: [], terminal: false, stdin: '', stdout: '', stderr: '', options: runcOptions,
    }, CALL);
    const pidA = created.pid;
    assert.ok(pidA > 0, 'Create returns the init pid');
    cleanup.add('container A', () => killPid(pidA));
    assert.deepEqual(JSON.parse(readFileSync(join(bA.dir, 'options.json'), 'utf8')), { root: c.runcRoot }, 'runc shim writes options.json');
    assert.equal(readFileSync(join(bA.dir, 'init.pid'), 'utf8'), String(pidA));

    let st = await client.request(TASK, 'State', T.StateRequest, T.StateResponse, { id: idA }, CALL);
    assert.equal(Status[st.status], 'CREATED');
    assert.equal(st.pid, pidA);
    assert.equal(st.id, idA);
    assert.equal(st.bundle, bA.dir);

    // Connect: the shim's pid and the task's.
    const conn = await client.request(TASK, 'Connect', T.ConnectRequest, T.ConnectResponse, { id: idA }, CALL);
    const shimPid = conn.shimPid;
    assert.equal(conn.taskPid, pidA);
    assert.equal(conn.version, '');
    const argv = procCmdline(shimPid);
    assert.deepEqual(argv.slice(1), ['-namespace', ns, '-id', idA, '-address', c.address], 'the daemon re-execs itself without -publish-binary and action');
    assert.notEqual(procStat(shimPid)?.ppid, process.pid);
    assert.deepEqual(c.shimPids(), [shimPid]);
    assert.equal(procStat(pidA)?.ppid, shimPid, 'the container init is a child of the shim (subreaper)');
    assert.ok(readFileSync(`/proc/${shimPid}/environ`, 'utf8').split('\0').includes(`TTRPC_ADDRESS=${c.ttrpcAddress}`));

    // Shutdown while a container exists: OK, and the shim stays.
    await client.request(TASK, 'Shutdown', T.ShutdownRequest, Empty, { id: idA }, CALL);
    assert.ok(pidAlive(shimPid), 'Shutdown with live containers is a no-op');

    const started = await client.request(TASK, 'Start', T.StartRequest, T.StartResponse, { id: idA }, CALL);
    assert.equal(started.pid, pidA);
    st = await client.request(TASK, 'State', T.StateRequest, T.StateResponse, { id: idA }, CALL);
    assert.equal(Status[st.status], 'RUNNING');
    assert.equal(st.pid, pidA);
    assert.equal(st.exitStatus, 0);
    assert.equal(int64ToNumber(st.exitedAt?.seconds), -62135596800, 'a running process has the Go zero time as exited_at');

    // ---- Exec: spec is an Any with the OCI Process as JSON; output to a file:// URI.
    // (stdout and stderr must both name it: stdout file:// with stderr "" panics the 1.6.20 runc
    // shim in copyPipes — it copies from a stderr pipe it never made.)
    const outFile = join(c.dir, 'exec-out.txt');
    const spec = {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: ['sh', '-c', 'echo exec-out; exit 7'],
      env: ['PATH=/bin:/usr/bin'],
      cwd: '/',
    };
    await client.request(TASK, 'Exec', T.ExecProcessRequest, Empty, {
      id: idA, execId: 'e1', terminal: false, stdin: '', stdout: `file://${outFile}`, stderr: `file://${outFile}`,
      spec: anyOf('types.containerd.io/opencontainers/runtime-spec/1/Process', Buffer.from(JSON.stringify(spec))),
    }, CALL);
    await rejectsWith(
      client.request(TASK, 'Exec', T.ExecProcessRequest, Empty, {
        id: idA, execId: 'e1', spec: anyOf('types.containerd.io/opencontainers/runtime-spec/1/Process', Buffer.from(JSON.stringify(spec))),
      }, CALL),
      Code.ALREADY_EXISTS, 'Exec with a used exec id');
    st = await client.request(TASK, 'State', T.StateRequest, T.StateResponse, { id: idA, execId: 'e1' }, CALL);
    assert.equal(Status[st.status], 'CREATED');
    assert.equal(st.id, 'e1');
    const execStarted = await client.request(TASK, 'Start', T.StartRequest, T.StartResponse, { id: idA, execId: 'e1' }, CALL);
    assert.ok(execStarted.pid > 0 && execStarted.pid !== pidA);
    const execWait = await client.request(TASK, 'Wait', T.WaitRequest, T.WaitResponse, { id: idA, execId: 'e1' }, CALL);
    assert.equal(execWait.exitStatus, 7);
    assert.ok(Math.abs(tsMillis(execWait.exitedAt) - Date.now()) < 30_000, 'exec exited_at set');
    await waitFor(() => existsSync(outFile) && readFileSync(outFile, 'utf8') === 'exec-out\n', { what: 'exec output in the file' });
    const execDel = await client.request(TASK, 'Delete', T.DeleteRequest, T.DeleteResponse, { id: idA, execId: 'e1' }, CALL);
    assert.equal(execDel.exitStatus, 7);
    assert.equal(execDel.pid, execStarted.pid);
    await rejectsWith(client.request(TASK, 'State', T.StateRequest, T.StateResponse, { id: idA, execId: 'e1' }, CALL),
      Code.NOT_FOUND, 'State of a deleted exec');

    // ---- Wait in flight before Kill(SIGKILL)
    let waitSettled = false;
    const waiting = client.request(TASK, 'Wait', T.WaitRequest, T.WaitResponse, { id: idA }, { timeoutMs: 30_000 });
    void waiting.then(() => (waitSettled = true), () => (waitSettled = true));
    // A round trip after the Wait was sent: the shim has the Wait and it is still blocked.
    st = await client.request(TASK, 'State', T.StateRequest, T.StateResponse, { id: idA }, CALL);
    assert.equal(Status[st.status], 'RUNNING');
    assert.equal(waitSettled, false, 'Wait blocks while the task runs');
    const killedAt = Date.now();
    await client.request(TASK, 'Kill', T.KillRequest, Empty, { id: idA, signal: 9, all: false }, CALL);
    const w = await waiting;
    assert.equal(w.exitStatus, 137);
    const exitedMs = tsMillis(w.exitedAt);
    assert.ok(exitedMs >= killedAt - 1000 && exitedMs <= Date.now() + 1000, `exited_at ${exitedMs} near the kill ${killedAt}`);
    assert.equal(pidAlive(pidA), false);

    st = await client.request(TASK, 'State', T.StateRequest, T.StateResponse, { id: idA }, CALL);
    assert.equal(Status[st.status], 'STOPPED');
    assert.equal(st.exitStatus, 137);
    assert.equal(st.pid, pidA);
    assert.equal(tsMillis(st.exitedAt), exitedMs);
    // Kill of a stopped init: NOT_FOUND ("process already finished").
    await rejectsWith(client.request(TASK, 'Kill', T.KillRequest, Empty, { id: idA, signal: 9 }, CALL), Code.NOT_FOUND, 'Kill after exit');

    const del = await client.request(TASK, 'Delete', T.DeleteRequest, T.DeleteResponse, { id: idA }, CALL);
    assert.equal(del.exitStatus, 137);
    assert.equal(del.pid, pidA);
    assert.equal(tsMillis(del.exitedAt), exitedMs);

    // ---- errors for unknown ids: NOT_FOUND "container not created: not found"
    for (const id of [idA, 'no-such-container']) {
      const e = await rejectsWith(client.request(TASK, 'State', T.StateRequest, T.StateResponse, { id }, CALL), Code.NOT_FOUND, `State ${id}`);
      assert.equal(e.message, 'container not created: not found');
    }
    await rejectsWith(client.request(TASK, 'Start', T.StartRequest, T.StartResponse, { id: 'no-such-container' }, CALL), Code.NOT_FOUND, 'Start unknown');
    await rejectsWith(client.request(TASK, 'Wait', T.WaitRequest, T.WaitResponse, { id: 'no-such-container' }, CALL), Code.NOT_FOUND, 'Wait unknown');
    await rejectsWith(client.request(TASK, 'Delete', T.DeleteRequest, T.DeleteResponse, { id: 'no-such-container' }, CALL), Code.NOT_FOUND, 'Delete unknown');
    // An rpc the service does not have: UNIMPLEMENTED from ttrpc itself.
    await rejectsWith(client.call(TASK, 'NoSuchMethod', new Uint8Array(0), CALL), Code.UNIMPLEMENTED, 'unknown method');
    await rejectsWith(client.call('containerd.task.v3.Task', 'State', new Uint8Array(0), CALL), Code.UNIMPLEMENTED, 'unknown service');

    // ---- a second container in the same shim: exit 3
    const createdB = await client.request(TASK, 'Create', T.CreateTaskRequest, T.CreateTaskResponse, {
      id: idB, bundle: bB.dir, rootfs: [], options: runcOptions,
    }, CALL);
    assert.ok(createdB.pid > 0);
    cleanup.add('container B', () => killPid(createdB.pid));
    const waitB = client.request(TASK, 'Wait', T.WaitRequest, T.WaitResponse, { id: idB }, { timeoutMs: 30_000 });
    const startedB = await client.request(TASK, 'Start', T.StartRequest, T.StartResponse, { id: idB }, CALL);
    assert.equal(startedB.pid, createdB.pid);
    assert.equal((await waitB).exitStatus, 3);
    st = await client.request(TASK, 'State', T.StateRequest, T.StateResponse, { id: idB }, CALL);
    assert.equal(Status[st.status], 'STOPPED');
    assert.equal(st.exitStatus, 3);
    const delB = await client.request(TASK, 'Delete', T.DeleteRequest, T.DeleteResponse, { id: idB }, CALL);
    assert.equal(delB.exitStatus, 3);
    assert.equal(delB.pid, createdB.pid);

    // ---- the events the shim published to containerd (TTRPC_ADDRESS), as `ctr events` prints them
    const evLine = (topic: string, ...more: string[]) => ev.waitLine([` ${ns} ${topic} `, ...more], `${topic} ${more.join(' ')}`);
    await evLine('/tasks/create', `"container_id":"${idA}"`, `"bundle":"${bA.dir}"`, `"pid":${pidA}`);
    await evLine('/tasks/start', `"container_id":"${idA}"`, `"pid":${pidA}`);
    await evLine('/tasks/exec-added', `"container_id":"${idA}"`, '"exec_id":"e1"');
    await evLine('/tasks/exec-started', `"container_id":"${idA}"`, '"exec_id":"e1"', `"pid":${execStarted.pid}`);
    await evLine('/tasks/exit', `"container_id":"${idA}"`, '"id":"e1"', '"exit_status":7');
    await evLine('/tasks/exit', `"container_id":"${idA}"`, `"id":"${idA}"`, `"pid":${pidA}`, '"exit_status":137');
    await evLine('/tasks/delete', `"container_id":"${idA}"`, `"pid":${pidA}`, '"exit_status":137');
    await evLine('/tasks/exit', `"container_id":"${idB}"`, '"exit_status":3');
    await evLine('/tasks/delete', `"container_id":"${idB}"`, '"exit_status":3');

    // ---- Shutdown with no containers left: the shim exits and removes its socket.
    // containerd ignores a closed connection here (runtime/v2/shim.go: ttrpc.ErrClosed), the
    // reply races the exit: accept OK or UNAVAILABLE, nothing else.
    try {
      await client.request(TASK, 'Shutdown', T.ShutdownRequest, Empty, { id: idA }, CALL);
    } catch (e) {
      assert.ok(e instanceof StatusError && e.code === Code.UNAVAILABLE, `Shutdown: ${String(e)}`);
    }
    await waitFor(() => !pidAlive(shimPid), { what: 'shim process exited' });
    await waitFor(() => client.isClosed, { what: 'connection closed by the shim' });
    await rejectsWith(client.request(TASK, 'Connect', T.ConnectRequest, T.ConnectResponse, { id: idA }, CALL), Code.UNAVAILABLE, 'call after shutdown');
    assert.equal(existsSync(shim.socketPath), false, 'the shim removed its socket');
    await rejectsWith(TtrpcClient.connect(shim.socketPath, { timeoutMs: 2000 }), Code.UNAVAILABLE, 'connect after shutdown');
    assert.deepEqual(c.shimPids(), [], 'no shim left');
    assert.match(shim.log(), /level=info msg="starting signal loop"/, 'the daemon logs to the log FIFO (logrus text)');

    // ---- `delete` subcommand (containerd's cleanup of a dead shim): protobuf DeleteResponse on stdout.
    // It always reports 128+SIGKILL and the pid from init.pid, whatever the real exit (B exited 3).
    const d = await run(
      SHIM,
      ['-namespace', ns, '-address', c.address, '-publish-binary', CONTAINERD_BIN, '-id', idB, '-bundle', bB.dir, 'delete'],
      { cwd: bB.dir, env: { ...process.env, GOMAXPROCS: '2', TTRPC_ADDRESS: c.ttrpcAddress } },
    );
    assert.equal(d.code, 0, d.stderr);
    const dr = T.DeleteResponse.decode(d.stdout);
    assert.equal(dr.exitStatus, 137);
    assert.equal(dr.pid, createdB.pid);
    assert.ok(Math.abs(tsMillis(dr.exitedAt) - Date.now()) < 30_000, 'exited_at = now');
    assert.deepEqual(c.shimPids(), []);

    // ---- nothing left behind
    await ev.stop();
    cd.close();
    assert.equal(pidAlive(pidA), false);
    assert.equal(pidAlive(createdB.pid), false);
    assert.deepEqual(mountsUnder(c.dir), []);
    assertNoLeaks(before, snapshot(c.dir));
  }));

  await cleanup.run();
  assert.equal(existsSync(c.dir), false, 'containerd temp dir removed');
});

// ---------------------------------------------------------------------------
// 2. containerd's ttrpc server

test('containerd ttrpc: Events/Forward as ctr events shows it; status codes', { timeout: 60_000 }, async (t) => {
  const cleanup = new Cleanup(t);
  const c = await startContainerd();
  cleanup.add('containerd', () => c.stop());
  const before = snapshot(c.dir);

  await withLogOnFailure(c, async () => {
    const ns = c.namespace;
    const client = await TtrpcClient.connect(c.ttrpcAddress, { timeoutMs: 5000 });
    cleanup.add('client', () => client.close());
    const ev = ctrEvents(c, cleanup);
    await syncEvents(ev, client, ns);

    // TaskOOM, bare type url: shown with its topic and decoded payload.
    const tag = randomBytes(3).toString('hex');
    const oomId = `conformance-x-${tag}`;
    await forward(client, {
      timestamp: nowTimestamp(),
      namespace: ns,
      topic: '/tasks/oom',
      event: anyOf('containerd.events.TaskOOM', containerd.events.TaskOOM.encode({ containerId: oomId }).finish()),
    });
    const oomLine = await ev.waitLine([` ${ns} /tasks/oom `, oomId], 'TaskOOM');
    assert.match(oomLine, new RegExp(`^\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d(\\.\\d+)? \\+0000 UTC ${ns} /tasks/oom \\{"container_id":"${oomId}"\\}$`));

    // A prefixed type url cannot be decoded by containerd 1.6 (typeurl v1.0.2, gogo registry):
    // ctr skips it with a warning. Then TaskExit with the bare url: decoded, every field.
    const exitId = `conformance-exit-${tag}`;
    const exitEvent = containerd.events.TaskExit.encode({
      containerId: exitId, id: exitId, pid: 4242, exitStatus: 137, exitedAt: { seconds: 1_700_000_000, nanos: 5 },
    }).finish();
    await forward(client, {
      timestamp: nowTimestamp(), namespace: ns, topic: '/tasks/exit',
      event: anyOf('type.googleapis.com/containerd.events.TaskExit', exitEvent),
    });
    await forward(client, {
      timestamp: nowTimestamp(), namespace: ns, topic: '/tasks/exit', event: anyOf('containerd.events.TaskExit', exitEvent),
    });
    const exitLine = await ev.waitLine([` ${ns} /tasks/exit `, exitId], 'TaskExit');
    assert.ok(
      exitLine.endsWith(` ${ns} /tasks/exit {"container_id":"${exitId}","id":"${exitId}","pid":4242,"exit_status":137,"exited_at":"2023-11-14T22:13:20.000000005Z"}`),
      exitLine,
    );
    assert.equal(ev.lines.filter((l) => l.includes(exitId)).length, 1, 'the prefixed type url was not shown');
    assert.match(ev.stderr(), /cannot unmarshal an event from Any/);

    // Validation by containerd's exchange: INVALID_ARGUMENT.
    const oom = anyOf('containerd.events.TaskOOM', containerd.events.TaskOOM.encode({ containerId: oomId }).finish());
    await rejectsWith(forward(client, { namespace: ns, topic: '/tasks/oom', event: oom }), Code.INVALID_ARGUMENT, 'no timestamp');
    await rejectsWith(forward(client, { timestamp: nowTimestamp(), namespace: ns, topic: 'tasks/oom', event: oom }), Code.INVALID_ARGUMENT, 'topic without /');
    await rejectsWith(forward(client, { timestamp: nowTimestamp(), namespace: '', topic: '/tasks/oom', event: oom }), Code.INVALID_ARGUMENT, 'empty namespace');

    // Unknown method / service on containerd's ttrpc socket: UNIMPLEMENTED, message as containerd/ttrpc 1.1.1 words it.
    let e = await rejectsWith(client.call(EVENTS, 'Bogus', new Uint8Array(0), CALL), Code.UNIMPLEMENTED, 'bogus method');
    assert.equal(e.message, 'method Bogus');
    e = await rejectsWith(client.call('containerd.bogus.v1.Nothing', 'Forward', new Uint8Array(0), CALL), Code.UNIMPLEMENTED, 'bogus service');
    assert.equal(e.message, 'service containerd.bogus.v1.Nothing');
    // The connection survives errors.
    await forward(client, { timestamp: nowTimestamp(), namespace: ns, topic: '/tasks/oom', event: oom });

    await ev.stop();
    client.close();
    assertNoLeaks(before, snapshot(c.dir));
  });

  await cleanup.run();
  assert.equal(existsSync(c.dir), false);
});
