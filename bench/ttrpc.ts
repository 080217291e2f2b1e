/**
 * Unary round trips over a unix socket: our ttrpc against @grpc/grpc-js.
 *
 *   npm run bench:ttrpc              # build, then the bench (~70 s on 2 cores)
 *   node dist/bench/ttrpc.js --json  # machine-readable result on stdout
 *
 * Options: --rounds N (7), --round-ms MS (1000), --warmup-ms MS (1000),
 * --only ttrpc|grpc, --json, --cpu-prof (the children run with --cpu-prof;
 * profiles land in ./bench-profiles/<impl>.cpuprofile).
 *
 * Fairness: both sides echo opaque bytes. The ttrpc handler is a raw Handler
 * (payload in, payload out); the gRPC service is a generic one whose
 * serializers are the identity on Buffer. Neither side encodes or decodes the
 * payload as a protobuf message; each pays only for its own protocol (ttrpc:
 * the protobuf Request/Response envelope plus a 10-byte frame header; gRPC:
 * HTTP/2 HEADERS/DATA frames and its 5-byte message prefix). grpc-js runs
 * with channelz and retries off, its fastest configuration.
 *
 * Each implementation runs in its own child process (this script forked with
 * `--child <impl>`), client and server in that one process and on ONE
 * connection/channel, so the RSS reported is that implementation's alone.
 * Concurrency = number of calls kept outstanding on that connection. Both
 * children live for the whole run, but only one works at a time: the parent
 * drives them round by round over IPC and alternates them, so a change in
 * background load hits both alike.
 *
 * For every case: a warm-up, then N timed rounds; the reported figure is the
 * median of the rounds' requests/s. A round keeps `concurrency` callers
 * looping until the round time is up, then waits for the last outstanding
 * calls; rate = completed calls / (time until the last one completed).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { mkdirSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
// Types only: the ttrpc child must not load grpc-js (it would count in its RSS).
import type * as Grpc from '@grpc/grpc-js';
import { TtrpcClient, TtrpcServer } from '../src/ttrpc/index.js';

type Impl = 'ttrpc' | 'grpc';
const IMPLS: Impl[] = ['ttrpc', 'grpc'];

interface Case {
  name: string;
  payloadBytes: number;
  concurrency: number;
}

const CASES: Case[] = [
  { name: '100 B, 1 in flight', payloadBytes: 100, concurrency: 1 },
  { name: '100 B, 64 in flight', payloadBytes: 100, concurrency: 64 },
  { name: '64 KiB, 1 in flight', payloadBytes: 64 * 1024, concurrency: 1 },
  { name: '64 KiB, 64 in flight', payloadBytes: 64 * 1024, concurrency: 64 },
];

interface Settings {
  rounds: number;
  roundMs: number;
  warmupMs: number;
}

interface CaseResult {
  name: string;
  payloadBytes: number;
  concurrency: number;
  /** requests/s of each timed round */
  rounds: number[];
  median: number;
  /** highest sampled RSS (bytes) while this case ran */
  peakRssSampled: number;
}

interface ProcessResult {
  impl: Impl;
  /** RSS (bytes) once client and server are up, before any call */
  baselineRss: number;
  /** highest process.memoryUsage().rss sample (bytes), every 20 ms */
  peakRssSampled: number;
  /** process.resourceUsage().maxRSS (the kernel's high-water mark), in bytes */
  maxRss: number;
  /** RSS (bytes) after all cases, connection still open, after two full GCs */
  idleRssAfterGc: number;
  cases: CaseResult[];
}

/** Parent → child. */
type Command = { op: 'round'; caseIndex: number; ms: number } | { op: 'finish' };
/** Child → parent. */
type Reply =
  | { op: 'ready'; baselineRss: number }
  | { op: 'round'; rate: number }
  | { op: 'final'; peakRssSampled: number; maxRss: number; idleRssAfterGc: number; casePeaks: number[] };

