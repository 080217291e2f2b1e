/**
 * Removing what a pod left on the host when its shim is gone (the `delete`
 * action, or a `start` that finds a stale pod dir): QEMU and virtiofsd (only
 * if pid and start time still match the VM's state file), every mount under
 * the pod dir (container rootfs and shared files, the shared dir's self-bind),
 * then the dir itself — never through a mount.
 */
import { existsSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { Logger } from '../log/index.js';
import { cleanupFromState, mountsUnder, readStateFile, unmountTree } from '../vm/index.js';
import { hasCode, Code } from '../errors/index.js';
import { ID_PATTERN } from '../service/ids.js';
import { releaseContainerDir } from '../service/rootfs.js';
import { cleanupCgroupState, cleanupNetworkState } from './pod-vm.js';

export interface PodCleanupReport {
  vmPid?: number;
  leftMounts: string[];
  removed: boolean;
}

/** True when something accepts connections on `socket` within `timeoutMs`. */
export function socketAlive(socket: string, timeoutMs = 1_000): Promise<boolean> {
  if (!existsSync(socket)) return Promise.resolve(false);
  return new Promise((resolve) => {
    const s = connect({ path: socket });
    const done = (v: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** Everything of a dead pod: its VM, its mounts, its dir. */
export async function cleanupPodDir(dir: string, logger: Logger): Promise<PodCleanupReport> {
  const report: PodCleanupReport = { leftMounts: [], removed: false };
  if (!existsSync(dir)) return report;
  // The VM first (QEMU holds the tap), then the pod's tap and filters.
  try {
    const st = readStateFile(dir);
    report.vmPid = st.qemu?.pid;
    await cleanupFromState(st, { logger });
  } catch (err) {
    if (!hasCode(err, Code.NOT_FOUND)) logger.warn({ err, dir }, 'vm state unreadable: cleaning the pod dir only');
  }
  await cleanupNetworkState(dir, logger);
  await cleanupCgroupState(dir, logger);
  await unmountTree(dir).catch((err: unknown) => logger.warn({ err, dir }, 'unmount under pod dir failed'));
  report.leftMounts = mountsUnder(dir);
  if (report.leftMounts.length === 0) {
    rmSync(dir, { recursive: true, force: true });
    report.removed = true;
  } else {
    logger.error({ dir, mounts: report.leftMounts }, 'mounts left under the pod dir: not removing it');
  }
  return report;
}

/** One container's files in a dead pod's shared dir (its rootfs mount and shared files). */
export async function cleanupContainerDir(podDir: string, containerId: string, logger: Logger): Promise<void> {
  if (!ID_PATTERN.test(containerId)) return;
  const dir = join(podDir, 'shared', containerId);
  if (!existsSync(dir)) return;
  await releaseContainerDir(dir).catch((err: unknown) => logger.warn({ err, dir }, 'releasing the container dir failed'));
}
