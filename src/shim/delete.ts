/**
 * `containerd-shim-kata-v2 … -bundle DIR delete`: containerd's cleanup after
 * a shim it lost (the shim died, or Create failed). stdout is a protobuf
 * DeleteResponse (exit status 137, now), stderr is logged by containerd as
 * cleanup warnings, non-zero exit = failure.
 *
 * If the pod's shim still answers on its socket, the pod is alive and that
 * shim owns its cleanup: nothing is touched. Otherwise: for the pod's own
 * container (the sandbox, or a lone `ctr run` container) the whole pod goes —
 * VM, mounts, dir; for a workload container only its own dir in the shared dir.
 */
import { existsSync } from 'node:fs';
import type { Logger } from '../log/index.js';
import { containerd } from '../proto/gen/containerd.js';
import { toTimestamp } from '../proto/timestamp.js';
import { cleanupContainerDir, cleanupPodDir, socketAlive } from './cleanup.js';
import type { ShimFlags } from './flags.js';
import { bundleAnnotations, podIdOf, podPaths, runRoot } from './pod-paths.js';

export async function deleteAction(flags: ShimFlags, logger: Logger): Promise<Uint8Array> {
  const bundle = flags.bundle || process.cwd();
  // The bundle still exists during delete; without config.json the container is its own pod.
  const annotations = existsSync(bundle) ? await bundleAnnotations(bundle).catch(() => ({})) : {};
  const podId = podIdOf(flags.id, annotations);
  const paths = podPaths(runRoot(), flags.address, flags.namespace, podId);
  let pid = 0;
  if (await socketAlive(paths.socket)) {
    logger.warn({ id: flags.id, pod: podId }, 'delete: the pod shim is alive and owns its cleanup');
  } else if (podId === flags.id) {
    const r = await cleanupPodDir(paths.dir, logger);
    pid = r.vmPid ?? 0;
    if (r.leftMounts.length > 0) throw new Error(`pod ${podId}: mounts left under ${paths.dir}: ${r.leftMounts.join(', ')}`);
    logger.info({ id: flags.id, pod: podId, vmPid: r.vmPid }, 'delete: pod cleaned up');
  } else {
    await cleanupContainerDir(paths.dir, flags.id, logger);
  }
  return containerd.task.v2.DeleteResponse.encode({ pid, exitStatus: 137, exitedAt: toTimestamp(new Date()) }).finish();
}
