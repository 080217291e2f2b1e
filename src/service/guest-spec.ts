/**
 * The OCI spec as the guest must see it. containerd writes config.json for a
 * host runtime; in the VM:
 * - root.path is the container's rootfs in the guest's view of the shared dir;
 * - host bind mounts (e.g. CRI's /etc/hosts, resolv.conf, hostname) are shared
 *   into the pod's shared dir by the host and their sources rewritten — the
 *   guest never sees another host path; binds of host /dev, /proc and /sys
 *   paths are dropped (the guest has its own);
 * - the network namespace is dropped: the VM is the pod's sandbox, its
 *   network is the pod's network (as in Kata); other namespaces given by a
 *   host path (CRI joins workload containers to the pause container's pid,
 *   ipc and uts namespaces through /proc/<host pid>/ns/…) point at the pod's
 *   sandbox container in the guest (/proc/<guest pid>/ns/…), or become new
 *   ones when there is none;
 * - hooks, linux.devices and AppArmor/SELinux labels name host things: dropped.
 * Pure: the caller performs the binds it returns.
 */
import { posix } from 'node:path';
import { InvalidArgumentError } from '../errors/index.js';

export type Json = Record<string, unknown>;

export interface SharedBind {
  /** Host path to bind into the shared dir. */
  source: string;
  /** Relative path under the container's dir in the shared dir. */
  target: string;
  readOnly: boolean;
}

export interface GuestSpecResult {
  spec: Json;
  binds: SharedBind[];
  /** What was dropped, for the log. */
  dropped: string[];
}

const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function isBind(m: Json): boolean {
  const opts = Array.isArray(m['options']) ? (m['options'] as unknown[]) : [];
  return m['type'] === 'bind' || opts.includes('bind') || opts.includes('rbind');
}

/**
 * @param guestContainerDir the container's dir in the guest (`<guest shared>/<id>`); its rootfs is `<dir>/rootfs`.
 */
const NS_FILE: Record<string, string> = { pid: 'pid', ipc: 'ipc', uts: 'uts', mount: 'mnt', cgroup: 'cgroup', user: 'user' };

export interface GuestSpecOptions {
  /** The guest pid of the pod's sandbox (pause) container, whose namespaces others join. */
  sandboxGuestPid?: number;
}

export function guestSpec(hostSpec: unknown, guestContainerDir: string, opts: GuestSpecOptions = {}): GuestSpecResult {
  if (!isObj(hostSpec)) throw new InvalidArgumentError('config.json: must be a JSON object');
  if (!isObj(hostSpec['process'])) throw new InvalidArgumentError('config.json: process: must be an object');
  const spec = structuredClone(hostSpec);
  const dropped: string[] = [];
  const binds: SharedBind[] = [];

  const root = isObj(spec['root']) ? spec['root'] : {};
  spec['root'] = { path: posix.join(guestContainerDir, 'rootfs'), readonly: root['readonly'] === true };

  if (spec['hooks'] !== undefined) { delete spec['hooks']; dropped.push('hooks'); }
  const proc = spec['process'] as Json;
  for (const k of ['apparmorProfile', 'selinuxLabel']) if (k in proc) { delete proc[k]; dropped.push(`process.${k}`); }

  const mounts = Array.isArray(spec['mounts']) ? (spec['mounts'] as unknown[]) : [];
  const out: Json[] = [];
  mounts.forEach((mv, i) => {
    if (!isObj(mv)) throw new InvalidArgumentError(`config.json: mounts[${i}]: must be an object`);
    const m = { ...mv };
    if (!isBind(m)) { out.push(m); return; }
    const src = m['source'];
    if (typeof src !== 'string' || !src.startsWith('/')) throw new InvalidArgumentError(`config.json: mounts[${i}].source: a bind mount needs an absolute source`);
    if (/^\/(dev|proc|sys)(\/|$)/.test(src)) { dropped.push(`mounts[${i}] (${src})`); return; }
    const opts = Array.isArray(m['options']) ? (m['options'] as unknown[]).filter((o): o is string => typeof o === 'string') : [];
    const target = posix.join('mounts', `${i}-${posix.basename(src).replace(/[^A-Za-z0-9_.-]/g, '_') || 'root'}`);
    binds.push({ source: src, target, readOnly: opts.includes('ro') });
    m['source'] = posix.join(guestContainerDir, target);
    out.push(m);
  });
  if (spec['mounts'] !== undefined) spec['mounts'] = out;

  if (isObj(spec['linux'])) {
    const linux = spec['linux'];
    if (Array.isArray(linux['namespaces'])) {
      const out: Json[] = [];
      for (const n of linux['namespaces'] as unknown[]) {
        if (!isObj(n)) continue;
        const type = String(n['type']);
        const path = typeof n['path'] === 'string' ? n['path'] : '';
        if (type === 'network') { dropped.push(`linux.namespaces[network${path ? ` ${path}` : ''}]`); continue; }
        if (!path) { out.push(n); continue; }
        const file = NS_FILE[type];
        if (opts.sandboxGuestPid && file && type !== 'mount' && type !== 'user') {
          out.push({ type, path: `/proc/${opts.sandboxGuestPid}/ns/${file}` });
        } else {
          dropped.push(`linux.namespaces[${type} ${path}] (a new one)`);
          out.push({ type });
        }
      }
      linux['namespaces'] = out;
    }
    if (linux['devices'] !== undefined) { delete linux['devices']; dropped.push('linux.devices'); }
    for (const k of ['mountLabel']) if (k in linux) { delete linux[k]; dropped.push(`linux.${k}`); }
  }
  return { spec, binds, dropped };
}

/** A spec's string annotations ({} when it has none). */
export function specAnnotations(spec: unknown): Record<string, string> {
  const a = (spec as { annotations?: unknown } | null)?.annotations;
  if (typeof a !== 'object' || a === null) return {};
  return Object.fromEntries(Object.entries(a).filter((e): e is [string, string] => typeof e[1] === 'string'));
}

/** An exec's OCI Process for the guest: host labels dropped. */
export function guestProcess(process: unknown): Json {
  if (!isObj(process)) throw new InvalidArgumentError('spec: must be an OCI Process object');
  const p = structuredClone(process);
  delete p['apparmorProfile'];
  delete p['selinuxLabel'];
  if (!Array.isArray(p['args']) || p['args'].length === 0) throw new InvalidArgumentError('spec.args: must not be empty');
  return p;
}
