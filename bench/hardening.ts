/**
 * What QEMU's hardening costs (issue 20's benchmark), on ONE private
 * containerd 1.6, in one run:
 *
 *   npm run bench:hardening                        # build, then the bench
 *   node dist/bench/hardening.js --runs 3          # fewer rounds
 *   node dist/bench/hardening.js --json out.json   # raw per-run numbers too
 *
 * Options: --runs N (5), --execs N (5 per idle pod), --settle-ms N (5000),
 * --json FILE, --log FILE (a copy of containerd's log). Needs root, the
 * build and build/guest.
 *
 * Variants, each the project's default configuration (defaultConfigText())
 * passed per run with `--runtime-config-path`, changed by one or two lines:
 *   runc                  the reference
 *   kata hardened         the default: rootless (kata-ts-jailer: own uid, no
 *                         capabilities, no_new_privs, private root) and
 *                         seccompsandbox
 *   kata root + seccomp   rootless = false
 *   kata root, no seccomp rootless = false, seccompsandbox = "" (QEMU as the
 *                         project ran it before issue 20)
 *
 * 1. `ctr run --rm busybox … true` (a cold VM each), rotating order per
 *    round after a warm-up each; the shim's "vm started" (spawn → QMP up,
 *    which includes the jailer's work) and "pod VM ready" beside it.
 * 2. Idle pods (`ctr run -d … sleep 3600`), one at a time: `ctr task exec
 *    … true` × --execs, then PSS (/proc/PID/smaps_rollup) of the shim and
 *    every descendant and QEMU's RSS after --settle-ms, then removed.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadGuestImage } from '../src/sandbox/index.js';
import { BUSYBOX_IMAGE, importImage, projectRoot } from '../test/harness/busybox.js';
import { startContainerd, waitFor, type Containerd } from '../test/harness/containerd.js';
import { logSince } from '../test/harness/ctr.js';
import { defaultConfigText } from '../test/harness/guest.js';
import {
  cell, check, commonOptions, COMMON_USAGE, endBench, fmtMB, fmtMs, fmtRatio, foreignLoad, intOption, logSize, median, parseOptions, podMem, podPss, removeTask, rotated, runBench, shimLogMs, shimOf,
  type CommonArgs, type PodMem, KATA, RUNC,
} from './lib.js';

const IMG = BUSYBOX_IMAGE;
const SLOW_MS = 300_000;

interface Variant {
  key: string;
  label: string;
  /** undefined: runc; else an edit of the default configuration. */
  edit?: (text: string) => string;
}

const line = (re: RegExp, to: string) => (text: string): string => {
  if (!re.test(text)) throw new Error(`bench/hardening: no ${re} line in the default configuration`);
  return text.replace(re, to);
};
const rootOff = line(/^rootless = true$/m, 'rootless = false');
const seccompOff = line(/^seccompsandbox = ".*"$/m, 'seccompsandbox = ""');

const VARIANTS: Variant[] = [
  { key: 'runc', label: 'runc' },
  { key: 'hardened', label: 'kata hardened (default)', edit: (t) => t },
  { key: 'root', label: 'kata, rootless = false', edit: rootOff },
  { key: 'bare', label: 'kata, rootless = false, seccompsandbox = ""', edit: (t) => seccompOff(rootOff(t)) },
];

interface Args extends CommonArgs { execs: number }

function parseArgs(argv: string[]): Args {
  const a: Args = { runs: 5, execs: 5, settleMs: 5000, json: undefined, log: undefined };
  parseOptions(argv, { ...commonOptions(a), '--execs': (v, k) => void (a.execs = intOption(k, v, 1)) }, `${COMMON_USAGE}, --execs N`);
  return a;
}

