/**
 * A container's cgroup, read from the outside: stats, the processes in it,
 * its OOM-kill counter. The guest uses cgroup v2 (unified at /sys/fs/cgroup);
 * v1 is supported too, because the host tests run crun on a v1 hierarchy.
 *
 * The cgroup is found from the container's init pid (/proc/<pid>/cgroup)
 * joined with the mount points in /proc/self/mountinfo, so whatever
 * cgroupsPath the spec chose is honoured.
 */
import { parseCgroupMounts, parseProcCgroup, type CgroupMount } from '../cgroups/parse.js';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface CpuStats {
  usageUsec: number;
  userUsec: number;
  systemUsec: number;
  nrPeriods: number;
  nrThrottled: number;
  throttledUsec: number;
}

export interface MemoryStats {
  usageBytes: number;
  /** 0: unlimited. */
  limitBytes: number;
  swapUsageBytes: number;
  stat: Record<string, number>;
}

export interface PidsStats {
  current: number;
  /** 0: unlimited. */
  limit: number;
}

export interface CgroupStats {
  cgroupVersion: 1 | 2;
  cpu: CpuStats;
  memory: MemoryStats;
  pids: PidsStats;
  oomKills: number;
}

export { parseCgroupMounts, parseProcCgroup } from '../cgroups/parse.js';

function joinCgroup(mount: CgroupMount, path: string): string {
  let rel = path;
  if (mount.root !== '/' && (rel === mount.root || rel.startsWith(mount.root + '/'))) rel = rel.slice(mount.root.length);
  return join(mount.mountPoint, rel);
}

/** The directories of one container's cgroup. */
export class Cgroup {
  private constructor(
    readonly version: 1 | 2,
    /** v2: the one directory; v1: controller → directory. */
    private readonly dirs: Map<string, string>,
  ) {}

  /** Resolves the cgroup of a live process; undefined when it cannot be found. */
  static async ofPid(pid: number): Promise<Cgroup | undefined> {
    let procCgroup: string;
    let mountinfo: string;
    try {
      [procCgroup, mountinfo] = await Promise.all([
        readFile(`/proc/${pid}/cgroup`, 'utf8'),
        readFile('/proc/self/mountinfo', 'utf8'),
      ]);
    } catch {
      return undefined;
    }
    return Cgroup.resolve(parseProcCgroup(procCgroup), parseCgroupMounts(mountinfo));
  }

  /** Pure: picks v1 when a v1 memory hierarchy is mounted, else v2. */
  static resolve(entries: Array<{ controllers: string[]; path: string }>, mounts: CgroupMount[]): Cgroup | undefined {
    const v1 = new Map<string, string>();
    for (const m of mounts.filter((x) => x.version === 1)) {
      const entry = entries.find((e) => e.controllers.some((c) => m.controllers.includes(c)));
      if (!entry) continue;
      for (const c of m.controllers) v1.set(c, joinCgroup(m, entry.path));
    }
    if (v1.has('memory')) return new Cgroup(1, v1);
    const unified = entries.find((e) => e.controllers.length === 0);
    const mount = mounts.find((m) => m.version === 2);
    if (!unified || !mount) return undefined;
    return new Cgroup(2, new Map([['', joinCgroup(mount, unified.path)]]));
  }

  /** The directory for a controller (v2: the only one). */
  dir(controller: string): string | undefined {
    return this.version === 2 ? this.dirs.get('') : this.dirs.get(controller);
  }

  /** Every pid in the container's cgroup (cgroup.procs). */
  async pids(): Promise<number[]> {
    const dir = this.dir(this.version === 2 ? '' : 'pids') ?? this.dir('memory');
    if (!dir) return [];
    const text = await readFile(join(dir, 'cgroup.procs'), 'utf8');
    return text.split('\n').filter(Boolean).map(Number).filter((n) => Number.isInteger(n) && n > 0);
  }

  /** The number of OOM kills in this cgroup so far (undefined when unreadable). */
  async oomKills(): Promise<number | undefined> {
    try {
      if (this.version === 2) return kv(await readFile(join(this.dir('')!, 'memory.events'), 'utf8')).oom_kill ?? 0;
      const dir = this.dir('memory');
      if (!dir) return undefined;
      return kv(await readFile(join(dir, 'memory.oom_control'), 'utf8')).oom_kill ?? 0;
    } catch {
      return undefined;
    }
  }

