/**
 * Host probes for `kata-ts-runtime check`: each one does the real thing
 * (boots a guest, opens a device, adds a tc filter, starts virtiofsd), then
 * undoes it. A probe never throws: it returns a line.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, constants, existsSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parse } from 'smol-toml';
import { jailerPath, type KataConfig } from '../config/index.js';
import { hostTscKhz, jailedCommand, parseUidRange, probeKvm } from '../vm/index.js';
import { qemuHardening } from '../shim/qemu-hardening.js';

export type Status = 'ok' | 'warn' | 'fail';

export interface ProbeLine {
  name: string;
  status: Status;
  detail: string;
  /** A failure here means no pod can run. */
  required: boolean;
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  error?: string;
}

export function run(cmd: string, args: readonly string[], timeoutMs = 15_000): Promise<RunResult> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => { if (stdout.length < 1 << 20) stdout += d.toString(); });
    c.stderr.on('data', (d: Buffer) => { if (stderr.length < 1 << 20) stderr += d.toString(); });
    const t = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.once('error', (e) => { clearTimeout(t); resolve({ code: null, stdout, stderr, error: e.message }); });
    c.once('close', (code) => { clearTimeout(t); resolve({ code, stdout, stderr }); });
  });
}

function said(r: RunResult): string {
  return (r.error ?? (r.stderr.trim() || r.stdout.trim())).split('\n')[0] ?? '';
}

/** The probe initramfs: bare-initrd.img next to the configured initrd (the guest image dir). */
export function bareInitrd(cfg: KataConfig): string {
  return join(dirname(cfg.hypervisor.qemu.initrd), 'bare-initrd.img');
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile() && statSync(p).size > 0;
  } catch {
    return false;
  }
}

export async function qemuVersion(cfg: KataConfig): Promise<string | undefined> {
  const r = await run(cfg.hypervisor.qemu.path, ['--version']);
  return r.code === 0 ? r.stdout.split('\n')[0]?.replace(/^QEMU emulator version\s*/, '') : undefined;
}

export async function probeQemu(cfg: KataConfig): Promise<ProbeLine> {
  const v = await qemuVersion(cfg);
  return v
    ? { name: 'QEMU', status: 'ok', detail: `${cfg.hypervisor.qemu.path} ${v}`, required: true }
    : { name: 'QEMU', status: 'fail', detail: `${cfg.hypervisor.qemu.path} does not run`, required: true };
}

/** Kernel, initrd, image present and of the kind the machine type needs. */
export function probeGuestFiles(cfg: KataConfig): ProbeLine[] {
  const q = cfg.hypervisor.qemu;
  const out: ProbeLine[] = [];
  const head = (p: string, n: number): Buffer => {
    const b = Buffer.alloc(n);
    const fd = openSync(p, 'r');
    try {
      readSync(fd, b, 0, n, 0);
    } finally {
      closeSync(fd);
    }
    return b;
  };
  const line = (name: string, p: string, check: () => string | undefined): void => {
    if (!isFile(p)) {
      out.push({ name, status: 'fail', detail: `${p}: missing or empty (configured in ${cfg.file})`, required: true });
      return;
    }
    const bad = check();
    out.push(bad
      ? { name, status: 'fail', detail: `${p}: ${bad}`, required: true }
      : { name, status: 'ok', detail: `${p} (${(statSync(p).size / 2 ** 20).toFixed(1)} MiB)`, required: true });
  };
  line('guest kernel', q.kernel, () => {
    const b = head(q.kernel, 0x210);
    const elf = b.subarray(0, 4).equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
    const bz = b.subarray(0x202, 0x206).toString('latin1') === 'HdrS';
    if (q.machine_type === 'microvm' && !elf) return 'microvm needs an uncompressed ELF kernel (vmlinux)';
    if (q.machine_type === 'q35' && !elf && !bz) return 'neither an ELF nor a bzImage kernel';
    return undefined;
  });
  line('guest initrd', q.initrd, () => undefined);
  line('guest image', q.image, () => {
    // erofs superblock magic at 1024
    const b = head(q.image, 1028);
    return b.readUInt32LE(1024) === 0xe0f5e1e2 ? undefined : 'not an erofs image';
  });
  return out;
}

