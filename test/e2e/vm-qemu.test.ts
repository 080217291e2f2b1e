// QemuVm against real QEMU (TCG, microvm): boot, QMP, pause/resume, console,
// stop and teardown, crash detection, start failures, dead-shim cleanup and
// re-attach, the accelerator probe, and virtio-fs isolation.
//
// Guest: the project's kernel (build/guest/vmlinux) when it exists, else the
// Debian cloud kernel extracted here from its .deb; always our own tiny
// busybox initramfs (built below, in the test's temp dir), whose init does
// what the kernel parameter `vmtest=<mode>` says.

import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { gunzipSync, gzipSync } from 'node:zlib';
import { Code, StatusError } from '../../src/errors/index.js';
import { projectRoot } from '../harness/busybox.js';
import { silentLogger } from '../../src/log/index.js';
import {
  BootVmProvider,
  chooseAccel,
  cleanupFromState,
  identify,
  isAlive,
  mountsUnder,
  QemuVm,
  readStateFile,
  resetAccelCache,
  type QemuVmOptions,
  type Vm,
  type VmExit,
  type VmState,
} from '../../src/vm/index.js';

// ---------------------------------------------------------------------------
// fixture: kernel + initramfs

const BOOT_MS = 60_000;


/** LZ4 legacy frame (what Debian's bzImage carries) → bytes. */
function lz4LegacyDecode(src: Buffer): Buffer {
  const MAGIC = 0x184c2102;
  if (src.readUInt32LE(0) !== MAGIC) throw new Error('not an LZ4 legacy frame');
  const out: Buffer[] = [];
  let pos = 4;
  while (pos + 4 <= src.length) {
    const size = src.readUInt32LE(pos);
    pos += 4;
    if (size === MAGIC) continue;
    if (size > src.length - pos) break; // the kernel's trailing length field
    out.push(lz4Block(src.subarray(pos, pos + size), 8 << 20));
    pos += size;
  }
  return Buffer.concat(out);
}

function lz4Block(src: Buffer, max: number): Buffer {
  const dst = Buffer.allocUnsafe(max);
  let ip = 0;
  let op = 0;
  while (ip < src.length) {
    const token = src[ip++]!;
    let lit = token >> 4;
    if (lit === 15) {
      let b: number;
      do {
        b = src[ip++]!;
        lit += b;
      } while (b === 255);
    }
    src.copy(dst, op, ip, ip + lit);
    ip += lit;
    op += lit;
    if (ip >= src.length) break;
    const offset = src[ip]! | (src[ip + 1]! << 8);
    ip += 2;
    let mlen = token & 15;
    if (mlen === 15) {
      let b: number;
      do {
        b = src[ip++]!;
        mlen += b;
      } while (b === 255);
    }
    mlen += 4;
    let ref = op - offset;
    if (offset >= mlen) {
      dst.copy(dst, op, ref, ref + mlen);
      op += mlen;
    } else {
      for (let i = 0; i < mlen; i++) dst[op++] = dst[ref++]!;
    }
  }
  return dst.subarray(0, op);
}

/** The uncompressed kernel inside a bzImage (LZ4, gzip or XZ payload: Debian's cloud and generic kernels). */
function extractVmlinux(bzImage: Buffer): Buffer {
  const setupSects = bzImage[0x1f1] || 4;
  const payloadOffset = bzImage.readUInt32LE(0x248);
  const payloadLength = bzImage.readUInt32LE(0x24c);
  const start = (setupSects + 1) * 512 + payloadOffset;
  const payload = bzImage.subarray(start, start + payloadLength);
  if (payload.readUInt32LE(0) === 0x184c2102) return lz4LegacyDecode(payload);
  if (payload[0] === 0x1f && payload[1] === 0x8b) return gunzipSync(payload);
  if (payload.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) {
    // xz(1) (the guest build needs it too); `-q` and status 0 or 2 (warnings: the payload's trailing bytes).
    const r = spawnSync('xz', ['-dcq'], { input: payload, maxBuffer: 512 * 1024 * 1024, timeout: 120_000 });
    if (r.stdout?.length && r.stdout.subarray(0, 4).toString('hex') === '7f454c46') return r.stdout;
    throw new Error(`xz could not decode the bzImage payload: ${r.stderr?.toString() ?? r.error?.message}`);
  }
  throw new Error(`unsupported bzImage payload (magic ${payload.subarray(0, 4).toString('hex')})`);
}

function kernelVersionOf(vmlinux: string): string | undefined {
  const buf = readFileSync(vmlinux);
  const at = buf.indexOf('Linux version ');
  if (at < 0) return undefined;
  return buf.subarray(at + 14, at + 80).toString('latin1').split(' ')[0];
}

/**
 * The Debian cloud kernel .deb: the exact package named by the guest build's
 * manifest when there is one (its cache, apt's cache, else `apt-get
 * download`), otherwise any cloud kernel in apt's cache or apt's candidate.
 */
