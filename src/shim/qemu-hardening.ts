/**
 * How hardened a configuration leaves each pod's QEMU (docs/security.md), in
 * one place for the three that must say it: the shim's log at start,
 * `kata-ts-runtime check` and `kata-ts-runtime env`. Every setting that
 * weakens the default is one line naming its key.
 */
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
  if (q.seccompsandbox === '') {
    weakened.push('[hypervisor.qemu] seccompsandbox = "": QEMU runs without its seccomp filter');
  } else {
    const missing = DENIED.filter((f) => !q.seccompsandbox.split(',').includes(f));
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
