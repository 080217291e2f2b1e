/**
 * Task stats for containerd: the agent's ContainerStats become a cgroup v2
 * `io.containerd.cgroups.v2.Metrics` (proto/cgroups/v2/metrics.proto), the
 * payload of `StatsResponse.stats`. containerd 1.6 decodes that Any by its
 * bare type URL (typeurl → gogo's registry: `proto.RegisterType((*Metrics)(nil),
 * "io.containerd.cgroups.v2.Metrics")` in containerd/cgroups v1.0.4); `ctr task
 * metrics` prints it and the CRI plugin turns it into container stats
 * (usage, working set = usage - inactive_file, rss = anon, page faults,
 * available = usage_limit - working set unless the limit is > 2^62).
 *
 * The Metrics message is used whatever the guest's hierarchy: a guest on
 * cgroup v1 has its memory.stat keys translated (rss → anon, cache → file…).
 */
import protobuf from 'protobufjs/minimal.js';
import type { ContainerStats } from '../agent-client/types.js';
import { io } from '../proto/gen/containerd.js';

const v2 = io.containerd.cgroups.v2;
/** The generated code's uint64 type: a number or a `long` Long. */
type U64 = io.containerd.cgroups.v2.MemoryStat['usage'];
type Long = Exclude<U64, number>;

export const CGROUP_V2_METRICS_TYPE_URL = 'io.containerd.cgroups.v2.Metrics';

/** 2^64-1: what containerd/cgroups reports for an unlimited ("max") value. */
export const MAX_UINT64: Long = new protobuf.util.Long(-1, -1, true) as unknown as Long;

/** A non-negative integer counter (NaN/negatives → 0). */
function u64(v: number | undefined): number {
  return v !== undefined && Number.isFinite(v) && v > 0 ? Math.floor(v) : 0;
}

/** A limit where the agent's 0 means "no limit" → 2^64-1, as cgroups' "max". */
function limit(v: number): U64 {
  const n = u64(v);
  return n === 0 ? MAX_UINT64 : n;
}

/**
 * MemoryStat fields and the memory.stat keys they come from, first found
 * wins: the cgroup v2 name, then a newer kernel's split counters (summed),
 * then the cgroup v1 name.
 */
const MEMORY_STAT: ReadonlyArray<[field: keyof io.containerd.cgroups.v2.MemoryStat.$Properties, ...sources: Array<string | string[]>]> = [
  ['anon', 'anon', 'rss'],
  ['file', 'file', 'cache'],
  ['kernelStack', 'kernel_stack'],
  ['slab', 'slab', ['slab_reclaimable', 'slab_unreclaimable']],
  ['sock', 'sock'],
  ['shmem', 'shmem'],
  ['fileMapped', 'file_mapped', 'mapped_file'],
  ['fileDirty', 'file_dirty', 'dirty'],
  ['fileWriteback', 'file_writeback', 'writeback'],
  ['anonThp', 'anon_thp', 'rss_huge'],
  ['inactiveAnon', 'inactive_anon'],
  ['activeAnon', 'active_anon'],
  ['inactiveFile', 'inactive_file'],
  ['activeFile', 'active_file'],
  ['unevictable', 'unevictable'],
  ['slabReclaimable', 'slab_reclaimable'],
  ['slabUnreclaimable', 'slab_unreclaimable'],
  ['pgfault', 'pgfault'],
  ['pgmajfault', 'pgmajfault'],
  // Linux ≥ 5.9 splits these into _anon and _file.
  ['workingsetRefault', 'workingset_refault', ['workingset_refault_anon', 'workingset_refault_file']],
  ['workingsetActivate', 'workingset_activate', ['workingset_activate_anon', 'workingset_activate_file']],
  ['workingsetNodereclaim', 'workingset_nodereclaim'],
  ['pgrefill', 'pgrefill'],
  ['pgscan', 'pgscan'],
  ['pgsteal', 'pgsteal'],
  ['pgactivate', 'pgactivate'],
  ['pgdeactivate', 'pgdeactivate'],
  ['pglazyfree', 'pglazyfree'],
  ['pglazyfreed', 'pglazyfreed'],
  ['thpFaultAlloc', 'thp_fault_alloc'],
  ['thpCollapseAlloc', 'thp_collapse_alloc'],
];

function statValue(stat: Record<string, number>, sources: Array<string | string[]>): number {
  for (const src of sources) {
    if (typeof src === 'string') {
      if (src in stat) return u64(stat[src]);
    } else if (src.every((k) => k in stat)) {
      return src.reduce((sum, k) => sum + u64(stat[k]), 0);
    }
  }
  return 0;
}

/** The Metrics message (plain properties) for some ContainerStats. */
export function cgroupV2Metrics(stats: ContainerStats): io.containerd.cgroups.v2.Metrics.$Properties {
  const memory: io.containerd.cgroups.v2.MemoryStat.$Properties = {
    usage: u64(stats.memory.usageBytes),
    usageLimit: limit(stats.memory.limitBytes),
    swapUsage: u64(stats.memory.swapUsageBytes),
    // The agent does not report memory.swap.max; 0 is what cgroups reports
    // when the file is missing.
    swapLimit: 0,
  };
  for (const [field, ...sources] of MEMORY_STAT) {
    (memory as Record<string, U64>)[field] = statValue(stats.memory.stat, sources);
  }
  return {
    pids: { current: u64(stats.pids.current), limit: limit(stats.pids.limit) },
    cpu: {
      usageUsec: u64(stats.cpu.usageUsec),
      userUsec: u64(stats.cpu.userUsec),
      systemUsec: u64(stats.cpu.systemUsec),
      nrPeriods: u64(stats.cpu.nrPeriods),
      nrThrottled: u64(stats.cpu.nrThrottled),
      throttledUsec: u64(stats.cpu.throttledUsec),
    },
    memory,
    // Always present in containerd/cgroups' answer, empty here (no devices reported).
    rdma: {},
    io: {},
    memoryEvents: { oomKill: u64(stats.oomKills) },
  };
}

/** `StatsResponse.stats` for some ContainerStats: Any{type_url, value} parts. */
export function cgroupV2MetricsAny(stats: ContainerStats): { typeUrl: string; value: Uint8Array } {
  return { typeUrl: CGROUP_V2_METRICS_TYPE_URL, value: v2.Metrics.encode(cgroupV2Metrics(stats)).finish() };
}
