/**
 * The pod VM against its floor (issue #4's targets), measured in one run:
 *
 *   npm run bench:vm                 # build, then the bench (~4-5 min under TCG here)
 *   node dist/bench/vm.js --json     # machine-readable result on stdout
 *
 * Options: --boots N (10), --stream-mib N (64), --stream-runs N (3),
 * --stream-inflight N (2), --mem MIB (SandboxVm's default),
 * --accel auto|kvm|tcg (auto), --json.
 * Needs root and build/guest (scripts/build-guest.sh).
 *
 * 1. Boot → agent ready (target ≤ 2x bare boot). Agent boot: SandboxVm.start()
 *    up to the agent answering Check over virtio-serial (its timings.readyMs:
 *    dirs, virtiofsd, QEMU spawn, QMP, kernel, stage-1 init, root image,
 *    node + agent, handshake). Bare boot: the same kernel, machine type,
 *    accelerator, vCPUs, memory and kernel command line, started the same way
 *    (QemuVm.start: spawn + QMP), with build/guest/bare-initrd.img, whose init
 *    powers off at once; measured until QEMU exits. No devices: the floor.
 *    Agent and bare boots alternate, so drift in host load hits both.
 * 2. QEMU RSS (target ≤ 1.25x bare). Agent VM: VmRSS of QEMU right after
 *    ready. Bare VM: its RSS only grows until it powers off, so the peak
 *    (VmHWM, polled every 10 ms until QEMU exits; the last sample) is its RSS
 *    just before poweroff.
 * 3. Container stdout throughput (target ≥ 70% of the raw channel). Through
 *    the agent: a busybox container runs `dd if=/dev/zero bs=64k count=N`;
 *    the host keeps 2 ReadStdout calls outstanding (max_len 1 MiB, the
 *    agent's cap; the agent serves them in call order, so the second hides
 *    one round trip — what the shim's copy loop does) until EOF;
 *    rate = bytes / (EOF − first byte). Raw: the same virtio-serial port
 *    (agent.0, same QEMU chardev socket, same VM configuration and guest
 *    image) with no agent: the VM boots with `rdinit=/raw-init`, a script
 *    prepended to the image's initramfs as an extra uncompressed cpio (the
 *    kernel unpacks both), which does stage 1 like the real init (modules,
 *    root image), loads virtio_console and, per "go<k>" line from the host,
 *    runs the same busybox `dd if=/dev/zero bs=64k count=N` straight into the
 *    port; the host reads QEMU's socket; same rate definition. So the raw
 *    figure is the channel itself with the same writer and write size; the
 *    difference is the agent's path: pipe → Node → ttrpc/protobuf framing →
 *    port, and one ReadStdout round trip per ≤ 1 MiB. For context the bench
 *    also times `dd … | cat >/dev/null` inside a container: what a pipe
 *    alone moves in this guest, a ceiling for any relay that reads the
 *    container's stdout from a pipe (under TCG every kernel copy is slow).
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLogger, type Logger } from '../src/log/index.js';
import { DEFAULT_RESOURCES, loadGuestImage, SandboxVm, sandboxBootOptions, type GuestImage } from '../src/sandbox/index.js';
import { BootVmProvider, chooseAccel, mountsUnder, QemuVm, type AccelSetting, type Vm, type VmExit } from '../src/vm/index.js';
import { projectRoot, runtimeSpec, writeBusyboxRootfs } from '../test/harness/busybox.js';

interface Args {
  boots: number;
  streamMiB: number;
  streamRuns: number;
  inflight: number;
  memMiB: number;
  accel: AccelSetting;
  json: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { boots: 10, streamMiB: 64, streamRuns: 3, inflight: 2, memMiB: DEFAULT_RESOURCES.memoryMiB, accel: 'auto', json: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = (): string => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${k}: value missing`);
      return x;
    };
    if (k === '--boots') a.boots = Number(v());
    else if (k === '--stream-mib') a.streamMiB = Number(v());
    else if (k === '--stream-runs') a.streamRuns = Number(v());
    else if (k === '--stream-inflight') a.inflight = Number(v());
    else if (k === '--mem') a.memMiB = Number(v());
    else if (k === '--accel') a.accel = v() as AccelSetting;
    else if (k === '--json') a.json = true;
    else throw new Error(`unknown option ${k}`);
  }
  for (const [n, x] of [['--boots', a.boots], ['--stream-mib', a.streamMiB], ['--stream-runs', a.streamRuns], ['--stream-inflight', a.inflight], ['--mem', a.memMiB]] as const) {
    if (!Number.isInteger(x) || x < 1) throw new Error(`${n}: expected a positive integer`);
  }
  if (!['auto', 'kvm', 'tcg'].includes(a.accel)) throw new Error('--accel: auto, kvm or tcg');
  return a;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** VmRSS and VmHWM of a pid in KiB (undefined once it is gone or a zombie). */
