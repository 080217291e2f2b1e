/**
 * Processes we may not be the parent of. Node has no pidfd, so a process is
 * named by (pid, start time): the start time (field 22 of /proc/<pid>/stat,
 * clock ticks since boot) tells a recycled pid apart. We only ever signal a
 * pid whose start time still matches the one we recorded; the window between
 * that check and kill() is the best Node allows (docs/vm.md).
 */
import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import type { Logger } from '../log/index.js';
import { sleep } from './abort.js';

/**
 * `command args` run so that the kernel SIGKILLs it when its parent dies
 * (PR_SET_PDEATHSIG through util-linux setpriv, which then execs the command:
 * same pid, same start time). The setting survives the exec of a non-setuid
 * binary, and further execs (nsenter → QEMU).
 */
export function dieWithParent(command: string, args: readonly string[]): { command: string; args: string[] } {
  return { command: 'setpriv', args: ['--pdeathsig', 'KILL', '--', command, ...args] };
}

/** A process as recorded in a state file. */
export interface ProcessIdentity {
  pid: number;
  /** /proc/<pid>/stat field 22. */
  startTime: number;
}

interface Stat {
  state: string;
  ppid: number;
  pgrp: number;
  startTime: number;
}

/** Parses /proc/<pid>/stat; undefined when the process does not exist. */
export function readStat(pid: number): Stat | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // comm may hold spaces and parentheses: fields resume after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); field N is rest[N - 3].
  return { state: rest[0]!, ppid: Number(rest[1]), pgrp: Number(rest[2]), startTime: Number(rest[19]) };
}

/** The identity of a live process, or undefined. */
export function identify(pid: number): ProcessIdentity | undefined {
  const st = readStat(pid);
  if (!st || st.state === 'Z' || st.state === 'X') return undefined;
  return { pid, startTime: st.startTime };
}

/** True while the very process recorded runs (not a zombie, not a recycled pid). */
export function isAlive(id: ProcessIdentity): boolean {
  const st = readStat(id.pid);
  return st !== undefined && st.startTime === id.startTime && st.state !== 'Z' && st.state !== 'X';
}

/**
 * Sends `sig` to the process (or its whole process group when `group`, for a
 * leader we started detached) only if its identity still matches.
 * Returns false when it was already gone or is someone else now.
 */
export function signalIfSame(id: ProcessIdentity, sig: NodeJS.Signals, group = false): boolean {
  if (!isAlive(id)) return false;
  try {
    if (group && readStat(id.pid)?.pgrp === id.pid) process.kill(-id.pid, sig);
    else process.kill(id.pid, sig);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}

/** Poll interval while waiting for a process we are not the parent of. */
export const EXIT_POLL_MS = 20;

/** Resolves true once the process is gone, false after `timeoutMs`. */
export async function waitGone(id: ProcessIdentity, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (!isAlive(id)) return true;
    if (Date.now() >= until) return false;
    await sleep(EXIT_POLL_MS, signal, `wait for pid ${id.pid} to exit`);
  }
}

export interface TerminateOptions {
  /** Wait after SIGTERM before SIGKILL. */
  termTimeoutMs: number;
  /** Wait after SIGKILL before giving up. */
  killTimeoutMs: number;
  /** Signal the process group (leaders we spawned detached). */
  group?: boolean;
  logger?: Logger;
  /** What the process is, for logs ("qemu", "virtiofsd"). */
  what: string;
  /** Resolves when the process is gone (e.g. a child's 'exit'); polling is the fallback. */
  exited?: Promise<unknown>;
}

/** How a process ended up gone. */
export type TerminateResult = 'gone' | 'sigterm' | 'sigkill' | 'survived';

/**
 * SIGTERM, wait, SIGKILL, wait — each only while (pid, start time) still
 * names the same process. Never throws for a process that is already gone.
 */
export async function terminate(id: ProcessIdentity, opts: TerminateOptions): Promise<TerminateResult> {
  const wait = (ms: number): Promise<boolean> =>
    opts.exited ? Promise.race([opts.exited.then(() => true), waitGone(id, ms)]) : waitGone(id, ms);
  if (!signalIfSame(id, 'SIGTERM', opts.group)) return 'gone';
  if (await wait(opts.termTimeoutMs)) return 'sigterm';
  opts.logger?.warn({ pid: id.pid, what: opts.what, timeoutMs: opts.termTimeoutMs }, 'process ignored SIGTERM, sending SIGKILL');
  if (!signalIfSame(id, 'SIGKILL', opts.group)) return 'sigterm';
  if (await wait(opts.killTimeoutMs)) return 'sigkill';
  opts.logger?.error({ pid: id.pid, what: opts.what }, 'process survived SIGKILL');
  return 'survived';
}

/** The last `maxLines` lines of a text file (reads at most `maxBytes` from its end). */
export function tailFile(path: string, maxLines = 30, maxBytes = 16 * 1024): string {
  let buf: Buffer;
  let fd: number | undefined;
  let truncated = false;
  try {
    fd = openSync(path, 'r');
    const size = fstatSync(fd).size;
    const len = Math.min(size, maxBytes);
    truncated = len < size;
    buf = Buffer.alloc(len);
    const n = readSync(fd, buf, 0, len, size - len);
    buf = buf.subarray(0, n);
  } catch {
    return '';
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  let text = buf.toString('utf8');
  // Read from the middle of the file: the first line is a fragment.
  if (truncated) text = text.slice(text.indexOf('\n') + 1);
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  return lines.slice(-maxLines).join('\n');
}
