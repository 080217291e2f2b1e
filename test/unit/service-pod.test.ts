/**
 * The Pod (the shim's service object) against a fake VM and agent: the
 * state machine, status codes, the exits loop, Wait and the events — with
 * real bind mounts of a temp bundle (the tests run as root).
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AgentClient } from '../../src/agent-client/index.js';
import { Code } from '../../src/errors/index.js';
import { silentLogger } from '../../src/log/index.js';
import { containerd } from '../../src/proto/gen/containerd.js';
import { TaskStatus } from '../../src/service/container.js';
import { Pod, type PodSandbox } from '../../src/service/pod.js';
import { mountsUnder } from '../../src/vm/index.js';
import { expectCode } from '../harness/status.js';

interface Deferred<T> { promise: Promise<T>; resolve(v: T): void }
function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => { resolve = r; });
  return { promise, resolve };
}

class FakeAgent {
  calls: string[] = [];
  exits = new Map<string, Deferred<{ exitStatus: number; exitedAt: Date }>>();
  created = new Map<string, Record<string, unknown>>();
  isClosed = false;
  private key(c: string, e = ''): string { return `${c}/${e}`; }
  exitOf(c: string, e = ''): Deferred<{ exitStatus: number; exitedAt: Date }> {
    const k = this.key(c, e);
    if (!this.exits.has(k)) this.exits.set(k, deferred());
    return this.exits.get(k)!;
  }
  async createContainer(r: { containerId: string; spec: Record<string, unknown> }) { this.calls.push(`create ${r.containerId}`); this.created.set(r.containerId, r.spec); }
  async startContainer(r: { containerId: string }) { this.calls.push(`start ${r.containerId}`); return { pid: 1 }; }
  async execProcess(r: { containerId: string; execId: string }) { this.calls.push(`exec ${r.containerId}/${r.execId}`); return { pid: 7 }; }
  waitProcess(r: { containerId: string; execId?: string }, o: { signal?: AbortSignal }) {
    const d = this.exitOf(r.containerId, r.execId);
    return new Promise((res, rej) => {
      d.promise.then(res);
      o.signal?.addEventListener('abort', () => rej(new Error('aborted')));
    });
  }
  async signalProcess(r: { containerId: string; execId: string; signal: number }) {
    this.calls.push(`signal ${r.containerId}/${r.execId} ${r.signal}`);
    this.exitOf(r.containerId, r.execId).resolve({ exitStatus: 128 + r.signal, exitedAt: new Date() });
  }
  async readStdout() { return { data: Buffer.alloc(0), eof: true }; }
  async readStderr() { return { data: Buffer.alloc(0), eof: true }; }
  async writeStdin() { return 0; }
  async closeStdin() {}
  async removeContainer(r: { containerId: string }) { this.calls.push(`remove ${r.containerId}`); }
  async removeProcess(r: { containerId: string; execId: string }) { this.calls.push(`removeProcess ${r.containerId}/${r.execId}`); }
  async pauseContainer() { this.calls.push('pause'); }
  async resumeContainer() { this.calls.push('resume'); }
  async listProcesses() { return [{ pid: 1, ppid: 0, cmd: 'sh', state: 'S' }, { pid: 7, ppid: 1, cmd: 'sleep', state: 'S' }]; }
  getOOMEvent(o: { signal?: AbortSignal }) { return new Promise((_r, rej) => o.signal?.addEventListener('abort', () => rej(new Error('aborted')))); }
  async check() {}
}

describe('Pod with a fake VM', () => {
  let dir: string;
  let bundle: string;
  const events: Array<{ topic: string; type: string; value: Uint8Array }> = [];
  const agent = new FakeAgent();
  let stops = 0;
  let boots = 0;
  let pod: Pod;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'kata-pod-'));
    bundle = join(dir, 'bundle');
    mkdirSync(join(bundle, 'rootfs', 'bin'), { recursive: true });
    writeFileSync(join(bundle, 'rootfs', 'bin', 'marker'), 'x');
    writeFileSync(join(bundle, 'config.json'), JSON.stringify({ process: { args: ['sh'] }, root: { path: 'rootfs' }, linux: { namespaces: [{ type: 'network' }] } }));
    mkdirSync(join(dir, 'shared'));
    pod = new Pod({
      podId: 'p1',
      namespace: 'ns',
      logger: silentLogger(),
      events: { publish: async (topic, type, value) => { events.push({ topic, type, value }); } },
      sandboxFactory: async () => {
        boots++;
        const sb: PodSandbox = {
          agent: agent as unknown as AgentClient, vmPid: 4242, sharedDir: join(dir, 'shared'), guestSharedDir: '/run/shared',
          exited: new Promise(() => {}), stop: async () => { stops++; },
        };
        return sb;
      },
    });
  });
  after(async () => {
    await pod.close();
    assert.deepEqual(mountsUnder(dir), []);
    rmSync(dir, { recursive: true, force: true });
  });

  const io = { stdin: '', stdout: '', stderr: '', terminal: false };

  it('refuses bad Create input with the right code, booting nothing', async () => {
    await expectCode(pod.create({ id: '', bundle, rootfs: [], stdio: io, checkpoint: '' }), Code.INVALID_ARGUMENT, /id: must not be empty/);
    await expectCode(pod.create({ id: 'c1', bundle: '', rootfs: [], stdio: io, checkpoint: '' }), Code.INVALID_ARGUMENT, /bundle: must be set/);
    await expectCode(pod.create({ id: 'c1', bundle: join(dir, 'nope'), rootfs: [], stdio: io, checkpoint: '' }), Code.NOT_FOUND, /bundle .*nope.*not found/);
    await expectCode(pod.create({ id: 'c1', bundle, rootfs: [], stdio: io, checkpoint: '/cp' }), Code.UNIMPLEMENTED, /checkpoint/);
    await expectCode(pod.create({ id: 'c1', bundle, rootfs: [], stdio: { ...io, stdout: 'tcp://x' }, checkpoint: '' }), Code.INVALID_ARGUMENT, /stdout/);
    assert.equal(boots, 0);
    assert.equal(pod.isEmpty, true);
  });

  it('create → start → kill → wait → delete, with exact statuses and events in order', async () => {
    assert.equal(await pod.create({ id: 'c1', bundle, rootfs: [], stdio: io, checkpoint: '' }), 4242);
    assert.ok(existsSync(join(dir, 'shared', 'c1', 'rootfs', 'bin', 'marker')), 'the bundle rootfs is bound into the shared dir');
    const spec = agent.created.get('c1')!;
    assert.equal((spec['root'] as Record<string, unknown>)['path'], '/run/shared/c1/rootfs');
    await expectCode(pod.create({ id: 'c1', bundle, rootfs: [], stdio: io, checkpoint: '' }), Code.ALREADY_EXISTS);
    assert.equal(pod.state('c1', '').status, TaskStatus.CREATED);
    const dump = pod.debugState() as { vmPid: number; containers: Array<{ id: string; processes: Array<{ id: string; state: string }> }> };
    assert.equal(dump.vmPid, 4242);
    assert.deepEqual(dump.containers.map((c) => [c.id, c.processes.map((p) => `${p.id}:${p.state}`)]), [['c1', ['c1:created']]]);
    await expectCode(pod.exec({ id: 'c1', execId: 'e1', stdio: io, spec: undefined }), Code.FAILED_PRECONDITION, /created/);

    assert.equal(await pod.start('c1', ''), 4242);
    await expectCode(pod.start('c1', ''), Code.FAILED_PRECONDITION, /cannot start/);
    assert.equal(pod.state('c1', '').status, TaskStatus.RUNNING);
    assert.deepEqual(await pod.pids('c1'), [1, 7]);

    await pod.pause('c1');
    assert.equal(pod.state('c1', '').status, TaskStatus.PAUSED);
    await expectCode(pod.pause('c1'), Code.FAILED_PRECONDITION);
    await pod.resume('c1');
    await expectCode(pod.resume('c1'), Code.FAILED_PRECONDITION);

    const spec1 = { typeUrl: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value: Buffer.from(JSON.stringify({ args: ['true'], cwd: '/' })) };
    await pod.exec({ id: 'c1', execId: 'e1', stdio: io, spec: spec1 });
    await expectCode(pod.exec({ id: 'c1', execId: 'e1', stdio: io, spec: spec1 }), Code.ALREADY_EXISTS);
    await expectCode(pod.exec({ id: 'c1', execId: 'e2', stdio: io, spec: { typeUrl: spec1.typeUrl, value: Buffer.from('{') } }), Code.INVALID_ARGUMENT, /spec/);
    await pod.start('c1', 'e1');
    const execWait = pod.wait('c1', 'e1');
    await pod.kill('c1', 'e1', 15, false);
    assert.equal((await execWait).status, 143);
    await expectCode(pod.kill('c1', 'e1', 9, false), Code.NOT_FOUND, /already finished/);
    const d = await pod.delete('c1', 'e1');
    assert.equal(d.exitStatus, 143);
    assert.throws(() => pod.state('c1', 'e1'), (e: { code?: Code }) => e.code === Code.NOT_FOUND);

    await expectCode(pod.delete('c1', ''), Code.FAILED_PRECONDITION, /running/);
    await expectCode(pod.kill('c1', '', 0, false), Code.INVALID_ARGUMENT, /signal/);
    const w = pod.wait('c1', '');
    await pod.kill('c1', '', 9, false);
    const e = await w;
    assert.equal(e.status, 137);
    assert.deepEqual(await pod.wait('c1', ''), e, 'a Wait after the exit answers at once, the same');
    assert.equal(pod.state('c1', '').status, TaskStatus.STOPPED);
    const del = await pod.delete('c1', '');
    assert.equal(del.exitStatus, 137);
    assert.deepEqual(mountsUnder(join(dir, 'shared')), []);
    assert.ok(!existsSync(join(dir, 'shared', 'c1')));
    assert.throws(() => pod.state('c1', ''), (err: { code?: Code }) => err.code === Code.NOT_FOUND);
    assert.equal(pod.isEmpty, true);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(stops, 1, 'the last Delete stops the VM');

    const topics = events.map((x) => x.topic);
    assert.deepEqual(topics, ['/tasks/create', '/tasks/start', '/tasks/paused', '/tasks/resumed', '/tasks/exec-added',
      '/tasks/exec-started', '/tasks/exit', '/tasks/exit', '/tasks/delete']);
    const exits = events.filter((x) => x.topic === '/tasks/exit').map((x) => containerd.events.TaskExit.decode(x.value));
    assert.deepEqual(exits.map((x) => [x.containerId, x.id, x.exitStatus, x.pid]), [['c1', 'e1', 143, 4242], ['c1', 'c1', 137, 4242]]);
    assert.ok(events.every((x) => x.type.startsWith('containerd.events.Task')));
  });

  it('unknown ids are NOT_FOUND everywhere', async () => {
    assert.throws(() => pod.state('nope', ''), (e: { code?: Code }) => e.code === Code.NOT_FOUND);
    await expectCode(pod.start('nope', ''), Code.NOT_FOUND);
    await expectCode(pod.delete('nope', ''), Code.NOT_FOUND);
    await expectCode(pod.kill('nope', '', 9, false), Code.NOT_FOUND);
    await expectCode(pod.wait('nope', ''), Code.NOT_FOUND);
    await expectCode(pod.pause('nope'), Code.NOT_FOUND);
    await expectCode(pod.stats('nope'), Code.NOT_FOUND);
  });
});

describe('Pod whose VM runs in a network namespace (a CRI pod), with a fake VM', () => {
  let dir: string;
  let bundle: string;
  let pod: Pod;
  const agent = new FakeAgent();
  const sandboxes: Array<{ stopCalls: number; release: () => void; die: () => void }> = [];
  let netnsAsked: string | undefined;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'kata-pod-net-'));
    bundle = join(dir, 'bundle');
    mkdirSync(join(bundle, 'rootfs'), { recursive: true });
    writeFileSync(join(bundle, 'config.json'), JSON.stringify({
      process: { args: ['sh'] }, root: { path: 'rootfs' },
      linux: { namespaces: [{ type: 'network', path: '/var/run/netns/cni-test' }] },
    }));
    pod = new Pod({
      podId: 'p1',
      namespace: 'ns',
      logger: silentLogger(),
      events: { publish: async () => {} },
      sandboxFactory: async ({ netnsPath }) => {
        netnsAsked = netnsPath;
        const shared = join(dir, `shared-${sandboxes.length}`);
        mkdirSync(shared);
        let release!: () => void;
        const released = new Promise<void>((r) => { release = r; });
        let die!: () => void;
        const exited = new Promise<void>((r) => { die = r; });
        const rec = { stopCalls: 0, release, die };
        sandboxes.push(rec);
        // stop() completes only when the test releases it: shows who waits for it.
        const sb: PodSandbox = {
          agent: agent as unknown as AgentClient, vmPid: 4242, sharedDir: shared, guestSharedDir: '/run/shared',
          exited, stop: async () => { rec.stopCalls++; await released; },
        };
        return sb;
      },
    });
  });
  after(async () => {
    for (const s of sandboxes) s.release();
    await pod.close();
    assert.deepEqual(mountsUnder(dir), []);
    rmSync(dir, { recursive: true, force: true });
  });

  const io = { stdin: '', stdout: '', stderr: '', terminal: false };

  it('exit times are the host\'s, not the guest\'s (whose clock may be off)', async () => {
    await pod.create({ id: 'c1', bundle, rootfs: [], stdio: io, checkpoint: '' });
    assert.equal(netnsAsked, '/var/run/netns/cni-test', 'the VM is asked for in the spec\'s netns');
    await pod.start('c1', '');
    const t0 = Date.now();
    const w = pod.wait('c1', '');
    agent.exitOf('c1').resolve({ exitStatus: 3, exitedAt: new Date(t0 - 5_000) });
    const e = await w;
    assert.equal(e.status, 3);
    assert.ok(e.at.getTime() >= t0 && e.at.getTime() <= Date.now(), `exit at ${e.at.toISOString()}, host time ${new Date(t0).toISOString()}`);
  });

  it('the last Delete answers only once the VM (and its tap) is stopped', async () => {
    let answered = false;
    const del = pod.delete('c1', '').then((r) => { answered = true; return r; });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(sandboxes[0]!.stopCalls, 1, 'the VM is being stopped');
    assert.equal(answered, false, 'Delete waits for the stop');
    sandboxes[0]!.release();
    assert.equal((await del).exitStatus, 3);
  });

  it('a VM that dies is stopped (cleaned up) at once; its processes end 255 (as in Kata); the last Delete waits for that cleanup', async () => {
    await pod.create({ id: 'c2', bundle, rootfs: [], stdio: io, checkpoint: '' });
    assert.equal(sandboxes.length, 2, 'a new VM after the last one stopped');
    await pod.start('c2', '');
    const w = pod.wait('c2', '');
    sandboxes[1]!.die();
    assert.equal((await w).status, 255);
    assert.equal(sandboxes[1]!.stopCalls, 1, 'the dead VM\'s cleanup started');
    let answered = false;
    const del = pod.delete('c2', '').then(() => { answered = true; });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(answered, false, 'Delete waits for the dead VM\'s cleanup');
    sandboxes[1]!.release();
    await del;
    assert.equal(sandboxes[1]!.stopCalls, 1, 'stopped once');
    assert.equal(pod.isEmpty, true);
  });
});

describe('Pod faults with a fake VM and short clocks', () => {
  let dir: string;
  let bundle: string;
  const events: Array<{ topic: string; value: Uint8Array }> = [];
  const io = { stdin: '', stdout: '', stderr: '', terminal: false };
  const timings = { exitIoGraceMs: 50, ioDrainTimeoutMs: 400, healthIntervalMs: 20, healthTimeoutMs: 30, healthFailures: 2 };

  /** A fake agent whose Check can hang, whose CreateContainer can fail, whose stdout can keep flowing. */
  class FaultyAgent extends FakeAgent {
    hung = false;
    failCreate: string | undefined;
    /** stdout chunks of `c1` keep coming (never EOF) while true. */
    streaming = false;
    stdoutReads = 0;
    override async createContainer(r: { containerId: string; spec: Record<string, unknown> }) {
      if (this.failCreate) throw new Error(this.failCreate);
      return super.createContainer(r);
    }
    override async check(o?: { timeoutMs?: number }) {
      if (!this.hung) return;
      await new Promise((r) => setTimeout(r, o?.timeoutMs ?? 1000));
      throw new Error('deadline exceeded');
    }
    override async readStdout(r?: { maxLen?: number }, o?: { signal?: AbortSignal }) {
      void r;
      if (!this.streaming) return { data: Buffer.alloc(0), eof: true };
      this.stdoutReads++;
      await new Promise<void>((res, rej) => {
        const onAbort = () => { clearTimeout(t); rej(new Error('aborted')); };
        const t = setTimeout(() => { o?.signal?.removeEventListener('abort', onAbort); res(); }, 10);
        o?.signal?.addEventListener('abort', onAbort, { once: true });
      });
      return { data: Buffer.from('x'), eof: false };
    }
  }

  function makePod(agent: FaultyAgent) {
    const rec = { boots: 0, stops: [] as Array<{ force?: boolean } | undefined>, die: () => {} };
    const pod = new Pod({
      podId: 'p1', namespace: 'ns', logger: silentLogger(), timings,
      events: { publish: async (topic, _type, value) => { events.push({ topic, value }); } },
      sandboxFactory: async () => {
        rec.boots++;
        const shared = mkdtempSync(join(dir, 'shared-'));
        const exited = new Promise<void>((r) => { rec.die = r; });
        const sb: PodSandbox = {
          agent: agent as unknown as AgentClient, vmPid: 4242, sharedDir: shared, guestSharedDir: '/run/shared',
          exited, stop: async (o) => { rec.stops.push(o); rec.die(); },
        };
        return sb;
      },
    });
    return { pod, rec };
  }

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'kata-pod-faults-'));
    bundle = join(dir, 'bundle');
    mkdirSync(join(bundle, 'rootfs'), { recursive: true });
    writeFileSync(join(bundle, 'config.json'), JSON.stringify({ process: { args: ['sh'] }, root: { path: 'rootfs' } }));
  });
  after(() => {
    assert.deepEqual(mountsUnder(dir), []);
    rmSync(dir, { recursive: true, force: true });
  });

  it('an agent that stops answering health checks: QEMU is killed (forced stop) and every process ends 255', async () => {
    const agent = new FaultyAgent();
    const { pod, rec } = makePod(agent);
    try {
      await pod.create({ id: 'c1', bundle, rootfs: [], stdio: io, checkpoint: '' });
      await pod.start('c1', '');
      await pod.create({ id: 'c2', bundle, rootfs: [], stdio: io, checkpoint: '' }); // created, never started
      const w1 = pod.wait('c1', '');
      const w2 = pod.wait('c2', '');
      await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(rec.stops, [], 'healthy: no stop');
      agent.hung = true;
      assert.equal((await w1).status, 255);
      assert.equal((await w2).status, 255);
      assert.deepEqual(rec.stops, [{ force: true }], 'stopped once, forced');
      assert.equal(pod.state('c1', '').status, TaskStatus.STOPPED);
      const exits = events.filter((e) => e.topic === '/tasks/exit').map((e) => containerd.events.TaskExit.decode(e.value));
      assert.deepEqual(exits.map((e) => [e.containerId, e.exitStatus, e.pid]).sort(), [['c1', 255, 4242], ['c2', 255, 4242]]);
      assert.equal(pod.vmPid, 0, 'the pod has no VM any more');
      await pod.delete('c1', '');
      await pod.delete('c2', '');
      assert.equal(pod.isEmpty, true);
    } finally {
      agent.hung = false;
      await pod.close();
      events.length = 0;
    }
  });

  it('an exit is reported after the grace even while a child keeps the output flowing; the output is cut at the drain bound, and Delete waits for it', async () => {
    const agent = new FaultyAgent();
    const { pod } = makePod(agent);
    const out = join(dir, 'out.log');
    try {
      await pod.create({ id: 'c1', bundle, rootfs: [], stdio: { ...io, stdout: `file://${out}` }, checkpoint: '' });
      agent.streaming = true;
      await pod.start('c1', '');
      const t0 = Date.now();
      const w = pod.wait('c1', '');
      agent.exitOf('c1').resolve({ exitStatus: 5, exitedAt: new Date() });
      assert.equal((await w).status, 5);
      assert.ok(agent.streaming, 'reported while the output still flows');
      const readsAtExit = agent.stdoutReads;
      const del = pod.delete('c1', '');
      await del;
      const tDel = Date.now() - t0;
      assert.ok(tDel >= timings.ioDrainTimeoutMs - 20, `Delete waited for the drain bound (${tDel} ms)`);
      assert.ok(agent.stdoutReads > readsAtExit, 'the output kept draining after the exit');
      const readsAtCut = agent.stdoutReads;
      await new Promise((r) => setTimeout(r, 100));
      assert.ok(agent.stdoutReads <= readsAtCut + 1, 'no reads after the cut');
    } finally {
      agent.streaming = false;
      await pod.close();
      events.length = 0;
    }
  });

  it('output that ends within the drain bound is complete before Delete answers', async () => {
    const agent = new FaultyAgent();
    const { pod } = makePod(agent);
    try {
      await pod.create({ id: 'c1', bundle, rootfs: [], stdio: { ...io, stdout: `file://${join(dir, 'out2.log')}` }, checkpoint: '' });
      agent.streaming = true;
      await pod.start('c1', '');
      agent.exitOf('c1').resolve({ exitStatus: 0, exitedAt: new Date() });
      assert.equal((await pod.wait('c1', '')).status, 0);
      setTimeout(() => { agent.streaming = false; }, 100);
      const t0 = Date.now();
      await pod.delete('c1', '');
      assert.equal(agent.streaming, false, 'Delete answered after the output ended');
      assert.ok(Date.now() - t0 < timings.ioDrainTimeoutMs, 'and before the bound');
    } finally {
      agent.streaming = false;
      await pod.close();
      events.length = 0;
    }
  });

  it('a failed Create of the pod\'s first container stops the VM it booted; a later one leaves the VM to the others', async () => {
    const agent = new FaultyAgent();
    const { pod, rec } = makePod(agent);
    try {
      agent.failCreate = 'crun: executable file not found';
      await assert.rejects(pod.create({ id: 'c1', bundle, rootfs: [], stdio: io, checkpoint: '' }), /executable file not found/);
      assert.equal(rec.boots, 1);
      assert.equal(rec.stops.length, 1, 'the VM booted for it is stopped');
      assert.equal(pod.isEmpty, true);
      assert.deepEqual(mountsUnder(dir), []);
      agent.failCreate = undefined;
      await pod.create({ id: 'c1', bundle, rootfs: [], stdio: io, checkpoint: '' });
      assert.equal(rec.boots, 2, 'the id is reused at once, on a new VM');
      agent.failCreate = 'bad spec';
      await assert.rejects(pod.create({ id: 'c2', bundle, rootfs: [], stdio: io, checkpoint: '' }), /bad spec/);
      assert.equal(rec.stops.length, 1, 'c1 keeps its VM');
      assert.deepEqual([...pod.containers.keys()], ['c1']);
    } finally {
      await pod.close();
      events.length = 0;
    }
  });
});