function memOf(pid: number): { rss: number; hwm: number } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rss = /VmRSS:\s+(\d+)/.exec(s);
    const hwm = /VmHWM:\s+(\d+)/.exec(s);
    if (!rss || !hwm) return undefined;
    return { rss: Number(rss[1]), hwm: Number(hwm[1]) };
  } catch {
    return undefined;
  }
}

function waitExit(vm: Vm, timeoutMs: number): Promise<VmExit> {
  if (vm.exitInfo) return Promise.resolve(vm.exitInfo);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`vm ${vm.sandboxId}: no exit within ${timeoutMs} ms`)), timeoutMs);
    vm.once('exit', (e) => {
      clearTimeout(timer);
      resolve(e);
    });
  });
}

// ---------------------------------------------------------------------------
// boots

interface AgentBoot { readyMs: number; rssKiB: number }
interface BareBoot { ms: number; peakKiB: number }

async function agentBoot(image: GuestImage, root: string, i: number, a: Args, logger: Logger): Promise<AgentBoot> {
  const sb = await SandboxVm.start({
    sandboxId: `bench-agent-${i}`, dir: join(root, `agent-${i}`), image, logger,
    resources: { vcpus: 1, memoryMiB: a.memMiB }, accel: a.accel,
  });
  try {
    const m = memOf(sb.vm.pid!);
    if (!m) throw new Error('qemu gone after ready');
    return { readyMs: sb.timings.readyMs, rssKiB: m.rss };
  } finally {
    await sb.stop();
  }
}

async function bareBoot(image: GuestImage, root: string, i: number, a: Args, logger: Logger): Promise<BareBoot> {
  const accel = await chooseAccel({ setting: a.accel, probe: { kernel: image.vmlinux, initrd: image.bareInitrd }, logger });
  const vm = new QemuVm({
    sandboxId: `bench-bare-${i}`, dir: join(root, `bare-${i}`), machine: 'microvm', accel: accel.accel,
    vcpus: 1, memoryMiB: a.memMiB, kernel: image.vmlinux, initrd: image.bareInitrd, kernelParams: image.cmdline, logger,
  });
  try {
    const t0 = performance.now();
    const exited = waitExit(vm, 60_000);
    await vm.start();
    const pid = vm.pid!;
    let peak = 0;
    let end = 0;
    void exited.then(() => (end = performance.now()));
    while (!vm.exitInfo) {
      const m = memOf(pid);
      if (m) peak = Math.max(peak, m.hwm);
      await sleep(10);
    }
    await exited;
    const console = readFileSync(vm.consoleLogPath, 'utf8');
    if (!console.includes('BARE-INIT-REACHED')) throw new Error(`bare guest did not reach its init:\n${console.slice(-2000)}`);
    return { ms: end - t0, peakKiB: peak };
  } finally {
    await vm.stop();
  }
}

// ---------------------------------------------------------------------------
// stdout through the agent

async function agentStream(sb: SandboxVm, run: number, a: Args): Promise<number> {
  const id = `dd-${run}`;
  await writeBusyboxRootfs(sb.rootfsHostPath(id));
  const count = a.streamMiB * 16; // 64 KiB blocks
  const c = sb.agent;
  await c.createContainer({ containerId: id, spec: runtimeSpec({ args: ['dd', 'if=/dev/zero', 'bs=65536', `count=${count}`] }), rootfsPath: sb.rootfsGuestPath(id) });
  await c.startContainer({ containerId: id });
  let bytes = 0;
  let first = 0;
  let eof = false;
  const reader = async () => {
    while (!eof) {
      const r = await c.readStdout({ containerId: id, maxLen: 1 << 20 }, { timeoutMs: 120_000 });
      if (r.eof) {
        eof = true;
        break;
      }
      if (!first) first = performance.now();
      bytes += r.data.length;
    }
  };
  await Promise.all(Array.from({ length: a.inflight }, reader));
  const end = performance.now();
  const status = (await c.waitProcess({ containerId: id }, { timeoutMs: 30_000 })).exitStatus;
  if (status !== 0 || bytes !== count * 65536) throw new Error(`dd container: exit ${status}, ${bytes} bytes`);
  await c.removeContainer({ containerId: id });
  rmSync(join(sb.sharedDir, id), { recursive: true, force: true });
  return bytes / 1e6 / ((end - first) / 1000);
}

