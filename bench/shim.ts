/**
 * The shim against containerd's own runc shim, on ONE private containerd
 * (issue #5's benchmark), measured in one run:
 *
 *   npm run bench:shim               # build, then the bench (~5 min under TCG here)
 *   node dist/bench/shim.js --json   # machine-readable result on stdout
 *
 * Options: --runs N (10: `ctr run` and VM boots), --execs N (10),
 * --stream-mib N (64), --stream-runs N (3), --json.
 * Needs root, the build (bin/containerd-shim-kata-v2) and build/guest.
 *
 * 1. `ctr run --rm … true`: wall time of the whole ctr command (create, start,
 *    wait, delete: for kata the VM boot and the pod's teardown are in it),
 *    io.containerd.kata.v2 against io.containerd.runc.v2, runs alternating.
 *    In the same loop, the VM alone: SandboxVm.start() (QEMU + kernel + guest
 *    init + agent answering, the same image, machine, accelerator and
 *    resources as the shim's pods) up to its timings.readyMs, then stopped.
 *    Target: kata − runc ≤ 1.2 × boot-to-ready (medians), i.e. what the shim
 *    itself adds to a VM boot is small.
 * 2. `ctr task exec … true` into a running container of each runtime,
 *    alternating. Target: kata ≤ 3 × runc (medians).
 * 3. stdout through `ctr run --rm … dd if=/dev/zero bs=65536 count=N`:
 *    bytes ctr wrote to its stdout / (EOF − first byte), so the VM boot is not
 *    in it. Ratio kata/runc (no target in the issue).
 * 4. RSS (VmRSS from /proc) of the pod's shim process while its container
 *    runs (after start, and after the exec loop), against the runc shim's;
 *    QEMU's (and virtiofsd's) RSS per pod. Target: shim ≤ 45 MB.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createLogger } from '../src/log/index.js';
import { DEFAULT_RESOURCES, loadGuestImage, SandboxVm } from '../src/sandbox/index.js';
import { mountsUnder } from '../src/vm/index.js';
import { BUSYBOX_IMAGE, importImage, projectRoot } from '../test/harness/busybox.js';
import { descendants, procCmdline, startContainerd, waitFor, type Containerd, type CtrResult } from '../test/harness/containerd.js';
import { rssBytes } from '../test/harness/ctr.js';
import { KATA, RUNC } from './lib.js';

const IMG = BUSYBOX_IMAGE;
const MB = 1e6;

interface Args {
  runs: number;
  execs: number;
  streamMiB: number;
  streamRuns: number;
  json: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { runs: 10, execs: 10, streamMiB: 64, streamRuns: 3, json: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = (): number => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${k}: value missing`);
      const n = Number(x);
      if (!Number.isInteger(n) || n < 1) throw new Error(`${k}: expected a positive integer, got ${x}`);
      return n;
    };
    if (k === '--runs') a.runs = v();
    else if (k === '--execs') a.execs = v();
    else if (k === '--stream-mib') a.streamMiB = v();
    else if (k === '--stream-runs') a.streamRuns = v();
    else if (k === '--json') a.json = true;
    else throw new Error(`unknown option ${k} (--runs N, --execs N, --stream-mib N, --stream-runs N, --json)`);
  }
  return a;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function check(r: CtrResult, what: string): CtrResult {
  if (r.code !== 0) throw new Error(`${what}: exit ${r.code ?? r.signal}${r.timedOut ? ' (timed out)' : ''}: ${r.stderr.trim()} ${r.stdout.trim()}`);
  return r;
}

/** `ctr run --rm <runtime> IMG id dd …`: bytes on ctr's stdout / (EOF − first byte), in MB/s. */
function streamThroughCtr(c: Containerd, runtime: string, id: string, mib: number): Promise<number> {
  const count = mib * 16; // 64 KiB blocks
  const args = [
    '--address', c.address, '--namespace', c.namespace, 'run', '--fifo-dir', join(c.dir, 'fifo'),
    ...(runtime === RUNC ? ['--runc-root', c.runcRoot] : []),
    '--runtime', runtime, '--rm', IMG, id, 'dd', 'if=/dev/zero', 'bs=65536', `count=${count}`,
  ];
  const env: NodeJS.ProcessEnv = { ...process.env, CONTAINERD_SNAPSHOTTER: c.snapshotter };
  delete env.CONTAINERD_ADDRESS;
  delete env.CONTAINERD_NAMESPACE;
  return new Promise((resolve, reject) => {
    const p = spawn('ctr', args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    let bytes = 0;
    let first = 0;
    let end = 0;
    let err = '';
    p.stdout.on('data', (b: Buffer) => {
      if (!first) first = performance.now();
      bytes += b.length;
    });
    p.stdout.on('end', () => (end = performance.now()));
    p.stderr.on('data', (b: Buffer) => (err += b));
    const timer = setTimeout(() => p.kill('SIGKILL'), 10 * 60_000);
    p.once('error', reject);
    p.once('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`ctr run ${runtime} dd: exit ${code}: ${err.trim()}`));
      if (bytes !== count * 65536) return reject(new Error(`ctr run ${runtime} dd: ${bytes} bytes, want ${count * 65536}`));
      resolve(bytes / MB / ((end - first) / 1000));
    });
  });
}

