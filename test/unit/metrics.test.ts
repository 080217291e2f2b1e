/**
 * Task stats as containerd decodes them: io.containerd.cgroups.v2.Metrics.
 *
 * The field numbers of proto/cgroups/v2/metrics.proto were compared with the
 * descriptor embedded in Debian's /usr/bin/ctr 1.6.20 (no difference but the
 * spelling of type names); the byte checks below pin a few of them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { io } from '../../src/proto/gen/containerd.js';
import type { ContainerStats } from '../../src/agent-client/types.js';
import { CGROUP_V2_METRICS_TYPE_URL, cgroupV2Metrics, cgroupV2MetricsAny } from '../../src/service/metrics.js';
import { typeNameOf } from '../../src/events/index.js';

const v2 = io.containerd.cgroups.v2;

function u64(v: number | { toString(): string } | null | undefined): string {
  return v == null ? '0' : v.toString();
}

function stats(over: Partial<ContainerStats> = {}): ContainerStats {
  return {
    cgroupVersion: 2,
    cpu: { usageUsec: 123456, userUsec: 100000, systemUsec: 23456, nrPeriods: 10, nrThrottled: 2, throttledUsec: 999 },
    memory: {
      usageBytes: 50 * 2 ** 20,
      limitBytes: 256 * 2 ** 20,
      swapUsageBytes: 4096,
      stat: {
        anon: 1000, file: 2000, kernel_stack: 3000, slab: 4000, sock: 5, shmem: 6000, file_mapped: 7000, file_dirty: 8,
        file_writeback: 9, anon_thp: 2097152, inactive_anon: 11, active_anon: 12, inactive_file: 13, active_file: 14,
        unevictable: 15, slab_reclaimable: 16, slab_unreclaimable: 17, pgfault: 18, pgmajfault: 19,
        workingset_refault: 20, workingset_activate: 21, workingset_nodereclaim: 22, pgrefill: 23, pgscan: 24,
        pgsteal: 25, pgactivate: 26, pgdeactivate: 27, pglazyfree: 28, pglazyfreed: 29, thp_fault_alloc: 30,
        thp_collapse_alloc: 31, unknown_future_key: 77,
      },
    },
    pids: { current: 3, limit: 1024 },
    oomKills: 2,
    ...over,
  };
}

test('the Any carries the bare type URL containerd registers for cgroup v2 metrics', () => {
  const any = cgroupV2MetricsAny(stats());
  assert.equal(any.typeUrl, 'io.containerd.cgroups.v2.Metrics');
  assert.equal(CGROUP_V2_METRICS_TYPE_URL, typeNameOf(v2.Metrics));
});

test('encode → decode round trip keeps every value', () => {
  const m = v2.Metrics.decode(cgroupV2MetricsAny(stats()).value);
  assert.deepEqual([u64(m.pids?.current), u64(m.pids?.limit)], ['3', '1024']);
  const cpu = m.cpu!;
  assert.deepEqual(
    [cpu.usageUsec, cpu.userUsec, cpu.systemUsec, cpu.nrPeriods, cpu.nrThrottled, cpu.throttledUsec].map(u64),
    ['123456', '100000', '23456', '10', '2', '999']);
  const mem = m.memory!;
  assert.equal(u64(mem.usage), String(50 * 2 ** 20));
  assert.equal(u64(mem.usageLimit), String(256 * 2 ** 20));
  assert.equal(u64(mem.swapUsage), '4096');
  assert.equal(u64(mem.swapLimit), '0');
  const expected: Record<string, number> = {
    anon: 1000, file: 2000, kernelStack: 3000, slab: 4000, sock: 5, shmem: 6000, fileMapped: 7000, fileDirty: 8,
    fileWriteback: 9, anonThp: 2097152, inactiveAnon: 11, activeAnon: 12, inactiveFile: 13, activeFile: 14,
    unevictable: 15, slabReclaimable: 16, slabUnreclaimable: 17, pgfault: 18, pgmajfault: 19, workingsetRefault: 20,
    workingsetActivate: 21, workingsetNodereclaim: 22, pgrefill: 23, pgscan: 24, pgsteal: 25, pgactivate: 26,
    pgdeactivate: 27, pglazyfree: 28, pglazyfreed: 29, thpFaultAlloc: 30, thpCollapseAlloc: 31,
  };
  for (const [k, v] of Object.entries(expected)) {
    assert.equal(u64((mem as unknown as Record<string, number>)[k]), String(v), k);
  }
  assert.equal(u64(m.memoryEvents?.oomKill), '2');
  assert.ok(m.rdma && m.io, 'rdma and io present (empty), as containerd/cgroups sends them');
  assert.equal(m.hugetlb.length, 0);
});

test('no limit (0 from the agent) becomes 2^64-1, as cgroups reports "max"', () => {
  const s = stats();
  s.memory.limitBytes = 0;
  s.pids.limit = 0;
  const m = v2.Metrics.decode(cgroupV2MetricsAny(s).value);
  assert.equal(u64(m.memory?.usageLimit), '18446744073709551615');
  assert.equal(u64(m.pids?.limit), '18446744073709551615');
});

test('newer kernels\' split counters are summed; a cgroup v1 guest\'s keys are translated', () => {
  const split = stats();
  split.memory.stat = {
    workingset_refault_anon: 5, workingset_refault_file: 7, workingset_activate_anon: 1, workingset_activate_file: 2,
    slab_reclaimable: 100, slab_unreclaimable: 50,
  };
  const a = cgroupV2Metrics(split).memory!;
  assert.deepEqual([a.workingsetRefault, a.workingsetActivate, a.slab], [12, 3, 150]);

  const v1 = stats({ cgroupVersion: 1 });
  v1.memory.stat = { rss: 11, cache: 22, rss_huge: 33, mapped_file: 44, dirty: 55, writeback: 66, inactive_file: 77, pgfault: 88 };
  const b = cgroupV2Metrics(v1).memory!;
  assert.deepEqual(
    [b.anon, b.file, b.anonThp, b.fileMapped, b.fileDirty, b.fileWriteback, b.inactiveFile, b.pgfault, b.kernelStack],
    [11, 22, 33, 44, 55, 66, 77, 88, 0]);
});

test('field numbers on the wire (hand-computed bytes)', () => {
  const hex = (m: io.containerd.cgroups.v2.Metrics.$Properties) => Buffer.from(v2.Metrics.encode(m).finish()).toString('hex');
  // pids = 1 (0x0a), limit = 2 (0x10)
  assert.equal(hex({ pids: { limit: 5 } }), '0a021005');
  // cpu = 2 (0x12), throttled_usec = 6 (0x30)
  assert.equal(hex({ cpu: { throttledUsec: 1 } }), '12023001');
  // memory = 4 (0x22); usage_limit = 33 → tag 33<<3 = 264 = varint 88 02
  assert.equal(hex({ memory: { usageLimit: 1 } }), '2203880201');
  // swap_limit = 35 → tag 280 = 98 02; thp_collapse_alloc = 31 → tag 248 = f8 01
  assert.equal(hex({ memory: { thpCollapseAlloc: 1, swapLimit: 2 } }), '2206f80101980202');
  // memory_events = 8 (0x42), oom_kill = 5 (0x28)
  assert.equal(hex({ memoryEvents: { oomKill: 3 } }), '42022803');
  // rdma = 5 (0x2a), io = 6 (0x32), hugetlb = 7 (0x3a) with pagesize = 3 (0x1a)
  assert.equal(hex({ rdma: {}, io: {} }), '2a003200');
  assert.equal(hex({ hugetlb: [{ pagesize: '2MB' }] }), '3a051a03324d42');
  // io.usage = 1 → IOEntry wios = 6 (0x30)
  assert.equal(hex({ io: { usage: [{ wios: 1 }] } }), '32040a023001');
});
