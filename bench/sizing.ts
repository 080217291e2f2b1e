/**
 * Pods sized by their containers' resources (issue 18's benchmark), on ONE
 * private containerd 1.6 with its CRI plugin, in one run:
 *
 *   npm run bench:sizing                        # build, then the bench
 *   node dist/bench/sizing.js --runs 3          # fewer rounds
 *   node dist/bench/sizing.js --json out.json   # raw per-run numbers to out.json too
 *
 * Options: --runs N (5), --settle-ms N (5000: wait before reading memory),
 * --json FILE, --log FILE (a copy of containerd's log, the shims' lines in
 * it, taken before it stops). Its warnings and errors are counted by message
 * under the tables. Needs root, the build (bin/containerd-shim-kata-v2) and
 * build/guest.
 *
 * "Sized" = `ctr run --memory-limit 1073741824 --cpus 1`: the VM gets the
 * defaults (1 vCPU, 256 MiB) plus the container's limits, 2 vCPUs and
 * 1280 MiB. Three configuration files of the bench's own, all the project's
 * default (defaultConfigText()) passed per run (`--runtime-config-path`):
 * `q35.toml` as is (the default), `microvm.toml` with machine_type = "microvm", `q35-tpl.toml`
 * that and templateConfigEdit(<bench dir>/templates) (virtio-9p, templates).
 *
 * 1. `ctr run --rm busybox … true`: runc; kata microvm default and sized (the
 *    VM boots sized); kata q35 default and sized (boots sized); a q35
 *    template clone default and sized (a clone starts at its template's size
 *    and grows by hot-plug). Variants in rotating order each round, after
 *    one warm-up run each (the template's makes the template). The shim's
 *    "pod VM ready", "VM cloned from a template" and "vm grown" (the QMP part
 *    of a hot-plug) from containerd's log beside them.
 * 2. Idle pods (`ctr run -d … sleep 3600`), one at a time: runc; microvm
 *    default and sized; q35 default and sized; a q35 pod grown by hot-plug (a
 *    default pod, then a second container with the limits joins it: the
 *    shim's "pod VM grown for its containers" = QMP + the agent onlining).
 *    PSS (/proc/PID/smaps_rollup) of the shim and every descendant after
 *    --settle-ms, then what the guest sees (MemTotal, CPUs), then removed.
 *    Memory the guest never touched is not paid for: a sized idle pod should
 *    cost about what a default one does.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadGuestImage } from '../src/sandbox/index.js';
import { BUSYBOX_IMAGE, importImage, projectRoot } from '../test/harness/busybox.js';
import { startContainerd, waitFor, type Containerd } from '../test/harness/containerd.js';
import { logSince, podAnnotations } from '../test/harness/ctr.js';
import { defaultConfigText, templateConfigEdit } from '../test/harness/guest.js';
import {
  cell, check, commonOptions, COMMON_USAGE, endBench, fmtMB, fmtMs, fmtRatio, foreignLoad, logSize, median, origins, parseOptions, podMem, podPss, removeTask, rotated, runBench, shimLogMs, shimOf,
  type CommonArgs, type PodMem, KATA, RUNC,
} from './lib.js';

const IMG = BUSYBOX_IMAGE;
/** ctr calls that boot or stop a VM under TCG (or wait for a template build): generous. */
const SLOW_MS = 300_000;
/** A container's limits: 1 GiB and one CPU (quota = period). */
const SIZED = ['--memory-limit', String(1024 ** 3), '--cpus', '1'];

type Config = 'microvm' | 'q35' | 'q35-tpl';
interface Variant {
  key: string;
  label: string;
  /** undefined: runc. */
  config?: Config;
  sized: boolean;
  /** The VM at its start (what the flags and the configuration give). */
  vm: string;
}

const RUN_VARIANTS: Variant[] = [
  { key: 'runc', label: 'runc', sized: false, vm: '—' },
  { key: 'microvm', label: 'kata microvm default', config: 'microvm', sized: false, vm: '1 vCPU, 256 MiB' },
  { key: 'microvm-sized', label: 'kata microvm sized', config: 'microvm', sized: true, vm: '2 vCPUs, 1280 MiB (at boot)' },
  { key: 'q35', label: 'kata q35 default', config: 'q35', sized: false, vm: '1 vCPU, 256 MiB' },
  { key: 'q35-sized', label: 'kata q35 sized', config: 'q35', sized: true, vm: '2 vCPUs, 1280 MiB (at boot)' },
  { key: 'tpl', label: 'kata q35 template clone default', config: 'q35-tpl', sized: false, vm: '1 vCPU, 256 MiB (the template)' },
  { key: 'tpl-sized', label: 'kata q35 template clone sized', config: 'q35-tpl', sized: true, vm: 'the template + 1 vCPU + 1 GiB (hot-plug)' },
];