const SERVICE = 'bench.v1.Echo';
const METHOD = 'Echo';

/** A connected echo client; close() tears down client and server. */
interface Bench {
  call(payload: Buffer): Promise<unknown>;
  close(): Promise<void>;
}

async function startTtrpc(dir: string): Promise<Bench> {
  const path = join(dir, 'ttrpc.sock');
  const server = new TtrpcServer();
  server.register(SERVICE, { [METHOD]: async (payload) => payload });
  await server.listen(path);
  const client = await TtrpcClient.connect(path);
  return {
    call: (payload) => client.call(SERVICE, METHOD, payload),
    close: async () => {
      client.close();
      await server.close();
    },
  };
}

async function startGrpc(dir: string): Promise<Bench> {
  const grpc: typeof Grpc = await import('@grpc/grpc-js');
  const path = join(dir, 'grpc.sock');
  const identity = (b: Buffer): Buffer => b;
  const definition: Grpc.ServiceDefinition = {
    [METHOD]: {
      path: `/${SERVICE}/${METHOD}`,
      requestStream: false,
      responseStream: false,
      requestSerialize: identity,
      requestDeserialize: identity,
      responseSerialize: identity,
      responseDeserialize: identity,
    },
  };
  // grpc-js at its fastest: no channelz bookkeeping, no retry machinery.
  const tuning = { 'grpc.enable_channelz': 0 };
  const server = new grpc.Server(tuning);
  server.addService(definition, {
    [METHOD]: (call: Grpc.ServerUnaryCall<Buffer, Buffer>, cb: Grpc.sendUnaryData<Buffer>) => cb(null, call.request),
  });
  await new Promise<number>((resolve, reject) =>
    server.bindAsync(`unix://${path}`, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))));
  const Ctor = grpc.makeGenericClientConstructor(definition, 'Echo');
  // One client = one channel = one HTTP/2 connection to the socket.
  const client = new Ctor(`unix://${path}`, grpc.credentials.createInsecure(), {
    ...tuning,
    'grpc.enable_retries': 0,
    'grpc.use_local_subchannel_pool': 1,
  });
  await new Promise<void>((resolve, reject) =>
    client.waitForReady(Date.now() + 10_000, (err?: Error) => (err ? reject(err) : resolve())));
  const rpc = (client as unknown as Record<string, (req: Buffer, cb: (err: Grpc.ServiceError | null, res?: Buffer) => void) => void>)[METHOD]!.bind(client);
  return {
    call: (payload) => new Promise<Buffer | undefined>((resolve, reject) => rpc(payload, (err, res) => (err ? reject(err) : resolve(res)))),
    close: async () => {
      client.close();
      server.forceShutdown();
    },
  };
}