/** MB/s of `dd … | cat >/dev/null` inside a container (busybox `time`). */
async function pipeCeiling(sb: SandboxVm, a: Args): Promise<number> {
  const id = 'pipe';
  await writeBusyboxRootfs(sb.rootfsHostPath(id));
  const count = a.streamMiB * 16;
  const c = sb.agent;
  await c.createContainer({ containerId: id, spec: runtimeSpec({ args: ['sh', '-c', `time sh -c 'dd if=/dev/zero bs=65536 count=${count} 2>/dev/null | cat >/dev/null'`] }), rootfsPath: sb.rootfsGuestPath(id) });
  await c.startContainer({ containerId: id });
  let err = '';
  for (;;) {
    const r = await c.readStderr({ containerId: id }, { timeoutMs: 120_000 });
    if (r.eof) break;
    err += r.data.toString();
  }
  await c.waitProcess({ containerId: id }, { timeoutMs: 30_000 });
  await c.removeContainer({ containerId: id });
  const m = /real\s+(\d+)m\s*([\d.]+)s/.exec(err);
  if (!m) throw new Error(`pipe ceiling: no time in ${JSON.stringify(err)}`);
  return (count * 65536) / 1e6 / (Number(m[1]) * 60 + Number(m[2]));
}

// ---------------------------------------------------------------------------
// the raw channel

/** One newc cpio archive (no compression) of regular files, with its trailer. */
function cpio(files: Array<{ name: string; mode: number; data: Buffer }>): Buffer {
  const parts: Buffer[] = [];
  const pad = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);
  let ino = 1;
  const entry = (name: string, mode: number, data: Buffer) => {
    const fields = [ino++, mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, Buffer.byteLength(name) + 1, 0];
    const header = '070701' + fields.map((f) => f.toString(16).padStart(8, '0')).join('');
    const head = Buffer.concat([Buffer.from(header, 'ascii'), Buffer.from(`${name}\0`)]);
    parts.push(head, pad(head.length), data, pad(data.length));
  };
  for (const f of files) entry(f.name, f.mode, f.data);
  entry('TRAILER!!!', 0, Buffer.alloc(0));
  const out = Buffer.concat(parts);
  return Buffer.concat([out, Buffer.alloc((512 - (out.length % 512)) % 512)]);
}

/**
 * Stage 1 as the image's /init does it (bus module, virtio_blk + erofs from
 * the initramfs, the root image read-only), then virtio_console from the root
 * image, the agent port found by name, and one `dd` into it per "go<k>" line.
 */
const RAW_INIT = `#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
count=1; runs=1
for p in $(cat /proc/cmdline); do
  case $p in raw.count=*) count=\${p#raw.count=} ;; raw.runs=*) runs=\${p#raw.runs=} ;; esac
done
modprobe -a virtio_mmio virtio_blk erofs || echo RAW-ERROR modprobe
i=0; while [ ! -b /dev/vda ] && [ $i -lt 500 ]; do i=$((i+1)); sleep 0.01; done
mount -t erofs -o ro /dev/vda /newroot || echo RAW-ERROR mount
chroot /newroot /sbin/modprobe virtio_console || echo RAW-ERROR virtio_console
port=
i=0
while [ -z "$port" ] && [ $i -lt 500 ]; do
  for d in /sys/class/virtio-ports/*; do
    [ "$(cat $d/name 2>/dev/null)" = agent.0 ] && port=/dev/\${d##*/}
  done
  i=$((i+1)); [ -z "$port" ] && sleep 0.01
done
echo "RAW-READY $port count=$count runs=$runs"
exec 3<>$port
k=1
while [ $k -le $runs ]; do
  if ! read -r line <&3; then sleep 0.02; continue; fi
  [ "$line" = "go$k" ] || continue
  dd if=/dev/zero bs=65536 count=$count >&3 2>/dev/null
  k=$((k+1))
done
echo RAW-DONE
poweroff -f
`;

