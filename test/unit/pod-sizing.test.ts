/**
 * Pod VM sizing (src/service/limits.ts, src/shim/pod-sizing.ts): a
 * container's limits read from its OCI spec; Kata's arithmetic (defaults +
 * Σ ceil(quota/period) vCPUs, defaults + Σ limits MiB); the bounds
 * (default_maxvcpus / default_maxmemory, 0 = the host's), a total over the
 * bound cut to it, containers that alone ask for more refused naming the key.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Code } from '../../src/errors/index.js';
import { containerLimits, updatedLimits } from '../../src/service/limits.js';
import { containersNeed, podResources } from '../../src/shim/pod-sizing.js';
import { expectCode } from '../harness/status.js';

const GiB = 1024 * 1024 * 1024;
const cfg = { default_vcpus: 1, default_memory: 256, default_maxvcpus: 0, default_maxmemory: 0 };
const host = { cpus: 4, memoryMiB: 8192 };

test('containerLimits reads memory.limit and cpu.quota/period; none, zero, negative or malformed is no limit', () => {
  assert.deepEqual(containerLimits({ linux: { resources: { memory: { limit: GiB }, cpu: { quota: 200_000, period: 100_000 } } } }),
    { memoryBytes: GiB, cpuQuota: 200_000, cpuPeriod: 100_000 });
  assert.deepEqual(containerLimits({ linux: { resources: { cpu: { quota: 50_000 } } } }), { cpuQuota: 50_000, cpuPeriod: 100_000 }, 'the default period');
  assert.deepEqual(containerLimits({ linux: { resources: { memory: { limit: -1 }, cpu: { quota: -1, period: 100_000 } } } }), {});
  assert.deepEqual(containerLimits({ linux: { resources: { memory: { limit: '1G' } } } }), {});
  assert.deepEqual(containerLimits(null), {});
  assert.deepEqual(containerLimits({}), {});
});

test('Kata\'s arithmetic: quotas rounded up to whole vCPUs, limits rounded up to MiB, summed over containers', () => {
  assert.deepEqual(containersNeed([{ cpuQuota: 150_000, cpuPeriod: 100_000 }, { cpuQuota: 10_000, cpuPeriod: 100_000 }]), { vcpus: 3, memoryMiB: 0 });
  assert.deepEqual(containersNeed([{ memoryBytes: GiB }, { memoryBytes: 1 }]), { vcpus: 0, memoryMiB: 1025 });
  assert.deepEqual(podResources(cfg, [], host), { vcpus: 1, memoryMiB: 256 }, 'no limits: the defaults');
  assert.deepEqual(podResources(cfg, [{ memoryBytes: GiB, cpuQuota: 200_000, cpuPeriod: 100_000 }], host), { vcpus: 3, memoryMiB: 1280 });
});

test('the bounds: the total is cut to them, containers alone over them refuse the pod naming the key', async () => {
  // 2 host CPUs: --cpus 2 gives 1 + 2 = 3, cut to 2 (the defaults are the VM's own share).
  assert.deepEqual(podResources(cfg, [{ cpuQuota: 200_000, cpuPeriod: 100_000 }], { cpus: 2, memoryMiB: 8192 }), { vcpus: 2, memoryMiB: 256 });
  assert.deepEqual(podResources({ ...cfg, default_maxmemory: 1024 }, [{ memoryBytes: GiB }], host), { vcpus: 1, memoryMiB: 1024 });
  await expectCode(Promise.resolve().then(() => podResources(cfg, [{ cpuQuota: 300_000, cpuPeriod: 100_000 }], { cpus: 2, memoryMiB: 8192 }, '/e/c.toml')),
    Code.FAILED_PRECONDITION, /\/e\/c\.toml: the pod's containers ask for 3 CPUs .*more than the host's 2 CPUs/);
  await expectCode(Promise.resolve().then(() => podResources({ ...cfg, default_maxvcpus: 2 }, [{ cpuQuota: 300_000, cpuPeriod: 100_000 }], host)),
    Code.FAILED_PRECONDITION, /more than \[hypervisor\.qemu\] default_maxvcpus = 2/);
  await expectCode(Promise.resolve().then(() => podResources({ ...cfg, default_maxmemory: 512 }, [{ memoryBytes: GiB }], host)),
    Code.FAILED_PRECONDITION, /ask for 1024 MiB of memory: more than \[hypervisor\.qemu\] default_maxmemory = 512/);
  await expectCode(Promise.resolve().then(() => podResources(cfg, [{ memoryBytes: 16 * GiB }], host)),
    Code.FAILED_PRECONDITION, /more than the host's 8192 MiB/);
  // A bound below the defaults never shrinks the VM under them.
  assert.deepEqual(podResources({ ...cfg, default_vcpus: 2, default_maxvcpus: 1 }, [], host), { vcpus: 2, memoryMiB: 256 });
});

test('updatedLimits: an Update replaces what it gives, keeps the rest; -1 memory is unlimited; a quota keeps its period', () => {
  const old = { memoryBytes: 512 * 1024 * 1024, cpuQuota: 50_000, cpuPeriod: 50_000 };
  assert.deepEqual(updatedLimits(old, { memory: { limit: 1024 } }), { ...old, memoryBytes: 1024 });
  assert.deepEqual(updatedLimits(old, { memory: { limit: -1 } }), { cpuQuota: 50_000, cpuPeriod: 50_000 }, 'unlimited memory');
  assert.deepEqual(updatedLimits(old, { cpu: { quota: 100_000 } }), { ...old, cpuQuota: 100_000 }, 'the period stays 50000: 2 CPUs');
  assert.deepEqual(containersNeed([updatedLimits(old, { cpu: { quota: 100_000 } })]).vcpus, 2);
  assert.deepEqual(updatedLimits(old, { cpu: { period: 25_000 } }), { ...old, cpuPeriod: 25_000 }, 'a period alone re-scales the quota');
  assert.deepEqual(updatedLimits(old, { cpu: { quota: -1 } }), { memoryBytes: old.memoryBytes }, 'no quota: no CPU limit');
  assert.deepEqual(updatedLimits({}, { cpu: { quota: 200_000 } }), { cpuQuota: 200_000, cpuPeriod: 100_000 }, 'the default period');
  assert.deepEqual(updatedLimits({}, { cpu: { period: 1000 } }), {}, 'a period without a quota limits nothing');
  assert.deepEqual(updatedLimits(old, {}), old);
  assert.deepEqual(updatedLimits(old, null), old);
});
