/**
 * The Pod asks its VM to fit every container's limits (PodSandbox.fit) at
 * Create and Update, against a fake VM and agent (as service-pod.test.ts;
 * real bind mounts of a temp bundle: the tests run as root).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AgentClient } from '../../src/agent-client/index.js';
import { Code, FailedPreconditionError } from '../../src/errors/index.js';
import { silentLogger } from '../../src/log/index.js';
import type { ContainerLimits } from '../../src/service/limits.js';
import { Pod, RESOURCES_TYPE_URL, type PodSandbox } from '../../src/service/pod.js';
import { mountsUnder } from '../../src/vm/index.js';
import { expectCode } from '../harness/status.js';

const MiB = 1024 * 1024;

/** The agent calls a created-then-deleted (never started) container needs; each call logged in `log`. */
class FakeAgent {
  isClosed = false;
  constructor(private readonly log: string[]) {}
  async createContainer(r: { containerId: string }) { this.log.push(`create ${r.containerId}`); }
  async removeContainer(r: { containerId: string }) { this.log.push(`remove ${r.containerId}`); }
  async updateContainer(r: { containerId: string; resources: Record<string, unknown> }) { this.log.push(`update ${r.containerId} ${JSON.stringify(r.resources)}`); }
  getOOMEvent(o: { signal?: AbortSignal }) { return new Promise((_r, rej) => o.signal?.addEventListener('abort', () => rej(new Error('aborted')))); }
  async check() {}
}

interface FitCall { limits: ContainerLimits[]; signal: AbortSignal | undefined }

function bundleWith(dir: string, name: string, resources: Record<string, unknown> | undefined): string {
  const b = join(dir, name);
  mkdirSync(join(b, 'rootfs'), { recursive: true });
  writeFileSync(join(b, 'config.json'), JSON.stringify({
    process: { args: ['sh'] }, root: { path: 'rootfs' },
    linux: { namespaces: [{ type: 'network' }, { type: 'ipc' }, { type: 'pid' }], ...(resources ? { resources } : {}) },
  }));
  return b;
}

const io = { stdin: '', stdout: '', stderr: '', terminal: false };
const resources = (r: unknown) => ({ typeUrl: RESOURCES_TYPE_URL, value: Buffer.from(JSON.stringify(r)) });

