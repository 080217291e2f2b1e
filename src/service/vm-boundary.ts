/**
 * What a pod in a VM cannot have, refused at its Create with a message that
 * names the setting (docs/limits.md), instead of being silently ignored:
 *
 * - the host's network, IPC or PID namespace (CRI `namespace_options`
 *   NODE, `ctr run --net-host`): the pod's processes run in the guest, under
 *   its own kernel, whose namespaces are not the host's. Checked on the pod's
 *   own container (the CRI sandbox, or `ctr run`'s only container): a spec
 *   without that namespace asks for the host's.
 * - a bind mount with `rshared`/`shared` propagation (CRI Bidirectional):
 *   mounts made inside the container would have to reach the host, and they
 *   cannot cross virtio-fs or 9p. Host → container (`rslave`, CRI
 *   HostToContainer) works and is accepted.
 */
import { UnimplementedError } from '../errors/index.js';

type Json = Record<string, unknown>;
const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The host namespaces a pod's own container may not ask for: OCI type → what CRI and ctr call it. */
const HOST_NAMESPACES: ReadonlyArray<{ type: string; what: string }> = [
  { type: 'network', what: 'host network (CRI namespace_options.network = NODE, `ctr run --net-host`)' },
  { type: 'ipc', what: 'host IPC (CRI namespace_options.ipc = NODE)' },
  { type: 'pid', what: 'host PID (CRI namespace_options.pid = NODE)' },
];

const REASON = 'a pod runs in its own VM, under the guest kernel';

/** UNIMPLEMENTED naming the first thing in `spec` a VM cannot honour; `podContainer`: the pod's own container (its namespaces are the pod's). */
export function refuseWhatAVmCannotGive(spec: unknown, podContainer: boolean): void {
  if (!isObj(spec)) return;
  const linux = isObj(spec['linux']) ? spec['linux'] : undefined;
  if (podContainer && linux && Array.isArray(linux['namespaces'])) {
    const types = new Set((linux['namespaces'] as unknown[]).filter(isObj).map((n) => String(n['type'])));
    for (const ns of HOST_NAMESPACES) {
      if (!types.has(ns.type)) throw new UnimplementedError(`linux.namespaces: no ${ns.type} namespace, i.e. the ${ns.what}: not supported, ${REASON} (docs/limits.md)`);
    }
  }
  const mounts = Array.isArray(spec['mounts']) ? (spec['mounts'] as unknown[]) : [];
  mounts.forEach((m, i) => {
    if (!isObj(m) || !Array.isArray(m['options'])) return;
    const shared = (m['options'] as unknown[]).find((o) => o === 'rshared' || o === 'shared');
    if (shared !== undefined) {
      throw new UnimplementedError(`mounts[${i}] (${String(m['destination'])}): propagation ${String(shared)} (CRI Bidirectional) is not supported: mounts made in the container cannot reach the host from the VM; rslave (HostToContainer) is (docs/limits.md)`);
    }
  });
}