/** Keeps `concurrency` calls in flight for `ms`; returns requests/s. */
async function round(bench: Bench, payload: Buffer, concurrency: number, ms: number): Promise<number> {
  let completed = 0;
  const start = performance.now();
  const end = start + ms;
  const worker = async () => {
    while (performance.now() < end) {
      await bench.call(payload);
      completed++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return completed / ((performance.now() - start) / 1000);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The child: one implementation's client and server, driven round by round over IPC. */
async function runChild(impl: Impl): Promise<void> {
  let peak = 0;
  let currentCase = -1;
  const casePeaks = CASES.map(() => 0);
  const sample = () => {
    const rss = process.memoryUsage().rss;
    if (rss > peak) peak = rss;
    if (currentCase >= 0 && rss > casePeaks[currentCase]!) casePeaks[currentCase] = rss;
  };
  const sampler = setInterval(sample, 20);
  // The parent is gone (it failed, or was interrupted): do not linger.
  process.on('disconnect', () => process.exit(1));
  const send = (r: Reply) => new Promise<void>((resolve) => process.send!(r, () => resolve()));

  const dir = await mkdtemp(join(tmpdir(), `bench-${impl}-`));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  const bench = impl === 'ttrpc' ? await startTtrpc(dir) : await startGrpc(dir);
  const payloads = CASES.map((c) => Buffer.alloc(c.payloadBytes, 0xab));
  // Both must really echo: check one call of each size before timing anything.
  for (const p of payloads) {
    const echoed = await bench.call(p);
    if (!(echoed instanceof Uint8Array) || !Buffer.from(echoed.buffer, echoed.byteOffset, echoed.byteLength).equals(p)) {
      throw new Error(`${impl}: echo of ${p.length} bytes came back different`);
    }
  }
  sample();
  await send({ op: 'ready', baselineRss: process.memoryUsage().rss });

  // Commands come one at a time: the parent waits for each reply.
  process.on('message', (cmd: Command) => {
    void (async () => {
      if (cmd.op === 'round') {
        currentCase = cmd.caseIndex;
        const c = CASES[cmd.caseIndex]!;
        const rate = await round(bench, payloads[cmd.caseIndex]!, c.concurrency, cmd.ms);
        sample();
        await send({ op: 'round', rate });
        return;
      }
      sample();
      currentCase = -1;
      const gc = (globalThis as { gc?: () => void }).gc;
      gc?.();
      await new Promise((r) => setTimeout(r, 100));
      gc?.();
      const idleRssAfterGc = process.memoryUsage().rss;
      clearInterval(sampler);
      await bench.close();
      await send({ op: 'final', peakRssSampled: peak, maxRss: process.resourceUsage().maxRSS * 1024, idleRssAfterGc, casePeaks });
      process.exit(0); // do not wait on lingering handles (grpc-js timers)
    })().catch((err) => {
      console.error(err);
      process.exit(1);
    });
  });
}

/** The parent's handle on a child: one command in flight at a time. */
class Child {
  private waiting: { resolve(r: Reply): void; reject(e: Error): void } | null = null;
  private exited: Error | null = null;

  private constructor(readonly impl: Impl, private readonly proc: ChildProcess) {
    proc.on('message', (m: Reply) => {
      const w = this.waiting;
      this.waiting = null;
      w?.resolve(m);
    });
    proc.on('exit', (code, signal) => {
      this.exited = new Error(`bench child ${impl} exited with ${signal ?? code}`);
      this.waiting?.reject(this.exited);
      this.waiting = null;
    });
  }

  static async start(impl: Impl, cpuProf: boolean): Promise<{ child: Child; baselineRss: number }> {
    // --node-flags: the V8 flags the project's own processes run with (the
    // shim sets a small young generation), applied to both implementations.
    const execArgv = ['--expose-gc', ...NODE_FLAGS];
    if (cpuProf) {
      mkdirSync('bench-profiles', { recursive: true });
      execArgv.push('--cpu-prof', '--cpu-prof-dir=bench-profiles', `--cpu-prof-name=${impl}.cpuprofile`);
    }
    const proc = fork(fileURLToPath(import.meta.url), ['--child', impl], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const child = new Child(impl, proc);
    const ready = await child.next();
    if (ready.op !== 'ready') throw new Error(`bench child ${impl}: unexpected ${ready.op}`);
    return { child, baselineRss: ready.baselineRss };
  }

  private next(): Promise<Reply> {
    if (this.exited) return Promise.reject(this.exited);
    return new Promise((resolve, reject) => (this.waiting = { resolve, reject }));
  }

  async round(caseIndex: number, ms: number): Promise<number> {
    const reply = this.next();
    this.proc.send({ op: 'round', caseIndex, ms } satisfies Command);
    const r = await reply;
    if (r.op !== 'round') throw new Error(`bench child ${this.impl}: unexpected ${r.op}`);
    return r.rate;
  }

  async finish(): Promise<Extract<Reply, { op: 'final' }>> {
    const reply = this.next();
    this.proc.send({ op: 'finish' } satisfies Command);
    const r = await reply;
    if (r.op !== 'final') throw new Error(`bench child ${this.impl}: unexpected ${r.op}`);
    return r;
  }
}

/**
 * Both children are up at once but only one runs at a time: for each case,
 * a warm-up of each, then rounds alternate between the implementations so a
 * change in background load hits both alike.
 */
async function runAll(impls: Impl[], settings: Settings, cpuProf: boolean, log: (s: string) => void): Promise<ProcessResult[]> {
  const children: { child: Child; baselineRss: number; rounds: number[][] }[] = [];
  for (const impl of impls) {
    const { child, baselineRss } = await Child.start(impl, cpuProf);
    children.push({ child, baselineRss, rounds: CASES.map(() => []) });
  }
  for (const [i, c] of CASES.entries()) {
    log(`${c.name}: warm-up`);
    for (const ch of children) await ch.child.round(i, settings.warmupMs);
    for (let r = 0; r < settings.rounds; r++) {
      for (const ch of children) ch.rounds[i]!.push(await ch.child.round(i, settings.roundMs));
    }
    log(`${c.name}: ${children.map((ch) => `${ch.child.impl} ${fmtRate(median(ch.rounds[i]!))}/s`).join(', ')}`);
  }
  const results: ProcessResult[] = [];
  for (const ch of children) {
    const f = await ch.child.finish();
    results.push({
      impl: ch.child.impl,
      baselineRss: ch.baselineRss,
      peakRssSampled: f.peakRssSampled,
      maxRss: f.maxRss,
      idleRssAfterGc: f.idleRssAfterGc,
      cases: CASES.map((c, i) => ({ ...c, rounds: ch.rounds[i]!, median: median(ch.rounds[i]!), peakRssSampled: f.casePeaks[i]! })),
    });
  }
  return results;
}

const MIB = 1024 * 1024;
const fmtRate = (n: number | undefined) => (n === undefined ? '—' : Math.round(n).toLocaleString('en-US'));
const fmtMiB = (n: number) => `${(n / MIB).toFixed(1)} MiB`;

interface Load {
  before: number;
  after: number;
}

function report(results: ProcessResult[], settings: Settings, load: Load): { text: string; json: unknown } {
  const by = new Map(results.map((r) => [r.impl, r]));
  const t = by.get('ttrpc');
  const g = by.get('grpc');
  const lines: string[] = [];
  lines.push('Unary echo of opaque bytes over a unix socket; client and server share one process per implementation and one connection/channel.');
  lines.push(`Median requests/s of ${settings.rounds} rounds of ${settings.roundMs} ms each, after a ${settings.warmupMs} ms warm-up; rounds alternate between implementations.`);
  lines.push(`node flags of both children: ${NODE_FLAGS.length ? NODE_FLAGS.join(' ') : '(defaults)'}`);
  lines.push(`node ${process.version}, 1-min load average ${load.before.toFixed(2)} before, ${load.after.toFixed(2)} after (the bench itself keeps ~1 core busy).`);
  lines.push('');
  lines.push('| case | ttrpc req/s | grpc-js req/s | ttrpc/grpc |');
  lines.push('|---|---:|---:|---:|');
  const rows = CASES.map((c, i) => {
    const tr = t?.cases[i]?.median;
    const gr = g?.cases[i]?.median;
    const ratio = tr !== undefined && gr !== undefined ? tr / gr : undefined;
    lines.push(`| ${c.name} | ${fmtRate(tr)} | ${fmtRate(gr)} | ${ratio === undefined ? '—' : `${ratio.toFixed(2)}x`} |`);
    return { ...c, ttrpc: tr ?? null, grpc: gr ?? null, ratio: ratio ?? null };
  });
  lines.push('');
  lines.push('| client+server process | RSS at start | peak RSS (sampled) | maxRSS (resourceUsage) | idle RSS after load + GC |');
  lines.push('|---|---:|---:|---:|---:|');
  for (const r of results) {
    lines.push(`| ${implName(r.impl)} | ${fmtMiB(r.baselineRss)} | ${fmtMiB(r.peakRssSampled)} | ${fmtMiB(r.maxRss)} | ${fmtMiB(r.idleRssAfterGc)} |`);
  }
  lines.push('');
  lines.push(`| peak sampled RSS during case | ${results.map((r) => implName(r.impl)).join(' | ')} |`);
  lines.push(`|---|${results.map(() => '---:').join('|')}|`);
  CASES.forEach((c, i) => lines.push(`| ${c.name} | ${results.map((r) => fmtMiB(r.cases[i]!.peakRssSampled)).join(' | ')} |`));

  const targets: { target: string; measured: string; verdict: 'PASS' | 'MISS' | 'n/a' }[] = [];
  const small = rows.filter((r) => r.payloadBytes === 100);
  const speedTarget = 'ttrpc >= 2x grpc-js requests/s on small (100 B) payloads';
  if (small.every((r) => r.ratio !== null)) {
    targets.push({
      target: speedTarget,
      measured: small.map((r) => `${r.ratio!.toFixed(2)}x at ${r.concurrency} in flight`).join(', '),
      verdict: Math.min(...small.map((r) => r.ratio!)) >= 2 ? 'PASS' : 'MISS',
    });
  } else {
    targets.push({ target: speedTarget, measured: 'grpc-js not run', verdict: 'n/a' });
  }
  if (t) {
    // maxRSS is the kernel's high-water mark; 20 ms samples can miss a spike.
    const peakBytes = Math.max(t.maxRss, t.peakRssSampled);
    targets.push({
      target: 'ttrpc client+server process <= 50 MB RSS (read as 50 MiB)',
      measured: `peak ${fmtMiB(peakBytes)} (${(peakBytes / 1e6).toFixed(1)} MB); at start ${fmtMiB(t.baselineRss)}`,
      verdict: peakBytes <= 50 * MIB ? 'PASS' : 'MISS',
    });
  }
  lines.push('');
  lines.push('| target (from the issue) | measured | verdict |');
  lines.push('|---|---|---|');
  for (const x of targets) lines.push(`| ${x.target} | ${x.measured} | ${x.verdict} |`);
  return {
    text: lines.join('\n'),
    json: { node: process.version, settings, load, cases: rows, processes: results, targets },
  };
}

const NODE_FLAGS = (() => {
  const i = process.argv.indexOf('--node-flags');
  return i >= 0 ? (process.argv[i + 1] ?? '').split(/\s+/).filter(Boolean) : [];
})();

const implName = (impl: Impl) => (impl === 'ttrpc' ? 'ttrpc' : 'grpc-js');

function parseArgs(argv: string[]) {
  const get = (name: string): string | undefined => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const num = (name: string, dflt: number) => {
    const v = get(name);
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${name}: expected a positive number, got ${v}`);
    return n;
  };
  const only = get('--only') as Impl | undefined;
  if (only !== undefined && !IMPLS.includes(only)) throw new Error(`--only: expected ttrpc or grpc, got ${only}`);
  const child = get('--child') as Impl | undefined;
  if (child !== undefined && !IMPLS.includes(child)) throw new Error(`--child: expected ttrpc or grpc, got ${child}`);
  return {
    child,
    only,
    json: argv.includes('--json'),
    cpuProf: argv.includes('--cpu-prof'),
    settings: { rounds: num('--rounds', 7), roundMs: num('--round-ms', 1000), warmupMs: num('--warmup-ms', 1000) } as Settings,
  };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.child) return runChild(args.child);
  const log = args.json ? () => {} : (line: string) => console.error(line);
  const before = loadavg()[0]!;
  const results = await runAll(args.only ? [args.only] : IMPLS, args.settings, args.cpuProf, log);
  const { text, json } = report(results, args.settings, { before, after: loadavg()[0]! });
  console.log(args.json ? JSON.stringify(json, null, 2) : text);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
