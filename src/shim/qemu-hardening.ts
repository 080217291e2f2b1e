/**
 * How hardened a configuration leaves each pod's QEMU (docs/security.md), in
 * one place for the three that must say it: the shim's log at start,
 * `kata-ts-runtime check` and `kata-ts-runtime env`. Every setting that
 * weakens the default is one line naming its key.
 */
import { readFileSync } from 'node:fs';
import { jailerPath, type KataConfig } from '../config/index.js';
import { DEFAULT_SECCOMP_SANDBOX, FILE_CAPS } from '../vm/index.js';

/** The `-sandbox` features the default denies; a configuration without one of them is weaker. */
const DENIED = DEFAULT_SECCOMP_SANDBOX.split(',').filter((f) => f.endsWith('=deny'));

export interface QemuHardening {
  rootless: boolean;
  uids: string;
  jailer: string;
  seccompsandbox: string;
  /** What QEMU keeps inside its jail (empty: nothing). */
  capabilities: string[];
  /** One line per weakening, each naming the key. Empty: the hardened default. */
  weakened: string[];
}

/** Accounts and groups of /etc/passwd and /etc/group whose id lies in `range` ("first-last"), named. */
export function accountsIn(range: string, files: { passwd?: string; group?: string } = {}): string[] {
  const m = /^(\d+)-(\d+)$/.exec(range.trim());
  if (!m) return [];
  const [first, last] = [Number(m[1]), Number(m[2])];
  const out: string[] = [];
  for (const [what, path] of [['user', files.passwd ?? '/etc/passwd'], ['group', files.group ?? '/etc/group']] as const) {
    let text = '';
    try {
      text = readFileSync(path, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      const [name, , id] = line.split(':');
      const n = Number(id);
      if (name && Number.isInteger(n) && n >= first && n <= last) out.push(`${what} ${name} (${n})`);
    }
  }
  return out;
}

export function qemuHardening(cfg: KataConfig): QemuHardening {
  const q = cfg.hypervisor.qemu;
  const weakened: string[] = [];
  const serves9p = q.shared_fs === 'virtio-9p' || cfg.factory.enable_template;
  if (!q.rootless) {
    weakened.push('[hypervisor.qemu] rootless = false: QEMU runs as root with every capability and sees the whole host file system (a guest that escapes into QEMU owns the host)');
  } else if (serves9p) {
    weakened.push(
      `[hypervisor.qemu] shared_fs = "virtio-9p"${cfg.factory.enable_template ? ' ([factory] enable_template needs it)' : ''}: QEMU serves the pod's files itself, ` +
      `so it keeps ${FILE_CAPS.map((c) => `CAP_${c.toUpperCase()}`).join(', ')} inside its jail (still its own uid, no_new_privs, seccomp, the jail's files only)`,
    );
  }
  if (q.rootless) {
    const taken = accountsIn(q.rootless_uids);
    if (taken.length > 0) weakened.push(`[hypervisor.qemu] rootless_uids = ${JSON.stringify(q.rootless_uids)}: ${taken.join(', ')} of this host lie in it (a QEMU with such a uid or gid could reach what they own)`);
  }
  if (q.seccompsandbox === '') {
    weakened.push('[hypervisor.qemu] seccompsandbox = "": QEMU runs without its seccomp filter');
  } else {
    // QEMU takes the last value a feature is given.
    const given = new Map(q.seccompsandbox.split(',').slice(1).map((kv) => kv.split('=') as [string, string]));
    const missing = DENIED.filter((f) => given.get(f.split('=')[0]!) !== 'deny');
    if (missing.length > 0) weakened.push(`[hypervisor.qemu] seccompsandbox = ${JSON.stringify(q.seccompsandbox)}: lacks ${missing.join(', ')}`);
  }
  return {
    rootless: q.rootless,
    uids: q.rootless_uids,
    jailer: jailerPath(q),
    seccompsandbox: q.seccompsandbox === '' ? 'off' : q.seccompsandbox,
    capabilities: !q.rootless ? ['all (root)'] : serves9p ? FILE_CAPS.map((c) => `CAP_${c.toUpperCase()}`) : [],
    weakened,
  };
}
