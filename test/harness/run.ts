// A command run to its end with its output collected, bounded by a timeout:
// what the e2e files that drive scripts (install.sh, the critest kit) share.

import { spawn } from 'node:child_process';

export interface RunResult {
  code: number | null;
  /** stdout, stderr, and both as they came. */
  out: string;
  err: string;
  all: string;
}

export interface RunOptions {
  /** Added to this process's environment. */
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  /**
   * Run it as a process group of its own (detached) and, at the timeout, send
   * the group SIGTERM (a script's traps then stop what it started); the
   * group's pid is in this set while it runs, for the caller's cleanup.
   * Without it: SIGKILL to the command at the timeout.
   */
  groups?: Set<number>;
}

export function runCommand(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const groups = opts.groups;
  return new Promise((resolve) => {
    const c = spawn(cmd, [...args], { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'], detached: groups !== undefined });
    if (groups && c.pid) groups.add(c.pid);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const all: Buffer[] = [];
    c.stdout.on('data', (d: Buffer) => { out.push(d); all.push(d); });
    c.stderr.on('data', (d: Buffer) => { err.push(d); all.push(d); });
    const t = setTimeout(() => {
      try {
        if (groups) process.kill(-c.pid!, 'SIGTERM');
        else c.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }, opts.timeoutMs ?? 600_000);
    c.on('close', (code) => {
      clearTimeout(t);
      if (groups && c.pid) groups.delete(c.pid);
      resolve({ code, out: Buffer.concat(out).toString(), err: Buffer.concat(err).toString(), all: Buffer.concat(all).toString() });
    });
  });
}