/** Boots the bare initrd under `accel` and waits for its marker. */
export async function bootProbe(cfg: KataConfig, accel: 'kvm' | 'tcg'): Promise<ProbeLine> {
  const name = accel === 'kvm' ? 'KVM' : 'TCG';
  const q = cfg.hypervisor.qemu;
  const initrd = bareInitrd(cfg);
  const required = q.machine_accelerators === accel;
  if (!isFile(q.kernel) || !isFile(initrd)) {
    return { name, status: 'fail', detail: `not probed: ${isFile(q.kernel) ? initrd : q.kernel} missing`, required };
  }
  if (accel === 'kvm') {
    try {
      const fd = openSync('/dev/kvm', constants.O_RDWR);
      closeSync(fd);
    } catch (err) {
      return { name, status: 'fail', detail: `unusable: /dev/kvm: ${(err as NodeJS.ErrnoException).code}`, required };
    }
    const r = await probeKvm({ kernel: q.kernel, initrd, qemuBinary: q.path, marker: 'BARE-INIT-REACHED' });
    return r.ok
      ? { name, status: 'ok', detail: `probe guest reached userspace in ${r.ms} ms`, required }
      : { name, status: 'fail', detail: `unusable: ${r.why}`, required };
  }
  const tsc = hostTscKhz();
  const append = ['console=ttyS0', 'panic=-1', 'reboot=t', ...(tsc !== undefined ? [`tsc_early_khz=${tsc}`] : [])].join(' ');
  const t0 = Date.now();
  const r = await run(q.path, [
    '-machine', 'microvm,x-option-roms=off', '-accel', 'tcg', '-cpu', 'max', '-smp', '1', '-m', '128M',
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-kernel', q.kernel, '-initrd', initrd, '-append', append, '-serial', 'stdio',
  ], 60_000);
  const ms = Date.now() - t0;
  if (r.code === 0 && r.stdout.includes('BARE-INIT-REACHED')) {
    return { name, status: 'ok', detail: `probe guest reached userspace in ${ms} ms`, required };
  }
  return { name, status: 'fail', detail: `unusable: qemu exit ${r.code}: ${said(r) || 'no marker within 60 s'}`, required };
}

export function probeDevice(path: string, required: boolean, what: string): ProbeLine {
  try {
    const fd = openSync(path, constants.O_RDWR);
    closeSync(fd);
    return { name: path, status: 'ok', detail: `opened read-write (${what})`, required };
  } catch (err) {
    return { name: path, status: required ? 'fail' : 'warn', detail: `${(err as NodeJS.ErrnoException).code ?? String(err)} (${what})`, required };
  }
}

/** In a throwaway netns: a veth pair, an ingress qdisc and a mirred redirect filter. */
export async function probeMirred(required: boolean): Promise<ProbeLine> {
  const ns = `kata-check-${randomBytes(4).toString('hex')}`;
  const name = 'tc mirred';
  const add = await run('ip', ['netns', 'add', ns]);
  if (add.code !== 0) return { name, status: required ? 'fail' : 'warn', detail: `ip netns add: ${said(add)}`, required };
  try {
    const steps: [string, string[]][] = [
      // A veth pair, as CNI makes (the dummy module is not always there).
      ['ip', ['-n', ns, 'link', 'add', 'kc0', 'type', 'veth', 'peer', 'name', 'kc1']],
      ['tc', ['-n', ns, 'qdisc', 'add', 'dev', 'kc0', 'ingress']],
      ['tc', ['-n', ns, 'filter', 'add', 'dev', 'kc0', 'parent', 'ffff:', 'protocol', 'all', 'u32', 'match', 'u8', '0', '0',
        'action', 'mirred', 'egress', 'redirect', 'dev', 'kc1']],
    ];
    for (const [cmd, args] of steps) {
      const r = await run(cmd, args);
      if (r.code !== 0) return { name, status: required ? 'fail' : 'warn', detail: `${cmd} ${args.slice(2).join(' ')}: ${said(r)}`, required };
    }
    return { name, status: 'ok', detail: 'ingress qdisc + mirred redirect filter added in a scratch netns (tcfilter networking)', required };
  } finally {
    await run('ip', ['netns', 'del', ns]);
  }
}

