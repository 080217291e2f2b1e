/**
 * Facts about the host that shape QEMU's arguments, read once per process,
 * and where a binary is.
 */
import { accessSync, constants as fsConstants, readFileSync, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/**
 * `cpu MHz` of the first CPU in /proc/cpuinfo text, × 1000, or undefined.
 * microvm guests get it as `tsc_early_khz`: without it about one boot in
 * three hangs calibrating the TSC (no PIT/HPET to calibrate against).
 */
export function parseTscKhz(cpuinfo: string): number | undefined {
  const m = /^cpu MHz\s*:\s*([0-9]+(?:\.[0-9]+)?)\s*$/m.exec(cpuinfo);
  if (!m) return undefined;
  const khz = Math.round(Number(m[1]) * 1000);
  return Number.isFinite(khz) && khz > 0 ? khz : undefined;
}

let cachedTscKhz: number | undefined | null = null;

/** The host's TSC frequency estimate in kHz (cached), or undefined if unknown. */
export function hostTscKhz(): number | undefined {
  if (cachedTscKhz === null) {
    try {
      cachedTscKhz = parseTscKhz(readFileSync('/proc/cpuinfo', 'utf8'));
    } catch {
      cachedTscKhz = undefined;
    }
  }
  return cachedTscKhz;
}

/** `name` as spawn would find it: itself when it holds a '/', else the first executable of that name on PATH; undefined when none. */
export function resolveOnPath(name: string, path = process.env['PATH'] ?? ''): string | undefined {
  if (name.includes('/')) return name;
  for (const dir of path.split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, name);
    try {
      accessSync(p, fsConstants.X_OK);
      if (statSync(p).isFile()) return p;
    } catch {
      /* next */
    }
  }
  return undefined;
}
