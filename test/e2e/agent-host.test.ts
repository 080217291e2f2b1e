/**
 * The guest agent on the HOST: the agent knows nothing of the VM, so it runs
 * here as root with `--listen unix:` and the real crun, driven through
 * AgentClient exactly as the shim drives it through the VM's channel.
 *
 * The agent under test is the bundle as the guest runs it
 * (scripts/bundle-agent.mjs → boot.cjs + agent.cjs + its code cache +
 * tty-helper), built into the test's temp dir.
 *
 * cgroups: crun refuses a hybrid hierarchy ("cgroups in hybrid mode not
 * supported") and these hosts mount v1 controllers plus a v2 hierarchy at
 * /sys/fs/cgroup/unified. The agent then runs in a private mount namespace
 * where that v2 mount is unmounted, and crun uses cgroup v1 (the agent reads
 * both; the guest has pure v2). Every container goes under a cgroup parent
 * unique to this run, removed at the end; crun's --root is in the temp dir.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentClient } from '../../src/agent-client/index.js';
import { Code } from '../../src/errors/index.js';
import { projectRoot, runtimeSpec, writeBusyboxRootfs, type OciSpec } from '../harness/busybox.js';
import { pidAlive, waitFor } from '../harness/containerd.js';
import { drainStdout, readAll } from '../harness/agent.js';
import { expectCode } from '../harness/status.js';
import { skipUnlessCi } from '../harness/skip.js';

const CRUN = process.env.AGENT_TEST_RUNTIME ?? '/usr/bin/crun';
const canRun = process.getuid?.() === 0 && existsSync(CRUN);
const skip = skipUnlessCi(canRun, 'needs root and crun');

interface Fixture {
  dir: string;
  rootfs: string;
  socket: string;
  agent: ChildProcess;
  agentPid: number;
  cgroupParent: string;
  client: AgentClient;
  stderr: () => string;
  connect(): Promise<AgentClient>;
}

/** True when v1 controllers and a v2 hierarchy with controllers are both mounted (crun refuses that). */
function hybridCgroups(): boolean {
  const mi = readFileSync('/proc/self/mountinfo', 'utf8');
  const hasV1 = / - cgroup /.test(mi);
  const unified = /\s\/sys\/fs\/cgroup\/unified\s.* - cgroup2 /.test(mi);
  return hasV1 && unified;
}

/** Every cgroup directory named `parent` (v1: one per hierarchy; v2: one). */
function cgroupDirs(parent: string): string[] {
  const out: string[] = [];
  const base = '/sys/fs/cgroup';
  if (existsSync(join(base, 'cgroup.controllers'))) return [join(base, parent)];
  for (const h of readdirSync(base)) out.push(join(base, h, parent));
  return out.filter((d) => existsSync(d));
}

