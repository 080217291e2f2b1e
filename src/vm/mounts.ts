/**
 * The few mount operations the VM layer needs, through util-linux `mount`
 * and `umount` (Node has no mount(2)). Each runs with a timeout.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { InternalError } from '../errors/index.js';

/** Bound on one mount/umount command. */
export const MOUNT_TIMEOUT_MS = 10_000;

/** Runs `mount`/`umount` with `args`, bounded by MOUNT_TIMEOUT_MS; INTERNAL with its stderr on failure. */
export function runMountCommand(cmd: 'mount' | 'umount', args: string[]): Promise<void> {
  return new Promise((done, fail) => {
    execFile(cmd, args, { timeout: MOUNT_TIMEOUT_MS, killSignal: 'SIGKILL' }, (err, _stdout, stderr) => {
      if (err) fail(new InternalError(`${cmd} ${args.join(' ')}: ${String(stderr).trim() || err.message}`, { cause: err }));
      else done();
    });
  });
}

/** Undoes mountinfo's octal escapes (\040 for space, …). */
function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Mount points in our mount namespace, in mount order. */
export function mountPoints(): string[] {
  const text = readFileSync('/proc/self/mountinfo', 'utf8');
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => unescapeMountinfo(l.split(' ')[4]!));
}

/** How many mounts sit exactly on `path`. */
export function mountCount(path: string): number {
  const p = resolve(path);
  return mountPoints().filter((m) => m === p).length;
}

/** Mount points at or under `dir`. */
export function mountsUnder(dir: string): string[] {
  const d = resolve(dir);
  return mountPoints().filter((m) => m === d || m.startsWith(d + '/'));
}

/**
 * Binds `dir` onto itself and makes it a shared mount. Why: with virtiofsd's
 * namespace sandbox, mounts made under the shared dir after virtiofsd started
 * (a later container's rootfs) only reach virtiofsd's mount namespace if the
 * dir is a shared peer; `/` is private on our hosts.
 */
export async function bindSelfShared(dir: string): Promise<void> {
  await runMountCommand('mount', ['--bind', dir, dir]);
  try {
    await runMountCommand('mount', ['--make-shared', dir]);
  } catch (err) {
    await runMountCommand('umount', [dir]).catch(() => {});
    throw err;
  }
}

/**
 * Unmounts `path` and everything under it, whether or not `path` itself is
 * a mount point: the mounts under it, last mounted first, each falling back
 * to a lazy detach when busy. No-op when nothing is mounted there. Does
 * not throw for mounts it could not remove: callers check mountsUnder().
 */
export async function unmountTree(path: string): Promise<void> {
  // Several passes: stacked mounts, and mounts that propagation brought back.
  for (let pass = 0; pass < 8; pass++) {
    const mounts = mountsUnder(path).reverse();
    if (mounts.length === 0) return;
    for (const m of mounts) {
      if (!mountsUnder(path).includes(m)) continue; // gone with an earlier one
      try {
        await runMountCommand('umount', [m]);
      } catch {
        await runMountCommand('umount', ['-l', m]).catch(() => {});
      }
    }
  }
  // What is left (if anything) the caller sees with mountsUnder().
}