/** Idle pods: `grown` is a default q35 pod that a second container with the limits grows by hot-plug. */
const IDLE_VARIANTS: Array<Variant & { grown?: boolean }> = [
  RUN_VARIANTS[0]!, RUN_VARIANTS[1]!, RUN_VARIANTS[2]!, RUN_VARIANTS[3]!, RUN_VARIANTS[4]!,
  { key: 'q35-grown', label: 'kata q35 grown by a 2nd container', config: 'q35', sized: false, grown: true, vm: '1 vCPU, 256 MiB + 1 vCPU + 1 GiB (hot-plug)' },
];

function parseArgs(argv: string[]): CommonArgs {
  const a: CommonArgs = { runs: 5, settleMs: 5000, json: undefined, log: undefined };
  parseOptions(argv, commonOptions(a), COMMON_USAGE);
  return a;
}

/** What the guest of pod `id` sees: MemTotal (bytes) and online CPUs. */
async function guestView(c: Containerd, id: string): Promise<{ memTotal: number; cpus: number } | undefined> {
  const r = await c.ctr(['task', 'exec', '--exec-id', `view-${Date.now()}`, id, 'sh', '-c', 'grep MemTotal /proc/meminfo; grep -c ^processor /proc/cpuinfo'], { timeoutMs: 60_000 });
  const m = /MemTotal:\s+(\d+) kB\s+(\d+)/.exec(r.stdout);
  return r.code === 0 && m ? { memTotal: Number(m[1]) * 1024, cpus: Number(m[2]) } : undefined;
}

