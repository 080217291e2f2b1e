/**
 * What a VM template is keyed by: everything that shapes the VM a clone
 * restores into. A clone's QEMU must be started with the same machine, CPU,
 * memory, kernel, initrd, kernel command line, devices (same kinds, ids and
 * order) and QEMU binary as the template's, or QEMU refuses the state (or,
 * worse, the guest finds devices where it left others). So each of those is
 * in the key, and the files are named by their identity on disk (device,
 * inode, size, mtime and ctime in ns): a rebuilt guest image or an upgraded
 * QEMU binary has another identity, hence another key, and its old
 * templates are never used again (`factory status` lists them as stale).
 */
import type { HotplugRoom } from '../vm/index.js';
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { FailedPreconditionError } from '../errors/index.js';

/** A file's identity: any rewrite changes mtime or ctime (ctime cannot be set from user space). */
export interface FileIdentity {
  path: string;
  dev: string;
  ino: string;
  size: string;
  mtimeNs: string;
  ctimeNs: string;
}

export interface TemplateSpec {
  /** The QEMU binary (its identity is in the key: another QEMU, another template). */
  qemuBinary: string;
  kernel: string;
  initrd?: string;
  /** The guest's read-only root image (a virtio-blk disk). */
  rootfs: string;
  machine: string;
  /** Room to grow by hot-plug (q35): `-smp …,maxcpus=`, `-m …,slots=,maxmem=` are part of the machine. */
  hotplug?: HotplugRoom;
  accel: string;
  vcpus: number;
  memoryMiB: number;
  /** The whole kernel command line after the launcher's own (agent flags included). */
  kernelParams: readonly string[];
  /** microvm's tsc_early_khz (host-dependent). */
  tscKhz?: number;
  /** Whether the VM has a NIC (a pod in a network namespace) — a device, so part of the shape. */
  nic: boolean;
  /** The 9p mount tag of the shared dir. */
  sharedFsTag: string;
  /**
   * The RAM held in a sealed memfd (clones of jailed QEMUs: memory-holder.ts).
   * Absent when not: a template made for root QEMUs is never a jailed one's.
   */
  sealedMemory?: true;
}

export interface TemplateIdentity {
  spec: TemplateSpec;
  files: FileIdentity[];
}

export async function fileIdentity(path: string, what: string): Promise<FileIdentity> {
  try {
    const s = await stat(path, { bigint: true });
    return { path, dev: String(s.dev), ino: String(s.ino), size: String(s.size), mtimeNs: String(s.mtimeNs), ctimeNs: String(s.ctimeNs) };
  } catch (err) {
    throw new FailedPreconditionError(`template ${what}: ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** The spec with the identity of every file it names. */
export async function templateIdentity(spec: TemplateSpec): Promise<TemplateIdentity> {
  const files = await Promise.all([
    fileIdentity(spec.qemuBinary, 'qemu'),
    fileIdentity(spec.kernel, 'kernel'),
    ...(spec.initrd !== undefined ? [fileIdentity(spec.initrd, 'initrd')] : []),
    fileIdentity(spec.rootfs, 'image'),
  ]);
  return { spec, files };
}

/** Stable JSON: object keys sorted, so that the same identity always hashes the same. */
export function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o).filter((k) => o[k] !== undefined).sort().map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

/** 24 hex digits of the identity's SHA-256: the template's directory name. */
export function templateKey(id: TemplateIdentity): string {
  return createHash('sha256').update(canonical(id)).digest('hex').slice(0, 24);
}
