/**
 * The pod's shared directory inside the guest: the host serves
 * `<sandbox dir>/shared` over virtio-fs (a `vhost-user-fs` device with a
 * tag) or virtio-9p (VM templates and their clones); CreateSandbox names the
 * tag, the type and a guest mount point, and this module mounts it there
 * (`mount -t virtiofs <tag> <mount point>`, or `-t 9p -o trans=virtio,…`). Container rootfs
 * directories live inside it (`<mount point>/<container id>/rootfs`).
 *
 * - Node has no mount(2): the mount is a child process (busybox `mount` in
 *   the guest), run asynchronously with a timeout, so a wedged device cannot
 *   block the agent's event loop or its pool threads.
 * - Idempotent: when mountinfo already shows a virtiofs mount of the same
 *   tag at the mount point (a restarted shim calling CreateSandbox again),
 *   nothing is done. Anything else already mounted there is refused.
 * - One operation at a time (CreateSandbox calls may race).
 * - release() unmounts what this agent mounted (DestroySandbox), falling
 *   back to a lazy unmount when it is busy.
 */
import { execFile } from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import { isAbsolute, normalize } from 'node:path';
import { DeadlineExceededError, FailedPreconditionError, InternalError, InvalidArgumentError } from '../errors/index.js';
import type { Logger } from '../log/index.js';

/** Bound on one mount/umount command. */
export const SHARED_FS_COMMAND_TIMEOUT_MS = 15_000;
/** Linux's virtio-fs tag limit (virtio_fs_config.tag is 36 bytes). */
const MAX_TAG_BYTES = 36;

export interface SharedFsSpec {
  tag: string;
  mountPoint: string;
  /** `virtiofs` (default) or `9p` (virtio-9p: VM templates and their clones). */
  fstype?: SharedFsType;
  /** 9p only: the largest message (bytes); 0 or absent: 512 KiB. */
  msize?: number;
}

export type SharedFsType = 'virtiofs' | '9p';
/** 9p's msize when none is given: large messages cut the round trips of a read under emulation. */
export const DEFAULT_9P_MSIZE = 512 * 1024;

/** `mount` arguments for `spec` (9p: trans=virtio, 9p2000.L, cache=mmap as Kata, so that mmap works). */
export function mountArgs(spec: SharedFsSpec): string[] {
  if ((spec.fstype ?? 'virtiofs') === '9p') {
    const msize = spec.msize || DEFAULT_9P_MSIZE;
    return ['-t', '9p', '-o', `trans=virtio,version=9p2000.L,cache=mmap,msize=${msize}`, spec.tag, spec.mountPoint];
  }
  return ['-t', 'virtiofs', spec.tag, spec.mountPoint];
}

/** Runs a command to completion; rejects with its stderr on failure. */
export type CommandRunner = (cmd: string, args: string[], timeoutMs: number) => Promise<void>;

export interface SharedFsOptions {
  logger: Logger;
  /** Default: execFile with a timeout. */
  run?: CommandRunner;
  /** Default: /proc/self/mountinfo. */
  readMountinfo?: () => Promise<string>;
  /** Default `mount` / `umount` from PATH (busybox in the guest). */
  mountBinary?: string;
  umountBinary?: string;
  timeoutMs?: number;
}

/**
 * Checks CreateSandbox's shared_fs_tag / shared_fs_mount_point: both or
 * neither (undefined). INVALID_ARGUMENT names the field.
 */
export function checkSharedFs(tag: string, mountPoint: string, fstype = '', msize = 0): SharedFsSpec | undefined {
  if (tag === '' && mountPoint === '') {
    if (fstype !== '') throw new InvalidArgumentError('shared_fs_type: given without shared_fs_tag');
    return undefined;
  }
  if (fstype !== '' && fstype !== 'virtiofs' && fstype !== '9p') {
    throw new InvalidArgumentError(`shared_fs_type: ${JSON.stringify(fstype)} must be "virtiofs" or "9p"`);
  }
  if (msize !== 0 && (fstype !== '9p' || !Number.isInteger(msize) || msize < 4096 || msize > 4 * 1024 * 1024)) {
    throw new InvalidArgumentError(`msize_9p: ${msize} must be 4096-4194304 and only with shared_fs_type "9p"`);
  }
  if (tag === '') throw new InvalidArgumentError('shared_fs_tag: required with shared_fs_mount_point');
  if (mountPoint === '') throw new InvalidArgumentError('shared_fs_mount_point: required with shared_fs_tag');
  if (Buffer.byteLength(tag) > MAX_TAG_BYTES || !/^[A-Za-z0-9._:-]+$/.test(tag)) {
    throw new InvalidArgumentError(`shared_fs_tag: ${JSON.stringify(tag)} must be 1-${MAX_TAG_BYTES} letters, digits, '.', '_', ':', '-'`);
  }
  if (!isAbsolute(mountPoint) || normalize(mountPoint) !== mountPoint || mountPoint === '/' || /[\s\\]/.test(mountPoint) || mountPoint.endsWith('/')) {
    throw new InvalidArgumentError(`shared_fs_mount_point: ${JSON.stringify(mountPoint)} must be a normalized absolute path other than / without spaces`);
  }
  return { tag, mountPoint, fstype: fstype === '9p' ? '9p' : 'virtiofs', ...(msize !== 0 ? { msize } : {}) };
}

