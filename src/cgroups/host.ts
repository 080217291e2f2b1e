/**
 * The pod's cgroup on the host ([runtime] sandbox_cgroup_only, as Kata): the
 * serving shim moves itself into the cgroup that the pod's sandbox container
 * names (its OCI `linux.cgroupsPath`, cgroupfs form) before it starts QEMU
 * and virtiofsd, so they are born in it and whatever bounds the pod's cgroup
 * (CRI's pod cgroup is its parent) bounds the whole VM. At pod stop the shim
 * moves back to the cgroup it came from and removes the directories it made.
 *
 * cgroup v2 (one unified hierarchy) and v1 (the controllers below, each its
 * own hierarchy; a v1 `cpuset` gets its parent's cpus and mems, as runc
 * does, since an empty cpuset accepts no process) are both handled. The
 * systemd form `slice:prefix:name` is refused: it needs systemd's API.
 *
 * Knows nothing of containerd or VMs: paths and pids only. Every file system
 * call is async (cgroupfs calls never wait on I/O, but the event loop stays free).
 */
import { readFileSync } from 'node:fs';
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FailedPreconditionError, InvalidArgumentError } from '../errors/index.js';
import { parseCgroupMounts, parseProcCgroup, type CgroupMount } from './parse.js';

/** v1 controllers a pod cgroup joins (what bounds or accounts a VM's processes). */
export const V1_CONTROLLERS = ['cpu', 'cpuacct', 'cpuset', 'memory', 'pids', 'blkio'] as const;

export type { CgroupMount };

/** The hierarchies a pod cgroup is made in: the v1 ones with a controller of V1_CONTROLLERS, or else the v2 mount. */
export function podCgroupMounts(mountinfo: string): CgroupMount[] {
  const all = parseCgroupMounts(mountinfo);
  const v1 = all
    .filter((m) => m.version === 1)
    .map((m) => ({ ...m, controllers: m.controllers.filter((c) => (V1_CONTROLLERS as readonly string[]).includes(c)) }))
    .filter((m) => m.controllers.length > 0);
  // Hybrid hosts also mount an empty cgroup2 (…/unified): with v1 controllers there, v1 is what bounds processes.
  return v1.length > 0 ? v1 : all.filter((m) => m.version === 2);
}

/** The cgroupfs path a spec's cgroupsPath names (absolute, normalized); refuses the systemd form and `..`. */
export function cgroupPathOf(cgroupsPath: string): string {
  if (cgroupsPath.includes(':')) {
    throw new FailedPreconditionError(`linux.cgroupsPath ${JSON.stringify(cgroupsPath)}: the systemd form (slice:prefix:name) is not supported with [runtime] sandbox_cgroup_only; use containerd's cgroupfs driver`);
  }
  if (cgroupsPath.split('/').includes('..')) throw new InvalidArgumentError(`linux.cgroupsPath ${JSON.stringify(cgroupsPath)}: ".." is not allowed`);
  const p = posix.normalize(posix.join('/', cgroupsPath)).replace(/(.)\/$/, '$1');
  if (p === '/') throw new InvalidArgumentError(`linux.cgroupsPath ${JSON.stringify(cgroupsPath)}: names the root cgroup`);
  return p;
}

/** Directory of `path` (a cgroup path) in mount `m`, or undefined when the mount cannot see it. */
function dirIn(m: CgroupMount, path: string): string | undefined {
  if (m.root === '/') return join(m.mountPoint, path);
  if (path === m.root || path.startsWith(`${m.root}/`)) return join(m.mountPoint, path.slice(m.root.length));
  return undefined;
}

/** What a pod cgroup left behind, for cleanup by another process (the shim's `delete`). */
export interface HostCgroupState {
  /** Directories made, parents first. */
  created: string[];
}

/**
 * A HostCgroupState read back (cgroup.json): only normalized directories
 * under a cgroup mount pass, never anything a crafted file could name.
 */
export function parseHostCgroupState(
  value: unknown,
  mounts: CgroupMount[] = podCgroupMounts(readFileSync('/proc/self/mountinfo', 'utf8')),
): HostCgroupState {
  const created = (value as { created?: unknown } | null)?.created;
  const ok = (d: unknown): d is string =>
    typeof d === 'string' && d === posix.normalize(d) && mounts.some((m) => d.startsWith(`${m.mountPoint}/`));
  if (!Array.isArray(created) || !created.every(ok)) throw new InvalidArgumentError('not a cgroup state: created must list directories under a cgroup mount');
  return { created: [...created] };
}

export class HostCgroup {
  private constructor(
    readonly path: string,
    /** The pod cgroup's directory in each hierarchy. */
    readonly dirs: string[],
    private readonly created: string[],
    private readonly mounts: CgroupMount[],
  ) {}

