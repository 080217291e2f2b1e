/**
 * Where a pod's things live on the host, and which pod a container belongs to.
 *
 * One pod = one shim = one VM. A container joins the pod named by its OCI
 * spec's `io.kubernetes.cri.sandbox-id` annotation (set by containerd's CRI
 * plugin on the sandbox and on every workload container); without it, the
 * container is a pod of its own (as with `ctr run`).
 *
 * The pod's directory is `<run root>/<hash>` with hash = sha256 of
 * `<containerd address>/<namespace>/<pod id>` (cut to 32 hex digits, so that
 * socket paths stay far below the 108-byte limit): two containerd instances,
 * or two namespaces, never share a pod dir. It is 0700 and holds the shim's
 * ttrpc socket, the VM's sockets and logs, their state files and the shared
 * dir the guest sees.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { specAnnotations } from '../service/guest-spec.js';

/** Default parent of the pod dirs; KATA_TS_RUN_ROOT overrides it (tests keep it in their temp dir). */
export const DEFAULT_RUN_ROOT = '/run/kata-ts';
export const SANDBOX_ID_ANNOTATION = 'io.kubernetes.cri.sandbox-id';
export const CONTAINER_TYPE_ANNOTATION = 'io.kubernetes.cri.container-type';
export const SHIM_SOCKET = 'shim.sock';
/** The serving shim's record (pid + start time), read by `delete`. */
export const SHIM_STATE_FILE = 'shim.json';

export function runRoot(env: NodeJS.ProcessEnv = process.env): string {
  const r = env['KATA_TS_RUN_ROOT'];
  return r && r.startsWith('/') ? r : DEFAULT_RUN_ROOT;
}

export interface PodPaths {
  /** The pod's id: the sandbox id, or the container's own id. */
  podId: string;
  dir: string;
  socket: string;
  /** `unix://<socket>`, what `start` prints and writes to `<bundle>/address`. */
  address: string;
}

export function podPaths(root: string, containerdAddress: string, namespace: string, podId: string): PodPaths {
  const hash = createHash('sha256').update(`${containerdAddress}/${namespace}/${podId}`).digest('hex').slice(0, 32);
  const dir = join(root, hash);
  const socket = join(dir, SHIM_SOCKET);
  return { podId, dir, socket, address: `unix://${socket}` };
}

/** The OCI annotations of the bundle's config.json ({} when it has none). */
export async function bundleAnnotations(bundle: string): Promise<Record<string, string>> {
  return specAnnotations(JSON.parse(await readFile(join(bundle, 'config.json'), 'utf8')));
}

/** The pod a container belongs to, from its annotations. */
export function podIdOf(containerId: string, annotations: Record<string, string>): string {
  const sandbox = annotations[SANDBOX_ID_ANNOTATION];
  return sandbox && sandbox !== '' ? sandbox : containerId;
}
