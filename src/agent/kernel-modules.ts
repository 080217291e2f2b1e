/**
 * Kernel modules CreateSandbox asks for ([agent.kata] kernel_modules on the
 * host, as Kata's): each is loaded with `modprobe NAME PARAM...` (busybox
 * modprobe, which reads the image's modules.dep) before the sandbox exists,
 * one at a time, each with a timeout. A module already loaded is fine
 * (modprobe does nothing); one the image does not have fails CreateSandbox
 * with FAILED_PRECONDITION naming it and modprobe's words.
 */
import { execFile } from 'node:child_process';
import { DeadlineExceededError, FailedPreconditionError, InvalidArgumentError } from '../errors/index.js';
import { MODULE_NAME as NAME, MODULE_PARAM as PARAM } from '../agent-protocol/kernel-modules.js';

export interface KernelModule {
  name: string;
  parameters: string[];
}

export const MODPROBE = '/sbin/modprobe';
const TIMEOUT_MS = 15_000;

/** INVALID_ARGUMENT naming the field for a name or parameter modprobe would misread. */
export function checkKernelModules(mods: readonly KernelModule[]): KernelModule[] {
  return mods.map((m, i) => {
    if (!NAME.test(m.name)) throw new InvalidArgumentError(`kernel_modules[${i}].name: ${JSON.stringify(m.name)} is not a module name`);
    m.parameters.forEach((p, j) => {
      if (!PARAM.test(p)) throw new InvalidArgumentError(`kernel_modules[${i}].parameters[${j}]: ${JSON.stringify(p)} is not name or name=value`);
    });
    return { name: m.name, parameters: [...m.parameters] };
  });
}

export type RunModprobe = (args: string[], timeoutMs: number) => Promise<void>;

const defaultRun: RunModprobe = (args, timeoutMs) => new Promise((resolve, reject) => {
  execFile(MODPROBE, args, { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, _stdout, stderr) => {
    if (!err) return resolve();
    const e = err as Error & { killed?: boolean };
    const cmd = `modprobe ${args.join(' ')}`;
    if (e.killed) return reject(new DeadlineExceededError(`kernel_modules: ${cmd}: timed out after ${timeoutMs} ms`));
    const words = String(stderr).trim().split('\n').filter(Boolean).join('; ') || e.message;
    reject(new FailedPreconditionError(`kernel_modules: ${cmd}: ${words}`, { cause: err }));
  });
});

/** Loads each module (checked at the wire by checkKernelModules) in order; the first failure stops and is thrown. */
export async function loadKernelModules(mods: readonly KernelModule[], run: RunModprobe = defaultRun): Promise<void> {
  for (const m of mods) await run([m.name, ...m.parameters], TIMEOUT_MS);
}
