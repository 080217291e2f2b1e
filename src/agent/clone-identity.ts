/**
 * What makes a VM restored from a template its own (docs/templates.md):
 * fresh entropy in the kernel's CRNG, the host's wall clock, its own
 * machine id. Node has no ioctl and no clock_settime, so the first two run
 * the small C helper `sys-helper` (src/agent/native/sys-helper.c) that
 * ships next to the agent, each as a child with a timeout.
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { DeadlineExceededError, FailedPreconditionError, InternalError, InvalidArgumentError } from '../errors/index.js';

/** Bound on one helper run. */
export const CLONE_HELPER_TIMEOUT_MS = 10_000;
/** Where /etc/machine-id points in the guest image (the root is read-only). */
export const MACHINE_ID_FILE = '/run/machine-id';

export function checkSeed(data: Uint8Array): Uint8Array {
  if (data.length < 16 || data.length > 512) throw new InvalidArgumentError(`data: ${data.length} bytes, must be 16-512`);
  return data;
}

export function checkDateTime(sec: number, usec: number): { sec: number; usec: number } {
  if (!Number.isSafeInteger(sec) || sec < 0) throw new InvalidArgumentError(`sec: ${sec} must be a non-negative integer`);
  if (!Number.isInteger(usec) || usec < 0 || usec > 999_999) throw new InvalidArgumentError(`usec: ${usec} must be 0-999999`);
  return { sec, usec };
}

export function checkMachineId(id: string): string {
  if (!/^[0-9a-f]{32}$/.test(id)) throw new InvalidArgumentError(`machine_id: ${JSON.stringify(id)} must be 32 lowercase hex digits`);
  return id;
}

export class CloneIdentity {
  constructor(private readonly helper: string | undefined, private readonly timeoutMs = CLONE_HELPER_TIMEOUT_MS) {}

  reseed(data: Uint8Array): Promise<void> {
    return this.run(['reseed'], Buffer.from(checkSeed(data)));
  }

  setTime(sec: number, usec: number): Promise<void> {
    const t = checkDateTime(sec, usec);
    return this.run(['settime', String(t.sec), String(t.usec)]);
  }

  async setMachineId(id: string): Promise<void> {
    await writeFile(MACHINE_ID_FILE, `${checkMachineId(id)}\n`, { mode: 0o444 });
  }

  private run(args: string[], input?: Buffer): Promise<void> {
    const helper = this.helper;
    if (!helper) return Promise.reject(new FailedPreconditionError('sys-helper is not in the guest image'));
    return new Promise((resolve, reject) => {
      const child = execFile(helper, args, { timeout: this.timeoutMs, killSignal: 'SIGKILL' }, (err, _out, stderr) => {
        if (!err) return resolve();
        const e = err as NodeJS.ErrnoException & { killed?: boolean };
        if (e.killed) reject(new DeadlineExceededError(`sys-helper ${args[0]}: timed out after ${this.timeoutMs} ms`));
        else reject(new InternalError(`sys-helper ${args[0]}: ${String(stderr).trim() || e.message}`, { cause: err }));
      });
      child.stdin?.on('error', () => {});
      child.stdin?.end(input);
    });
  }
}
