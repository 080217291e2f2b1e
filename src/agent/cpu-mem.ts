/**
 * Onlining what the host hot-plugged (Kata's OnlineCPUMem): a hot-plugged
 * vCPU appears in /sys/devices/system/cpu offline (there is no udev in the
 * guest to online it); hot-plugged memory is onlined by the kernel itself
 * (`memhp_default_state=online`), and any block it left offline is onlined
 * here. The kernel announces hot-plugged CPUs a little after QEMU's
 * device_add returns, so the wait for `cpus` of them is polled, bounded.
 */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DeadlineExceededError, InvalidArgumentError } from '../errors/index.js';
import { MAX_VCPUS } from '../agent-protocol/limits.js';

export const ONLINE_WAIT_MS = 10_000;
const POLL_MS = 20;

export interface OnlineRequest {
  /** CPUs that must come online (hot-plugged ones); 0: online what is there, no wait. */
  cpus: number;
  /** Leave memory blocks alone. */
  cpuOnly: boolean;
}

export function checkOnlineRequest(nbCpus: number, cpuOnly: boolean): OnlineRequest {
  if (!Number.isInteger(nbCpus) || nbCpus < 0 || nbCpus > MAX_VCPUS) throw new InvalidArgumentError(`nb_cpus: ${nbCpus} must be 0-${MAX_VCPUS}`);
  return { cpus: nbCpus, cpuOnly };
}

async function readTrim(path: string): Promise<string | undefined> {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch {
    return undefined;
  }
}

/** Onlines every offline entry of `dir` named `<prefix><n>` whose `file` reads `offline`; returns how many. */
async function onlineAll(dir: string, prefix: string, file: string, offline: string, online: string): Promise<number> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return 0;
  }
  let n = 0;
  for (const name of names) {
    if (!name.startsWith(prefix) || !/^\d+$/.test(name.slice(prefix.length))) continue;
    const path = join(dir, name, file);
    if ((await readTrim(path)) !== offline) continue;
    await writeFile(path, online);
    n++;
  }
  return n;
}

/**
 * Onlines offline CPUs until `req.cpus` were onlined (or at once when 0),
 * then offline memory blocks; returns what it onlined. DEADLINE_EXCEEDED
 * naming the counts when the CPUs do not show up in time.
 */
export async function onlineCpuMem(req: OnlineRequest, opts: { sysRoot?: string; timeoutMs?: number; signal?: AbortSignal } = {}): Promise<{ cpus: number; memoryBlocks: number }> {
  const sys = opts.sysRoot ?? '/sys';
  const until = Date.now() + (opts.timeoutMs ?? ONLINE_WAIT_MS);
  let cpus = 0;
  for (;;) {
    cpus += await onlineAll(join(sys, 'devices/system/cpu'), 'cpu', 'online', '0', '1');
    if (cpus >= req.cpus) break;
    if (Date.now() >= until) throw new DeadlineExceededError(`online CPUs: ${cpus} of ${req.cpus} hot-plugged CPUs came online within ${opts.timeoutMs ?? ONLINE_WAIT_MS} ms`);
    await sleep(POLL_MS, undefined, opts.signal ? { signal: opts.signal } : {});
  }
  const memoryBlocks = req.cpuOnly ? 0 : await onlineAll(join(sys, 'devices/system/memory'), 'memory', 'state', 'offline', 'online');
  return { cpus, memoryBlocks };
}