/** Kills processes left in our cgroup parent and removes it, depth first. */
function removeCgroupParent(parent: string): void {
  for (const dir of cgroupDirs(parent)) {
    const walk = (d: string): void => {
      let entries: string[] = [];
      try {
        entries = readdirSync(d, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
      } catch {
        return;
      }
      for (const e of entries) walk(join(d, e));
      try {
        for (const pid of readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
          try {
            process.kill(Number(pid), 'SIGKILL');
          } catch {
            /* gone */
          }
        }
      } catch {
        /* no procs file */
      }
      for (let i = 0; i < 20; i++) {
        try {
          rmdirSync(d);
          break;
        } catch {
          spawnSync('sleep', ['0.05']);
        }
      }
    };
    walk(dir);
  }
}

async function startAgent(t: TestContext): Promise<Fixture> {
  const dir = await mkdtemp(join(tmpdir(), 'agent-e2e-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const bundleDir = join(dir, 'bin');
  const b = spawnSync(process.execPath, [join(projectRoot(), 'scripts/bundle-agent.mjs'), '--out', bundleDir], { encoding: 'utf8' });
  assert.equal(b.status, 0, `bundle-agent failed: ${b.stdout}${b.stderr}`);
  const rootfs = join(dir, 'rootfs');
  await writeBusyboxRootfs(rootfs);
  const socket = join(dir, 'agent.sock');
  const cgroupParent = `/agent-e2e-${randomBytes(4).toString('hex')}`;
  t.after(() => removeCgroupParent(cgroupParent));

  // The guest's entry: boot.cjs runs the CommonJS bundle with its code cache; the tty-helper is
  // found next to the bundle (no --tty-helper), as in the guest.
  const agentArgv = [
    process.execPath, '--max-semi-space-size=16', join(bundleDir, 'boot.cjs'),
    '--listen', `unix:${socket}`, '--runtime', CRUN, '--state-dir', join(dir, 'state'),
    '--cgroup-parent', cgroupParent,
  ];
  // unshare execs the shell, which execs node: the agent keeps the pid we spawned.
  const argv = hybridCgroups()
    ? ['unshare', '-m', '--propagation', 'private', 'sh', '-c', 'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$@"', 'sh', ...agentArgv]
    : agentArgv;
  const agent = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, UV_THREADPOOL_SIZE: '16' } });
  let stderr = '';
  agent.stderr!.setEncoding('utf8');
  agent.stderr!.on('data', (s: string) => {
    stderr = (stderr + s).slice(-20_000);
  });
  t.after(async () => {
    if (agent.exitCode === null && agent.signalCode === null) {
      agent.kill('SIGTERM');
      await Promise.race([new Promise((r) => agent.once('exit', r)), sleep(3_000)]);
      if (agent.exitCode === null && agent.signalCode === null) agent.kill('SIGKILL');
    }
  });
  const connect = () => AgentClient.connect(socket, { connectTimeoutMs: 5_000 });
  const client = await waitFor(async () => (existsSync(socket) ? connect() : undefined), { timeoutMs: 20_000, what: 'agent socket' });
  t.after(async () => {
    // Kill every container first (DestroySandbox), then let the client go.
    try {
      const c = client.isClosed ? await connect() : client;
      await c.destroySandbox({ timeoutMs: 5_000 });
      c.close();
    } catch {
      /* the cgroup cleanup kills what is left */
    }
    client.close();
  });
  await client.createSandbox({ sandboxId: 'sb-e2e' });
  // Made by this node with these flags: V8 takes it.
  assert.doesNotMatch(stderr, /rejected by V8/, 'the code cache is accepted');
  return { dir, rootfs, socket, agent, agentPid: agent.pid!, cgroupParent, client, stderr: () => stderr, connect };
}

function spec(args: string[], mutate?: (s: OciSpec) => void, terminal = false): OciSpec {
  const s = runtimeSpec({ args, terminal });
  mutate?.(s);
  return s;
}

let seq = 0;
function uid(prefix: string): string {
  return `${prefix}-${++seq}-${randomBytes(2).toString('hex')}`;
}

/** Creates and starts a container; returns its pid. */
async function run(f: Fixture, id: string, s: OciSpec, opts: { terminal?: boolean; stdin?: boolean; rows?: number; cols?: number } = {}): Promise<number> {
  await f.client.createContainer({ containerId: id, spec: s, rootfsPath: f.rootfs, ...opts });
  return (await f.client.startContainer({ containerId: id })).pid;
}

function vmRssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