  /** Makes the cgroup `path` in every hierarchy (parents as needed). */
  static async create(path: string, mounts: CgroupMount[] = podCgroupMounts(readFileSync('/proc/self/mountinfo', 'utf8'))): Promise<HostCgroup> {
    if (mounts.length === 0) throw new FailedPreconditionError('no cgroup file system is mounted');
    const created: string[] = [];
    const dirs: string[] = [];
    const cg = new HostCgroup(path, dirs, created, mounts);
    try {
      for (const m of mounts) {
        const leaf = dirIn(m, path);
        if (!leaf) throw new FailedPreconditionError(`cgroup ${path} is outside the ${m.mountPoint} mount (root ${m.root})`);
        const parts = path.split('/').filter(Boolean);
        for (let i = 1; i <= parts.length; i++) {
          const d = dirIn(m, `/${parts.slice(0, i).join('/')}`);
          if (!d || d.length <= m.mountPoint.length) continue;
          try {
            await mkdir(d);
            created.push(d);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
          }
          if (m.controllers.includes('cpuset')) await inheritCpuset(d);
        }
        dirs.push(leaf);
      }
    } catch (err) {
      await cg.remove().catch(() => {});
      throw new FailedPreconditionError(`creating cgroup ${path}: ${(err as Error).message}`, { cause: err });
    }
    return cg;
  }

  state(): HostCgroupState {
    return { created: [...this.created] };
  }

  /** Moves process `pid` (with all its threads) into the pod cgroup. */
  async enter(pid: number): Promise<void> {
    for (const d of this.dirs) await writeFile(join(d, 'cgroup.procs'), `${pid}\n`);
  }

  /**
   * Moves `pid` back to where `origin` (a /proc/<pid>/cgroup text read before
   * enter) had it, in every hierarchy even when one fails; throws the
   * failures together (a hierarchy with no origin under its mount is one).
   */
  async leave(pid: number, origin: string): Promise<void> {
    const failed: string[] = [];
    for (const m of this.mounts) {
      const d = originDir(m, origin);
      if (!d) {
        failed.push(`${m.mountPoint}: no origin cgroup under this mount`);
        continue;
      }
      await writeFile(join(d, 'cgroup.procs'), `${pid}\n`).catch((err: unknown) => failed.push(`${d}: ${(err as Error).message}`));
    }
    if (failed.length > 0) throw new FailedPreconditionError(`moving ${pid} out of cgroup ${this.path}: ${failed.join('; ')}`);
  }

  /** Removes the directories made (deepest first), waiting up to `timeoutMs` for dying processes to leave. */
  async remove(timeoutMs = 5_000): Promise<void> {
    await removeCreated(this.created, timeoutMs);
    this.created.length = 0;
  }
}

/**
 * The cgroup.procs file of every hierarchy's cgroup in `origin` (a
 * /proc/<pid>/cgroup text): writing a pid to each puts that process where
 * `origin` was.
 */
export function originProcsFiles(origin: string, mounts: CgroupMount[] = podCgroupMounts(readFileSync('/proc/self/mountinfo', 'utf8'))): string[] {
  return mounts.map((m) => originDir(m, origin)).filter((d): d is string => d !== undefined).map((d) => join(d, 'cgroup.procs'));
}

/** `origin`'s cgroup (a /proc/<pid>/cgroup text) as a directory of mount `m`, if it lies under it. */
function originDir(m: CgroupMount, origin: string): string | undefined {
  const from = parseProcCgroup(origin).find((e) => (m.version === 2 ? e.controllers.length === 0 : e.controllers.some((c) => m.controllers.includes(c))))?.path;
  return from !== undefined ? dirIn(m, from) : undefined;
}

/**
 * Removes what HostCgroup.create made (its state), deepest first. A pod
 * cgroup (a leaf) still busy with dying processes is retried until
 * `timeoutMs`; a parent it made that other cgroups now use stays.
 */
export async function removeCreated(created: readonly string[], timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const left: string[] = [];
  for (const d of [...created].sort((a, b) => b.length - a.length)) {
    const leaf = !created.some((c) => c.startsWith(`${d}/`));
    for (;;) {
      try {
        await rmdir(d);
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || !leaf) break;
        if (code === 'EBUSY' && Date.now() < deadline) {
          await sleep(50);
          continue;
        }
        left.push(`${d}: ${code}`);
        break;
      }
    }
  }
  if (left.length > 0) throw new FailedPreconditionError(`cgroup dirs not removed: ${left.join(', ')}`);
}

/** A v1 cpuset cgroup accepts no process until cpus and mems are set: take the parent's. */
async function inheritCpuset(dir: string): Promise<void> {
  for (const f of ['cpuset.cpus', 'cpuset.mems']) {
    const cur = (await readFile(join(dir, f), 'utf8').catch(() => '')).trim();
    if (cur !== '') continue;
    const parent = (await readFile(join(dir, '..', f), 'utf8')).trim();
    await writeFile(join(dir, f), parent);
  }
}
