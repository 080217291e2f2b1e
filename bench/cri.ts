/**
 * CRI pods with handler `kata` against the default runc handler, on ONE
 * private containerd 1.6 with its CRI plugin (issue #6's benchmark):
 *
 *   node dist/bench/cri.js                      # after npm run build
 *   node dist/bench/cri.js --runs 5 --pods 1,5  # shorter
 *   node dist/bench/cri.js --json               # machine-readable result on stdout
 *
 * Options: --runs N (10), --pods LIST (1,5,10; "none" skips the memory part),
 * --settle-ms N (5000), --json. Needs root, containernetworking-plugins, the
 * build (bin/containerd-shim-kata-v2) and build/guest.
 *
 * Everything runs in a network namespace the bench makes (containerd is
 * started in it through `nsenter --net`; CNI bridge + host-local + loopback
 * with a 10.99.R.0/24 of its own): no pod touches the machine's network.
 *
 * 1. RunPodSandbox + CreateContainer + StartContainer up to a running
 *    container (busybox `sleep`), wall time of the three CRI calls through
 *    the CRI client library (no crictl process start-up in it), handlers
 *    alternating, after one warm-up pod each. For kata the VM boot is in it.
 *    The teardown (StopPodSandbox + RemovePodSandbox) is timed too, not
 *    counted in the headline.
 * 2. Memory per kata pod with 1, 5, 10 pods up (pods are added, not
 *    restarted: 10 boots in all), each with one running container: the
 *    pod's shim (VmRSS) + its QEMU (Pss from /proc/<pid>/smaps_rollup: the
 *    pages shared between QEMUs — the same binary, the same read-only guest
 *    image in the page cache — are split between them); virtiofsd's PSS
 *    beside it. Averages over the pods, measured `--settle-ms` after the last
 *    pod started.
 */
import { spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { basename, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { CriClient, v1 } from '../src/cri-client/client.js';
import { DEFAULT_RESOURCES, loadGuestImage } from '../src/sandbox/index.js';
import { BUSYBOX_IMAGE, busyboxImage, importImage, pauseImage, projectRoot } from '../test/harness/busybox.js';
import { createTestNetwork } from '../test/harness/cni.js';
import { descendants, procCmdline, startContainerd, waitFor, type Containerd } from '../test/harness/containerd.js';
import { pssOf, rssOf } from './lib.js';

const MB = 1e6;
/** CRI calls that boot or stop a VM under TCG: generous. */
const SLOW_MS = 180_000;

interface Args {
  runs: number;
  pods: number[];
  settleMs: number;
  json: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { runs: 10, pods: [1, 5, 10], settleMs: 5000, json: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const val = (): string => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${k}: value missing`);
      return x;
    };
    const int = (x: string, min: number): number => {
      const n = Number(x);
      if (!Number.isInteger(n) || n < min) throw new Error(`${k}: expected an integer ≥ ${min}, got ${x}`);
      return n;
    };
    if (k === '--runs') a.runs = int(val(), 1);
    else if (k === '--pods') {
      const v = val();
      a.pods = v === 'none' ? [] : v.split(',').map((x) => int(x.trim(), 1));
      if (a.pods.some((n, j) => j > 0 && n <= a.pods[j - 1]!)) throw new Error(`--pods: counts must increase, got ${v}`);
    } else if (k === '--settle-ms') a.settleMs = int(val(), 0);
    else if (k === '--json') a.json = true;
    else throw new Error(`unknown option ${k} (--runs N, --pods 1,5,10|none, --settle-ms N, --json)`);
  }
  return a;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

type Handler = 'kata' | 'runc';

class Pods {
  private seq = 0;
  constructor(private readonly cri: CriClient, private readonly c: Containerd, private readonly logDir: string) {}

  podConfig(name: string): v1.PodSandboxConfig {
    return v1.PodSandboxConfig.fromObject({
      metadata: { name, namespace: 'bench', uid: `uid-${name}`, attempt: 0 },
      hostname: name,
      logDirectory: join(this.logDir, name),
      linux: { cgroupParent: `/${this.c.namespace}` },
    });
  }

  /** runp + create + start; the ms of each. */
  async up(handler: Handler): Promise<{ pod: string; ms: { runp: number; create: number; start: number; total: number } }> {
    const name = `${handler}-${++this.seq}`;
    const pc = this.podConfig(name);
    const cc = v1.ContainerConfig.fromObject({
      metadata: { name: 'sleeper' },
      image: { image: BUSYBOX_IMAGE },
      command: ['sleep', '36000'],
      logPath: 'sleeper.log',
    });
    const t0 = performance.now();
    const pod = await this.cri.runPodSandbox(pc, handler, { timeoutMs: SLOW_MS });
    const t1 = performance.now();
    const ctr = await this.cri.createContainer(pod, cc, pc, { timeoutMs: SLOW_MS });
    const t2 = performance.now();
    await this.cri.startContainer(ctr, { timeoutMs: SLOW_MS });
    const t3 = performance.now();
    return { pod, ms: { runp: t1 - t0, create: t2 - t1, start: t3 - t2, total: t3 - t0 } };
  }

  /** stopp + rmp; ms. */
  async down(pod: string): Promise<number> {
    const t0 = performance.now();
    await this.cri.stopPodSandbox(pod, { timeoutMs: SLOW_MS });
    await this.cri.removePodSandbox(pod, { timeoutMs: SLOW_MS });
    return performance.now() - t0;
  }
}

interface MemPoint {
  pods: number;
  shimRss: number[];
  qemuPss: number[];
  qemuRss: number[];
  virtiofsdPss: number[];
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('bench/cri needs root (containerd, netns, mounts, virtiofsd)');
  for (const p of ['bridge', 'host-local', 'loopback']) {
    if (spawnSync('test', ['-x', `/usr/lib/cni/${p}`]).status !== 0) throw new Error(`bench/cri needs /usr/lib/cni/${p} (apt-get install containernetworking-plugins)`);
  }
  const root = projectRoot();
  const image = loadGuestImage(process.env.KATA_TS_GUEST_DIR || join(root, 'build', 'guest'));
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const started = Date.now();
  const net = createTestNetwork('kata-bch');
  let c: Containerd | undefined;
  let cri: CriClient | undefined;
  try {
    c = await startContainerd({
      cri: { cniConfDir: net.confDir },
      runtimes: { kata: { runtimeType: 'io.containerd.kata.v2', extra: { pod_annotations: ['io.katacontainers.*'] } } },
      extraPath: [join(root, 'bin')],
      netns: net.ns,
    });
    const k8s = { ctr: (args: string[], o?: { timeoutMs?: number }) => c!.ctr(args, { ...o, namespace: 'k8s.io' }) };
    await importImage(k8s, pauseImage());
    await importImage(k8s, busyboxImage());
    cri = new CriClient({ endpoint: `unix://${c.address}`, timeoutMs: 30_000 });
    await waitFor(async () => (await cri!.status()).status?.conditions?.some((x) => x.type === 'NetworkReady' && x.status), {
      timeoutMs: 30_000, what: 'CRI NetworkReady',
    });
    const pods = new Pods(cri, c, join(c.dir, 'logs'));
    log(`containerd ${c.dir} in netns ${net.ns} (CNI ${net.subnet}, snapshotter ${c.snapshotter}); warm-up …`);

    // ---- warm-up (page cache, the accelerator probe, Node's code cache): not counted
    for (const h of ['runc', 'kata'] as Handler[]) await pods.down((await pods.up(h)).pod);

    // ---- 1. runp + create + start, alternating
    const up: Record<Handler, Array<{ runp: number; create: number; start: number; total: number }>> = { kata: [], runc: [] };
    const down: Record<Handler, number[]> = { kata: [], runc: [] };
    const shimRssRunc: number[] = [];
    for (let i = 1; i <= a.runs; i++) {
      for (const h of ['runc', 'kata'] as Handler[]) {
        const before = new Set(c.shimPids());
        const r = await pods.up(h);
        up[h].push(r.ms);
        if (h === 'runc') {
          const shim = c.shimPids().find((p) => !before.has(p));
          const rss = shim !== undefined ? rssOf(shim) : undefined;
          if (rss !== undefined) shimRssRunc.push(rss);
        }
        down[h].push(await pods.down(r.pod));
      }
      log(`run ${i}/${a.runs}: kata ${up.kata.at(-1)!.total.toFixed(0)} ms (runp ${up.kata.at(-1)!.runp.toFixed(0)}), ` +
        `runc ${up.runc.at(-1)!.total.toFixed(0)} ms; stopp+rmp kata ${down.kata.at(-1)!.toFixed(0)} ms, runc ${down.runc.at(-1)!.toFixed(0)} ms`);
    }

    // ---- 2. memory per kata pod at 1, 5, 10 pods
    const mem: MemPoint[] = [];
    const live: Array<{ pod: string; shim: number }> = [];
    try {
      for (const n of a.pods) {
        while (live.length < n) {
          const before = new Set(c.shimPids());
          const r = await pods.up('kata');
          const shim = c.shimPids().find((p) => !before.has(p));
          if (shim === undefined) throw new Error(`pod ${r.pod}: no new shim found`);
          live.push({ pod: r.pod, shim });
          log(`memory: kata pod ${live.length}/${n} up in ${r.ms.total.toFixed(0)} ms`);
        }
        await sleep(a.settleMs);
        const p: MemPoint = { pods: n, shimRss: [], qemuPss: [], qemuRss: [], virtiofsdPss: [] };
        for (const { pod, shim } of live) {
          const kids = descendants([shim]);
          const qemu = kids.find((k) => /^qemu-system/.test(basename(procCmdline(k)[0] ?? '')));
          const vfs = kids.find((k) => /virtiofsd$/.test(procCmdline(k)[0] ?? ''));
          const vals = [rssOf(shim), qemu !== undefined ? pssOf(qemu) : undefined, qemu !== undefined ? rssOf(qemu) : undefined];
          if (vals.some((v) => v === undefined)) throw new Error(`pod ${pod}: shim ${shim} / QEMU ${qemu} not readable`);
          p.shimRss.push(vals[0]!);
          p.qemuPss.push(vals[1]!);
          p.qemuRss.push(vals[2]!);
          p.virtiofsdPss.push((vfs !== undefined ? pssOf(vfs) : undefined) ?? 0);
        }
        mem.push(p);
        const avg = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
        log(`memory at ${n} pods: shim RSS ${(avg(p.shimRss) / MB).toFixed(1)} MB, QEMU PSS ${(avg(p.qemuPss) / MB).toFixed(1)} MB per pod`);
      }
    } finally {
      for (const { pod } of live) await pods.down(pod).catch((e: unknown) => log(`teardown of ${pod}: ${String(e)}`));
    }

    // ---- report
    const s = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`);
    const mb = (b: number) => `${(b / MB).toFixed(1)} MB`;
    const avg = (xs: number[]) => xs.reduce((x, y) => x + y, 0) / xs.length;
    const col = (h: Handler, k: 'runp' | 'create' | 'start' | 'total') => up[h].map((x) => x[k]);
    const range = (xs: number[]) => `${s(Math.min(...xs))}–${s(Math.max(...xs))}`;
    const row = (metric: string, kata: number[], runc: number[]) =>
      `| ${metric} | ${s(median(kata))} (${range(kata)}) | ${s(median(runc))} (${range(runc)}) | ${(median(kata) / median(runc)).toFixed(1)}x |`;
    const lines = [
      `CRI handler kata (containerd-shim-kata-v2) vs runc on one private containerd 1.6 CRI plugin, CNI bridge in a netns of the bench's; ` +
        `guest ${image.kernelRelease}, ${DEFAULT_RESOURCES.vcpus} vCPU, ${DEFAULT_RESOURCES.memoryMiB} MiB; host ${cpus().length} × ${cpus()[0]?.model ?? '?'}; ` +
        `${((Date.now() - started) / 1000).toFixed(0)} s`,
      '',
      `| CRI calls (median of ${a.runs}, min–max) | kata | runc | kata/runc |`,
      '| --- | --- | --- | --- |',
      row('**runp + create + start → running container**', col('kata', 'total'), col('runc', 'total')),
      row('of which RunPodSandbox', col('kata', 'runp'), col('runc', 'runp')),
      row('of which CreateContainer', col('kata', 'create'), col('runc', 'create')),
      row('of which StartContainer', col('kata', 'start'), col('runc', 'start')),
      row('stopp + rmp (not in the headline)', down.kata, down.runc),
    ];
    if (mem.length > 0) {
      lines.push(
        '',
        '| kata pods up | shim RSS / pod | QEMU PSS / pod | **shim RSS + QEMU PSS / pod** | QEMU RSS / pod | virtiofsd PSS / pod | shim RSS + QEMU PSS, all pods |',
        '| --- | --- | --- | --- | --- | --- | --- |',
        ...mem.map((p) => {
          const per = avg(p.shimRss) + avg(p.qemuPss);
          return `| ${p.pods} | ${mb(avg(p.shimRss))} | ${mb(avg(p.qemuPss))} | **${mb(per)}** | ${mb(avg(p.qemuRss))} | ${mb(avg(p.virtiofsdPss))} | ${mb(per * p.pods)} |`;
        }),
      );
    }
    if (shimRssRunc.length > 0) lines.push('', `For reference: the runc handler's shim (containerd-shim-runc-v2) RSS with its pod up, median ${mb(median(shimRssRunc))}.`);
    lines.push('', `Measured: ${a.runs} runs per handler; memory at ${mem.length ? mem.map((p) => p.pods).join(', ') : 'no'} kata pods (--pods), ${a.settleMs} ms after the last pod started.`);
    const json = {
      kernel: image.kernelRelease, resources: DEFAULT_RESOURCES, runs: a.runs,
      upMs: up, downMs: down,
      medians: Object.fromEntries((['kata', 'runc'] as Handler[]).map((h) => [h, {
        runp: median(col(h, 'runp')), create: median(col(h, 'create')), start: median(col(h, 'start')), total: median(col(h, 'total')), down: median(down[h]),
      }])),
      ratio: median(col('kata', 'total')) / median(col('runc', 'total')),
      memoryBytes: mem, runcShimRssBytes: shimRssRunc,
    };
    console.log(a.json ? JSON.stringify(json, null, 2) : lines.join('\n'));
  } finally {
    cri?.close();
    try {
      await c?.stop();
    } finally {
      net.close();
    }
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/cri: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
