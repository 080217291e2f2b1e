/**
 * A container's files in the pod's shared dir, on the host side:
 * `<shared>/<id>/rootfs` gets the rootfs mounts from containerd's Create
 * request (overlay from the snapshotter, or a bind of `<bundle>/rootfs` when
 * there are none) and `<shared>/<id>/mounts/*` the host files the spec binds.
 * The shared dir is a shared mount (see src/vm/mounts.ts bindSelfShared), so
 * these mounts reach virtiofsd, and the guest, at once.
 */
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InternalError, InvalidArgumentError } from '../errors/index.js';
import { mountsUnder, runMountCommand, unmountTree } from '../vm/index.js';
import type { SharedBind } from './guest-spec.js';

export interface RootfsMount {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

const run = (args: string[]): Promise<void> => runMountCommand('mount', args);

/**
 * A filesystem mount (overlay) gets nodev and nosuid when it is made, and so
 * do the copies propagation makes of it: a jailed QEMU serving the pod's 9p
 * share must not open a device node an image shipped (docs/security.md). In
 * the guest, the share's own mount decides; the host's flags are never seen.
 */
const HOST_SAFE = ['nodev', 'nosuid'];

/** util-linux argv for one containerd Mount onto `target`. */
export function mountArgv(m: RootfsMount, target: string): string[] {
  if (!m.type && !m.options.some((o) => o === 'bind' || o === 'rbind')) throw new InvalidArgumentError('rootfs: mount type must be set');
  if (m.target) throw new InvalidArgumentError(`rootfs: mount target ${JSON.stringify(m.target)} is not supported`);
  const bind = m.type === 'bind' || m.options.some((o) => o === 'bind' || o === 'rbind');
  const opts = bind
    ? (!m.options.some((o) => o === 'bind' || o === 'rbind') ? ['rbind', ...m.options] : m.options)
    : [...HOST_SAFE.filter((o) => !m.options.includes(o)), ...m.options];
  const argv = bind ? [] : ['-t', m.type];
  if (opts.length > 0) argv.push('-o', opts.join(','));
  argv.push(m.source || m.type, target);
  return argv;
}

/** Mounts the container's rootfs at `<containerDir>/rootfs`; undoes itself on failure. */
export async function mountRootfs(containerDir: string, mounts: RootfsMount[], bundle: string): Promise<void> {
  const target = join(containerDir, 'rootfs');
  await mkdir(target, { recursive: true, mode: 0o755 });
  const list = mounts.length > 0 ? mounts : [{ type: 'bind', source: join(bundle, 'rootfs'), options: ['rbind'] }];
  try {
    for (const m of list) await run(mountArgv(m, target));
  } catch (err) {
    await releaseContainerDir(containerDir).catch(() => {});
    throw err;
  }
}

/** Binds host files/dirs the spec shares into `<containerDir>/<target>`. */
export async function mountSharedBinds(containerDir: string, binds: SharedBind[]): Promise<void> {
  for (const b of binds) {
    const target = join(containerDir, b.target);
    const st = await stat(b.source).catch(() => undefined);
    if (!st) throw new InvalidArgumentError(`config.json: mount source ${b.source} does not exist`);
    if (st.isDirectory()) await mkdir(target, { recursive: true });
    else {
      await mkdir(join(target, '..'), { recursive: true });
      await writeFile(target, '', { flag: 'a' });
    }
    await run(['--bind', ...(b.readOnly ? ['-o', 'ro'] : []), b.source, target]);
  }
}

/** Unmounts everything under the container's dir and removes it (never through a mount). */
export async function releaseContainerDir(containerDir: string): Promise<void> {
  await unmountTree(containerDir);
  const left = mountsUnder(containerDir);
  if (left.length > 0) throw new InternalError(`${containerDir}: still mounted: ${left.join(', ')}`);
  await rm(containerDir, { recursive: true, force: true });
}