describe('Pod: the VM fits every container\'s limits', () => {
  let dir: string;
  let pod: Pod;
  const log: string[] = [];
  const fits: FitCall[] = [];
  /** When set, fit throws it (after recording the call). */
  let refuse: Error | undefined;
  let boots = 0;
  const b: Record<string, string> = {};
  const L1: ContainerLimits = { memoryBytes: 512 * MiB, cpuQuota: 200_000, cpuPeriod: 100_000 };
  const L2: ContainerLimits = { memoryBytes: 256 * MiB, cpuQuota: 50_000, cpuPeriod: 100_000 };
  const L3: ContainerLimits = { memoryBytes: 64 * 1024 * MiB };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'kata-pod-fit-'));
    mkdirSync(join(dir, 'shared'));
    b['c1'] = bundleWith(dir, 'b1', { memory: { limit: 512 * MiB }, cpu: { quota: 200_000, period: 100_000 } });
    // No period: the default one (100 ms).
    b['c2'] = bundleWith(dir, 'b2', { memory: { limit: 256 * MiB }, cpu: { quota: 50_000 } });
    b['c3'] = bundleWith(dir, 'b3', { memory: { limit: 64 * 1024 * MiB } });
    b['c4'] = bundleWith(dir, 'b4', undefined);
    const agent = new FakeAgent(log);
    pod = new Pod({
      podId: 'c1',
      namespace: 'ns',
      logger: silentLogger(),
      events: { publish: async () => {} },
      sandboxFactory: async () => {
        boots++;
        const sb: PodSandbox = {
          agent: agent as unknown as AgentClient, vmPid: 4242, sharedDir: join(dir, 'shared'), guestSharedDir: '/run/shared',
          exited: new Promise(() => {}), stop: async () => {},
          fit: async (limits, signal) => {
            log.push('fit');
            fits.push({ limits: limits.map((l) => ({ ...l })), signal });
            if (refuse) throw refuse;
          },
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

  it('the first Create fits its own limits, before the agent creates the container', async () => {
    const ac = new AbortController();
    assert.equal(await pod.create({ id: 'c1', bundle: b['c1']!, rootfs: [], stdio: io, checkpoint: '' }, ac.signal), 4242);
    assert.equal(boots, 1);
    assert.deepEqual(fits.map((f) => f.limits), [[L1]]);
    assert.equal(fits[0]!.signal, ac.signal, 'the Create\'s signal reaches fit');
    assert.deepEqual(log, ['fit', 'create c1']);
  });

  it('a second Create fits both containers\' limits', async () => {
    await pod.create({ id: 'c2', bundle: b['c2']!, rootfs: [], stdio: io, checkpoint: '' });
    assert.equal(boots, 1, 'the same VM');
    assert.deepEqual(fits.at(-1)!.limits, [L1, L2]);
    assert.deepEqual(log.slice(-2), ['fit', 'create c2']);
  });

  it('a refused fit fails the Create with its code and leaves no container', async () => {
    refuse = new FailedPreconditionError('[hypervisor.qemu] default_maxmemory = 2048: the containers ask for more');
    const before = log.length;
    await expectCode(pod.create({ id: 'c3', bundle: b['c3']!, rootfs: [], stdio: io, checkpoint: '' }), Code.FAILED_PRECONDITION, /default_maxmemory/);
    refuse = undefined;
    assert.deepEqual(fits.at(-1)!.limits, [L1, L2, L3], 'it was asked with the new container\'s limits');
    assert.deepEqual(log.slice(before), ['fit'], 'the agent never saw c3');
    assert.equal(pod.containers.has('c3'), false);
    assert.deepEqual([...pod.containers.keys()].sort(), ['c1', 'c2']);
    assert.equal(existsSync(join(dir, 'shared', 'c3')), false);
    assert.throws(() => pod.state('c3', ''), (e: { code?: Code }) => e.code === Code.NOT_FOUND);
    assert.equal(pod.vmPid, 4242, 'the pod\'s VM stays for its other containers');
    // The refused container's limits are gone: the next Create does not carry them.
    await pod.create({ id: 'c4', bundle: b['c4']!, rootfs: [], stdio: io, checkpoint: '' });
    assert.deepEqual(fits.at(-1)!.limits, [L1, L2, {}]);
  });

  it('a deleted container\'s limits are no longer fitted', async () => {
    await pod.delete('c2', '');
    assert.equal(pod.containers.has('c2'), false);
    await pod.update('c4', resources({ memory: { limit: 128 * MiB } }));
    assert.deepEqual(fits.at(-1)!.limits, [L1, { memoryBytes: 128 * MiB }]);
  });

  it('Update fits the merged limits before the agent updates the container', async () => {
    const before = log.length;
    const r = { memory: { limit: 1024 * MiB } };
    await pod.update('c1', resources(r));
    // The new memory limit, the CPU limit from the bundle kept; the other container as it is.
    assert.deepEqual(fits.at(-1)!.limits, [{ ...L1, memoryBytes: 1024 * MiB }, { memoryBytes: 128 * MiB }]);
    assert.deepEqual(log.slice(before), ['fit', `update c1 ${JSON.stringify(r)}`]);
  });

  it('a refused fit fails the Update without updating the container, and the old limits stay', async () => {
    refuse = new FailedPreconditionError('[hypervisor.qemu] default_maxvcpus = 2: the containers ask for more');
    const before = log.length;
    await expectCode(pod.update('c1', resources({ cpu: { quota: 800_000, period: 100_000 } })), Code.FAILED_PRECONDITION, /default_maxvcpus/);
    refuse = undefined;
    assert.deepEqual(fits.at(-1)!.limits, [{ memoryBytes: 1024 * MiB, cpuQuota: 800_000, cpuPeriod: 100_000 }, { memoryBytes: 128 * MiB }]);
    assert.deepEqual(log.slice(before), ['fit'], 'updateContainer not called');
    // The next fit still has the limits of the last successful Update, not the refused ones.
    await pod.update('c4', resources({ memory: { limit: 192 * MiB } }));
    assert.deepEqual(fits.at(-1)!.limits, [{ ...L1, memoryBytes: 1024 * MiB }, { memoryBytes: 192 * MiB }]);
  });

  it('Update of an unknown container fits nothing', async () => {
    const n = fits.length;
    await expectCode(pod.update('nope', resources({ memory: { limit: MiB } })), Code.NOT_FOUND);
    assert.equal(fits.length, n);
  });
});

describe('Pod: a fit refused at the first Create', () => {
  let dir: string;
  let pod: Pod;
  let stops = 0;
  const log: string[] = [];

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'kata-pod-fit1-'));
    mkdirSync(join(dir, 'shared'));
    const agent = new FakeAgent(log);
    pod = new Pod({
      podId: 'p1',
      namespace: 'ns',
      logger: silentLogger(),
      events: { publish: async () => {} },
      sandboxFactory: async () => ({
        agent: agent as unknown as AgentClient,
        vmPid: 99, sharedDir: join(dir, 'shared'), guestSharedDir: '/run/shared',
        exited: new Promise(() => {}), stop: async () => { stops++; },
        fit: async () => { throw new FailedPreconditionError('[hypervisor.qemu] default_maxmemory: too much'); },
      }),
    });
  });
  after(async () => {
    await pod.close();
    assert.deepEqual(mountsUnder(dir), []);
    rmSync(dir, { recursive: true, force: true });
  });

  it('the VM booted for the refused container alone is stopped; the pod is empty', async () => {
    const bundle = bundleWith(dir, 'b', { memory: { limit: 64 * 1024 * MiB } });
    await expectCode(pod.create({ id: 'p1', bundle, rootfs: [], stdio: io, checkpoint: '' }), Code.FAILED_PRECONDITION, /default_maxmemory/);
    assert.deepEqual(log, [], 'the agent never saw the container');
    assert.equal(stops, 1);
    assert.equal(pod.isEmpty, true);
    assert.equal(pod.vmPid, 0);
  });
});
