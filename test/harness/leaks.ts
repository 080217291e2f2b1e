// Leak checks: processes, mounts and file descriptors tied to a scope dir.
//
//   const before = snapshot(c.dir, { pids: [shimPid] });
//   … run containers …
//   const after = snapshot(c.dir, { pids: [shimPid] });
//   assertNoLeaks(before, after);
//
// A process belongs to the scope if its command line mentions the scope dir
// (QEMU, virtiofsd and shims all carry paths or the containerd address under
// it). Mounts belong to it if their mount point is at or under the dir.

import { readdirSync, readlinkSync } from 'node:fs';
import { resolve } from 'node:path';
import { allPids, mentionsPath, mountsUnder, pidAlive, procCmdline } from './containerd.js';

export interface LeakProcess {
  pid: number;
  /** argv joined by spaces, truncated to 300 characters */
  cmd: string;
}

export interface LeakSnapshot {
  scope: string;
  takenAt: number;
  /** Live (non-zombie) processes whose argv mentions the scope, never this process. */
  processes: LeakProcess[];
  /** Mount points at or under the scope. */
  mounts: string[];
  /** For each pid asked for: the targets of its open fds (undefined if the process is gone). */
  fds: Record<number, string[] | undefined>;
}

export interface SnapshotOptions {
  /** Pids whose open fds to record. */
  pids?: number[];
  /** More strings that mark a process as ours (e.g. a socket path outside the scope). */
  patterns?: string[];
}

export function openFds(pid: number): string[] | undefined {
  let names: string[];
  try {
    names = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return undefined;
  }
  const out: string[] = [];
  for (const n of names) {
    try {
      out.push(readlinkSync(`/proc/${pid}/fd/${n}`));
    } catch {
      /* closed meanwhile */
    }
  }
  return out.sort();
}

export function snapshot(scope: string, opts: SnapshotOptions = {}): LeakSnapshot {
  const dir = resolve(scope);
  const needles = opts.patterns ?? [];
  const processes: LeakProcess[] = [];
  for (const pid of allPids()) {
    if (pid === process.pid) continue;
    const argv = procCmdline(pid);
    if (!argv.some((a) => mentionsPath(a, dir) || needles.some((n) => a.includes(n)))) continue;
    if (!pidAlive(pid)) continue;
    processes.push({ pid, cmd: argv.join(' ').slice(0, 300) });
  }
  const fds: Record<number, string[] | undefined> = {};
  for (const pid of opts.pids ?? []) fds[pid] = openFds(pid);
  return { scope: dir, takenAt: Date.now(), processes, mounts: mountsUnder(dir), fds };
}

export interface LeakOptions {
  /** Pids not to report as new processes (e.g. a restarted containerd). */
  ignorePids?: number[];
  /** Fd growth per pid tolerated (default 0). */
  fdSlack?: number;
}

/** The leaks of `after` relative to `before`, as human-readable lines ([] if none). */
export function findLeaks(before: LeakSnapshot, after: LeakSnapshot, opts: LeakOptions = {}): string[] {
  const out: string[] = [];
  const had = new Set(before.processes.map((p) => p.pid));
  const ignore = new Set(opts.ignorePids ?? []);
  for (const p of after.processes) {
    if (!had.has(p.pid) && !ignore.has(p.pid)) out.push(`process ${p.pid}: ${p.cmd}`);
  }
  const hadMounts = new Set(before.mounts);
  for (const m of after.mounts) if (!hadMounts.has(m)) out.push(`mount ${m}`);
  // A mount listed twice (stacked) in after but once before is a leak too.
  const count = (l: string[]) => l.reduce((m, x) => m.set(x, (m.get(x) ?? 0) + 1), new Map<string, number>());
  const cb = count(before.mounts);
  for (const [m, n] of count(after.mounts)) {
    if (cb.has(m) && n > cb.get(m)!) out.push(`mount ${m} stacked ${n - cb.get(m)!} more time(s)`);
  }
  for (const [k, b] of Object.entries(before.fds)) out.push(...fdGrowth(`pid ${k}`, b, after.fds[Number(k)], opts.fdSlack ?? 0));
  return out;
}

/** A line describing the fds `after` has beyond `before` (more than `slack`), or [] ; [] when either is unknown. */
export function fdGrowth(what: string, before: string[] | undefined, after: string[] | undefined, slack = 0): string[] {
  if (!before || !after || after.length <= before.length + slack) return [];
  const rest = [...before];
  const extra: string[] = [];
  for (const t of after) {
    const i = rest.indexOf(t);
    if (i >= 0) rest.splice(i, 1);
    else extra.push(t);
  }
  return [`${what}: ${after.length - before.length} more fds (${before.length} → ${after.length}): ${extra.slice(0, 20).join(', ')}`];
}

export function assertNoLeaks(before: LeakSnapshot, after: LeakSnapshot, opts: LeakOptions = {}): void {
  const leaks = findLeaks(before, after, opts);
  if (leaks.length) throw new Error(`leaks under ${after.scope}:\n  ` + leaks.join('\n  '));
}

/** Nothing at all left in the scope: no process, no mount. */
export function assertClean(snap: LeakSnapshot): void {
  const l = [...snap.processes.map((p) => `process ${p.pid}: ${p.cmd}`), ...snap.mounts.map((m) => `mount ${m}`)];
  if (l.length) throw new Error(`left under ${snap.scope}:\n  ` + l.join('\n  '));
}
