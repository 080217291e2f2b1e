/**
 * Warming a VM template before it is saved: the paths every pod's VM takes
 * right after a clone is restored (the identity calls, the 9p mount and
 * unmount, a container's create / start / wait / remove through crun) run
 * once in the template, so that every clone finds the programs in its page
 * cache and the agent's code compiled, instead of paying that under
 * emulation on its first pod. The sandbox is destroyed again (9p must be
 * unmounted for QEMU to save the VM) and nothing of it stays in the guest.
 *
 * The container needs no image: its rootfs is an empty dir in the shared
 * dir, and `/bin/true` in it is the guest's own busybox, bind-mounted.
 */
import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { AgentClient } from '../agent-client/index.js';
import { GUEST_SHARED_DIR, SHARED_FS_TAG } from './sandbox-vm.js';

export const WARM_UP_SANDBOX = 'template-warm-up';
const WARM_UP_CONTAINER = 'warm-up';
const CALL_MS = 30_000;

/** The smallest OCI spec crun runs: `/bin/true` on a read-only root, its own namespaces but the network. */
function warmUpSpec(): Record<string, unknown> {
  return {
    ociVersion: '1.0.2',
    process: { terminal: false, user: { uid: 0, gid: 0 }, args: ['/bin/true'], env: ['PATH=/usr/sbin:/usr/bin:/sbin:/bin'], cwd: '/' },
    root: { path: 'rootfs', readonly: true },
    hostname: 'warm-up',
    mounts: [
      { destination: '/bin/true', type: 'bind', source: '/bin/busybox', options: ['rbind', 'ro'] },
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    ],
    linux: { namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }] },
  };
}

/** `hostSharedDir`: the host dir behind the template's shared-dir device. */
export async function warmUpGuest(agent: AgentClient, hostSharedDir: string, signal?: AbortSignal): Promise<void> {
  const call = { timeoutMs: CALL_MS, ...(signal ? { signal } : {}) };
  for (const d of ['bin', 'proc', 'dev']) await mkdir(join(hostSharedDir, WARM_UP_CONTAINER, 'rootfs', d), { recursive: true, mode: 0o755 });
  await agent.reseedRandomDev(randomBytes(64), call);
  await agent.setGuestDateTime(new Date(), call);
  await agent.createSandbox({ sandboxId: WARM_UP_SANDBOX, sharedFs: { tag: SHARED_FS_TAG, mountPoint: GUEST_SHARED_DIR, fstype: '9p' } }, call);
  try {
    const ref = { containerId: WARM_UP_CONTAINER };
    await agent.createContainer({
      containerId: WARM_UP_CONTAINER, spec: warmUpSpec(), rootfsPath: posix.join(GUEST_SHARED_DIR, WARM_UP_CONTAINER, 'rootfs'),
    }, call);
    await agent.startContainer(ref, call);
    const exit = await agent.waitProcess(ref, call);
    if (exit.exitStatus !== 0) throw new Error(`warm-up container exited ${exit.exitStatus}`);
    await agent.removeContainer(ref, call);
  } finally {
    await agent.destroySandbox({}, call);
  }
}
