/**
 * QEMU with least privilege (docs/security.md): the command line that starts
 * it through kata-ts-jailer (src/vm/native/jailer.c), which runs as root,
 * opens the pod's taps in its network namespace, builds a mount namespace
 * whose root holds only what this VM needs, and execs QEMU as the VM's own
 * uid with no capabilities and no_new_privs. QEMU's own seccomp filter
 * (`-sandbox`, qemu-args.ts) is applied by QEMU at start.
 *
 * What the jail shows QEMU, each at its host path (no argv translation):
 *   /usr (read-only)           QEMU, its libraries, firmware and modules;
 *                              /lib, /lib64, /bin, /sbin as on the host
 *                              (symlinks into /usr on merged-/usr hosts)
 *   the guest image's files    read-only: kernel, initrd, root disk
 *   <vm dir>/qemu/             read-write, the jailed uid's own: QMP and
 *                              agent sockets, the console log, virtiofsd's
 *                              socket, the migration socket
 *   /dev/{null,zero,urandom}   and /dev/kvm (kvm) or /dev/vhost-net (vhost),
 *                              owned by the jailed uid
 *   with VM templates          the pod's 9p shared dir (read-write: QEMU
 *                              serves 9p itself), a /proc of its own
 *                              processes only (9p changes modes through
 *                              /proc/self/fd; a clone maps its template's
 *                              sealed RAM, a descriptor the jailer opened,
 *                              through /proc/self/fd/4)
 * Nothing else: no /etc, /sys, /run, /var, /home, no other pod.
 */
import { lstatSync, readlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { checkAbsPath, invalid } from './validate.js';
import { DEFAULT_UID_LEASE_DIR, DEFAULT_UID_RANGE, type UidRange } from './uid-lease.js';

/** Kata's default `seccompsandbox`, with elevateprivileges=deny (the shim never daemonizes QEMU). */
export const DEFAULT_SECCOMP_SANDBOX = 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny';

/** Capabilities a jailed QEMU may keep, and why: see needsFileCaps. */
export const FILE_CAPS = ['chown', 'dac_override', 'fowner', 'fsetid'] as const;

/** The first descriptor a tap gets in QEMU (0-2 stdio, 3 an incoming state). */
export const FIRST_TAP_FD = 10;

/** How QemuVm jails QEMU (absent: QEMU runs as the shim's user, root). */
export interface JailSettings {
  /** The kata-ts-jailer binary. */
  jailer: string;
  /** Where uid leases live (default DEFAULT_UID_LEASE_DIR). */
  leaseDir?: string;
  /** Uids to lease from (default DEFAULT_UID_RANGE). */
  uids?: UidRange;
}

export function checkJailSettings(j: JailSettings, field: string): Required<JailSettings> {
  checkAbsPath(j.jailer, `${field}.jailer`);
  const leaseDir = j.leaseDir ?? DEFAULT_UID_LEASE_DIR;
  checkAbsPath(leaseDir, `${field}.leaseDir`);
  const uids = j.uids ?? DEFAULT_UID_RANGE;
  if (!Number.isInteger(uids.first) || !Number.isInteger(uids.last) || uids.first < 1 || uids.last < uids.first) {
    throw invalid(`${field}.uids`, `must be a range of uids above 0 (got ${JSON.stringify(uids)})`);
  }
  return { jailer: j.jailer, leaseDir, uids };
}

/** What one jailed start needs. */
export interface JailPlan {
  uid: number;
  gid: number;
  /** Mount point of the jail's root tmpfs (an empty dir; the mount exists only in QEMU's namespace). */
  root: string;
  readOnly: string[];
  readWrite: string[];
  devices: string[];
  keepCaps: readonly string[];
  /** A /proc showing only the jailed uid's own processes (QEMU's 9p server needs /proc/self/fd). */
  proc?: boolean;
  /**
   * Files the jailer opens read-write (as root, before the uid change) as
   * these descriptors; `sealed`: refused unless a memfd sealed for good.
   */
  inherits?: Array<{ fd: number; path: string; sealed?: boolean }>;
  /** Descriptors QEMU inherits from the shim (every other one above 2 is closed). */
  keepFds?: number[];
  taps: Array<{ fd: number; ifname: string }>;
  netns?: string;
  pdeathsig: boolean;
}

/** /lib, /lib64, /bin, /sbin: a symlink where the host has one (merged /usr), else bound read-only. */
export function systemPaths(): { symlinks: string[]; binds: string[] } {
  const symlinks: string[] = [];
  const binds = ['/usr'];
  for (const p of ['/lib', '/lib64', '/bin', '/sbin']) {
    try {
      const st = lstatSync(p);
      if (st.isSymbolicLink()) symlinks.push(`${p}=${readlinkSync(p)}`);
      else if (st.isDirectory()) binds.push(p);
    } catch {
      // absent on this host
    }
  }
  return { symlinks, binds };
}

/** True when `path` is `root` or lies under it. */
function within(path: string, root: string): boolean {
  return path === root || path.startsWith(root.endsWith('/') ? root : `${root}/`);
}

/**
 * Paths to bind, without nesting: a path under another one of the list is
 * dropped (it is visible through its parent, with the parent's mode, so a
 * read-write path under a read-only one is refused).
 */
export function flattenBinds(readOnly: readonly string[], readWrite: readonly string[]): { readOnly: string[]; readWrite: string[] } {
  const rw = [...new Set(readWrite)].filter((p, _, all) => !all.some((q) => q !== p && within(p, q)));
  for (const p of rw) {
    const parent = readOnly.find((q) => q !== p && within(p, q));
    if (parent !== undefined) throw invalid('jail', `${p} must be writable but lies under read-only ${parent}`);
  }
  // A read-only path that is, or lies under, a writable one is seen through it.
  const ro = [...new Set(readOnly)].filter((p, _, all) => !all.some((q) => q !== p && within(p, q)) && !rw.some((q) => within(p, q)));
  return { readOnly: ro, readWrite: rw };
}

/** The QEMU binary's directory when /usr does not hold it (Kata installs QEMU under /opt/kata/bin). */
export function binaryPaths(binary: string): string[] {
  return within(binary, '/usr') ? [] : [dirname(binary)];
}

/** `kata-ts-jailer <plan> -- <program> <args>`: the jailer execs the program (same pid). */
export function jailedCommand(jailer: string, plan: JailPlan, program: string, args: readonly string[]): { command: string; args: string[] } {
  const sys = systemPaths();
  const binds = flattenBinds([...sys.binds, ...binaryPaths(program), ...plan.readOnly], plan.readWrite);
  const a = ['--uid', String(plan.uid), '--gid', String(plan.gid)];
  if (plan.netns !== undefined) a.push('--netns', plan.netns);
  for (const t of plan.taps) a.push('--tap', `${t.fd}:${t.ifname}`);
  for (const f of plan.inherits ?? []) a.push(f.sealed ? '--inherit-sealed' : '--inherit', `${f.fd}=${f.path}`);
  for (const fd of plan.keepFds ?? []) a.push('--keep-fd', String(fd));
  a.push('--root', plan.root);
  for (const p of binds.readOnly) a.push('--bind-ro', p);
  for (const p of binds.readWrite) a.push('--bind', p);
  for (const s of sys.symlinks) a.push('--symlink', s);
  for (const d of plan.devices) a.push('--dev', d);
  if (plan.proc) a.push('--proc');
  for (const c of plan.keepCaps) a.push('--keep-cap', c);
  if (plan.pdeathsig) a.push('--pdeathsig');
  a.push('--', program, ...args);
  return { command: jailer, args: a };
}