/** Starts virtiofsd on a scratch dir and waits for its socket. */
export async function probeVirtiofsd(cfg: KataConfig): Promise<ProbeLine> {
  const q = cfg.hypervisor.qemu;
  const required = q.shared_fs === 'virtio-fs';
  const name = 'virtiofsd';
  if (!required) return { name, status: 'ok', detail: `not used (shared_fs = ${q.shared_fs})`, required };
  const bin = q.virtio_fs_daemon;
  if (!isFile(bin)) return { name, status: 'fail', detail: `${bin}: missing`, required };
  const dir = mkdtempSync(join(tmpdir(), 'kata-check-vfsd-'));
  const sock = join(dir, 'vfsd.sock');
  const shared = join(dir, 'shared');
  await run('mkdir', [shared]);
  const child = spawn(bin, [`--socket-path=${sock}`, '-o', `source=${shared}`, '-o', `cache=${q.virtio_fs_cache}`, '-o', 'sandbox=namespace'],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  let exited: string | undefined;
  const gone = new Promise<void>((r) => {
    child.once('exit', (code, sig) => { exited = sig ? `killed by ${sig}` : `exit code ${code}`; r(); });
    child.once('error', (e) => { exited = e.message; r(); });
  });
  try {
    const t0 = Date.now();
    while (Date.now() - t0 < 5_000 && exited === undefined && !existsSync(sock)) await new Promise((r) => setTimeout(r, 20));
    if (existsSync(sock) && exited === undefined) {
      return { name, status: 'ok', detail: `${bin} started and listens (cache=${q.virtio_fs_cache}) in ${Date.now() - t0} ms`, required };
    }
    return { name, status: 'fail', detail: `${bin} did not start: ${exited ?? 'no socket within 5 s'} ${err.trim().split('\n')[0] ?? ''}`.trim(), required };
  } finally {
    if (exited === undefined) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 2_000);
      await gone;
      clearTimeout(t);
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

/** containerd's version and the runtimes its config maps to io.containerd.kata.v2. */
export async function probeContainerd(): Promise<ProbeLine> {
  const name = 'containerd';
  const v = await run('containerd', ['--version']);
  if (v.code !== 0) return { name, status: 'warn', detail: `not found: ${said(v)}`, required: false };
  const version = v.stdout.trim().split(/\s+/).slice(2, 3).join('') || v.stdout.trim();
  const d = await run('containerd', ['config', 'dump'], 10_000);
  if (d.code !== 0) return { name, status: 'warn', detail: `${version}; config dump failed: ${said(d)}`, required: false };
  const kata: string[] = [];
  try {
    const doc = parse(d.stdout) as Record<string, unknown>;
    const walk = (o: unknown, path: string[]): void => {
      if (typeof o !== 'object' || o === null || Array.isArray(o)) return;
      const rec = o as Record<string, unknown>;
      if (rec['runtime_type'] === 'io.containerd.kata.v2') kata.push(path[path.length - 1] ?? '?');
      for (const [k, v2] of Object.entries(rec)) walk(v2, [...path, k]);
    };
    walk(doc, []);
  } catch (err) {
    return { name, status: 'warn', detail: `${version}; config dump not parsed: ${(err as Error).message.split('\n')[0]}`, required: false };
  }
  return kata.length > 0
    ? { name, status: 'ok', detail: `${version}; runtime ${kata.join(', ')} -> io.containerd.kata.v2`, required: false }
    : { name, status: 'warn', detail: `${version}; its config maps no runtime to io.containerd.kata.v2 (see docs/configuration.md)`, required: false };
}

export function probeCgroup2(): ProbeLine {
  const name = 'cgroup v2';
  try {
    const mounts = readFileSync('/proc/self/mounts', 'utf8');
    const unified = mounts.split('\n').some((l) => {
      const f = l.split(' ');
      return f[1] === '/sys/fs/cgroup' && f[2] === 'cgroup2';
    });
    if (!unified) {
      const v2 = mounts.split('\n').map((l) => l.split(' ')).find((f) => f[2] === 'cgroup2')?.[1];
      return { name, status: 'warn', detail: v2 ? `hybrid: cgroup v1 controllers, cgroup2 only at ${v2}` : 'cgroup v1 only (no cgroup2 mount)', required: false };
    }
    const ctrl = readFileSync('/sys/fs/cgroup/cgroup.controllers', 'utf8').trim();
    return { name, status: 'ok', detail: `unified hierarchy; controllers: ${ctrl || '(none)'}`, required: false };
  } catch (err) {
    return { name, status: 'warn', detail: (err as Error).message, required: false };
  }
}

/**
 * The jail each pod's QEMU gets (rootless): kata-ts-jailer really drops to
 * the first uid of `rootless_uids` in a fresh jail and runs `id -u` there.
 * Then every setting that weakens QEMU's hardening, as a warning.
 */
export async function probeJail(cfg: KataConfig): Promise<ProbeLine[]> {
  const h = qemuHardening(cfg);
  const hardening: ProbeLine = h.weakened.length === 0
    ? { name: 'QEMU hardening', status: 'ok', detail: `own uid, no capabilities, no_new_privs, seccomp ${h.seccompsandbox}`, required: false }
    : { name: 'QEMU hardening', status: 'warn', detail: `weakened: ${h.weakened.join('; ')}`, required: false };
  const q = cfg.hypervisor.qemu;
  if (!q.rootless) return [{ name: 'QEMU jail', status: 'warn', detail: 'off (rootless = false): QEMU runs as root', required: false }, hardening];
  let uid: number;
  try {
    uid = parseUidRange(q.rootless_uids, 'rootless_uids').first;
  } catch (err) {
    return [{ name: 'QEMU jail', status: 'fail', detail: `[hypervisor.qemu] ${(err as Error).message}`, required: true }, hardening];
  }
  const jailer = jailerPath(q);
  if (!existsSync(jailer)) {
    return [{ name: 'QEMU jail', status: 'fail', detail: `[hypervisor.qemu] jailer_path = ${JSON.stringify(jailer)}: no such file (scripts/setup.sh builds it)`, required: true }, hardening];
  }
  const root = mkdtempSync(join(tmpdir(), 'kata-ts-jail-probe-'));
  try {
    const plan = { uid, gid: uid, root, readOnly: [], readWrite: [], devices: ['null'], keepCaps: [], taps: [], pdeathsig: false };
    const cmd = jailedCommand(jailer, plan, '/usr/bin/id', ['-u']);
    const r = await run(cmd.command, cmd.args);
    const ok = r.code === 0 && r.stdout.trim() === String(uid);
    return [{
      name: 'QEMU jail',
      status: ok ? 'ok' : 'fail',
      detail: ok ? `${jailer}: uid ${uid} in a private root (uids ${q.rootless_uids})` : `${jailer} failed (${r.code ?? r.error}): ${(r.stderr || r.stdout).trim()}`,
      required: true,
    }, hardening];
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}
