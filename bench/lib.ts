/**
 * What the benches on a private containerd share (bench/templates.ts,
 * bench/sizing.ts): options, medians and their table cells, PSS of a pod
 * (its shim and every descendant), the shim's JSON log lines in containerd's
 * log, other people's QEMUs, removing a task and the bench's own dir.
 */
import { copyFileSync, readFileSync, rmSync, statSync } from 'node:fs';
import { loadavg } from 'node:os';
import { basename } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  allPids, descendants, mentionsPath, mountsUnder, pidAlive, pidsMentioning, procCmdline, type Containerd, type CtrResult,
} from '../test/harness/containerd.js';

export const MB = 1e6;

// ---------------------------------------------------------------------------
// options

/** `--name value` options: each name's handler takes its value; an unknown name throws `usage`. */
export function parseOptions(argv: string[], on: Record<string, (value: string, name: string) => void>, usage: string): void {
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const f = on[k];
    if (!f) throw new Error(`unknown option ${k} (${usage})`);
    const v = argv[++i];
    if (v === undefined) throw new Error(`${k}: value missing`);
    f(v, k);
  }
}

/** An integer option's value, at least `min`. */
export function intOption(name: string, value: string, min: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new Error(`${name}: expected an integer ≥ ${min}, got ${value}`);
  return n;
}

// ---------------------------------------------------------------------------
// numbers and table cells

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

export const fmtMs = (ms: number): string => (!Number.isFinite(ms) ? '—' : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`);
export const fmtMB = (b: number): string => `${(b / MB).toFixed(1)} MB`;
export const fmtRatio = (r: number): string => (Number.isFinite(r) ? `${r.toFixed(r >= 10 ? 1 : 2)}x` : '—');
/** "median (min–max)" of durations, or — when there are none. */
export const cell = (xs: number[]): string => (xs.length ? `${fmtMs(median(xs))} (${fmtMs(Math.min(...xs))}–${fmtMs(Math.max(...xs))})` : '—');

export function check(r: CtrResult, what: string): CtrResult {
  if (r.code !== 0) throw new Error(`${what}: exit ${r.code ?? r.signal}${r.timedOut ? ' (timed out)' : ''}: ${r.stderr.trim()} ${r.stdout.trim()}`);
  return r;
}

// ---------------------------------------------------------------------------
// memory of a pod

/** A "Key:   N kB" field of a /proc file, in bytes (undefined if gone). */
export function procKb(path: string, key: string): number | undefined {
  try {
    const m = new RegExp(`^${key}:\\s+(\\d+)\\s+kB`, 'm').exec(readFileSync(path, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}
export const pssOf = (pid: number): number | undefined => procKb(`/proc/${pid}/smaps_rollup`, 'Pss');
export const rssOf = (pid: number): number | undefined => procKb(`/proc/${pid}/status`, 'VmRSS');

/** The live shim (kata's serving shim or runc's) whose argv has `-id <id>`. */
export function shimOf(c: Containerd, id: string): number | undefined {
  return c.shimPids().find((p) => {
    const argv = procCmdline(p);
    const i = argv.findIndex((a) => a === '-id' || a === '--id');
    return i >= 0 && argv[i + 1] === id;
  });
}

export interface PodMem {
  id: string;
  shim: number;
  /** PSS of the shim, of its QEMU(s), of every other descendant (virtiofsd, the container's processes). */
  shimPss: number;
  qemuPss: number;
  otherPss: number;
  qemuRss: number;
  procs: number;
}

export const podPss = (m: PodMem): number => m.shimPss + m.qemuPss + m.otherPss;

/** Pss (/proc/PID/smaps_rollup) of a pod's shim and every descendant. */
export function podMem(id: string, shim: number): PodMem {
  const kids = descendants([shim]);
  const m: PodMem = { id, shim, shimPss: 0, qemuPss: 0, otherPss: 0, qemuRss: 0, procs: 1 + kids.length };
  const sp = pssOf(shim);
  if (sp === undefined) throw new Error(`pod ${id}: shim ${shim} not readable`);
  m.shimPss = sp;
  for (const k of kids) {
    const p = pssOf(k);
    if (p === undefined) continue; // gone, or a kernel thread
    if (/^qemu-system/.test(basename(procCmdline(k)[0] ?? ''))) {
      m.qemuPss += p;
      m.qemuRss += rssOf(k) ?? 0;
    } else m.otherPss += p;
  }
  return m;
}

// ---------------------------------------------------------------------------
// containerd's log, the machine

export const logSize = (c: Containerd): number => {
  try {
    return statSync(c.logPath).size;
  } catch {
    return 0;
  }
};

/** `ms` of the shim's JSON log lines with message `msg`, by the pod they name. */
export function shimLogMs(text: string, msg: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line.startsWith('{') || !line.includes(`"msg":"${msg}"`)) continue;
    try {
      const o = JSON.parse(line) as { pod?: unknown; ms?: unknown; msg?: unknown };
      if (o.msg === msg && typeof o.pod === 'string' && typeof o.ms === 'number') out.set(o.pod, o.ms);
    } catch {
      /* not a whole line */
    }
  }
  return out;
}

export interface Origins {
  cloned: number;
  bootedCold: number;
  notUsable: number;
  templatesMade: number;
  /** The "VM template not usable" / "booted cold" lines, shortened. */
  reasons: string[];
}

/** What the shim's log lines in `text` say about VM templates. */
export function origins(text: string): Origins {
  const lines = text.split('\n');
  const has = (re: RegExp) => lines.filter((l) => re.test(l));
  const bad = has(/VM template not usable|pod VM booted cold/);
  return {
    cloned: has(/pod VM cloned from a template/).length,
    bootedCold: has(/pod VM booted cold/).length,
    notUsable: has(/VM template not usable/).length,
    templatesMade: has(/"msg":"VM template made"/).length,
    reasons: bad.map((l) => {
      const m = /"msg":"([^"]*)"/.exec(l);
      return (m ? m[1]! : l).slice(0, 300);
    }),
  };
}

/** QEMUs on this machine that are not this bench's (other people's tests), and the 1-minute load average. */
export function foreignLoad(mine: string[]): { qemu: number; load1: number } {
  let qemu = 0;
  for (const pid of allPids()) {
    const argv = procCmdline(pid);
    if (/^qemu-system/.test(basename(argv[0] ?? '')) && !argv.some((x) => mine.some((d) => mentionsPath(x, d)))) qemu++;
  }
  return { qemu, load1: loadavg()[0]! };
}

// ---------------------------------------------------------------------------
// cleanup

/** A `ctr run -d` container gone: its task killed and deleted, then the container. */
export async function removeTask(c: Containerd, id: string): Promise<void> {
  await c.ctr(['task', 'kill', '-a', '-s', 'KILL', id], { timeoutMs: 60_000 });
  await c.ctr(['task', 'delete', '-f', id], { timeoutMs: 120_000 });
  await c.ctr(['containers', 'delete', id], { timeoutMs: 60_000 });
}

/**
 * The bench's own dir removed: a process still naming it (a template
 * build's QEMU names the bench dir, not containerd's) is ended by pid first;
 * left alone, with a word on stderr, while something is mounted under it.
 */
export async function removeBenchDir(dir: string, bench: string): Promise<void> {
  for (let i = 0; i < 50; i++) {
    const left = pidsMentioning(dir).filter(pidAlive);
    if (!left.length) break;
    for (const p of left) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await sleep(100);
  }
  if (mountsUnder(dir).length === 0) rmSync(dir, { recursive: true, force: true });
  else process.stderr.write(`${bench}: mounts left under ${dir}, not removed\n`);
}

/** --log FILE: a copy of containerd's log (the shims' lines in it), taken before it stops; a failure is reported, not thrown. */
export function copyContainerdLog(c: Containerd | undefined, to: string | undefined, bench: string): void {
  if (!to || !c) return;
  try {
    copyFileSync(c.logPath, to);
  } catch (e) {
    process.stderr.write(`${bench}: copying containerd's log: ${String(e)}\n`);
  }
}

