/**
 * A VM template's guest RAM, sealed (docs/security.md): `kata-ts-jailer
 * --hold-memory` copies the template's memory file into a memfd sealed
 * against every write (F_SEAL_WRITE, SHRINK, GROW, SEAL) and holds it on its
 * descriptor 3 until the template dir is removed (it checks every second) or
 * it is sent SIGTERM. Clones map `/proc/<pid>/fd/3` private: QEMU 7.2 opens
 * it read-write, and the seals make that harmless — no clone can change the
 * pages its siblings share. The holder is started detached (its own
 * session), so it outlives the shim that made the template; it is named by
 * pid + start time like every process the runtime does not own.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { FailedPreconditionError } from '../errors/index.js';
import { identify, isAlive, terminate, type ProcessIdentity } from '../vm/proc.js';
import type { Logger } from '../log/index.js';

/** Spawn → the memfd sealed and its size printed (a copy of a few hundred MiB of tmpfs). */
export const HOLD_MEMORY_TIMEOUT_MS = 60_000;

/** Where a clone finds a held template's RAM. */
export function heldMemoryPath(holder: ProcessIdentity): string {
  return `/proc/${holder.pid}/fd/3`;
}

/**
 * Starts the holder on `memoryFile` (in its template dir); resolves with its
 * identity once the memfd is sealed. `cgroupProcs`: cgroup.procs files it
 * joins first (the shim's origin, when the shim sits in a pod's cgroup).
 */
export function holdMemory(jailer: string, memoryFile: string, opts: { timeoutMs?: number; signal?: AbortSignal; cgroupProcs?: readonly string[] } = {}): Promise<ProcessIdentity> {
  const fd = openSync(memoryFile, 'r');
  return new Promise<ProcessIdentity>((resolve, reject) => {
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(jailer, ['--hold-memory', ...(opts.cgroupProcs ?? [])], { cwd: dirname(memoryFile), stdio: [fd, 'pipe', 'pipe'], detached: true });
    } finally {
      closeSync(fd);
    }
    let out = '';
    let err = '';
    let settled = false;
    const finish = (e: Error | undefined, id?: ProcessIdentity): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      child.stdout?.destroy();
      child.stderr?.destroy();
      if (e) {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        reject(e);
        return;
      }
      child.unref();
      resolve(id!);
    };
    const onAbort = (): void => finish(new FailedPreconditionError(`sealing ${memoryFile}: cancelled`));
    const timer = setTimeout(() => finish(new FailedPreconditionError(`sealing ${memoryFile}: no answer within ${opts.timeoutMs ?? HOLD_MEMORY_TIMEOUT_MS} ms`)), opts.timeoutMs ?? HOLD_MEMORY_TIMEOUT_MS);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (!out.includes('\n')) return;
      const id = child.pid === undefined ? undefined : identify(child.pid);
      if (!/^\d+\n/.test(out) || !id) finish(new FailedPreconditionError(`sealing ${memoryFile}: unexpected answer ${JSON.stringify(out.slice(0, 200))}`));
      else finish(undefined, id);
    });
    child.stderr!.on('data', (d: Buffer) => {
      if (err.length < 4096) err += d.toString();
    });
    child.once('error', (e) => finish(new FailedPreconditionError(`sealing ${memoryFile}: ${jailer}: ${e.message}`, { cause: e })));
    child.once('exit', (code, sig) => finish(new FailedPreconditionError(`sealing ${memoryFile}: ${jailer} --hold-memory exited (${code ?? sig}): ${err.trim() || '(no output)'}`)));
  });
}

/** Ends a holder (if that very process still runs): the sealed memory is freed with it. */
export async function releaseMemory(holder: ProcessIdentity, logger?: Logger): Promise<void> {
  if (!isAlive(holder)) return;
  await terminate(holder, { termTimeoutMs: 3_000, killTimeoutMs: 3_000, group: false, what: 'template memory holder', ...(logger ? { logger } : {}) });
}
