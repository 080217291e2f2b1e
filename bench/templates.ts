/**
 * VM templates against cold boots and containerd's runc shim (issue 15's
 * benchmark), on ONE private containerd 1.6 with its CRI plugin, in one run:
 *
 *   npm run bench:templates                            # build, then the bench (~15-25 min under TCG here)
 *   node dist/bench/templates.js --runs 2 --pods 3     # a quick smoke run
 *   node dist/bench/templates.js --json out.json       # raw per-run numbers to out.json too
 *
 * Options: --runs N (10: `ctr run --rm`), --cri-runs N (min(5, --runs)),
 * --pods N (20: the most pods up at once; template and runc memory at
 * 1, 10, 20 pods up to N, cold at 1 and 5 up to N, the parallel start of
 * min(10, N) pods), --parallel N (override of the parallel start's count),
 * --settle-ms N (5000: wait before reading memory), --json FILE, --log FILE
 * (a copy of containerd's log, the shims' lines in it, taken before it stops).
 * Needs root, containernetworking-plugins, the build (bin/containerd-shim-kata-v2)
 * and build/guest.
 *
 * Two configuration files of the bench's own, both the project's default
 * (defaultConfigText()): `cold.toml` as is (templates off, shared_fs
 * virtio-fs: what a pod gets without templates), `template.toml` with
 * templateConfigEdit(<bench dir>/templates) (virtio-9p, enable_template).
 * `ctr run` passes one per run (`--runtime-config-path`, containerd's
 * ConfigPath); CRI has two kata handlers, `kata` and `kata-tpl`, whose
 * runtime tables carry `options.ConfigPath`. containerd runs in a network
 * namespace of the bench's (CNI bridge, as bench/cri), so CRI pods get a NIC.
 * A `ctr run` pod has no NIC and a CRI pod has one: they use two templates
 * (the NIC is in the template's key), each made by a warm-up run.
 *
 * 1. `ctr run --rm busybox … true`: runc, kata cold, kata template, in
 *    rotating order each round, after one warm-up run each (the template
 *    warm-up makes the template).
 * 2. CRI RunPodSandbox + CreateContainer + StartContainer up to a running
 *    busybox `sleep` (CRI client library, no crictl process start-up in it),
 *    handlers runc, kata, kata-tpl rotating; then stopp + rmp (timed apart).
 * 3. Memory per pod, pods added one at a time (`ctr run -d … sleep`):
 *    Pss (/proc/PID/smaps_rollup) summed over each pod's shim and every
 *    descendant (QEMU, virtiofsd; runc: the container's processes), over all
 *    pods / pods. PSS splits shared pages between the processes mapping them,
 *    so the template's pages that clones share are counted once in the sum.
 *    The template memory files' size, disk use (st_blocks × 512) and page
 *    cache residency (fincore) beside it.
 * 4. N pods (template on) started at once: N `ctr run -d` in parallel, wall
 *    time until `ctr task ls` shows all RUNNING; pods/minute. runc the same.
 *
 * Every pod is removed after its part; containerd's log is searched after
 * each part for the shim's "pod VM cloned from a template", "pod VM booted
 * cold" and "VM template not usable" lines, and a template pod that did not
 * clone is reported.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { CriClient, v1 } from '../src/cri-client/client.js';
import { DEFAULT_RESOURCES, loadGuestImage } from '../src/sandbox/index.js';
import { BUSYBOX_IMAGE, busyboxImage, importImage, pauseImage, projectRoot } from '../test/harness/busybox.js';
import { createTestNetwork } from '../test/harness/cni.js';
import { startContainerd, waitFor, type Containerd } from '../test/harness/containerd.js';
import { logSince, tasks } from '../test/harness/ctr.js';
import { defaultConfigText, templateConfigEdit } from '../test/harness/guest.js';
import {
  cell, check, endBench, fmtMB, fmtMs, fmtRatio, foreignLoad, intOption, logSize, MB, median, origins, parseOptions, podMem, podPss, removeTask, runBench, shimLogMs, shimOf, sum,
  type Origins, type PodMem, KATA, RUNC,
} from './lib.js';

const IMG = BUSYBOX_IMAGE;
/** ctr/CRI calls that boot or stop a VM under TCG (or wait for a template build): generous. */
const SLOW_MS = 300_000;