test('agent on the host: containers, exec, signals, stdio, terminal, pause, stats, errors', { skip, timeout: 300_000 }, async (t) => {
  const f = await startAgent(t);
  const c = f.client;
  t.after(() => {
    if (process.exitCode) process.stderr.write(`agent stderr tail:\n${f.stderr().slice(-4000)}\n`);
  });

  const info = await c.check();
  assert.equal(info.sandboxId, 'sb-e2e');
  assert.equal(info.runtime, CRUN);

  await t.test('exit code 3 with stdout and stderr', async () => {
    const id = uid('exit');
    const pid = await run(f, id, spec(['sh', '-c', 'echo to-stdout; echo to-stderr >&2; exit 3']));
    assert.ok(pid > 0);
    const [out, err, exit] = await Promise.all([readAll(c, { containerId: id }), readAll(c, { containerId: id }, 'stderr'), c.waitProcess({ containerId: id })]);
    assert.equal(out.toString(), 'to-stdout\n');
    assert.equal(err.toString(), 'to-stderr\n');
    assert.equal(exit.exitStatus, 3);
    assert.ok(Math.abs(exit.exitedAt.getTime() - Date.now()) < 60_000);
    // A later wait answers at once with the same exit.
    assert.equal((await c.waitProcess({ containerId: id }, { timeoutMs: 2_000 })).exitStatus, 3);
    await c.removeContainer({ containerId: id });
    await expectCode(c.waitProcess({ containerId: id }), Code.NOT_FOUND);
  });

  await t.test('exec, ps, stats, SIGTERM to an exec, SIGKILL to the container', async () => {
    const id = uid('sleeper');
    await run(f, id, spec(['sleep', '100']));
    const exec = await c.execProcess({ containerId: id, execId: 'e1', process: { args: ['sh', '-c', 'echo from-exec; exit 7'], cwd: '/', env: ['PATH=/bin'] } });
    assert.ok(exec.pid > 0);
    assert.equal((await c.waitProcess({ containerId: id, execId: 'e1' })).exitStatus, 7);
    assert.equal((await readAll(c, { containerId: id, execId: 'e1' })).toString(), 'from-exec\n');
    await expectCode(c.execProcess({ containerId: id, execId: 'e1', process: { args: ['true'], cwd: '/' } }), Code.ALREADY_EXISTS);
    await c.removeProcess({ containerId: id, execId: 'e1' });
    await expectCode(c.waitProcess({ containerId: id, execId: 'e1' }), Code.NOT_FOUND);

    const ps = await c.listProcesses({ containerId: id });
    assert.ok(ps.some((p) => p.cmd === 'sleep 100'), `sleep not listed: ${JSON.stringify(ps)}`);

    const stats = await c.statsContainer({ containerId: id });
    assert.ok(stats.memory.usageBytes > 0, `memory ${JSON.stringify(stats.memory)}`);
    assert.ok(stats.pids.current >= 1);

    await c.execProcess({ containerId: id, execId: 'e2', process: { args: ['sleep', '50'], cwd: '/' } });
    await expectCode(c.removeProcess({ containerId: id, execId: 'e2' }), Code.FAILED_PRECONDITION, /running state/);
    await c.signalProcess({ containerId: id, execId: 'e2', signal: 'SIGTERM' });
    assert.equal((await c.waitProcess({ containerId: id, execId: 'e2' })).exitStatus, 143);

    await c.signalProcess({ containerId: id, signal: 'SIGKILL' });
    assert.equal((await c.waitProcess({ containerId: id })).exitStatus, 137);
    const st = await c.listContainers();
    assert.equal(st.containers.find((x) => x.containerId === id)?.state, 'stopped');
    // As containerd's runc shim: a kill of a finished process is NotFound, "process already finished".
    await expectCode(c.signalProcess({ containerId: id, signal: 'SIGKILL' }), Code.NOT_FOUND, /process already finished/);
    await expectCode(c.signalProcess({ containerId: id, execId: 'e2', signal: 'SIGKILL' }), Code.NOT_FOUND, /process already finished/);
    await c.removeContainer({ containerId: id });
  });

  await t.test('stdin round trip until EOF (cat)', async () => {
    const id = uid('cat');
    await run(f, id, spec(['cat']), { stdin: true });
    const input = randomBytes(300 * 1024);
    const reading = readAll(c, { containerId: id });
    for (let off = 0; off < input.length; off += 64 * 1024) {
      const chunk = input.subarray(off, off + 64 * 1024);
      assert.equal(await c.writeStdin({ containerId: id, data: chunk }), chunk.length);
    }
    await c.closeStdin({ containerId: id });
    assert.ok((await reading).equals(input), 'output differs from input');
    assert.equal((await c.waitProcess({ containerId: id })).exitStatus, 0);
    await expectCode(c.writeStdin({ containerId: id, data: Buffer.from('late') }), Code.FAILED_PRECONDITION);
    await c.removeContainer({ containerId: id });
  });

  await t.test('terminal: initial size and resize while running', async () => {
    const id = uid('tty');
    await run(f, id, spec(['sh', '-c', 'stty size'], undefined, true), { terminal: true, rows: 40, cols: 100 });
    const out = (await readAll(c, { containerId: id })).toString();
    assert.match(out, /40 100/);
    assert.equal((await c.waitProcess({ containerId: id })).exitStatus, 0);
    // A terminal has no separate stderr.
    assert.deepEqual(await c.readStderr({ containerId: id }), { data: Buffer.alloc(0), eof: true });
    await c.removeContainer({ containerId: id });

    const id2 = uid('tty');
    await run(f, id2, spec(['sh', '-c', 'read x; stty size; exit 4'], undefined, true), { terminal: true, stdin: true, rows: 24, cols: 80 });
    await c.ttyWinResize({ containerId: id2, rows: 50, cols: 120 });
    await c.writeStdin({ containerId: id2, data: Buffer.from('go\n') });
    const out2 = (await readAll(c, { containerId: id2 })).toString();
    assert.match(out2, /50 120/);
    assert.equal((await c.waitProcess({ containerId: id2 })).exitStatus, 4);
    await c.removeContainer({ containerId: id2 });

    // Closing stdin of a terminal sends its EOF character: cat ends.
    const id4 = uid('tty');
    await run(f, id4, spec(['cat'], undefined, true), { terminal: true, stdin: true });
    const reading4 = readAll(c, { containerId: id4 });
    await c.writeStdin({ containerId: id4, data: Buffer.from('hello tty\n') });
    await c.closeStdin({ containerId: id4 });
    assert.equal((await c.waitProcess({ containerId: id4 }, { timeoutMs: 10_000 })).exitStatus, 0);
    // The terminal echoes the input, and cat prints it again.
    assert.equal((await reading4).toString().split('hello tty').length - 1, 2);
    await c.removeContainer({ containerId: id4 });

    // An exec with a terminal in a non-terminal container.
    const id3 = uid('tty');
    await run(f, id3, spec(['sleep', '100']));
    await c.execProcess({ containerId: id3, execId: 'sh', terminal: true, rows: 33, cols: 77, process: { args: ['stty', 'size'], cwd: '/', env: ['PATH=/bin', 'TERM=xterm'] } });
    assert.match((await readAll(c, { containerId: id3, execId: 'sh' })).toString(), /33 77/);
    assert.equal((await c.waitProcess({ containerId: id3, execId: 'sh' })).exitStatus, 0);
    await expectCode(c.ttyWinResize({ containerId: id3, rows: 1, cols: 1 }), Code.FAILED_PRECONDITION, /no terminal/);
    await c.signalProcess({ containerId: id3, signal: 'SIGKILL' });
    await c.waitProcess({ containerId: id3 });
    await c.removeContainer({ containerId: id3 });
  });

  await t.test('pause stops output, resume restarts it', async () => {
    const id = uid('ticker');
    await run(f, id, spec(['sh', '-c', 'while :; do echo tick; sleep 0.05; done']));
    const first = await c.readStdout({ containerId: id });
    assert.match(first.data.toString(), /tick/);
    await c.pauseContainer({ containerId: id });
    assert.equal((await c.listContainers()).containers.find((x) => x.containerId === id)?.state, 'paused');
    await expectCode(c.pauseContainer({ containerId: id }), Code.FAILED_PRECONDITION, /cannot pause container .* in paused state/);
    await expectCode(c.execProcess({ containerId: id, execId: 'x', process: { args: ['true'], cwd: '/' } }), Code.FAILED_PRECONDITION, /paused state/);
    // Drain what was written before the freeze, then nothing more comes.
    await sleep(200);
    await drainStdout(c, { containerId: id }, 300);
    await expectCode(c.readStdout({ containerId: id }, { timeoutMs: 700 }), Code.DEADLINE_EXCEEDED);
    await c.resumeContainer({ containerId: id });
    assert.equal((await c.listContainers()).containers.find((x) => x.containerId === id)?.state, 'running');
    const again = await c.readStdout({ containerId: id }, { timeoutMs: 5_000 });
    assert.match(again.data.toString(), /tick/);
    await c.updateContainer({ containerId: id, resources: { pids: { limit: 50 } } });
    assert.equal((await c.statsContainer({ containerId: id })).pids.limit, 50);
    await c.signalProcess({ containerId: id, signal: 'SIGKILL', all: true });
    assert.equal((await c.waitProcess({ containerId: id })).exitStatus, 137);
    await c.removeContainer({ containerId: id });
  });

  await t.test('100 MB of stdout: the agent buffers nothing, and its RSS stays bounded while relaying', async () => {
    const id = uid('flood');
    const MB = 1024 * 1024;
    const warm = 50 * MB;
    const total = warm + 100 * MB;
    const cold = vmRssKb(f.agentPid);
    await run(f, id, spec(['head', '-c', String(total), '/dev/zero']));
    // Nobody reads: the container fills the pipe and blocks; the agent holds
    // at most one read-ahead chunk.
    await sleep(1_000);
    const idle = vmRssKb(f.agentPid);
    // Behaviour, not a figure: the agent does not take the stream in while nobody reads (the writer stays
    // blocked, below); its RSS growth is a diagnostic.
    const ps = await c.listProcesses({ containerId: id });
    assert.ok(ps.some((p) => p.cmd.startsWith('head')), 'the writer should still be there, blocked');

    let got = 0;
    let reads = 0;
    let base = 0;
    let maxRss = 0;
    for (;;) {
      const r = await c.readStdout({ containerId: id, maxLen: MB });
      if (r.eof) break;
      got += r.data.length;
      reads++;
      if (!base && got >= warm) {
        base = maxRss = vmRssKb(f.agentPid);
        // A third of the way through, the writer must still be writing: the agent relays as the reader
        // reads, it does not take the stream in ahead of it.
        const mid = await c.listProcesses({ containerId: id });
        assert.ok(mid.some((p) => p.cmd.startsWith('head')), `the writer ended after ${got} of ${total} bytes were read: the agent read ahead`);
      }
      else if (base && reads % 100 === 0) maxRss = Math.max(maxRss, vmRssKb(f.agentPid));
    }
    maxRss = Math.max(maxRss, vmRssKb(f.agentPid));
    assert.equal(got, total);
    assert.equal((await c.waitProcess({ containerId: id })).exitStatus, 0);
    t.diagnostic(`agent RSS (KiB): before ${cold}, container blocked ${idle}, after 50 MB warm-up ${base}, ` +
      `max over the next 100 MB ${maxRss}; ${reads} reads`);
    // The RSS figures are a diagnostic (memory is measured in bench/); the behaviour is checked above:
    // the writer still blocked while nobody read, and still writing a third of the way through.
    await c.removeContainer({ containerId: id });
  });

  await t.test('bad requests get their codes and the agent keeps serving', async () => {
    await expectCode(c.startContainer({ containerId: 'no-such' }), Code.NOT_FOUND, /container no-such not found/);
    await c.check();
    await expectCode(c.waitProcess({ containerId: 'no-such', execId: 'x' }), Code.NOT_FOUND);
    await c.check();
    await expectCode(c.createContainer({ containerId: 'bad/id', spec: spec(['true']), rootfsPath: f.rootfs }), Code.INVALID_ARGUMENT, /container_id/);
    await c.check();
    await expectCode(c.createContainer({ containerId: uid('m'), spec: Buffer.from('{"process": '), rootfsPath: f.rootfs }), Code.INVALID_ARGUMENT, /spec_json: malformed JSON/);
    await c.check();
    await expectCode(c.createContainer({ containerId: uid('m'), spec: { process: { args: [] } }, rootfsPath: f.rootfs }), Code.INVALID_ARGUMENT, /spec_json.process.args/);
    await c.check();
    await expectCode(c.createContainer({ containerId: uid('m'), spec: spec(['true']), rootfsPath: '/no/such/dir' }), Code.INVALID_ARGUMENT, /rootfs_path/);
    const id = uid('dup');
    await c.createContainer({ containerId: id, spec: spec(['sleep', '100']), rootfsPath: f.rootfs });
    await expectCode(c.createContainer({ containerId: id, spec: spec(['true']), rootfsPath: f.rootfs }), Code.ALREADY_EXISTS, /already exists/);
    await c.check();
    await expectCode(c.signalProcess({ containerId: id, signal: 'SIGTERM' }), Code.FAILED_PRECONDITION, /created state/);
    await expectCode(c.statsContainer({ containerId: id }), Code.FAILED_PRECONDITION, /created state/);
    await c.startContainer({ containerId: id });
    await expectCode(c.startContainer({ containerId: id }), Code.FAILED_PRECONDITION, new RegExp(`cannot start container ${id} in running state`));
    await expectCode(c.removeContainer({ containerId: id }), Code.FAILED_PRECONDITION, /cannot remove container .* in running state/);
    await expectCode(c.signalProcess({ containerId: id, signal: 0 }), Code.INVALID_ARGUMENT, /signal/);
    await c.signalProcess({ containerId: id, signal: 'SIGKILL' });
    await c.waitProcess({ containerId: id });
    await c.removeContainer({ containerId: id });
    // A wait on a container that never ran ends when it is removed.
    const never = uid('never');
    await c.createContainer({ containerId: never, spec: spec(['true']), rootfsPath: f.rootfs });
    const neverWait = expectCode(c.waitProcess({ containerId: never }), Code.NOT_FOUND, /removed before it ran/);
    const neverRead = c.readStdout({ containerId: never });
    await sleep(50);
    await c.removeContainer({ containerId: never });
    await neverWait;
    assert.equal((await neverRead).eof, true);
    // A command that is not in the rootfs fails CreateContainer with runc's wording (runc looks it up at create), leaving nothing.
    const bad = uid('noexec');
    await expectCode(c.createContainer({ containerId: bad, spec: spec(['/no-such-binary']), rootfsPath: f.rootfs }), Code.INVALID_ARGUMENT,
      /process\.args\[0\]: exec: "\/no-such-binary": stat \/no-such-binary: no such file or directory/);
    await expectCode(c.createContainer({ containerId: bad, spec: spec(['no-such-binary']), rootfsPath: f.rootfs }), Code.INVALID_ARGUMENT,
      /exec: "no-such-binary": executable file not found in \$PATH/);
    await expectCode(c.waitProcess({ containerId: bad }), Code.NOT_FOUND);
    assert.equal((await c.check()).sandboxId, 'sb-e2e');
  });

  await t.test('reconnect mid-wait: the exit and the output survive the host going away', async () => {
    const a = await f.connect();
    const id = uid('later');
    await a.createContainer({ containerId: id, spec: spec(['sh', '-c', 'sleep 1.5; echo done; exit 5']), rootfsPath: f.rootfs });
    await a.startContainer({ containerId: id });
    const waiting = a.waitProcess({ containerId: id });
    const reading = a.readStdout({ containerId: id });
    await sleep(200);
    a.close();
    await expectCode(waiting, Code.UNAVAILABLE);
    await expectCode(reading, Code.UNAVAILABLE);
    await sleep(2_000); // the container exits while no host is connected
    const b = await f.connect();
    t.after(() => b.close());
    const st = await b.listContainers();
    const entry = st.containers.find((x) => x.containerId === id);
    assert.equal(entry?.state, 'stopped');
    assert.equal(entry?.processes[0]?.exit?.exitStatus, 5);
    assert.equal((await b.waitProcess({ containerId: id })).exitStatus, 5);
    assert.equal((await readAll(b, { containerId: id })).toString(), 'done\n');
    await b.removeContainer({ containerId: id });
  });

  await t.test('OOM kill is reported by GetOOMEvent', async () => {
    const id = uid('oom');
    // The init survives; a child shell grows a string past the limit and is OOM-killed.
    await run(f, id, spec(['sh', '-c', 'sh -c \'x=$(head -c 200000000 /dev/zero | tr "\\\\0" a); echo ${#x}\'; sleep 100'], (s) => {
      s.linux.resources = { ...s.linux.resources, memory: { limit: 32 * 1024 * 1024, swap: 32 * 1024 * 1024 } };
    }));
    const ev = await c.getOOMEvent({ timeoutMs: 30_000 });
    assert.equal(ev.containerId, id);
    assert.ok((await c.statsContainer({ containerId: id })).oomKills >= 1);
    await c.signalProcess({ containerId: id, signal: 'SIGKILL' });
    await c.waitProcess({ containerId: id });
    await c.removeContainer({ containerId: id });
  });

  await t.test('DestroySandbox kills everything', async () => {
    const ids = [uid('d'), uid('d')];
    const pids: number[] = [];
    for (const id of ids) pids.push(await run(f, id, spec(['sleep', '100'])));
    pids.push((await c.execProcess({ containerId: ids[0]!, execId: 'ex', process: { args: ['sleep', '77'], cwd: '/' } })).pid);
    const waits = ids.map((id) => c.waitProcess({ containerId: id }));
    await c.destroySandbox();
    for (const w of await Promise.all(waits)) assert.equal(w.exitStatus, 137);
    for (const pid of pids) await waitFor(() => !pidAlive(pid), { timeoutMs: 5_000, what: `pid ${pid} to die` });
    const st = await c.listContainers();
    assert.equal(st.sandboxId, '');
    assert.deepEqual(st.containers, []);
    await expectCode(c.createContainer({ containerId: uid('x'), spec: spec(['true']), rootfsPath: f.rootfs }), Code.FAILED_PRECONDITION, /CreateSandbox/);
    await c.createSandbox({ sandboxId: 'sb-e2e-2' });
    assert.ok(pidAlive(f.agentPid), 'agent died');
  });
});
