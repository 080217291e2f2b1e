/**
 * Accelerator choice: `kvm`, `tcg`, or `auto`.
 *
 * `auto` does not trust the mere presence of /dev/kvm: on our CI hosts it is
 * a paravirtual nested hypervisor on which `-cpu host` aborts ("failed to set
 * MSR 0x10a") and a masked CPU crawls into "KVM internal error". So `auto`
 * boots a throwaway guest under KVM — the guest kernel plus a tiny initrd
 * whose init powers off at once — and picks KVM only if that guest reaches
 * userspace and QEMU exits cleanly within a short timeout. Anything else
 * picks TCG, with QEMU's own words as the reason. The result is cached per
 * process (per probe inputs) and logged once.
 */
import { dieWithParent } from './proc.js';
import { spawn } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import type { Logger } from '../log/index.js';
import { abortError } from './abort.js';
import { QEMU_BINARY, type Accelerator } from './qemu-args.js';
import { hostTscKhz } from './host.js';

export type AccelSetting = 'auto' | Accelerator;

/** Bound on the probe guest's boot + poweroff (KVM boots it in well under a second). */
export const KVM_PROBE_TIMEOUT_MS = 10_000;
/** Console output kept from the probe. */
const PROBE_OUTPUT_LIMIT = 64 * 1024;

export interface KvmProbeOptions {
  /** Uncompressed guest kernel (microvm). */
  kernel: string;
  /** An initrd whose init powers the guest off at once (build/guest/bare-initrd.img). */
  initrd: string;
  /** If set, the console must show it (printed by the probe init); else a clean exit suffices. */
  marker?: string;
  qemuBinary?: string;
  timeoutMs?: number;
  /** Default /dev/kvm. */
  kvmDevice?: string;
}

export interface AccelChoice {
  accel: Accelerator;
  /** Why: "configured", or what the probe saw. */
  reason: string;
  /** True when a probe guest was booted to decide. */
  probed: boolean;
}

export interface ChooseAccelOptions {
  setting: AccelSetting;
  /** Needed for `auto`. */
  probe?: KvmProbeOptions;
  logger: Logger;
  signal?: AbortSignal;
}

const cache = new Map<string, Promise<AccelChoice>>();

/** Forgets cached probe results (tests). */
export function resetAccelCache(): void {
  cache.clear();
}

/** Resolves the accelerator to start QEMU with; never throws for `auto`. */
export async function chooseAccel(opts: ChooseAccelOptions): Promise<AccelChoice> {
  const log = opts.logger.child({ module: 'vm', component: 'accel' });
  if (opts.setting === 'kvm' || opts.setting === 'tcg') {
    return { accel: opts.setting, reason: 'configured', probed: false };
  }
  const key = JSON.stringify(opts.probe ?? null);
  let choice = cache.get(key);
  if (!choice) {
    choice = decide(opts.probe, opts.signal).then((c) => {
      log.info({ accel: c.accel, reason: c.reason, probed: c.probed }, 'accelerator chosen');
      return c;
    });
    cache.set(key, choice);
    // A cancelled probe must not stick.
    choice.catch(() => cache.delete(key));
  }
  return choice;
}

async function decide(probe: KvmProbeOptions | undefined, signal?: AbortSignal): Promise<AccelChoice> {
  const dev = probe?.kvmDevice ?? '/dev/kvm';
  try {
    accessSync(dev, constants.R_OK | constants.W_OK);
  } catch (err) {
    return { accel: 'tcg', reason: `KVM unusable: ${dev}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, probed: false };
  }
  if (!probe) return { accel: 'tcg', reason: 'KVM not probed: no probe kernel/initrd configured', probed: false };
  for (const p of [probe.kernel, probe.initrd]) {
    if (!isFile(p)) return { accel: 'tcg', reason: `KVM not probed: ${p} missing`, probed: false };
  }
  const r = await probeKvm(probe, signal);
  return r.ok
    ? { accel: 'kvm', reason: `KVM probe guest reached userspace in ${r.ms} ms`, probed: true }
    : { accel: 'tcg', reason: `KVM unusable: ${r.why}`, probed: true };
}

export interface ProbeResult {
  ok: boolean;
  why: string;
  ms: number;
  output: string;
}

/** Boots the probe guest under KVM once. */
export function probeKvm(probe: KvmProbeOptions, signal?: AbortSignal): Promise<ProbeResult> {
  const timeoutMs = probe.timeoutMs ?? KVM_PROBE_TIMEOUT_MS;
  const tsc = hostTscKhz();
  const append = ['console=ttyS0', 'panic=-1', 'reboot=t', ...(tsc !== undefined ? [`tsc_early_khz=${tsc}`] : [])].join(' ');
  const args = [
    '-machine', 'microvm,x-option-roms=off', '-accel', 'kvm', '-cpu', 'host', '-smp', '1', '-m', '128M',
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-kernel', probe.kernel, '-initrd', probe.initrd, '-append', append,
    '-serial', 'stdio',
  ];
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortError(signal, 'kvm probe'));
      return;
    }
    // A probe never outlives whoever asked for it (a shim killed mid-probe).
    const cmd = dieWithParent(probe.qemuBinary ?? QEMU_BINARY, args);
    const child = spawn(cmd.command, cmd.args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const keep = (s: string, d: Buffer): string => (s.length < PROBE_OUTPUT_LIMIT ? s + d.toString('utf8') : s);
    child.stdout.on('data', (d: Buffer) => (out = keep(out, d)));
    child.stderr.on('data', (d: Buffer) => (err = keep(err, d)));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    const onAbort = (): void => {
      child.kill('SIGKILL');
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    child.once('error', (e) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      resolve({ ok: false, why: `cannot run ${probe.qemuBinary ?? QEMU_BINARY}: ${e.message}`, ms: Date.now() - t0, output: '' });
    });
    child.once('close', (code, sig) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      const ms = Date.now() - t0;
      if (signal?.aborted) {
        reject(abortError(signal, 'kvm probe'));
        return;
      }
      const qemuSaid = firstLines(err, 3);
      const consoleSaid = out;
      let why = '';
      if (timedOut) why = `probe guest did not finish within ${timeoutMs} ms${qemuSaid ? `: ${qemuSaid}` : ''}${/KVM internal error/.test(err + out) ? ' (KVM internal error)' : ''}`;
      else if (sig) why = `qemu killed by ${sig}: ${qemuSaid || '(no output)'}`;
      else if (code !== 0) why = `qemu exit code ${code}: ${qemuSaid || '(no output)'}`;
      else if (/Kernel panic/.test(consoleSaid)) why = `probe guest panicked: ${lineWith(consoleSaid, 'Kernel panic')}`;
      else if (probe.marker !== undefined && !consoleSaid.includes(probe.marker)) why = `probe guest exited without printing ${JSON.stringify(probe.marker)}`;
      resolve({ ok: why === '', why, ms, output: consoleSaid.slice(-4096) });
    });
  });
}

function firstLines(s: string, n: number): string {
  return s.split('\n').map((l) => l.trim()).filter((l) => l !== '').slice(0, n).join(' | ');
}

function lineWith(s: string, needle: string): string {
  return s.split('\n').find((l) => l.includes(needle))?.trim() ?? needle;
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}