// ---------------------------------------------------------------------------
// arguments

interface Args {
  runs: number;
  criRuns: number;
  pods: number;
  parallel: number;
  settleMs: number;
  json: string | undefined;
  log: string | undefined;
}

function parseArgs(argv: string[]): Args {
  let runs = 10;
  let criRuns: number | undefined;
  let pods = 20;
  let parallel: number | undefined;
  let settleMs = 5000;
  let json: string | undefined;
  let log: string | undefined;
  parseOptions(argv, {
    '--runs': (v, k) => void (runs = intOption(k, v, 1)),
    '--cri-runs': (v, k) => void (criRuns = intOption(k, v, 1)),
    '--pods': (v, k) => void (pods = intOption(k, v, 1)),
    '--parallel': (v, k) => void (parallel = intOption(k, v, 1)),
    '--settle-ms': (v, k) => void (settleMs = intOption(k, v, 0)),
    '--json': (v) => void (json = v),
    '--log': (v) => void (log = v),
  }, '--runs N, --cri-runs N, --pods N, --parallel N, --settle-ms N, --json FILE, --log FILE');
  return { runs, criRuns: criRuns ?? Math.min(5, runs), pods, parallel: parallel ?? Math.min(10, pods), settleMs, json, log };
}

/** The points of `want` up to `max`, and `max` itself when it is below the largest. */
function points(want: number[], max: number): number[] {
  const out = want.filter((n) => n <= max);
  if (!out.includes(Math.min(max, want.at(-1)!))) out.push(Math.min(max, want.at(-1)!));
  return [...new Set(out)].sort((a, b) => a - b);
}

// ---------------------------------------------------------------------------
// CRI pods

type Handler = 'runc' | 'kata' | 'kata-tpl';
interface UpMs { runp: number; create: number; start: number; total: number }

class Pods {
  private seq = 0;
  constructor(private readonly cri: CriClient, private readonly c: Containerd, private readonly logDir: string) {}

  private podConfig(name: string): v1.PodSandboxConfig {
    return v1.PodSandboxConfig.fromObject({
      metadata: { name, namespace: 'bench', uid: `uid-${name}`, attempt: 0 },
      hostname: name,
      logDirectory: join(this.logDir, name),
      linux: { cgroupParent: `/${this.c.namespace}` },
    });
  }

  async up(handler: Handler): Promise<{ pod: string; ms: UpMs }> {
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
    try {
      const ctr = await this.cri.createContainer(pod, cc, pc, { timeoutMs: SLOW_MS });
      const t2 = performance.now();
      await this.cri.startContainer(ctr, { timeoutMs: SLOW_MS });
      const t3 = performance.now();
      return { pod, ms: { runp: t1 - t0, create: t2 - t1, start: t3 - t2, total: t3 - t0 } };
    } catch (e) {
      await this.down(pod).catch(() => {});
      throw e;
    }
  }

  async down(pod: string): Promise<number> {
    const t0 = performance.now();
    await this.cri.stopPodSandbox(pod, { timeoutMs: SLOW_MS });
    await this.cri.removePodSandbox(pod, { timeoutMs: SLOW_MS });
    return performance.now() - t0;
  }
}

// ---------------------------------------------------------------------------

type Kind = 'runc' | 'cold' | 'template';
const KINDS: Kind[] = ['runc', 'cold', 'template'];

interface MemPoint {
  kind: Kind;
  pods: number;
  perPod: PodMem[];
  /** ms of each pod's `ctr run -d` (the pods added for this point). */
  startMs: number[];
}

interface TemplateFile {
  dir: string;
  nic: boolean | undefined;
  sizeBytes: number;
  diskBytes: number;
  residentBytes: number | undefined;
}

