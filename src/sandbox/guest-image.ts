/**
 * The guest image a pod VM boots, as scripts/build-guest.sh leaves it in
 * build/guest/: the kernel (vmlinux for microvm, bzImage for q35), the small
 * stage-1 initramfs, the read-only root image (node, crun, tini, busybox, the
 * agent), the kernel command line the image expects, the manifest (kernel
 * release, agent path) and the bare initramfs (boot benchmark, KVM probe).
 */
import { existsSync, readFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { FailedPreconditionError, InvalidArgumentError } from '../errors/index.js';

export interface GuestImage {
  dir: string;
  /** Uncompressed kernel (microvm). */
  vmlinux: string;
  /** The same kernel as Debian ships it (q35). */
  bzImage: string;
  initrd: string;
  /** Read-only root image for virtio-blk (the guest's /dev/vda). */
  rootfs: string;
  /** An initramfs whose init powers off at once. */
  bareInitrd: string;
  /** Kernel parameters the image expects (build/guest/cmdline), split into words. */
  cmdline: string[];
  /** `uname -r` of the guest kernel (from the manifest). */
  kernelRelease: string | undefined;
  /** The manifest as written by build-guest.sh. */
  manifest: Record<string, unknown>;
}

const FILES = ['vmlinux', 'bzImage', 'initrd.img', 'rootfs.img', 'bare-initrd.img', 'cmdline', 'manifest.json'] as const;

/** Reads build/guest (or `dir`); FAILED_PRECONDITION naming what is missing. */
export function loadGuestImage(dir: string): GuestImage {
  if (!isAbsolute(dir)) throw new InvalidArgumentError(`guest image dir: ${dir} must be absolute`);
  const missing = FILES.filter((f) => !existsSync(join(dir, f)));
  if (missing.length > 0) {
    throw new FailedPreconditionError(`guest image ${dir}: missing ${missing.join(', ')} (run scripts/build-guest.sh)`);
  }
  const cmdline = readFileSync(join(dir, 'cmdline'), 'utf8').trim().split(/\s+/).filter(Boolean);
  let manifest: Record<string, unknown>;
  try {
    manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new FailedPreconditionError(`guest image ${dir}: manifest.json: ${(err as Error).message}`, { cause: err });
  }
  const kernel = manifest['kernel'] as { release?: unknown } | undefined;
  return {
    dir,
    vmlinux: join(dir, 'vmlinux'),
    bzImage: join(dir, 'bzImage'),
    initrd: join(dir, 'initrd.img'),
    rootfs: join(dir, 'rootfs.img'),
    bareInitrd: join(dir, 'bare-initrd.img'),
    cmdline,
    kernelRelease: typeof kernel?.release === 'string' ? kernel.release : undefined,
    manifest,
  };
}