/** Warnings and errors in containerd's log (its own lines and its shims' JSON lines), counted by message. */
function logTrouble(text: string): string[] {
  const n = new Map<string, number>();
  const shimLine = (line: string): string | undefined => {
    try {
      const o = JSON.parse(line) as { level?: unknown; msg?: unknown; err?: { message?: unknown } };
      if (typeof o.level !== 'number' || o.level < 40) return undefined;
      return `shim ${o.level >= 50 ? 'error' : 'warning'}: ${String(o.msg)}${o.err?.message !== undefined ? ` (${String(o.err.message).slice(0, 200)})` : ''}`;
    } catch {
      return undefined; // not a whole line
    }
  };
  for (const line of text.split('\n')) {
    let what: string | undefined;
    if (line.startsWith('{')) what = shimLine(line);
    else {
      const m = /level=(warning|error|fatal) msg="((?:[^"\\]|\\.)*)"/.exec(line);
      // "cleanup warnings": what a shim's `delete` wrote on stderr, quoted; its message, not its time and pid.
      const inner = m && /^cleanup warnings/.test(m[2]!) ? /msg=\\"((?:[^"\\]|\\.)*?)\\"|\\"msg\\":\\"((?:[^"\\]|\\.)*?)\\"/.exec(m[2]!) : undefined;
      if (m) what = `containerd ${m[1]}: ${inner ? `cleanup warnings (a shim's delete said: ${inner[1] ?? inner[2]})` : m[2]!.slice(0, 200)}`;
    }
    if (what) n.set(what, (n.get(what) ?? 0) + 1);
  }
  return [...n].sort((x, y) => y[1] - x[1]).map(([w, k]) => `${k} × ${w}`);
}

/** The shim's errors about pod `pod` in `text` (its "pod VM is lost" and why). */
function podErrors(text: string, pod: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{') || !line.includes(`"pod":"${pod}"`)) continue;
    try {
      const o = JSON.parse(line) as { level?: unknown; msg?: unknown; why?: unknown; err?: { message?: unknown } };
      if (typeof o.level === 'number' && o.level >= 50) out.push(`${String(o.msg)}${o.why !== undefined ? ` (${String(o.why)})` : o.err?.message !== undefined ? ` (${String(o.err.message)})` : ''}`);
    } catch {
      /* not a whole line */
    }
  }
  return [...new Set(out)];
}

interface IdleRun {
  mem: PodMem;
  guest: { memTotal: number; cpus: number } | undefined;
  /** ms of the `ctr run -d` of the pod (and of the container that grew it). */
  startMs: number;
  growStartMs?: number;
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('bench/sizing needs root (containerd, mounts)');
  const root = projectRoot();
  const image = loadGuestImage(process.env.KATA_TS_GUEST_DIR || join(root, 'build', 'guest'));
  const log = (s: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${s}\n`);
  const started = Date.now();

  const benchDir = mkdtempSync(join(tmpdir(), 'bench-sizing-'));
  const cfg: Record<Config, string> = { microvm: join(benchDir, 'microvm.toml'), q35: join(benchDir, 'q35.toml'), 'q35-tpl': join(benchDir, 'q35-tpl.toml') };
  // The default is q35; microvm by one line.
  const q35 = defaultConfigText();
  const microvm = q35.replace(/^machine_type = "q35"$/m, 'machine_type = "microvm"');
  if (microvm === q35) throw new Error('bench/sizing: no `machine_type = "q35"` line in the default configuration');
  writeFileSync(cfg.microvm, microvm);
  writeFileSync(cfg.q35, q35);
  writeFileSync(cfg['q35-tpl'], templateConfigEdit(join(benchDir, 'templates'))(q35));

  let c: Containerd | undefined;
  const live = new Set<string>();
  const notes: string[] = [];
  const samples: Array<{ qemu: number; load1: number }> = [];
  const sampler = setInterval(() => samples.push(foreignLoad([benchDir, ...(c ? [c.dir] : [])])), 5000);
  sampler.unref();
  try {
    c = await startContainerd({ cri: true, extraPath: [join(root, 'bin')] });
    const cd = c;
    await importImage(cd);
    log(`containerd ${cd.dir} (snapshotter ${cd.snapshotter}); configs in ${benchDir}`);

    const ctrRun = (v: Variant, args: string[]) => cd.ctr([
      'run', '--runtime', v.config ? KATA : RUNC, ...(v.config ? ['--runtime-config-path', cfg[v.config]] : []), ...(v.sized ? SIZED : []), ...args,
    ], { timeoutMs: SLOW_MS });
    const remove = async (id: string) => {
      await removeTask(cd, id).catch((e: unknown) => log(`removing ${id}: ${String(e)}`));
      live.delete(id);
    };
    /** A run that failed: noted with its shim's errors and left out of the medians; its pod removed; the bench goes on. */
    const failed = async (id: string, why: unknown) => {
      const msg = (why instanceof Error ? why.message : String(why)).split('\n')[0]!.slice(0, 300);
      const shim = podErrors(logSince(cd, 0), id);
      notes.push(`${id} failed: ${msg}${shim.length ? `; the shim: ${shim.join(' | ')}` : ''}`);
      log(`${id} FAILED: ${msg}`);
      await remove(id);
    };
    /** `ctr run --rm … true` of `id`: its ms, or undefined when it failed (noted). */
    const runOnce = async (v: Variant, id: string): Promise<number | undefined> => {
      const r = await ctrRun(v, ['--rm', IMG, id, 'true']);
      if (r.code === 0) return r.durationMs;
      await failed(id, `ctr run: exit ${r.code ?? r.signal}${r.timedOut ? ' (timed out)' : ''}: ${r.stderr.trim()}`);
      return undefined;
    };

    // ---- 1. ctr run --rm … true, a warm-up each first (page cache, the accelerator probe, the template)
    const runMark = logSize(cd);
    const warmMs: Record<string, number> = {};
    for (const v of RUN_VARIANTS) {
      const ms = await runOnce(v, `warm-${v.key}`);
      if (ms !== undefined) warmMs[v.key] = ms;
      log(`warm-up ${v.key}: ${ms === undefined ? 'failed' : fmtMs(ms)}`);
    }
    const runMs: Record<string, number[]> = Object.fromEntries(RUN_VARIANTS.map((v) => [v.key, []]));
    for (let i = 1; i <= a.runs; i++) {
      const round: Record<string, number | undefined> = {};
      for (const v of rotated(RUN_VARIANTS, i)) {
        round[v.key] = await runOnce(v, `run-${v.key}-${i}`);
        if (round[v.key] !== undefined) runMs[v.key]!.push(round[v.key]!);
      }
      log(`round ${i}/${a.runs}: ${RUN_VARIANTS.map((v) => `${v.key} ${round[v.key] === undefined ? 'failed' : fmtMs(round[v.key]!)}`).join(', ')}`);
    }
    const runText = logSince(cd, runMark);
    const byVariant = (msg: string) => {
      const m = shimLogMs(runText, msg);
      return (v: Variant) => Array.from({ length: a.runs }, (_, i) => m.get(`run-${v.key}-${i + 1}`)).filter((x): x is number => x !== undefined);
    };
    const vmReady = byVariant('pod VM ready');
    const cloneMs = byVariant('VM cloned from a template');
    const vmGrown = byVariant('vm grown');
    const tplOrigins = origins(runText);
    const tplPods = 2 * (a.runs + 1);
    if (tplOrigins.cloned !== tplPods || tplOrigins.bootedCold || tplOrigins.notUsable) {
      notes.push(`template pods: ${tplPods} started, ${tplOrigins.cloned} cloned, ${tplOrigins.bootedCold} booted cold${tplOrigins.reasons.length ? `: ${[...new Set(tplOrigins.reasons)].join(' | ')}` : ''}`);
    }

    // ---- 2. idle pods, one at a time
    const idle: Record<string, IdleRun[]> = Object.fromEntries(IDLE_VARIANTS.map((v) => [v.key, []]));
    const idleMark = logSize(cd);
    for (let i = 1; i <= a.runs; i++) {
      for (const v of rotated(IDLE_VARIANTS, i)) {
        const id = `idle-${v.key}-${i}`;
        const ids = v.grown ? [id, `${id}-c`] : [id];
        try {
          live.add(id);
          const r = check(await ctrRun(v, ['-d', ...(v.grown ? podAnnotations(id, id) : []), IMG, id, 'sleep', '3600']), `ctr run -d ${id}`);
          let growStartMs: number | undefined;
          if (v.grown) {
            live.add(ids[1]!);
            growStartMs = check(await ctrRun({ ...v, sized: true }, ['-d', ...podAnnotations(id, ids[1]!), IMG, ids[1]!, 'sleep', '3600']), `ctr run -d ${ids[1]}`).durationMs;
          }
          const shim = await waitFor(() => shimOf(cd, id), { timeoutMs: 30_000, what: `shim of ${id}` });
          await sleep(a.settleMs);
          const mem = podMem(id, shim);
          const guest = v.config ? await guestView(cd, id) : undefined;
          idle[v.key]!.push({ mem, guest, startMs: r.durationMs, ...(growStartMs !== undefined ? { growStartMs } : {}) });
          log(`idle ${id}: PSS ${fmtMB(podPss(mem))} (QEMU ${fmtMB(mem.qemuPss)})${guest ? `, guest MemTotal ${fmtMB(guest.memTotal)}, ${guest.cpus} CPUs` : ''}`);
        } catch (e) {
          await failed(id, e);
        } finally {
          for (const x of [...ids].reverse()) if (live.has(x)) await remove(x);
        }
      }
    }
    const idleText = logSince(cd, idleMark);
    const grownPods = IDLE_VARIANTS.filter((v) => v.grown).flatMap((v) => Array.from({ length: a.runs }, (_, i) => `idle-${v.key}-${i + 1}`));
    const hotQmp = shimLogMs(idleText, 'vm grown');
    const hotAll = shimLogMs(idleText, 'pod VM grown for its containers');
    const pick = (m: Map<string, number>) => grownPods.map((p) => m.get(p)).filter((x): x is number => x !== undefined);
    const hot = { qmp: pick(hotQmp), total: pick(hotAll), ctr: idle['q35-grown']!.map((r) => r.growStartMs!).filter((x) => x !== undefined) };
    if (hot.total.length < grownPods.length) notes.push(`"pod VM grown for its containers" logged for ${hot.total.length} of ${grownPods.length} grown pods`);

    // ---- report
    const runcRun = median(runMs.runc!);
    /** Fewer samples than runs: some failed (see the notes). */
    const short = (xs: unknown[]) => (xs.length < a.runs ? ` [${xs.length} of ${a.runs}]` : '');
    const readyOf = (key: string) => vmReady(RUN_VARIANTS.find((v) => v.key === key)!);
    const lines = [
      `Pods sized by their resources (\`--memory-limit 1073741824 --cpus 1\`), one private containerd 1.6 (CRI plugin); guest ${image.kernelRelease}; ` +
        `host ${cpus().length} × ${cpus()[0]?.model ?? '?'}; ${((Date.now() - started) / 1000).toFixed(0)} s. The project's default configuration (virtio-fs), ` +
        `machine_type microvm by one line, templates by templateConfigEdit (virtio-9p).`,
      '',
      `| \`ctr run --rm busybox … true\` (${a.runs} runs each; median, min–max) | VM at start | ctr run | vs runc | pod VM ready (shim log) | of which the clone | of which the hot-plug QMP ("vm grown") |`,
      '| --- | --- | --- | --- | --- | --- | --- |',
      ...RUN_VARIANTS.map((v) => `| ${v.label} | ${v.vm} | ${cell(runMs[v.key]!)}${short(runMs[v.key]!)} | ${v.config ? fmtRatio(median(runMs[v.key]!) / runcRun) : '—'} | ` +
        `${cell(vmReady(v))} | ${cell(cloneMs(v))} | ${cell(vmGrown(v))} |`),
      '',
      '| hot-plug of 1 vCPU + 1 GiB on q35 (median, min–max) | QMP ("vm grown") | QMP + agent onlining ("pod VM grown for its containers") | ctr run of the container |',
      '| --- | --- | --- | --- |',
      `| a template clone, at its start (\`ctr run --rm\`, ${a.runs}) | ${cell(vmGrown(RUN_VARIANTS[6]!))} | not logged apart; pod VM ready sized − default clone: ${fmtMs(median(readyOf('tpl-sized')) - median(readyOf('tpl')))} | ${cell(runMs['tpl-sized']!)} |`,
      `| a running default pod, a 2nd container with the limits joins it (\`ctr run -d\`, ${a.runs}) | ${cell(hot.qmp)} | ${cell(hot.total)} | ${cell(hot.ctr)} |`,
      '',
      `| idle pod (\`ctr run -d … sleep 3600\`, PSS ${a.settleMs} ms after its start; median, min–max of ${a.runs}) | VM | guest MemTotal, CPUs | **PSS / pod** (shim + all descendants) | QEMU PSS | QEMU RSS | shim PSS | vs runc | vs default of its machine |`,
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ];
    const mbCell = (xs: number[]) => (xs.length ? `${fmtMB(median(xs))} (${fmtMB(Math.min(...xs))}–${fmtMB(Math.max(...xs))})` : '—');
    const pss = (key: string) => median(idle[key]!.map((r) => podPss(r.mem)));
    for (const v of IDLE_VARIANTS) {
      const rs = idle[v.key]!;
      const g = rs.map((r) => r.guest).filter((x) => x !== undefined);
      const gv = g.length ? `${fmtMB(median(g.map((x) => x.memTotal)))}, ${median(g.map((x) => x.cpus))}` : '—';
      const kata = v.config !== undefined;
      const def = v.config === 'q35' ? 'q35' : 'microvm';
      lines.push(`| ${v.label} | ${v.vm} | ${gv} | **${mbCell(rs.map((r) => podPss(r.mem)))}**${short(rs)} | ${kata ? mbCell(rs.map((r) => r.mem.qemuPss)) : '—'} | ${kata ? mbCell(rs.map((r) => r.mem.qemuRss)) : '—'} | ` +
        `${mbCell(rs.map((r) => r.mem.shimPss))} | ${kata ? fmtRatio(pss(v.key) / pss('runc')) : '—'} | ${kata && v.key !== def ? fmtRatio(pss(v.key) / pss(def)) : '—'} |`);
    }
    const foreign = Math.max(0, ...samples.map((x) => x.qemu));
    lines.push('', foreign
      ? `Other QEMUs on the machine (not this bench's) during the bench: up to ${foreign}, load average up to ${Math.max(...samples.map((x) => x.load1)).toFixed(1)}.`
      : 'No other QEMU ran on the machine during the bench.');
    const trouble = logTrouble(logSince(cd, 0));
    lines.push('', trouble.length ? `Warnings and errors in containerd's log: ${trouble.slice(0, 10).join('; ')}${trouble.length > 10 ? `; and ${trouble.length - 10} more kinds` : ''}.` : 'No warning or error in containerd\'s log.');
    if (notes.length) lines.push('', 'Notes:', ...notes.map((n) => `- ${n}`));

    if (a.json) {
      writeFileSync(a.json, JSON.stringify({
        kernel: image.kernelRelease, args: a, seconds: (Date.now() - started) / 1000, warmUpMs: warmMs, ctrRunMs: runMs,
        shimLogMs: Object.fromEntries(RUN_VARIANTS.map((v) => [v.key, { vmReady: vmReady(v), clone: cloneMs(v), vmGrown: vmGrown(v) }])),
        hotplugRunningPod: hot, idle, origins: tplOrigins, notes, logTrouble: trouble, foreignLoadSamples: samples,
        medians: { ctrRun: Object.fromEntries(RUN_VARIANTS.map((v) => [v.key, median(runMs[v.key]!)])), idlePss: Object.fromEntries(IDLE_VARIANTS.map((v) => [v.key, pss(v.key)])) },
      }, null, 2) + '\n');
    }
    console.log(lines.join('\n'));
  } finally {
    clearInterval(sampler);
    await endBench('bench/sizing', c, { log: a.log, dir: benchDir });
  }
}

runBench('bench/sizing', main);