interface Row { metric: string; kata: string; runc: string; ratio: string; target: string; result: string }

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('bench:shim needs root (containerd, mounts, virtiofsd)');
  const root = projectRoot();
  const image = loadGuestImage(process.env.KATA_TS_GUEST_DIR || join(root, 'build', 'guest'));
  const logger = createLogger({ name: 'bench-shim', destination: 2 });
  logger.level = process.env.KATA_LOG_LEVEL ?? 'error';
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const started = Date.now();
  const vmRoot = mkdtempSync(join(tmpdir(), 'bench-shim-vm-'));
  const c = await startContainerd({ extraPath: [join(root, 'bin')], runtimes: { kata: { runtimeType: KATA } } });
  try {
    await importImage(c);
    const run = (runtime: string, args: string[], timeoutMs = 300_000) => c.ctr(['run', '--runtime', runtime, ...args], { timeoutMs });
    const rt = { kata: KATA, runc: RUNC } as const;
    type Name = keyof typeof rt;

    // ---- warm-up (page cache, the accelerator probe, Node's code cache): not counted
    log(`containerd ${c.dir} (snapshotter ${c.snapshotter}); warm-up …`);
    for (const n of ['runc', 'kata'] as Name[]) check(await run(rt[n], ['--rm', IMG, `warm-${n}`, 'true']), `warm-up ${n}`);
    let vmSeq = 0;
    const bootVm = async (): Promise<number> => {
      const i = vmSeq++;
      const sb = await SandboxVm.start({ sandboxId: `bench-${i}`, dir: join(vmRoot, `vm-${i}`), image, logger, resources: DEFAULT_RESOURCES });
      try {
        return sb.timings.readyMs;
      } finally {
        await sb.stop();
      }
    };
    await bootVm();

    // ---- 1. ctr run --rm … true, and the VM's boot-to-ready, alternating
    const runMs: Record<Name, number[]> = { kata: [], runc: [] };
    const bootMs: number[] = [];
    for (let i = 1; i <= a.runs; i++) {
      for (const n of ['runc', 'kata'] as Name[]) {
        const r = check(await run(rt[n], ['--rm', IMG, `run-${n}-${i}`, 'true']), `ctr run ${n}`);
        runMs[n].push(r.durationMs);
      }
      bootMs.push(await bootVm());
      log(`run ${i}/${a.runs}: ctr run kata ${runMs.kata.at(-1)} ms, runc ${runMs.runc.at(-1)} ms; VM boot → agent ready ${bootMs.at(-1)} ms`);
    }

    // ---- 2. exec latency and RSS, one running container per runtime
    const shimOf: Partial<Record<Name, number>> = {};
    const rss = { shimAfterStart: {} as Partial<Record<Name, number>>, shimAfterExecs: {} as Partial<Record<Name, number>>, qemu: 0, virtiofsd: 0 };
    for (const n of ['runc', 'kata'] as Name[]) {
      const before = new Set(c.shimPids());
      check(await run(rt[n], ['-d', IMG, `long-${n}`, 'sleep', '100000']), `run -d ${n}`);
      const shim = await waitFor(() => c.shimPids().find((p) => !before.has(p)), { timeoutMs: 60_000, what: `${n} shim` });
      shimOf[n] = shim;
      rss.shimAfterStart[n] = rssBytes(shim);
    }
    const execMs: Record<Name, number[]> = { kata: [], runc: [] };
    for (let i = 1; i <= a.execs; i++) {
      for (const n of ['runc', 'kata'] as Name[]) {
        const r = check(await c.ctr(['task', 'exec', '--exec-id', `e${i}`, `long-${n}`, 'true'], { timeoutMs: 120_000 }), `exec ${n}`);
        execMs[n].push(r.durationMs);
      }
    }
    log(`exec: kata ${execMs.kata.join(' ')} ms; runc ${execMs.runc.join(' ')} ms`);
    for (const n of ['runc', 'kata'] as Name[]) rss.shimAfterExecs[n] = rssBytes(shimOf[n]!);
    const kids = descendants([shimOf.kata!]);
    const qemu = kids.find((p) => /^qemu-system/.test(basename(procCmdline(p)[0] ?? '')));
    const vfs = kids.find((p) => /virtiofsd/.test(basename(procCmdline(p)[0] ?? '')));
    rss.qemu = (qemu !== undefined ? rssBytes(qemu) : undefined) ?? 0;
    rss.virtiofsd = (vfs !== undefined ? rssBytes(vfs) : undefined) ?? 0;
    for (const n of ['runc', 'kata'] as Name[]) {
      await c.ctr(['task', 'kill', '-s', 'KILL', `long-${n}`], { timeoutMs: 60_000 });
      await c.ctr(['task', 'delete', '-f', `long-${n}`], { timeoutMs: 120_000 });
      await c.ctr(['containers', 'delete', `long-${n}`], { timeoutMs: 60_000 });
    }

    // ---- 3. stdout through ctr run
    const streamMBps: Record<Name, number[]> = { kata: [], runc: [] };
    for (let i = 1; i <= a.streamRuns; i++) {
      for (const n of ['runc', 'kata'] as Name[]) streamMBps[n].push(await streamThroughCtr(c, rt[n], `dd-${n}-${i}`, a.streamMiB));
      log(`stdout run ${i}/${a.streamRuns}: kata ${streamMBps.kata.at(-1)!.toFixed(1)} MB/s, runc ${streamMBps.runc.at(-1)!.toFixed(1)} MB/s`);
    }

    // ---- report
    const med = {
      runKata: median(runMs.kata), runRunc: median(runMs.runc), boot: median(bootMs),
      execKata: median(execMs.kata), execRunc: median(execMs.runc),
      streamKata: median(streamMBps.kata), streamRunc: median(streamMBps.runc),
    };
    const added = med.runKata - med.runRunc;
    const addedLimit = 1.2 * med.boot;
    const shimRss = Math.max(rss.shimAfterStart.kata ?? 0, rss.shimAfterExecs.kata ?? 0);
    const s = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`);
    const range = (xs: number[], f: (x: number) => string) => `${f(Math.min(...xs))}–${f(Math.max(...xs))}`;
    const mb = (b: number | undefined) => (b === undefined ? '?' : `${(b / MB).toFixed(1)} MB`);
    const rows: Row[] = [
      {
        metric: `\`ctr run --rm … true\` (median of ${a.runs})`,
        kata: `${s(med.runKata)} (${range(runMs.kata, s)})`, runc: `${s(med.runRunc)} (${range(runMs.runc, s)})`,
        ratio: `${(med.runKata / med.runRunc).toFixed(1)}x`,
        target: `kata − runc = ${s(added)} ≤ 1.2 × boot→ready = ${s(addedLimit)}`,
        result: added <= addedLimit ? 'PASS' : 'MISS',
      },
      {
        metric: `VM boot → agent ready, SandboxVm.start (median of ${a.runs}, same run)`,
        kata: `${s(med.boot)} (${range(bootMs, s)})`, runc: '—', ratio: '—', target: '(the yardstick above)', result: '',
      },
      {
        metric: `\`ctr task exec … true\` (median of ${a.execs})`,
        kata: `${s(med.execKata)} (${range(execMs.kata, s)})`, runc: `${s(med.execRunc)} (${range(execMs.runc, s)})`,
        ratio: `${(med.execKata / med.execRunc).toFixed(2)}x`, target: '≤ 3.00x',
        result: med.execKata <= 3 * med.execRunc ? 'PASS' : 'MISS',
      },
      {
        metric: `stdout through \`ctr run\` (${a.streamMiB} MiB dd, median of ${a.streamRuns})`,
        kata: `${med.streamKata.toFixed(1)} MB/s`, runc: `${med.streamRunc.toFixed(1)} MB/s`,
        ratio: `${(med.streamKata / med.streamRunc).toFixed(2)}x`, target: '(no target)', result: '',
      },
      {
        metric: 'shim RSS, one running container (after start / after the execs)',
        kata: `${mb(rss.shimAfterStart.kata)} / ${mb(rss.shimAfterExecs.kata)}`,
        runc: `${mb(rss.shimAfterStart.runc)} / ${mb(rss.shimAfterExecs.runc)}`,
        ratio: `${(shimRss / Math.max(rss.shimAfterStart.runc ?? 0, rss.shimAfterExecs.runc ?? 0)).toFixed(1)}x`,
        target: '≤ 45 MB', result: shimRss <= 45 * MB ? 'PASS' : 'MISS',
      },
      {
        metric: 'QEMU RSS per pod (virtiofsd beside it)',
        kata: `${mb(rss.qemu)} (+ ${mb(rss.virtiofsd)})`, runc: '—', ratio: '—', target: '(no target)', result: '',
      },
    ];
    const lines = [
      `containerd-shim-kata-v2 vs containerd-shim-runc-v2 on one private containerd 1.6 — guest ${image.kernelRelease}, ` +
        `${DEFAULT_RESOURCES.vcpus} vCPU, ${DEFAULT_RESOURCES.memoryMiB} MiB; host ${cpus().length} × ${cpus()[0]?.model ?? '?'}; ` +
        `${((Date.now() - started) / 1000).toFixed(0)} s`,
      '',
      '| metric | kata | runc | ratio | target | result |',
      '| --- | --- | --- | --- | --- | --- |',
      ...rows.map((r) => `| ${r.metric} | ${r.kata} | ${r.runc} | ${r.ratio} | ${r.target} | ${r.result} |`),
    ];
    const json = {
      kernel: image.kernelRelease, resources: DEFAULT_RESOURCES, runs: a.runs, execs: a.execs, streamMiB: a.streamMiB,
      ctrRunMs: runMs, bootToReadyMs: bootMs, execMs, stdoutMBps: streamMBps, rssBytes: rss, medians: med,
      targets: {
        addedOverRunc: { valueMs: added, limitMs: addedLimit, pass: added <= addedLimit },
        execRatio: { value: med.execKata / med.execRunc, limit: 3, pass: med.execKata <= 3 * med.execRunc },
        shimRss: { valueBytes: shimRss, limitBytes: 45 * MB, pass: shimRss <= 45 * MB },
      },
    };
    console.log(a.json ? JSON.stringify(json, null, 2) : lines.join('\n'));
  } finally {
    await c.stop();
    if (mountsUnder(vmRoot).length === 0) rmSync(vmRoot, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:shim: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
