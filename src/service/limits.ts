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

/** The limits of an OCI spec (anything malformed counts as no limit: the spec is the runtime's to refuse). */
export function containerLimits(spec: unknown): ContainerLimits {
  const r = (spec as { linux?: { resources?: { memory?: { limit?: unknown }; cpu?: { quota?: unknown; period?: unknown } } } } | null)?.linux?.resources;
  const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : typeof v === 'bigint' ? Number(v) : undefined);
  const memoryBytes = num(r?.memory?.limit);
  const cpuQuota = num(r?.cpu?.quota);
  const cpuPeriod = num(r?.cpu?.period);
  return {
    ...(memoryBytes !== undefined && memoryBytes > 0 ? { memoryBytes } : {}),
    ...(cpuQuota !== undefined && cpuQuota > 0 ? { cpuQuota, cpuPeriod: cpuPeriod && cpuPeriod > 0 ? cpuPeriod : 100_000 } : {}),
  };
}