function findKernelDeb(root: string, work: string): string | undefined {
  const dirs = [join(root, 'build/cache/guest'), '/var/cache/apt/archives'].filter((d) => existsSync(d));
  let want: { pkg: string; version: string } | undefined;
  const manifest = join(root, 'build/guest/manifest.json');
  if (existsSync(manifest)) {
    const m = JSON.parse(readFileSync(manifest, 'utf8')) as { kernel?: { package?: string; packageVersion?: string } };
    if (m.kernel?.package && m.kernel.packageVersion) want = { pkg: m.kernel.package, version: m.kernel.packageVersion };
  }
  if (want) {
    const name = `${want.pkg}_${want.version.replaceAll(':', '%3a')}_amd64.deb`;
    for (const d of dirs) if (existsSync(join(d, name))) return join(d, name);
  } else {
    for (const d of dirs) {
      const found = readdirSync(d).filter((f) => /^linux-image-[0-9].*-cloud-amd64_.*_amd64\.deb$/.test(f)).sort();
      if (found.length > 0) return join(d, found.at(-1)!);
    }
    const dep = spawnSync('apt-cache', ['depends', 'linux-image-cloud-amd64'], { encoding: 'utf8', timeout: 30_000 });
    const pkg = /Depends: (linux-image-\S+-cloud-amd64)/.exec(dep.stdout ?? '')?.[1];
    if (pkg) want = { pkg, version: '' };
  }
  if (!want) return undefined;
  const spec = want.version ? `${want.pkg}=${want.version}` : want.pkg;
  const dl = spawnSync('apt-get', ['download', '-qq', '-o', 'APT::Sandbox::User=root', spec], { cwd: work, encoding: 'utf8', timeout: 300_000 });
  if (dl.status !== 0) return undefined;
  const got = readdirSync(work).find((f) => f.startsWith(want.pkg) && f.endsWith('.deb'));
  return got ? join(work, got) : undefined;
}

const MODULES = ['virtio_ring', 'virtio', 'virtio_mmio', 'virtio_pci_legacy_dev', 'virtio_pci_modern_dev', 'virtio_pci', 'virtio_console', 'fuse', 'virtiofs'];

interface CpioEntry {
  name: string;
  mode: number;
  data?: Buffer;
  rdev?: [number, number];
}

/** A newc cpio archive (what the kernel unpacks as initramfs). */
function cpioNewc(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  const pad = (n: number): Buffer => Buffer.alloc((4 - (n % 4)) % 4);
  let ino = 1;
  const push = (e: CpioEntry): void => {
    const data = e.data ?? Buffer.alloc(0);
    const name = Buffer.from(e.name + '\0');
    const f = (v: number): string => v.toString(16).padStart(8, '0');
    const header = '070701' + [ino++, e.mode, 0, 0, 1, 0, data.length, 0, 0, e.rdev?.[0] ?? 0, e.rdev?.[1] ?? 0, name.length, 0].map(f).join('');
    parts.push(Buffer.from(header), name, pad(110 + name.length), data, pad(data.length));
  };
  for (const e of entries) push(e);
  push({ name: 'TRAILER!!!', mode: 0 });
  return Buffer.concat(parts);
}

const INIT = `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo VMTEST-USERSPACE-UP
mode=
for w in $(cat /proc/cmdline); do case $w in vmtest=*) mode=\${w#vmtest=};; esac; done
load() { for m in "$@"; do insmod /lib/modules/$m.ko 2>/dev/null || echo "VMTEST-INSMOD-FAIL $m"; done; }
case "$mode" in
idle)
  load virtio_ring virtio virtio_mmio virtio_console
  port=
  i=0
  while [ -z "$port" ] && [ $i -lt 50 ]; do
    for n in /sys/class/virtio-ports/*/name; do
      [ "$(cat $n 2>/dev/null)" = agent.0 ] && port=/dev/$(basename $(dirname $n))
    done
    [ -z "$port" ] && sleep 0.1
    i=$((i+1))
  done
  echo "VMTEST-AGENT-PORT $port"
  if [ -n "$port" ]; then (while true; do echo VMTEST-PING >"$port" 2>/dev/null; sleep 0.2; done) & fi
  while true; do sleep 3600; done ;;
fsidle)
  load virtio_ring virtio virtio_mmio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci fuse virtiofs
  mkdir -p /mnt
  mount -t virtiofs kataShared /mnt && echo "VMTEST-FS-READY $(cat /mnt/hello.txt)"
  while true; do sleep 3600; done ;;
virtiofs)
  load virtio_ring virtio virtio_mmio fuse virtiofs
  mkdir -p /mnt
  mount -t virtiofs kataShared /mnt && echo VMTEST-MOUNT-OK
  echo "VMTEST-SHARED-CONTENT $(cat /mnt/hello.txt)"
  echo "VMTEST-LISTING $(ls -a /mnt | tr '\\n' ' ')"
  if cat /mnt/abs-link >/dev/null 2>&1; then echo "VMTEST-ESCAPE abs $(cat /mnt/abs-link)"; else echo VMTEST-BLOCKED abs; fi
  if cat /mnt/rel-link >/dev/null 2>&1; then echo "VMTEST-ESCAPE rel $(cat /mnt/rel-link)"; else echo VMTEST-BLOCKED rel; fi
  if cat /mnt/../outside/secret.txt >/dev/null 2>&1; then echo VMTEST-ESCAPE dotdot; else echo VMTEST-BLOCKED dotdot; fi
  echo "VMTEST-FIND $(find /mnt -name 'secret*' | tr '\\n' ' ')"
  echo "VMTEST-GREP $(grep -rl TOP-SECRET /mnt 2>/dev/null | tr '\\n' ' ')"
  echo guest-wrote >/mnt/from-guest.txt && echo VMTEST-WROTE
  i=0
  while [ $i -lt 150 ] && [ ! -f /mnt/late/late.txt ]; do sleep 0.2; i=$((i+1)); done
  echo "VMTEST-LATE $(cat /mnt/late/late.txt 2>/dev/null || echo missing)"
  sync
  echo VMTEST-DONE
  poweroff -f ;;
*)
  echo VMTEST-PROBE-OK
  poweroff -f ;;
esac
`;

