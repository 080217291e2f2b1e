/**
 * A container's resource limits as its OCI spec gives them (what sizes the
 * pod's VM: src/shim/pod-sizing.ts).
 */

export interface ContainerLimits {
  /** linux.resources.memory.limit (bytes; absent or ≤ 0: none). */
  memoryBytes?: number;
  /** linux.resources.cpu.quota / period (µs; quota ≤ 0: none). */
  cpuQuota?: number;
  cpuPeriod?: number;
}

/** A JSON number (or bigint), anything else undefined. */
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : typeof v === 'bigint' ? Number(v) : undefined);

/** The limits of an OCI spec (anything malformed counts as no limit: the spec is the runtime's to refuse). */
export function containerLimits(spec: unknown): ContainerLimits {
  const r = (spec as { linux?: { resources?: { memory?: { limit?: unknown }; cpu?: { quota?: unknown; period?: unknown } } } } | null)?.linux?.resources;
  const memoryBytes = num(r?.memory?.limit);
  const cpuQuota = num(r?.cpu?.quota);
  const cpuPeriod = num(r?.cpu?.period);
  return {
    ...(memoryBytes !== undefined && memoryBytes > 0 ? { memoryBytes } : {}),
    ...(cpuQuota !== undefined && cpuQuota > 0 ? { cpuQuota, cpuPeriod: cpuPeriod && cpuPeriod > 0 ? cpuPeriod : 100_000 } : {}),
  };
}

/**
 * A container's limits after an Update with OCI LinuxResources `resources`:
 * what it gives replaces what it had, field by field; a memory limit ≤ 0
 * (-1: unlimited) removes the memory limit; a quota without a period keeps
 * the container's period, a period alone re-scales the quota it had.
 */
export function updatedLimits(old: ContainerLimits, resources: unknown): ContainerLimits {
  const r = resources as { memory?: { limit?: unknown }; cpu?: { quota?: unknown; period?: unknown } } | null;
  const out: ContainerLimits = { ...old };
  const mem = num(r?.memory?.limit);
  if (mem !== undefined) {
    if (mem > 0) out.memoryBytes = mem;
    else delete out.memoryBytes;
  }
  const quota = num(r?.cpu?.quota);
  const period = num(r?.cpu?.period);
  if (quota !== undefined) {
    if (quota > 0) out.cpuQuota = quota;
    else { delete out.cpuQuota; delete out.cpuPeriod; }
  }
  if (period !== undefined && period > 0 && out.cpuQuota !== undefined) out.cpuPeriod = period;
  if (out.cpuQuota !== undefined) out.cpuPeriod ??= 100_000;
  return out;
}