async function rawStream(image: GuestImage, root: string, a: Args, logger: Logger): Promise<number[]> {
  const initrd = join(root, 'raw-initrd.img');
  // Ours first, uncompressed; the image's lz4 archive after it (the kernel
  // unpacks both; ours only adds /raw-init).
  writeFileSync(initrd, Buffer.concat([cpio([{ name: 'raw-init', mode: 0o100755, data: Buffer.from(RAW_INIT) }]), readFileSync(image.initrd)]));
  const count = a.streamMiB * 16;
  const base = sandboxBootOptions(image, { accel: a.accel });
  const provider = new BootVmProvider({
    ...base,
    initrd,
    kernelParams: [...image.cmdline, 'rdinit=/raw-init', `raw.count=${count}`, `raw.runs=${a.streamRuns}`],
  });
  const dir = join(root, 'raw');
  const shared = join(root, 'raw-shared');
  mkdirSync(shared);
  const vm = await provider.acquire({ sandboxId: 'bench-raw', dir, resources: { vcpus: 1, memoryMiB: a.memMiB }, sharedDir: shared, logger });
  const rates: number[] = [];
  let sock: net.Socket | undefined;
  try {
    const ep = vm.agent;
    if (ep.transport !== 'virtio-serial') throw new Error('raw: virtio-serial only');
    sock = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection({ path: ep.socketPath }, () => resolve(s));
      s.once('error', reject);
    });
    let got = 0;
    let first = 0;
    let onData: (() => void) | undefined;
    sock.on('data', (b: Buffer) => {
      if (!first) first = performance.now();
      got += b.length;
      onData?.();
    });
    const want = count * 65536;
    for (let k = 1; k <= a.streamRuns; k++) {
      got = 0;
      first = 0;
      const done = new Promise<number>((resolve) => {
        onData = () => {
          if (got >= want) resolve(performance.now());
        };
      });
      // The guest may not have the port open yet (bytes sent then are lost): repeat until data flows.
      const deadline = Date.now() + 120_000;
      while (!first) {
        if (Date.now() > deadline || vm.exitInfo) throw new Error(`raw guest silent:\n${readFileSync(vm.consoleLogPath, 'utf8').slice(-2000)}`);
        sock.write(`go${k}\n`);
        await Promise.race([done, sleep(200)]);
      }
      const end = await Promise.race([done, sleep(120_000).then(() => Promise.reject(new Error('raw stream stalled')))]);
      if (got !== want) throw new Error(`raw: got ${got} bytes, want ${want}`);
      rates.push(want / 1e6 / ((end - first) / 1000));
    }
  } finally {
    sock?.destroy();
    await vm.stop();
    if (mountsUnder(shared).length === 0) rmSync(shared, { recursive: true, force: true });
  }
  return rates;
}

// ---------------------------------------------------------------------------