interface Guest {
  kernel: string;
  /** A compressed kernel for q35. */
  bzImage: string | undefined;
  initrd: string;
  kernelSource: string;
  /** True when the initramfs holds virtio modules matching the kernel. */
  modules: boolean;
}

let guest: Guest | undefined;
let skipReason: string | undefined;
let fixtureDir: string | undefined;

before(async () => {
  if (spawnSync('qemu-system-x86_64', ['--version']).status !== 0) {
    skipReason = 'qemu-system-x86_64 not installed';
    return;
  }
  if (!existsSync('/bin/busybox')) {
    skipReason = '/bin/busybox (busybox-static) not installed';
    return;
  }
  fixtureDir = mkdtempSync(join(tmpdir(), 'vm-e2e-guest-'));
  const t0 = Date.now();
  const root = projectRoot();
  const built = join(root, 'build/guest/vmlinux');
  const deb = findKernelDeb(root, fixtureDir);
  let kernel: string | undefined;
  let kernelSource = '';
  let modDir: string | undefined;
  let bzImage: string | undefined;
  if (deb) {
    const x = join(fixtureDir, 'deb');
    mkdirSync(x);
    const tar = spawnSync('sh', ['-c', `dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" --wildcards './boot/vmlinuz-*' ${MODULES.map((m) => `'*/${m}.ko'`).join(' ')}`, 'sh', deb, x], { encoding: 'utf8', timeout: 120_000 });
    if (tar.status === 0) {
      const vmlinuz = readdirSync(join(x, 'boot')).find((f) => f.startsWith('vmlinuz-'));
      if (vmlinuz) {
        kernel = join(fixtureDir, 'vmlinux');
        bzImage = join(x, 'boot', vmlinuz);
        writeFileSync(kernel, extractVmlinux(readFileSync(bzImage)));
        kernelSource = `${deb} (extracted)`;
        modDir = join(x, 'lib/modules', vmlinuz.slice('vmlinuz-'.length));
      }
    }
  }
  if (existsSync(built)) {
    // Prefer the project's kernel; keep the .deb modules only if they match it.
    const version = kernelVersionOf(built);
    if (!modDir || !version || !modDir.endsWith(version)) modDir = undefined;
    kernel = built;
    kernelSource = built;
    bzImage = existsSync(join(root, 'build/guest/bzImage')) ? join(root, 'build/guest/bzImage') : undefined;
  }
  if (!kernel) {
    skipReason = 'no guest kernel: build/guest/vmlinux missing and no linux-image-*-cloud-amd64 .deb available';
    return;
  }
  const entries: CpioEntry[] = [
    ...['bin', 'dev', 'proc', 'sys', 'mnt', 'lib', 'lib/modules'].map((d) => ({ name: d, mode: 0o040755 })),
    { name: 'dev/console', mode: 0o020600, rdev: [5, 1] },
    { name: 'bin/busybox', mode: 0o100755, data: readFileSync('/bin/busybox') },
    { name: 'init', mode: 0o100755, data: Buffer.from(INIT) },
  ];
  let modules = false;
  if (modDir) {
    const found = new Map<string, string>();
    const walk = (d: string): void => {
      for (const f of readdirSync(d)) {
        const p = join(d, f);
        if (statSync(p).isDirectory()) walk(p);
        else if (f.endsWith('.ko')) found.set(f.slice(0, -3), p);
      }
    };
    walk(modDir);
    modules = MODULES.every((m) => found.has(m));
    for (const [m, p] of found) entries.push({ name: `lib/modules/${m}.ko`, mode: 0o100644, data: readFileSync(p) });
  }
  const initrd = join(fixtureDir, 'initrd.cpio.gz');
  writeFileSync(initrd, gzipSync(cpioNewc(entries), { level: 1 }));
  guest = { kernel, bzImage, initrd, kernelSource, modules };
  console.log(`# guest fixture in ${Date.now() - t0} ms: kernel ${kernelSource}, modules ${modules}`);
});