/** The templates under `root`: their memory files' size, disk use and page-cache residency. */
function templateFiles(root: string): TemplateFile[] {
  const out: TemplateFile[] = [];
  let names: string[] = [];
  try {
    names = readdirSync(root);
  } catch {
    return out;
  }
  for (const n of names.filter((x) => /^[0-9a-f]{24}$/.test(x)).sort()) {
    const mem = join(root, n, 'memory');
    try {
      const st = statSync(mem);
      let nic: boolean | undefined;
      try {
        nic = (JSON.parse(readFileSync(join(root, n, 'meta.json'), 'utf8')) as { identity?: { spec?: { nic?: boolean } } }).identity?.spec?.nic;
      } catch {
        /* no meta */
      }
      const fc = spawnSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', mem], { encoding: 'utf8', timeout: 10_000 });
      const res = fc.status === 0 ? Number(fc.stdout.trim()) : NaN;
      out.push({ dir: join(root, n), nic, sizeBytes: st.size, diskBytes: st.blocks * 512, residentBytes: Number.isFinite(res) ? res : undefined });
    } catch {
      /* not a complete template */
    }
  }
  return out;
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('bench/templates needs root (containerd, netns, mounts)');
  for (const p of ['bridge', 'host-local', 'loopback']) {
    if (spawnSync('test', ['-x', `/usr/lib/cni/${p}`]).status !== 0) throw new Error(`bench/templates needs /usr/lib/cni/${p} (apt-get install containernetworking-plugins)`);
  }
  const root = projectRoot();
  const image = loadGuestImage(process.env.KATA_TS_GUEST_DIR || join(root, 'build', 'guest'));
  const log = (s: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${s}\n`);
  const started = Date.now();
  const tplPoints = points([1, 10, 20], a.pods);
  const coldPoints = points([1, 5], a.pods);
  const runcPoints = [...new Set([...tplPoints, ...coldPoints])].sort((x, y) => x - y);

  // The two configurations, and the template root, in a dir of the bench's.
  const benchDir = mkdtempSync(join(tmpdir(), 'bench-tpl-'));
  const templateRoot = join(benchDir, 'templates');
  const cfg: Record<'cold' | 'template', string> = { cold: join(benchDir, 'cold.toml'), template: join(benchDir, 'template.toml') };
  const base = defaultConfigText();
  writeFileSync(cfg.cold, base);
  writeFileSync(cfg.template, templateConfigEdit(templateRoot)(base));

  const net = createTestNetwork('kata-btp');
  let c: Containerd | undefined;
  let cri: CriClient | undefined;
  let stopSampler = () => {};
  const notes: string[] = [];
  const phaseOrigins: Record<string, Origins & { templatePods: number; foreignQemuMax: number; load1Max: number; seconds: number }> = {};
  /** Samples of other people's load, every 5 s. */
  const samples: Array<{ t: number; qemu: number; load1: number }> = [];
  try {
    c = await startContainerd({
      cri: { cniConfDir: net.confDir },
      runtimes: {
        kata: { runtimeType: KATA, options: { ConfigPath: cfg.cold } },
        'kata-tpl': { runtimeType: KATA, options: { ConfigPath: cfg.template } },
      },
      extraPath: [join(root, 'bin')],
      netns: net.ns,
    });
    const cd = c;
    const sampler = setInterval(() => samples.push({ t: Date.now(), ...foreignLoad([cd.dir, benchDir]) }), 5000);
    sampler.unref();
    stopSampler = () => clearInterval(sampler);
    const k8s = { ctr: (args: string[], o?: { timeoutMs?: number }) => cd.ctr(args, { ...o, namespace: 'k8s.io' }) };
    await importImage(cd);
    await importImage(k8s, pauseImage());
    await importImage(k8s, busyboxImage());
    cri = new CriClient({ endpoint: `unix://${cd.address}`, timeoutMs: 30_000 });
    const client = cri;
    await waitFor(async () => (await client.status()).status?.conditions?.some((x) => x.type === 'NetworkReady' && x.status), {
      timeoutMs: 30_000, what: 'CRI NetworkReady',
    });
    log(`containerd ${cd.dir} in netns ${net.ns} (CNI ${net.subnet}, snapshotter ${cd.snapshotter}); configs in ${benchDir}`);

    /** Runs `fn` as a phase; its template pods are checked against the clones in the log. */
    const phase = async <T>(name: string, fn: (count: () => void) => Promise<T>): Promise<T> => {
      const mark = logSize(cd);
      const t0 = Date.now();
      samples.push({ t: t0, ...foreignLoad([cd.dir, benchDir]) });
      let templatePods = 0;
      try {
        return await fn(() => void templatePods++);
      } finally {
        const o = origins(logSince(cd, mark));
        const during = samples.filter((x) => x.t >= t0);
        const foreignQemuMax = Math.max(0, ...during.map((x) => x.qemu));
        const load1Max = Math.max(0, ...during.map((x) => x.load1));
        phaseOrigins[name] = { ...o, templatePods, foreignQemuMax, load1Max, seconds: (Date.now() - t0) / 1000 };
        log(`${name}: ${templatePods} template pods, ${o.cloned} cloned, ${o.bootedCold} booted cold, ${o.notUsable} "template not usable", ${o.templatesMade} templates made; ` +
          `other people's QEMUs up to ${foreignQemuMax}, load average up to ${load1Max.toFixed(2)}`);
        if (o.bootedCold || o.notUsable || o.cloned < templatePods) {
          notes.push(`${name}: ${templatePods} template pods started, ${o.cloned} cloned, ${o.bootedCold} booted cold${o.reasons.length ? `: ${[...new Set(o.reasons)].join(' | ')}` : ''}`);
        }
      }
    };

    const ctrRun = (kind: Kind, args: string[], timeoutMs = SLOW_MS) =>
      cd.ctr(['run', '--runtime', kind === 'runc' ? RUNC : KATA, ...(kind === 'runc' ? [] : ['--runtime-config-path', cfg[kind]]), ...args], { timeoutMs });
    const remove = (id: string) => removeTask(cd, id);

    const pods = new Pods(client, cd, join(cd.dir, 'logs'));

    // ---- warm-up: page cache, the accelerator probe, the templates (made here, not counted)
    const warm = await phase('warm-up', async (tpl) => {
      const ms: Record<string, number> = {};
      for (const k of KINDS) {
        if (k === 'template') tpl();
        ms[`ctr ${k}`] = check(await ctrRun(k, ['--rm', IMG, `warm-${k}`, 'true']), `warm-up ctr run ${k}`).durationMs;
        log(`warm-up ctr run ${k}: ${ms[`ctr ${k}`]} ms`);
      }
      for (const h of ['runc', 'kata', 'kata-tpl'] as Handler[]) {
        if (h === 'kata-tpl') tpl();
        const r = await pods.up(h);
        ms[`cri ${h}`] = r.ms.total;
        await pods.down(r.pod);
        log(`warm-up CRI ${h}: ${r.ms.total.toFixed(0)} ms`);
      }
      return ms;
    });
    // ---- 1. ctr run --rm … true
    const runMs: Record<Kind, number[]> = { runc: [], cold: [], template: [] };
    const runLogMark = logSize(cd);
    await phase('1. ctr run --rm', async (tpl) => {
      for (let i = 1; i <= a.runs; i++) {
        const order = KINDS.map((_, j) => KINDS[(i + j) % KINDS.length]!);
        for (const k of order) {
          if (k === 'template') tpl();
          runMs[k].push(check(await ctrRun(k, ['--rm', IMG, `run-${k}-${i}`, 'true']), `ctr run ${k}`).durationMs);
        }
        log(`ctr run ${i}/${a.runs}: runc ${runMs.runc.at(-1)} ms, cold ${runMs.cold.at(-1)} ms, template ${runMs.template.at(-1)} ms`);
      }
    });

    // The shim's own timings of those runs: its pod VM ready (SandboxVm.start → agent set up), the clone within it.
    const runText = logSince(cd, runLogMark);
    const vmReady = shimLogMs(runText, 'pod VM ready');
    const cloneMs = shimLogMs(runText, 'VM cloned from a template');
    const byKind = (m: Map<string, number>, k: Kind) => Array.from({ length: a.runs }, (_, i) => m.get(`run-${k}-${i + 1}`)).filter((v): v is number => v !== undefined);
    const shimMs = {
      vmReady: { runc: [] as number[], cold: byKind(vmReady, 'cold'), template: byKind(vmReady, 'template') },
      clone: { runc: [] as number[], cold: [] as number[], template: byKind(cloneMs, 'template') },
    };

    // ---- 2. CRI runp + create + start
    const handlerOf: Record<Kind, Handler> = { runc: 'runc', cold: 'kata', template: 'kata-tpl' };
    const criUp: Record<Kind, UpMs[]> = { runc: [], cold: [], template: [] };
    const criDown: Record<Kind, number[]> = { runc: [], cold: [], template: [] };
    await phase('2. CRI', async (tpl) => {
      for (let i = 1; i <= a.criRuns; i++) {
        const order = KINDS.map((_, j) => KINDS[(i + j) % KINDS.length]!);
        for (const k of order) {
          if (k === 'template') tpl();
          const r = await pods.up(handlerOf[k]);
          criUp[k].push(r.ms);
          criDown[k].push(await pods.down(r.pod));
        }
        const f = (k: Kind) => `${k} ${criUp[k].at(-1)!.total.toFixed(0)} ms (runp ${criUp[k].at(-1)!.runp.toFixed(0)})`;
        log(`CRI ${i}/${a.criRuns}: ${KINDS.map(f).join(', ')}`);
      }
    });

    // ---- 3. memory per pod
    const mem: MemPoint[] = [];
    const memFor = async (kind: Kind, want: number[]) => {
      const live: Array<{ id: string; shim: number }> = [];
      await phase(`3. memory ${kind}`, async (tpl) => {
        try {
          for (const n of want) {
            const startMs: number[] = [];
            while (live.length < n) {
              const id = `mem-${kind}-${live.length + 1}`;
              if (kind === 'template') tpl();
              const r = check(await ctrRun(kind, ['-d', IMG, id, 'sleep', '36000']), `ctr run -d ${kind} ${id}`);
              startMs.push(r.durationMs);
              live.push({ id, shim: await waitFor(() => shimOf(cd, id), { timeoutMs: 30_000, what: `shim of ${id}` }) });
            }
            await sleep(a.settleMs);
            const perPod = live.map(({ id, shim }) => podMem(id, shim));
            mem.push({ kind, pods: n, perPod, startMs });
            const tot = sum(perPod.map(podPss));
            log(`memory ${kind} at ${n} pods: PSS ${(tot / n / MB).toFixed(1)} MB per pod (${(tot / MB).toFixed(1)} MB in all); starts ${startMs.map((x) => (x / 1000).toFixed(1)).join(' ')} s`);
          }
        } finally {
          for (const { id } of live) await remove(id).catch((e: unknown) => log(`removing ${id}: ${String(e)}`));
        }
      });
    };
    await memFor('template', tplPoints);
    const tplFiles = templateFiles(templateRoot);
    await memFor('cold', coldPoints);
    await memFor('runc', runcPoints);

    // ---- 4. pods started at once
    const par: Partial<Record<Kind, { wallMs: number; ctrMs: number[] }>> = {};
    for (const kind of ['template', 'runc'] as Kind[]) {
      const ids = Array.from({ length: a.parallel }, (_, i) => `par-${kind}-${i + 1}`);
      await phase(`4. ${a.parallel} at once ${kind}`, async (tpl) => {
        try {
          if (kind === 'template') for (const _ of ids) tpl();
          const t0 = performance.now();
          const rs = await Promise.all(ids.map((id) => ctrRun(kind, ['-d', IMG, id, 'sleep', '36000'], 600_000)));
          rs.forEach((r, i) => check(r, `ctr run -d ${kind} ${ids[i]}`));
          await waitFor(async () => {
            const t = await tasks(cd);
            return ids.every((id) => t.get(id)?.status === 'RUNNING');
          }, { timeoutMs: 600_000, intervalMs: 100, what: `${ids.length} ${kind} tasks RUNNING` });
          const wallMs = performance.now() - t0;
          par[kind] = { wallMs, ctrMs: rs.map((r) => r.durationMs) };
          log(`${a.parallel} ${kind} pods at once: all RUNNING after ${(wallMs / 1000).toFixed(2)} s (${(a.parallel / (wallMs / 60_000)).toFixed(1)} pods/min)`);
        } finally {
          await Promise.all(ids.map((id) => remove(id).catch((e: unknown) => log(`removing ${id}: ${String(e)}`))));
        }
      });
    }

    // ---- report
    const s = fmtMs;
    const mb = fmtMB;
    const x = fmtRatio;
    const timeRow = (metric: string, v: Record<Kind, number[]>) => {
      const m = { runc: median(v.runc), cold: median(v.cold), template: median(v.template) };
      return `| ${metric} | ${cell(v.runc)} | ${cell(v.cold)} | ${cell(v.template)} | ${x(m.cold / m.runc)} | ${x(m.template / m.runc)} | ${x(m.cold / m.template)} |`;
    };
    const criCol = (k: keyof UpMs): Record<Kind, number[]> => ({ runc: criUp.runc.map((u) => u[k]), cold: criUp.cold.map((u) => u[k]), template: criUp.template.map((u) => u[k]) });
    const perMin = (ms: number) => a.parallel / (ms / 60_000);
    const lines = [
      `VM templates vs cold boots vs runc, one private containerd 1.6 (CRI plugin, CNI bridge in a netns of the bench's); ` +
        `guest ${image.kernelRelease}, ${DEFAULT_RESOURCES.vcpus} vCPU, ${DEFAULT_RESOURCES.memoryMiB} MiB; host ${cpus().length} × ${cpus()[0]?.model ?? '?'}; ` +
        `${((Date.now() - started) / 1000).toFixed(0)} s. kata cold = the default configuration (virtio-fs); kata template = the same with templateConfigEdit (virtio-9p, enable_template).`,
      '',
      '| metric (median, min–max) | runc | kata cold | kata template | cold/runc | template/runc | cold/template |',
      '| --- | --- | --- | --- | --- | --- | --- |',
      timeRow(`\`ctr run --rm … true\` (${a.runs} runs each)`, runMs),
      timeRow('of which the pod VM ready (shim log: VM start → agent set up)', shimMs.vmReady),
      timeRow('of which the clone (shim log: QEMU start + state load + agent answering)', shimMs.clone),
      timeRow(`CRI runp + create + start → running container (${a.criRuns} each)`, criCol('total')),
      timeRow('of which RunPodSandbox', criCol('runp')),
      timeRow('of which CreateContainer', criCol('create')),
      timeRow('of which StartContainer', criCol('start')),
      timeRow('CRI stopp + rmp (not in the above)', criDown),
    ];
    if (par.template && par.runc) {
      lines.push(
        `| ${a.parallel} pods at once (\`ctr run -d\` in parallel), wall time until all RUNNING | ${s(par.runc.wallMs)} | — | ${s(par.template.wallMs)} | — | ${x(par.template.wallMs / par.runc.wallMs)} | — |`,
        `| the same in pods/minute | ${perMin(par.runc.wallMs).toFixed(0)} | — | ${perMin(par.template.wallMs).toFixed(1)} | — | ${x(perMin(par.template.wallMs) / perMin(par.runc.wallMs))} | — |`,
      );
    }
    const avg = (p: MemPoint, f: (m: PodMem) => number) => sum(p.perPod.map(f)) / p.pods;
    const totalOf = podPss;
    const runcAt = (n: number) => mem.find((p) => p.kind === 'runc' && p.pods === n) ?? mem.filter((p) => p.kind === 'runc').at(-1);
    lines.push(
      '',
      `| pods up (\`ctr run -d … sleep\`, PSS ${a.settleMs} ms after the last start) | runtime | **PSS / pod** (shim + all descendants) | shim PSS / pod | QEMU PSS / pod | other PSS / pod (virtiofsd; runc: container) | QEMU RSS / pod | PSS, all pods | PSS / pod vs runc |`,
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
      ...mem.map((p) => {
        const per = avg(p, totalOf);
        const r = runcAt(p.pods);
        const rPer = r ? avg(r, totalOf) : NaN;
        return `| ${p.pods} | ${p.kind === 'runc' ? 'runc' : `kata ${p.kind}`} | **${mb(per)}** | ${mb(avg(p, (m) => m.shimPss))} | ${p.kind === 'runc' ? '—' : mb(avg(p, (m) => m.qemuPss))} | ` +
          `${mb(avg(p, (m) => m.otherPss))} | ${p.kind === 'runc' ? '—' : mb(avg(p, (m) => m.qemuRss))} | ${mb(per * p.pods)} | ${p.kind === 'runc' ? '—' : x(per / rPer)} |`;
      }),
    );
    for (const t of tplFiles) {
      lines.push('', `Template memory file (${t.nic === undefined ? '?' : t.nic ? 'CRI pods, with NIC' : '`ctr run` pods, no NIC'}): ${mb(t.sizeBytes)} apparent, ` +
        `**${mb(t.diskBytes)} on disk** (st_blocks × 512)${t.residentBytes !== undefined ? `, ${mb(t.residentBytes)} in the page cache after the memory part (fincore)` : ''}; shared by all its clones.`);
    }
    const odd = [...notes];
    const shown = Object.entries(phaseOrigins).map(([k, o]) => `${k}: ${o.templatePods}/${o.cloned}`);
    lines.push('', `Template pods started / cloned (containerd log), per part: ${shown.join('; ')}.`);
    if (odd.length) lines.push('', 'Not cloned:', ...odd.map((n) => `- ${n}`));
    const busy = Object.entries(phaseOrigins).filter(([, o]) => o.foreignQemuMax > 0);
    lines.push('', busy.length
      ? `Other QEMUs on the machine (not this bench's) during: ${busy.map(([k, o]) => `${k} (up to ${o.foreignQemuMax}, load ${o.load1Max.toFixed(1)})`).join('; ')}.`
      : 'No other QEMU ran on the machine during the bench.');

    const json = {
      kernel: image.kernelRelease, resources: DEFAULT_RESOURCES, args: a, seconds: (Date.now() - started) / 1000,
      warmUpMs: warm, ctrRunMs: runMs, shimLogMs: shimMs, criUpMs: criUp, criDownMs: criDown,
      medians: {
        ctrRun: Object.fromEntries(KINDS.map((k) => [k, median(runMs[k])])),
        criUp: Object.fromEntries(KINDS.map((k) => [k, median(criUp[k].map((u) => u.total))])),
      },
      memory: mem.map((p) => ({ ...p, pssPerPodBytes: avg(p, totalOf) })),
      templateFiles: tplFiles, parallel: par, origins: phaseOrigins, notes, foreignLoadSamples: samples,
    };
    if (a.json) writeFileSync(a.json, JSON.stringify(json, null, 2) + '\n');
    console.log(lines.join('\n'));
  } finally {
    stopSampler();
    cri?.close();
    // A template build's QEMU names the bench dir (not containerd's): endBench ends any left, by pid, then removes the dir.
    await endBench('bench/templates', c, { log: a.log, dir: benchDir, before: () => net.close() });
  }
}

runBench('bench/templates', main);
