/**
 * A pod VM's size from its containers' resources (Kata's arithmetic, static
 * sizing at boot): vCPUs = default_vcpus + Σ ceil(cpu quota / period),
 * memory = default_memory + Σ memory limit (MiB, rounded up), each bounded
 * by default_maxvcpus / default_maxmemory (0: the host's CPUs / memory).
 *
 * The defaults are the VM's own share (kernel, agent, page cache): a total
 * over the bound is cut to the bound, but containers that alone ask for more
 * than it refuse the pod, naming the key — what a pod asks for must fit.
 *
 * containerd 1.6 gives a container's limits at its Create: `ctr run` pods
 * (one container) are sized at boot. A CRI pod's workload containers come
 * after its VM is up: a q35 VM grows by hot-plug (pod-vm.ts `fit`,
 * docs/sizing.md); a microvm one keeps its boot size.
 */
import { FailedPreconditionError } from '../errors/index.js';
import type { VmResources } from '../vm/index.js';
import type { ContainerLimits } from '../service/limits.js';

const MiB = 1024 * 1024;

export interface SizingConfig {
  default_vcpus: number;
  default_memory: number;
  /** 0: the host's CPUs. */
  default_maxvcpus: number;
  /** MiB; 0: the host's memory. */
  default_maxmemory: number;
}

/** What the containers ask for: whole vCPUs and MiB. */
export function containersNeed(limits: readonly ContainerLimits[]): { vcpus: number; memoryMiB: number } {
  let vcpus = 0;
  let memoryMiB = 0;
  for (const l of limits) {
    if (l.cpuQuota !== undefined) vcpus += Math.ceil(l.cpuQuota / (l.cpuPeriod ?? 100_000));
    if (l.memoryBytes !== undefined) memoryMiB += Math.ceil(l.memoryBytes / MiB);
  }
  return { vcpus, memoryMiB };
}

/**
 * The VM's resources for these containers; FAILED_PRECONDITION naming the
 * key when the containers alone ask for more than it allows.
 */
export function podResources(cfg: SizingConfig, limits: readonly ContainerLimits[], host: { cpus: number; memoryMiB: number }, file = 'configuration'): VmResources {
  const need = containersNeed(limits);
  const maxVcpus = cfg.default_maxvcpus || host.cpus;
  const maxMemory = cfg.default_maxmemory || host.memoryMiB;
  const bound = (key: string, v: number, unit: string): string => (v === 0 ? `the host's ${unit}` : `[hypervisor.qemu] ${key} = ${v}`);
  if (need.vcpus > maxVcpus) {
    throw new FailedPreconditionError(`config ${file}: the pod's containers ask for ${need.vcpus} CPUs (cpu quota / period, rounded up): more than ${bound('default_maxvcpus', cfg.default_maxvcpus, `${host.cpus} CPUs`)}`);
  }
  if (need.memoryMiB > maxMemory) {
    throw new FailedPreconditionError(`config ${file}: the pod's containers ask for ${need.memoryMiB} MiB of memory: more than ${bound('default_maxmemory', cfg.default_maxmemory, `${host.memoryMiB} MiB`)}`);
  }
  return {
    vcpus: Math.min(cfg.default_vcpus + need.vcpus, Math.max(maxVcpus, cfg.default_vcpus)),
    memoryMiB: Math.min(cfg.default_memory + need.memoryMiB, Math.max(maxMemory, cfg.default_memory)),
  };
}