interface Row { metric: string; agent: string; floor: string; ratio: number; target: string; pass: boolean }

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('bench:vm needs root (virtiofsd, mounts)');
  const image = loadGuestImage(join(projectRoot(), 'build', 'guest'));
  const logger = createLogger({ name: 'bench-vm', destination: 2 });
  // The bare VMs' poweroff is an "unexpected" exit to QemuVm: keep its warning out of the report.
  logger.level = process.env.KATA_LOG_LEVEL ?? 'error';
  const root = mkdtempSync(join(tmpdir(), 'bench-vm-'));
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const started = Date.now();
  try {
    const accel = await chooseAccel({ setting: a.accel, probe: { kernel: image.vmlinux, initrd: image.bareInitrd }, logger });
    log(`accelerator ${accel.accel} (${accel.reason}); microvm, 1 vCPU, ${a.memMiB} MiB; guest kernel ${image.kernelRelease}`);

    // Warm-up (page cache of the images, the accelerator choice): one of each, not counted.
    await bareBoot(image, root, 0, a, logger);
    await agentBoot(image, root, 0, a, logger);

    const agents: AgentBoot[] = [];
    const bares: BareBoot[] = [];
    for (let i = 1; i <= a.boots; i++) {
      bares.push(await bareBoot(image, root, i, a, logger));
      agents.push(await agentBoot(image, root, i, a, logger));
      log(`boot ${i}/${a.boots}: agent ready ${agents.at(-1)!.readyMs} ms (RSS ${(agents.at(-1)!.rssKiB / 1024).toFixed(0)} MiB), ` +
        `bare ${bares.at(-1)!.ms.toFixed(0)} ms (peak RSS ${(bares.at(-1)!.peakKiB / 1024).toFixed(0)} MiB)`);
    }

    // Throughput through the agent, in one more agent VM.
    const sb = await SandboxVm.start({ sandboxId: 'bench-stream', dir: join(root, 'stream'), image, logger, resources: { vcpus: 1, memoryMiB: a.memMiB }, accel: a.accel });
    const agentRates: number[] = [];
    let pipeRate = 0;
    try {
      for (let r = 1; r <= a.streamRuns; r++) {
        agentRates.push(await agentStream(sb, r, a));
        log(`agent stdout run ${r}: ${agentRates.at(-1)!.toFixed(1)} MB/s`);
      }
      pipeRate = await pipeCeiling(sb, a);
      log(`pipe inside the guest (dd | cat): ${pipeRate.toFixed(1)} MB/s`);
    } finally {
      await sb.stop();
    }
    const rawRates = await rawStream(image, root, a, logger);
    log(`raw port runs: ${rawRates.map((x) => x.toFixed(1)).join(', ')} MB/s`);

    const readyMed = median(agents.map((x) => x.readyMs));
    const bareMed = median(bares.map((x) => x.ms));
    const rssMed = median(agents.map((x) => x.rssKiB)) / 1024;
    const bareRssMed = median(bares.map((x) => x.peakKiB)) / 1024;
    const agentRate = median(agentRates);
    const rawRate = median(rawRates);
    const range = (xs: number[], f: (x: number) => string) => `${f(Math.min(...xs))}–${f(Math.max(...xs))}`;
    const ms = (x: number) => `${(x / 1000).toFixed(2)} s`;
    const rows: Row[] = [
      {
        metric: `boot → agent ready (median of ${a.boots})`,
        agent: `${ms(readyMed)} (${range(agents.map((x) => x.readyMs), ms)})`,
        floor: `bare boot ${ms(bareMed)} (${range(bares.map((x) => x.ms), ms)})`,
        ratio: readyMed / bareMed, target: '≤ 2.00x', pass: readyMed / bareMed <= 2,
      },
      {
        metric: 'QEMU RSS',
        agent: `${rssMed.toFixed(0)} MiB after ready`,
        floor: `bare ${bareRssMed.toFixed(0)} MiB (peak, at poweroff)`,
        ratio: rssMed / bareRssMed, target: '≤ 1.25x', pass: rssMed / bareRssMed <= 1.25,
      },
      {
        metric: `container stdout (${a.streamMiB} MiB, median of ${a.streamRuns}, ${a.inflight} reads in flight)`,
        agent: `${agentRate.toFixed(1)} MB/s via ReadStdout`,
        floor: `raw port ${rawRate.toFixed(1)} MB/s`,
        ratio: agentRate / rawRate, target: '≥ 0.70x', pass: agentRate / rawRate >= 0.7,
      },
    ];
    const lines = [
      `Pod VM vs its floor — ${accel.accel.toUpperCase()}, microvm, 1 vCPU, ${a.memMiB} MiB, guest ${image.kernelRelease}, ` +
        `host ${cpus().length} × ${cpus()[0]?.model ?? '?'}; ${((Date.now() - started) / 1000).toFixed(0)} s`,
      '',
      '| metric | agent VM | floor | ratio | target | result |',
      '| --- | --- | --- | --- | --- | --- |',
      ...rows.map((r) => `| ${r.metric} | ${r.agent} | ${r.floor} | ${r.ratio.toFixed(2)}x | ${r.target} | ${r.pass ? 'PASS' : 'MISS'} |`),
      '',
      `Context: a pipe alone (\`dd | cat\` in a container) moves ${pipeRate.toFixed(1)} MB/s in this guest ` +
        `(${(pipeRate / rawRate).toFixed(2)}x of the raw port): the ceiling of any relay that reads the container's stdout from a pipe.`,
    ];
    const json = {
      accel: accel.accel, memMiB: a.memMiB, boots: a.boots, kernel: image.kernelRelease,
      agentBoots: agents, bareBoots: bares, agentStdoutMBps: agentRates, rawPortMBps: rawRates, pipeMBps: pipeRate,
      rows: rows.map((r) => ({ ...r })),
    };
    console.log(a.json ? JSON.stringify(json, null, 2) : lines.join('\n'));
  } finally {
    if (existsSync(root) && mountsUnder(root).length === 0) rmSync(root, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:vm: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