/**
 * The end of a bench on a private containerd, on every path: the log copied
 * (--log), containerd stopped, then the bench's own dir removed.
 */
export async function endBench(bench: string, c: Containerd | undefined, opts: { log: string | undefined; dir: string; before?: () => void }): Promise<void> {
  copyContainerdLog(c, opts.log, bench);
  try {
    await c?.stop();
  } finally {
    opts.before?.();
    await removeBenchDir(opts.dir, bench);
  }
}

/** Runs a bench's main; a failure is printed with its stack and exits 1. */
export function runBench(bench: string, main: () => Promise<void>): void {
  main().catch((err: unknown) => {
    process.stderr.write(`${bench}: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  });
}

/** The options every bench on a private containerd takes. */
export interface CommonArgs { runs: number; settleMs: number; json: string | undefined; log: string | undefined }

/** parseOptions handlers for CommonArgs (--runs N ≥ 1, --settle-ms N, --json FILE, --log FILE), writing into `a`. */
export function commonOptions(a: CommonArgs): Record<string, (value: string, name: string) => void> {
  return {
    '--runs': (v, k) => void (a.runs = intOption(k, v, 1)),
    '--settle-ms': (v, k) => void (a.settleMs = intOption(k, v, 0)),
    '--json': (v) => void (a.json = v),
    '--log': (v) => void (a.log = v),
  };
}
export const COMMON_USAGE = '--runs N, --settle-ms N, --json FILE, --log FILE';

/** Round `i`'s order: the variants rotated by i. */
export const rotated = <T>(xs: T[], i: number): T[] => xs.map((_, j) => xs[(i + j) % xs.length]!);

/** The runtime types the benches compare: this shim and containerd's runc shim. */
export const KATA = 'io.containerd.kata.v2';
export const RUNC = 'io.containerd.runc.v2';