  /** The file whose changes signal a new OOM event (v2: inotify works on it). */
  oomEventsFile(): string | undefined {
    return this.version === 2 ? join(this.dir('')!, 'memory.events') : undefined;
  }

  async stats(): Promise<CgroupStats> {
    return this.version === 2 ? this.statsV2() : this.statsV1();
  }

  private async statsV2(): Promise<CgroupStats> {
    const d = this.dir('')!;
    const [cpu, memCur, memMax, swap, memStat, pidsCur, pidsMax, events] = await Promise.all([
      readOr(join(d, 'cpu.stat')),
      readOr(join(d, 'memory.current')),
      readOr(join(d, 'memory.max')),
      readOr(join(d, 'memory.swap.current')),
      readOr(join(d, 'memory.stat')),
      readOr(join(d, 'pids.current')),
      readOr(join(d, 'pids.max')),
      readOr(join(d, 'memory.events')),
    ]);
    const c = kv(cpu);
    return {
      cgroupVersion: 2,
      cpu: {
        usageUsec: c.usage_usec ?? 0,
        userUsec: c.user_usec ?? 0,
        systemUsec: c.system_usec ?? 0,
        nrPeriods: c.nr_periods ?? 0,
        nrThrottled: c.nr_throttled ?? 0,
        throttledUsec: c.throttled_usec ?? 0,
      },
      memory: { usageBytes: num(memCur), limitBytes: limit(memMax), swapUsageBytes: num(swap), stat: kv(memStat) },
      pids: { current: num(pidsCur), limit: limit(pidsMax) },
      oomKills: kv(events).oom_kill ?? 0,
    };
  }

  private async statsV1(): Promise<CgroupStats> {
    const cpuacct = this.dir('cpuacct');
    const cpu = this.dir('cpu');
    const mem = this.dir('memory');
    const pids = this.dir('pids');
    const opt = (dir: string | undefined, file: string) => (dir ? readOr(join(dir, file)) : Promise.resolve(''));
    const [usage, acctStat, cpuStat, memUsage, memLimit, memswUsage, memStat, oomControl, pidsCur, pidsMax] = await Promise.all([
      opt(cpuacct, 'cpuacct.usage'),
      opt(cpuacct, 'cpuacct.stat'),
      opt(cpu, 'cpu.stat'),
      opt(mem, 'memory.usage_in_bytes'),
      opt(mem, 'memory.limit_in_bytes'),
      opt(mem, 'memory.memsw.usage_in_bytes'),
      opt(mem, 'memory.stat'),
      opt(mem, 'memory.oom_control'),
      opt(pids, 'pids.current'),
      opt(pids, 'pids.max'),
    ]);
    // cpuacct.stat counts USER_HZ ticks (100 per second on Linux).
    const acct = kv(acctStat);
    const cs = kv(cpuStat);
    const memUsed = num(memUsage);
    const memsw = num(memswUsage);
    return {
      cgroupVersion: 1,
      cpu: {
        usageUsec: Math.floor(num(usage) / 1000),
        userUsec: (acct.user ?? 0) * 10_000,
        systemUsec: (acct.system ?? 0) * 10_000,
        nrPeriods: cs.nr_periods ?? 0,
        nrThrottled: cs.nr_throttled ?? 0,
        throttledUsec: Math.floor((cs.throttled_time ?? 0) / 1000),
      },
      memory: {
        usageBytes: memUsed,
        limitBytes: limit(memLimit),
        swapUsageBytes: memsw > memUsed ? memsw - memUsed : 0,
        stat: kv(memStat),
      },
      pids: { current: num(pidsCur), limit: limit(pidsMax) },
      oomKills: kv(oomControl).oom_kill ?? 0,
    };
  }
}

async function readOr(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return '';
  }
}

/** A number from a one-value cgroup file ('' → 0), clamped to a safe integer. */
function num(text: string): number {
  const t = text.trim();
  if (!/^\d+$/.test(t)) return 0;
  const n = Number(t);
  return Number.isSafeInteger(n) ? n : Number.MAX_SAFE_INTEGER;
}

/** A limit: "max" or v1's near-2^63 "unlimited" → 0. */
function limit(text: string): number {
  const t = text.trim();
  if (t === 'max' || t === '') return 0;
  const n = Number(t);
  return n >= 2 ** 62 ? 0 : num(t);
}

/** "key value" lines → numbers. */
export function kv(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined && /^\d+$/.test(v)) out[k] = num(v);
  }
  return out;
}