/** What mountinfo says is mounted (last mount wins) at `path`: fstype and source. */
export function mountAt(mountinfo: string, path: string): { fstype: string; source: string } | undefined {
  let found: { fstype: string; source: string } | undefined;
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const point = (left[4] ?? '').replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (point !== path) continue;
    const right = line.slice(sep + 3).split(' ');
    found = { fstype: right[0] ?? '', source: right[1] ?? '' };
  }
  return found;
}

function defaultRun(cmd: string, args: string[], timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, _stdout, stderr) => {
      if (!err) {
        resolve();
        return;
      }
      const e = err as NodeJS.ErrnoException & { killed?: boolean };
      const what = `${cmd} ${args.join(' ')}`;
      if (e.killed) reject(new DeadlineExceededError(`${what}: timed out after ${timeoutMs} ms`));
      else reject(new InternalError(`${what}: ${String(stderr).trim() || e.message}`, { cause: err }));
    });
  });
}

export class SharedFs {
  private mounted: SharedFsSpec | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  private readonly run: CommandRunner;
  private readonly readMountinfo: () => Promise<string>;
  private readonly timeoutMs: number;
  private readonly logger: Logger;

  constructor(private readonly opts: SharedFsOptions) {
    this.run = opts.run ?? defaultRun;
    this.readMountinfo = opts.readMountinfo ?? (() => readFile('/proc/self/mountinfo', 'utf8'));
    this.timeoutMs = opts.timeoutMs ?? SHARED_FS_COMMAND_TIMEOUT_MS;
    this.logger = opts.logger.child({ module: 'shared-fs' });
  }

  /** The mount this agent holds, if any. */
  get current(): SharedFsSpec | undefined {
    return this.mounted;
  }

  /** Mounts `spec` unless it already is; refuses a second, different share. */
  ensure(spec: SharedFsSpec): Promise<void> {
    return this.serialize(async () => {
      if (this.mounted && (this.mounted.tag !== spec.tag || this.mounted.mountPoint !== spec.mountPoint)) {
        throw new FailedPreconditionError(`shared fs ${this.mounted.tag} is already mounted at ${this.mounted.mountPoint}`);
      }
      const fstype = spec.fstype ?? 'virtiofs';
      const there = mountAt(await this.readMountinfo(), spec.mountPoint);
      if (there?.fstype === fstype && there.source === spec.tag) {
        this.mounted = spec;
        return;
      }
      if (there) {
        throw new FailedPreconditionError(`shared_fs_mount_point: ${spec.mountPoint} already has a ${there.fstype} mount of ${there.source}`);
      }
      try {
        await mkdir(spec.mountPoint, { recursive: true, mode: 0o755 });
      } catch (err) {
        throw new FailedPreconditionError(`shared_fs_mount_point: cannot create ${spec.mountPoint}: ${(err as Error).message}`, { cause: err });
      }
      const t0 = Date.now();
      await this.run(this.opts.mountBinary ?? 'mount', mountArgs(spec), this.timeoutMs);
      this.mounted = spec;
      this.logger.info({ tag: spec.tag, fstype, mountPoint: spec.mountPoint, ms: Date.now() - t0 }, 'shared fs mounted');
    });
  }

  /** Unmounts the share this agent mounted (lazily if busy). No-op when none. */
  release(): Promise<void> {
    return this.serialize(async () => {
      const m = this.mounted;
      if (!m) return;
      const umount = this.opts.umountBinary ?? 'umount';
      const there = mountAt(await this.readMountinfo(), m.mountPoint);
      if (there?.fstype === (m.fstype ?? 'virtiofs') && there.source === m.tag) {
        try {
          await this.run(umount, [m.mountPoint], this.timeoutMs);
        } catch (err) {
          this.logger.warn({ err, mountPoint: m.mountPoint }, 'unmount failed: detaching lazily');
          await this.run(umount, ['-l', m.mountPoint], this.timeoutMs);
        }
      }
      this.mounted = undefined;
      this.logger.info({ tag: m.tag, mountPoint: m.mountPoint }, 'shared fs unmounted');
    });
  }

  private serialize(fn: () => Promise<void>): Promise<void> {
    const p = this.chain.then(fn, fn);
    this.chain = p.catch(() => {});
    return p;
  }
}