after(() => {
  if (fixtureDir) rmSync(fixtureDir, { recursive: true, force: true });
});

function needGuest(t: TestContext, modules = false): Guest | undefined {
  if (!guest) {
    t.skip(skipReason ?? 'no guest');
    return undefined;
  }
  if (modules && !guest.modules) {
    t.skip('no virtio modules matching the guest kernel');
    return undefined;
  }
  return guest;
}

// ---------------------------------------------------------------------------
// helpers

function tempRoot(t: TestContext, prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

function baseOptions(g: Guest, dir: string, sandboxId: string, mode: string): QemuVmOptions {
  return {
    sandboxId,
    dir,
    machine: 'microvm',
    accel: 'tcg',
    vcpus: 1,
    memoryMiB: 256,
    kernel: g.kernel,
    initrd: g.initrd,
    kernelParams: [`vmtest=${mode}`],
    logger: silentLogger(),
    timeouts: { qmpConnectMs: 15_000 },
  };
}

/** Resolves with the console text once it matches `re`. */
async function waitConsole(path: string, re: RegExp, timeoutMs: number): Promise<string> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const text = existsSync(path) ? readFileSync(path, 'utf8') : '';
    if (re.test(text)) return text;
    if (Date.now() > until) throw new Error(`console never matched ${re} within ${timeoutMs} ms; tail:\n${text.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A ready probe for waitReady: the guest init's marker on the console. */
function consoleProbe(vm: QemuVm, marker: string) {
  return async (): Promise<void> => {
    const text = existsSync(vm.consoleLogPath) ? readFileSync(vm.consoleLogPath, 'utf8') : '';
    if (!text.includes(marker)) throw new Error(`no ${marker} yet`);
  };
}

/** Registers a safety net: whatever a test leaves running is removed. */
function guard(t: TestContext, vm: QemuVm): void {
  t.after(async () => {
    const st = vm.state();
    if (vm.phase !== 'stopped') await vm.stop().catch(() => {});
    await cleanupFromState(st, { logger: silentLogger() }).catch(() => {});
  });
}

function noneLeft(st: VmState): void {
  if (st.qemu) assert.equal(isAlive(st.qemu), false, `qemu pid ${st.qemu.pid} still alive`);
  if (st.virtiofsd) assert.equal(isAlive(st.virtiofsd), false, `virtiofsd pid ${st.virtiofsd.pid} still alive`);
  assert.equal(existsSync(st.qmpSocket), false, 'qmp socket left');
  assert.equal(existsSync(st.dir), false, `${st.dir} left`);
  assert.deepEqual(mountsUnder(dirname(st.dir)), [], 'mounts left');
}

function hasCode(code: Code) {
  return (err: unknown): boolean => err instanceof StatusError && err.code === code;
}

// ---------------------------------------------------------------------------
// tests

test('boot under TCG: QMP status, pause/resume, console, agent port, stop leaves nothing', { timeout: 120_000 }, async (t) => {
  const g = needGuest(t);
  if (!g) return;
  const root = tempRoot(t, 'vm-e2e-');
  const dir = join(root, 'sb');
  const vm = new QemuVm(baseOptions(g, dir, 'boot1', 'idle'));
  guard(t, vm);
  const exits: VmExit[] = [];
  vm.on('exit', (e) => exits.push(e));

  const t0 = Date.now();
  await vm.start();
  const tStarted = Date.now() - t0;
  assert.equal(vm.phase, 'running');
  assert.equal(statSync(dir).mode & 0o777, 0o700);
  const st = vm.state();
  assert.ok(st.qemu && isAlive(st.qemu));
  assert.deepEqual(readStateFile(dir), st, 'vm.json holds the state');
  // detached: its own session / process group
  const stat = readFileSync(`/proc/${st.qemu.pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  assert.equal(Number(fields[2]), st.qemu.pid, 'qemu leads its own process group');
  assert.equal(Number(fields[3]), st.qemu.pid, 'qemu leads its own session');

  assert.deepEqual(await vm.queryStatus(), { status: 'running', running: true });
  await vm.waitReady(consoleProbe(vm, 'VMTEST-USERSPACE-UP'), { timeoutMs: BOOT_MS });
  const tReady = Date.now() - t0;

  await vm.pause();
  assert.equal(vm.phase, 'paused');
  assert.equal((await vm.queryStatus()).status, 'paused');
  await assert.rejects(vm.pause(), (err: unknown) => hasCode(Code.FAILED_PRECONDITION)(err) && /cannot pause in paused state/.test((err as Error).message));
  await vm.resume();
  assert.equal(vm.phase, 'running');
  assert.equal((await vm.queryStatus()).status, 'running');

  // The agent channel: the guest writes to virtio-serial port agent.0, we read agent.sock.
  const consoleText = await waitConsole(vm.consoleLogPath, /VMTEST-AGENT-PORT/, BOOT_MS);
  if (!g.modules) {
    // Not silently: under CI the fixture must have the modules (the project's guest image gives them).
    assert.ok(process.env.CI !== 'true', `no virtio modules matching the guest kernel (${g.kernelSource}): the agent-port check cannot run`);
    t.diagnostic('SKIPPED: the agent-port check (no virtio modules matching the guest kernel)');
  } else {
    assert.match(consoleText, /VMTEST-AGENT-PORT \/dev\/vport\d+p\d+/);
    assert.equal(vm.agent.transport, 'virtio-serial');
    const sock = vm.agent.transport === 'virtio-serial' ? vm.agent.socketPath : '';
    const got = await new Promise<string>((res, rej) => {
      const s = connect(sock);
      let buf = '';
      const timer = setTimeout(() => {
        s.destroy();
        rej(new Error(`no ping on the agent port; got ${JSON.stringify(buf)}`));
      }, 20_000);
      s.on('data', (d) => {
        buf += d.toString();
        if (buf.includes('VMTEST-PING')) {
          clearTimeout(timer);
          s.destroy();
          res(buf);
        }
      });
      s.on('error', rej);
    });
    assert.match(got, /VMTEST-PING/);
  }
  assert.match(readFileSync(vm.consoleLogPath, 'utf8'), /Linux version/);

  const t1 = Date.now();
  await vm.stop();
  const tStop = Date.now() - t1;
  assert.equal(vm.phase, 'stopped');
  assert.equal(exits.length, 1);
  assert.equal(exits[0]!.expected, true);
  noneLeft(st);
  await vm.stop(); // idempotent
  t.diagnostic(`start (QMP up) ${tStarted} ms, guest userspace ${tReady} ms, stop ${tStop} ms, kernel ${g.kernelSource}`);
});

test('kill -9 of QEMU: exit event at once, unexpected; stop afterwards is fine', { timeout: 120_000 }, async (t) => {
  const g = needGuest(t);
  if (!g) return;
  const root = tempRoot(t, 'vm-e2e-');
  const vm = new QemuVm(baseOptions(g, join(root, 'sb'), 'crash1', 'idle'));
  guard(t, vm);
  await vm.start();
  const st = vm.state();
  const exited = new Promise<VmExit>((r) => vm.once('exit', r));
  const t0 = Date.now();
  process.kill(st.qemu!.pid, 'SIGKILL');
  const e = await exited;
  const ms = Date.now() - t0;
  assert.equal(e.expected, false);
  assert.equal(e.signal, 'SIGKILL');
  assert.equal(vm.phase, 'exited');
  // The exit is reported by the event (no timing figure here: bench/ measures; a generous bound for a loaded machine).
  assert.ok(ms < 10_000, `exit seen after ${ms} ms`);
  await assert.rejects(vm.pause(), hasCode(Code.FAILED_PRECONDITION));
  await vm.stop();
  assert.equal(vm.phase, 'stopped');
  noneLeft(st);
  t.diagnostic(`exit event ${ms} ms after SIGKILL`);
});

test('waitReady: timeout carries the console tail; QEMU exit ends the wait', { timeout: 120_000 }, async (t) => {
  const g = needGuest(t);
  if (!g) return;
  const root = tempRoot(t, 'vm-e2e-');
  const vm = new QemuVm(baseOptions(g, join(root, 'sb'), 'ready1', 'idle'));
  guard(t, vm);
  await vm.start();
  await vm.waitReady(consoleProbe(vm, 'VMTEST-USERSPACE-UP'), { timeoutMs: BOOT_MS });
  await assert.rejects(vm.waitReady(async () => { throw new Error('agent says no'); }, { timeoutMs: 300 }), (err: unknown) => {
    assert.ok(hasCode(Code.DEADLINE_EXCEEDED)(err));
    const m = (err as Error).message;
    assert.match(m, /guest not ready within 300 ms/);
    assert.match(m, /last error: agent says no/);
    assert.match(m, /VMTEST-USERSPACE-UP/, 'console tail in the error');
    return true;
  });
  const waiting = vm.waitReady(async () => { throw new Error('never'); }, { timeoutMs: 30_000 });
  setTimeout(() => process.kill(vm.pid!, 'SIGKILL'), 200);
  await assert.rejects(waiting, (err: unknown) => hasCode(Code.UNAVAILABLE)(err) && /qemu exited while waiting/.test((err as Error).message));
  await vm.stop();
});

test('start failures: a missing kernel names the path; a bad kernel shows QEMU\'s words; nothing left', { timeout: 60_000 }, async (t) => {
  const g = needGuest(t);
  if (!g) return;
  const root = tempRoot(t, 'vm-e2e-');
  const missing = join(root, 'no-such', 'vmlinux');
  const vm = new QemuVm({ ...baseOptions(g, join(root, 'sb1'), 'bad1', 'idle'), kernel: missing });
  await assert.rejects(vm.start(), (err: unknown) => {
    assert.ok(hasCode(Code.INVALID_ARGUMENT)(err));
    assert.ok((err as Error).message.includes(missing), (err as Error).message);
    return true;
  });
  assert.equal(vm.phase, 'stopped');
  assert.equal(existsSync(join(root, 'sb1')), false);

  const garbage = join(root, 'garbage-kernel');
  writeFileSync(garbage, 'this is not a kernel\n'.repeat(100));
  const vm2 = new QemuVm({ ...baseOptions(g, join(root, 'sb2'), 'bad2', 'idle'), kernel: garbage });
  const exits: VmExit[] = [];
  vm2.on('exit', (e) => exits.push(e));
  await assert.rejects(vm2.start(), (err: unknown) => {
    assert.ok(hasCode(Code.UNAVAILABLE)(err), String(err));
    assert.match((err as Error).message, /qemu exit code 1: .*invalid kernel header|qemu exit code 1: .*kernel/i);
    return true;
  });
  assert.equal(vm2.phase, 'stopped');
  assert.equal(exits.length, 0, 'no exit event for a VM that never started');
  assert.equal(existsSync(join(root, 'sb2')), false);
  const st = vm2.state();
  if (st.qemu) assert.equal(isAlive(st.qemu), false);

  // A dir that already holds a VM's state file is refused.
  const busy = join(root, 'sb3');
  mkdirSync(busy);
  writeFileSync(join(busy, 'vm.json'), '{}');
  const vm3 = new QemuVm(baseOptions(g, busy, 'bad3', 'idle'));
  await assert.rejects(vm3.start(), hasCode(Code.FAILED_PRECONDITION));
  assert.ok(existsSync(join(busy, 'vm.json')), 'someone else\'s state file is kept');
});

/** Starts a VM from a separate Node process that then exits (a "dead shim"). */
async function startFromDeadShim(t: TestContext, opts: Omit<QemuVmOptions, 'logger'>): Promise<VmState> {
  const here = dirname(fileURLToPath(import.meta.url));
  const vmIndex = resolve(here, '../../src/vm/index.js');
  const logIndex = resolve(here, '../../src/log/index.js');
  const script = `
    const { QemuVm } = await import(${JSON.stringify(vmIndex)});
    const { silentLogger } = await import(${JSON.stringify(logIndex)});
    const vm = new QemuVm({ ...JSON.parse(process.argv[1]), logger: silentLogger() });
    await vm.start();
    process.stdout.write(JSON.stringify(vm.state()) + '\\n');
    process.exit(0);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, JSON.stringify(opts)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const code = await new Promise<number | null>((r) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('exit', (c) => {
      clearTimeout(timer);
      r(c);
    });
  });
  assert.equal(code, 0, `shim process failed: ${err}`);
  const state = JSON.parse(out) as VmState;
  t.after(() => cleanupFromState(state, { logger: silentLogger() }).then(() => {}, () => {}));
  return state;
}

test('dead shim: QEMU outlives it; attach, pause/resume, kill -9 seen through QMP close; cleanup', { timeout: 120_000 }, async (t) => {
  const g = needGuest(t);
  if (!g) return;
  const root = tempRoot(t, 'vm-e2e-');
  const { logger: _l, ...opts } = baseOptions(g, join(root, 'sb'), 'attach1', 'idle');
  const state = await startFromDeadShim(t, opts);
  assert.ok(state.qemu && isAlive(state.qemu), 'qemu survived its parent');
  assert.deepEqual(readStateFile(state.dir), state);

  const vm = await QemuVm.attach(readStateFile(state.dir), { logger: silentLogger() });
  assert.equal(vm.phase, 'running');
  assert.equal(vm.pid, state.qemu.pid);
  await vm.pause();
  assert.equal((await vm.queryStatus()).status, 'paused');
  await vm.resume();
  assert.equal((await vm.queryStatus()).status, 'running');

  const exited = new Promise<VmExit>((r) => vm.once('exit', r));
  const t0 = Date.now();
  process.kill(state.qemu.pid, 'SIGKILL');
  const e = await exited;
  const ms = Date.now() - t0;
  assert.equal(e.expected, false);
  assert.equal(e.code, null, 'not our child: no exit status');
  // The exit is reported by the event (no timing figure here: bench/ measures; a generous bound for a loaded machine).
  assert.ok(ms < 10_000, `exit seen after ${ms} ms`);
  await vm.stop();
  noneLeft(state);
  t.diagnostic(`re-attached VM: exit event ${ms} ms after SIGKILL`);
});

test('cleanupFromState kills a live VM left by a dead shim, and spares a recycled pid', { timeout: 120_000 }, async (t) => {
  const g = needGuest(t);
  if (!g) return;
  const root = tempRoot(t, 'vm-e2e-');
  const { logger: _l, ...opts } = baseOptions(g, join(root, 'sb'), 'orphan1', 'idle');
  const state = await startFromDeadShim(t, opts);
  assert.ok(state.qemu && isAlive(state.qemu));
  const report = await cleanupFromState(readStateFile(state.dir), { logger: silentLogger() });
  assert.deepEqual(report.killed, [{ what: 'qemu', pid: state.qemu.pid }]);
  noneLeft(state);
  // again: nothing to do, no error
  const again = await cleanupFromState(state, { logger: silentLogger() });
  assert.deepEqual(again.killed, []);
  assert.deepEqual(again.skipped, [{ what: 'qemu', pid: state.qemu.pid, why: 'gone' }]);

  // A process whose start time differs from the record is not ours: spared.
  const sleeper = spawn('sleep', ['60'], { stdio: 'ignore' });
  t.after(() => sleeper.kill('SIGKILL'));
  const id = identify(sleeper.pid!)!;
  const dir2 = join(root, 'sb2');
  mkdirSync(dir2);
  const forged: VmState = { ...state, dir: dir2, qemu: { pid: id.pid, startTime: id.startTime - 1, binary: 'qemu-system-x86_64' } };
  const r2 = await cleanupFromState(forged, { logger: silentLogger() });
  assert.deepEqual(r2.killed, []);
  assert.deepEqual(r2.skipped, [{ what: 'qemu', pid: id.pid, why: 'start time differs' }]);
  assert.ok(isAlive(id), 'the unrelated process still runs');
});

test('accelerator auto: probes KVM with a real guest and falls back to TCG with the reason', { timeout: 60_000 }, async (t) => {
  const g = needGuest(t);
  if (!g) return;
  resetAccelCache();
  const opts = { setting: 'auto' as const, probe: { kernel: g.kernel, initrd: g.initrd, marker: 'VMTEST-PROBE-OK', timeoutMs: 15_000 }, logger: silentLogger() };
  const t0 = Date.now();
  const c = await chooseAccel(opts);
  const ms = Date.now() - t0;
  t.diagnostic(`accel ${c.accel}: ${c.reason} (${ms} ms)`);
  if (c.accel === 'kvm') {
    assert.equal(c.probed, true);
  } else {
    assert.match(c.reason, /^KVM (unusable|not probed)/);
    if (existsSync('/dev/kvm')) {
      assert.equal(c.probed, true, 'with /dev/kvm present the guest was booted');
      assert.match(c.reason, /qemu (exit code|killed by)|did not finish|panicked|without printing/);
    }
  }
  // Cached per process: the same answer object, so no second probe guest was booted.
  assert.equal(await chooseAccel(opts), c, 'the cached choice (one probe per process)');
  assert.deepEqual(await chooseAccel({ setting: 'tcg', logger: silentLogger() }), { accel: 'tcg', reason: 'configured', probed: false });
});

test('virtio-fs: the guest sees the shared dir (and later mounts in it), nothing outside', { timeout: 180_000 }, async (t) => {
  const g = needGuest(t, true);
  if (!g) return;
  if (!existsSync('/usr/lib/qemu/virtiofsd')) return t.skip('no /usr/lib/qemu/virtiofsd');
  const root = tempRoot(t, 'vm-e2e-');
  const shared = join(root, 'shared');
  const outside = join(root, 'outside');
  const lateSrc = join(root, 'late-src');
  mkdirSync(shared);
  mkdirSync(outside);
  mkdirSync(lateSrc);
  mkdirSync(join(shared, 'late'));
  writeFileSync(join(shared, 'hello.txt'), 'hello-from-host');
  writeFileSync(join(outside, 'secret.txt'), 'TOP-SECRET-0xC0FFEE');
  writeFileSync(join(lateSrc, 'late.txt'), 'late-mount-visible');
  symlinkSync(join(outside, 'secret.txt'), join(shared, 'abs-link'));
  symlinkSync('../outside/secret.txt', join(shared, 'rel-link'));

  const dir = join(root, 'sb');
  const vm = new QemuVm({ ...baseOptions(g, dir, 'fs1', 'virtiofs'), sharedFs: { sharedDir: shared, cache: 'auto' } });
  guard(t, vm);
  t.after(() => {
    spawnSync('umount', ['-R', '-l', join(shared, 'late')]);
    spawnSync('umount', ['-R', '-l', shared]);
  });
  const t0 = Date.now();
  await vm.start();
  const st = vm.state();
  assert.ok(st.virtiofsd && isAlive(st.virtiofsd), 'virtiofsd runs');
  assert.deepEqual(st.mounts, [shared]);
  assert.ok(mountsUnder(shared).includes(shared), 'shared dir is self-bound');

  await waitConsole(vm.consoleLogPath, /VMTEST-WROTE|VMTEST-DONE/, BOOT_MS);
  const tMounted = Date.now() - t0;
  // A mount made after virtiofsd started must reach the guest.
  execFileSync('mount', ['--bind', lateSrc, join(shared, 'late')]);
  const text = await waitConsole(vm.consoleLogPath, /VMTEST-DONE/, 60_000);
  assert.match(text, /VMTEST-MOUNT-OK/);
  assert.match(text, /VMTEST-SHARED-CONTENT hello-from-host/);
  assert.match(text, /VMTEST-BLOCKED abs/);
  assert.match(text, /VMTEST-BLOCKED rel/);
  assert.match(text, /VMTEST-BLOCKED dotdot/);
  assert.doesNotMatch(text, /TOP-SECRET|VMTEST-ESCAPE/);
  assert.match(text, /VMTEST-FIND \s*$/m, 'no secret file reachable under the mount');
  assert.match(text, /VMTEST-LATE late-mount-visible/);
  assert.equal(readFileSync(join(shared, 'from-guest.txt'), 'utf8'), 'guest-wrote\n');

  // The guest powers off by itself: an exit the VM did not ask for.
  const e = await new Promise<VmExit>((r) => (vm.exitInfo ? r(vm.exitInfo) : vm.once('exit', r)));
  assert.equal(e.expected, false);
  assert.equal(e.code, 0);
  await vm.stop();
  noneLeft(st);
  assert.deepEqual(mountsUnder(shared), [], 'self-bind and the late mount are gone');
  assert.ok(existsSync(join(shared, 'hello.txt')), 'the shared dir itself (the caller\'s) is kept');
  assert.equal(existsSync(st.virtiofsd!.lockFile), false, 'virtiofsd lock file removed');
  t.diagnostic(`virtio-fs guest mounted the share ${tMounted} ms after start`);
});

test('stop() while start() is in flight cancels the start and leaves nothing', { timeout: 60_000 }, async (t) => {
  const g = needGuest(t);
  if (!g) return;
  const root = tempRoot(t, 'vm-e2e-');
  const vm = new QemuVm(baseOptions(g, join(root, 'sb'), 'race1', 'idle'));
  guard(t, vm);
  const starting = vm.start();
  await new Promise((r) => setTimeout(r, 20));
  const stopping = vm.stop();
  await assert.rejects(starting, (err: unknown) => hasCode(Code.CANCELLED)(err) || hasCode(Code.UNAVAILABLE)(err));
  await stopping;
  assert.equal(vm.phase, 'stopped');
  noneLeft(vm.state());
});

test('BootVmProvider on q35: auto accelerator, virtio-fs share, ready probe; stop with powerdown falls back to quit', { timeout: 180_000 }, async (t) => {
  const g = needGuest(t, true);
  if (!g) return;
  if (!g.bzImage) return t.skip('no bzImage for q35');
  const root = tempRoot(t, 'vm-e2e-');
  const shared = join(root, 'shared');
  mkdirSync(shared);
  writeFileSync(join(shared, 'hello.txt'), 'hello-q35');
  const provider = new BootVmProvider({
    kernel: g.bzImage,
    initrd: g.initrd,
    machine: 'q35',
    kernelParams: ['vmtest=fsidle'],
    accel: 'auto',
    kvmProbe: { kernel: g.kernel, initrd: g.initrd, marker: 'VMTEST-PROBE-OK', timeoutMs: 15_000 },
    timeouts: { powerdownMs: 1000, qmpConnectMs: 15_000 },
    readyProbe: async (vm: Vm) => {
      if (!readFileSync(vm.consoleLogPath, 'utf8').includes('VMTEST-FS-READY hello-q35')) throw new Error('share not mounted yet');
    },
    readyTimeoutMs: BOOT_MS,
  });
  const accel = await provider.accelerator(silentLogger());
  const t0 = Date.now();
  const vm = await provider.acquire({ sandboxId: 'prov1', dir: join(root, 'sb'), resources: { vcpus: 1, memoryMiB: 256 }, sharedDir: shared, logger: silentLogger() });
  const tReady = Date.now() - t0;
  assert.ok(vm instanceof QemuVm);
  guard(t, vm);
  assert.equal(vm.phase, 'running');
  const st = vm.state();
  assert.equal(st.machine, 'q35');
  assert.equal(st.accel, accel.accel);
  const argv = readFileSync(`/proc/${vm.pid}/cmdline`, 'utf8').split('\0');
  assert.ok(argv.includes('vhost-user-fs-pci,chardev=fs0,tag=kataShared'), 'PCI virtio-fs on q35');
  assert.ok(argv.includes('virtio-serial-pci,id=agent-serial'));
  const exits: VmExit[] = [];
  vm.on('exit', (e) => exits.push(e));
  const t1 = Date.now();
  await vm.stop({ powerdown: true });
  const tStop = Date.now() - t1;
  assert.equal(exits.length, 1);
  assert.equal(exits[0]!.expected, true);
  noneLeft(st);
  assert.deepEqual(mountsUnder(shared), []);
  t.diagnostic(`q35 via provider (${accel.accel}: ${accel.reason.slice(0, 60)}…): ready in ${tReady} ms; stop with ignored powerdown ${tStop} ms`);
});