interface IdleRun { mem: PodMem; execMs: number[] }

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('bench/hardening needs root (containerd, mounts)');
  const root = projectRoot();
  const image = loadGuestImage(process.env.KATA_TS_GUEST_DIR || join(root, 'build', 'guest'));
  const log = (s: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${s}\n`);
  const started = Date.now();
  const benchDir = mkdtempSync(join(tmpdir(), 'bench-hardening-'));
  const cfg = new Map<string, string>();
  const base = defaultConfigText();
  for (const v of VARIANTS) {
    if (!v.edit) continue;
    const f = join(benchDir, `${v.key}.toml`);
    writeFileSync(f, v.edit(base));
    cfg.set(v.key, f);
  }
  let c: Containerd | undefined;
  const notes: string[] = [];
  const samples: Array<{ qemu: number; load1: number }> = [];
  const sampler = setInterval(() => samples.push(foreignLoad([benchDir, ...(c ? [c.dir] : [])])), 5000);
  sampler.unref();
  try {
    c = await startContainerd({ extraPath: [join(root, 'bin')] });
    const cd = c;
    await importImage(cd);
    log(`containerd ${cd.dir}; configs in ${benchDir}`);
    const ctrRun = (v: Variant, args: string[]) => cd.ctr(['run', '--runtime', v.edit ? KATA : RUNC, ...(v.edit ? ['--runtime-config-path', cfg.get(v.key)!] : []), ...args], { timeoutMs: SLOW_MS });
    const runOnce = async (v: Variant, id: string): Promise<number | undefined> => {
      const r = await ctrRun(v, ['--rm', IMG, id, 'true']);
      if (r.code === 0) return r.durationMs;
      notes.push(`${id} failed: exit ${r.code ?? r.signal}: ${r.stderr.trim().slice(0, 300)}`);
      await removeTask(cd, id).catch(() => {});
      return undefined;
    };

    // ---- 1. cold pods
    const runMark = logSize(cd);
    for (const v of VARIANTS) log(`warm-up ${v.key}: ${fmtMs((await runOnce(v, `warm-${v.key}`)) ?? NaN)}`);
    const runMs: Record<string, number[]> = Object.fromEntries(VARIANTS.map((v) => [v.key, []]));
    for (let i = 1; i <= a.runs; i++) {
      const got: string[] = [];
      for (const v of rotated(VARIANTS, i)) {
        const ms = await runOnce(v, `run-${v.key}-${i}`);
        if (ms !== undefined) runMs[v.key]!.push(ms);
        got.push(`${v.key} ${ms === undefined ? 'failed' : fmtMs(ms)}`);
      }
      log(`round ${i}/${a.runs}: ${got.join(', ')}`);
    }
    const runText = logSince(cd, runMark);
    const byPod = (msg: string) => {
      const m = shimLogMs(runText, msg);
      return (v: Variant) => Array.from({ length: a.runs }, (_, i) => m.get(`run-${v.key}-${i + 1}`)).filter((x): x is number => x !== undefined);
    };
    const vmStarted = byPod('vm started');
    const vmReady = byPod('pod VM ready');

    // ---- 2. idle pods: exec, then memory
    const idle: Record<string, IdleRun[]> = Object.fromEntries(VARIANTS.map((v) => [v.key, []]));
    for (let i = 1; i <= a.runs; i++) {
      for (const v of rotated(VARIANTS, i)) {
        const id = `idle-${v.key}-${i}`;
        try {
          check(await ctrRun(v, ['-d', IMG, id, 'sleep', '3600']), `ctr run -d ${id}`);
          const shim = await waitFor(() => shimOf(cd, id), { timeoutMs: 30_000, what: `shim of ${id}` });
          const execMs: number[] = [];
          for (let e = 1; e <= a.execs; e++) {
            execMs.push(check(await cd.ctr(['task', 'exec', '--exec-id', `x${e}`, id, 'true'], { timeoutMs: 60_000 }), `exec ${id}`).durationMs);
          }
          await sleep(a.settleMs);
          const mem = podMem(id, shim);
          idle[v.key]!.push({ mem, execMs });
          log(`idle ${id}: exec ${fmtMs(median(execMs))}, PSS ${fmtMB(podPss(mem))} (QEMU RSS ${fmtMB(mem.qemuRss)})`);
        } catch (e) {
          notes.push(`${id} failed: ${(e as Error).message.split('\n')[0]!.slice(0, 300)}`);
        } finally {
          await removeTask(cd, id).catch((e: unknown) => log(`removing ${id}: ${String(e)}`));
        }
      }
    }

    // ---- report
    const runc = median(runMs.runc!);
    const bare = median(runMs.bare!);
    const execs = (k: string) => idle[k]!.flatMap((r) => r.execMs);
    const pss = (k: string) => median(idle[k]!.map((r) => podPss(r.mem)));
    const mbCell = (xs: number[]) => (xs.length ? `${fmtMB(median(xs))} (${fmtMB(Math.min(...xs))}–${fmtMB(Math.max(...xs))})` : '—');
    const lines = [
      `QEMU hardening's cost, one private containerd 1.6; guest ${image.kernelRelease}; host ${cpus().length} × ${cpus()[0]?.model ?? '?'}; ` +
        `${((Date.now() - started) / 1000).toFixed(0)} s. The project's default configuration, changed by the lines named.`,
      '',
      `| \`ctr run --rm busybox … true\` (${a.runs} runs; median, min–max) | ctr run | vs runc | vs kata unhardened | vm started (spawn → QMP, shim log) | pod VM ready (shim log) |`,
      '| --- | --- | --- | --- | --- | --- |',
      ...VARIANTS.map((v) => `| ${v.label} | ${cell(runMs[v.key]!)} | ${v.edit ? fmtRatio(median(runMs[v.key]!) / runc) : '—'} | ${v.edit ? fmtRatio(median(runMs[v.key]!) / bare) : '—'} | ${v.edit ? cell(vmStarted(v)) : '—'} | ${v.edit ? cell(vmReady(v)) : '—'} |`),
      '',
      `| idle pod (\`ctr run -d … sleep 3600\`; ${a.runs} pods, ${a.execs} execs each) | \`ctr task exec … true\` | vs runc | vs kata unhardened | **PSS / pod** (shim + descendants, ${a.settleMs} ms after start) | QEMU RSS | vs kata unhardened (PSS) |`,
      '| --- | --- | --- | --- | --- | --- | --- |',
      ...VARIANTS.map((v) => `| ${v.label} | ${cell(execs(v.key))} | ${v.edit ? fmtRatio(median(execs(v.key)) / median(execs('runc'))) : '—'} | ${v.edit ? fmtRatio(median(execs(v.key)) / median(execs('bare'))) : '—'} | ` +
        `**${mbCell(idle[v.key]!.map((r) => podPss(r.mem)))}** | ${v.edit ? mbCell(idle[v.key]!.map((r) => r.mem.qemuRss)) : '—'} | ${v.edit ? fmtRatio(pss(v.key) / pss('bare')) : '—'} |`),
    ];
    const foreign = Math.max(0, ...samples.map((x) => x.qemu));
    lines.push('', foreign ? `Other QEMUs on the machine during the bench: up to ${foreign}, load average up to ${Math.max(...samples.map((x) => x.load1)).toFixed(1)}.` : 'No other QEMU ran on the machine during the bench.');
    if (notes.length) lines.push('', 'Notes:', ...notes.map((n) => `- ${n}`));
    if (a.json) {
      writeFileSync(a.json, JSON.stringify({ kernel: image.kernelRelease, args: a, ctrRunMs: runMs, vmStartedMs: Object.fromEntries(VARIANTS.map((v) => [v.key, vmStarted(v)])), idle, notes }, null, 2) + '\n');
    }
    console.log(lines.join('\n'));
  } finally {
    clearInterval(sampler);
    await endBench('bench/hardening', c, { log: a.log, dir: benchDir });
  }
}

runBench('bench/hardening', main);
