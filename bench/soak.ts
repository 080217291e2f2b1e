/**
 * Soaks of the kata shim (issue 8), all against ONE private containerd 1.6
 * with runtime io.containerd.kata.v2 (`ctr run --runtime …`). Not run in CI
 * (about 30–40 min under TCG here with the defaults):
 *
 *   npm run bench:soak                 # build, then the three soaks
 *   SOAK_RESTARTS=3 SOAK_RUNS=3 SOAK_EXECS=15 node dist/bench/soak.js   # short (after npm run build)
 *
 * Knobs (environment; 0 skips a soak):
 *   SOAK_RESTARTS (50)    cycles of soak (a)
 *   SOAK_RUNS (100)       `ctr run --rm` of soak (b)
 *   SOAK_EXECS (100)      execs of soak (c), the first 10 of them warm-up
 *   SOAK_EXIT_DELAY_S (3) how long each container of soak (a) lives
 * Needs root, the build (bin/containerd-shim-kata-v2) and build/guest.
 * Prints one markdown table on stdout (progress on stderr); exits 1 if an exit
 * was lost or wrong, anything failed or leaked, or the shim's fds grew after
 * the warm-up.
 *
 * (a) containerd kill -9 + restart while containers exit. One pod (sandbox
 *     container `soak-pod`, one VM for every cycle). Cycle i: `ctr run -d` a
 *     container x<i> into the pod running `sleep D; exit <(i % 250) + 1>`;
 *     once it is RUNNING, kill -9 containerd; the shim's own State (over its
 *     socket, read-only) shows the container exit while containerd is down;
 *     then containerd is restarted. Delivered exactly: `ctr task ls` shows
 *     x<i> STOPPED and `ctr task delete x<i>` reports exactly its exit code.
 *     containerd runs at debug level in this soak, so its log also shows
 *     every TaskExit the shim forwards (`msg="event forwarded"
 *     topic=/tasks/exit`): each cycle must have exactly one (the shim queues
 *     the exit while containerd is down and resends it once it is back).
 *     Then the pod's end: nothing of it left (test/harness/pod-leaks.ts).
 * (b) `ctr run --rm … r<i> true`: a full VM boot and teardown each; failures
 *     counted, then the leak check against a baseline taken after one
 *     uncounted warm-up run.
 * (c) execs (`ctr task exec --exec-id e<i> … true`) into one running kata
 *     container: the shim's open fds and VmRSS before, after the warm-up and
 *     after all (fds must not grow after the warm-up), its V8 heapUsed every
 *     10 execs (SIGUSR1 debug dump: the post-GC floor tells a leak from
 *     heap headroom), then the leak check.
 */
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { containerd } from '../src/proto/gen/containerd.js';
import { TtrpcClient } from '../src/ttrpc/index.js';
import { BUSYBOX_IMAGE, importImage, projectRoot } from '../test/harness/busybox.js';
import { startContainerd, waitFor, type Containerd } from '../test/harness/containerd.js';
import {
  forwardedEvents, logMark, podAnnotations, removeIfPresent, rssBytes, setContainerdLogLevel, shimSocket, show, tasks, waitStatus,
} from '../test/harness/ctr.js';
import { openFds } from '../test/harness/leaks.js';
import { assertPodGone, podBaseline } from '../test/harness/pod-leaks.js';
import { KATA } from './lib.js';

const IMG = BUSYBOX_IMAGE;
const TASK = 'containerd.task.v2.Task';
const T = containerd.task.v2;
const Status = containerd.v1.types.Status;
/** ctr commands that may boot or stop a VM under TCG, with other work on 2 cores: generous. */
const CTR_MS = 300_000;
/** Other ctr commands. */
const QUICK_MS = 120_000;
const WARMUP_EXECS = 10;
const MiB = 1024 * 1024;

function knob(name: string, def: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name}: expected a non-negative integer, got ${v}`);
  return n;
}

const log = (s: string) => process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${s}\n`);
const msg = (e: unknown) => (e instanceof Error ? e.message : String(e));
const median = (xs: number[]) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const max = (xs: number[]) => (xs.length ? Math.max(...xs) : NaN);
const min = (xs: number[]) => (xs.length ? Math.min(...xs) : NaN);
const secs = (ms: number) => (Number.isNaN(ms) ? '—' : `${(ms / 1000).toFixed(2)} s`);
const mib = (b: number | undefined) => (b === undefined ? '?' : `${(b / MiB).toFixed(1)} MiB`);

/** Leak lines of assertPodGone, [] if none (never throws). */
async function podLeaks(c: Containerd, b: ReturnType<typeof podBaseline>, what: string): Promise<string[]> {
  try {
    await assertPodGone(c, b, what, { timeoutMs: 120_000 });
    return [];
  } catch (e) {
    return msg(e).split('\n').map((l) => l.trim()).filter(Boolean);
  }
}

/** Ends a container we started: kill everything in it, wait for STOPPED, delete task and container. */
async function endContainer(c: Containerd, id: string): Promise<void> {
  const k = await c.ctr(['task', 'kill', '--all', '-s', 'KILL', id], { timeoutMs: QUICK_MS });
  if (k.code !== 0) throw new Error(`task kill ${id}: ${show(k)}`);
  await waitStatus(c, id, 'STOPPED', QUICK_MS);
  const d = await c.ctr(['task', 'delete', id], { timeoutMs: CTR_MS });
  if (d.code !== 0) throw new Error(`task delete ${id}: ${show(d)}`);
  const cd = await c.ctr(['containers', 'delete', id], { timeoutMs: QUICK_MS });
  if (cd.code !== 0) throw new Error(`containers delete ${id}: ${show(cd)}`);
}

// ---------------------------------------------------------------------------
// (a) containerd kill -9 + restart

interface RestartSoak {
  cycles: number;
  startFailed: number;
  /** The exit happened while containerd was down (the shim's State: RUNNING right after the kill, then STOPPED). */
  exitedWhileDown: number;
  delivered: number;
  lost: number;
  wrong: number;
  /** TaskExit events containerd accepted, per started cycle. */
  eventsOnce: number;
  eventsMissing: number;
  eventsDuplicated: number;
  restartMs: number[];
  errors: string[];
  leaks: string[];
  aborted?: string;
}

/** Polls the shim's State of `id` (over its socket, containerd being down) until it is STOPPED. */
async function exitSeenByShim(sock: string, id: string, timeoutMs: number): Promise<{ firstRunning: boolean; exitStatus: number }> {
  const client = await TtrpcClient.connect(sock, { timeoutMs: 10_000 });
  try {
    const deadline = Date.now() + timeoutMs;
    let first: boolean | undefined;
    for (;;) {
      const st = await client.request(TASK, 'State', T.StateRequest, T.StateResponse, { id }, { timeoutMs: 30_000 });
      first ??= st.status === Status.RUNNING;
      if (st.status === Status.STOPPED) return { firstRunning: first, exitStatus: st.exitStatus };
      if (Date.now() > deadline) throw new Error(`the shim's State of ${id}: still ${Status[st.status]} after ${timeoutMs} ms`);
      await sleep(200);
    }
  } finally {
    client.close();
  }
}

async function soakRestarts(c: Containerd, n: number, exitDelayS: number): Promise<RestartSoak> {
  const r: RestartSoak = {
    cycles: n, startFailed: 0, exitedWhileDown: 0, delivered: 0, lost: 0, wrong: 0,
    eventsOnce: 0, eventsMissing: 0, eventsDuplicated: 0, restartMs: [], errors: [], leaks: [],
  };
  const P = 'soak-pod';
  const ids = [P];
  const b = podBaseline(c);
  /** Per cycle: where its part of containerd's log starts, and whether its container ran. */
  const windows: { from: number; started: boolean; i: number }[] = [];
  const err = (s: string) => {
    r.errors.push(s);
    log(s);
  };
  try {
    const s = await c.ctr(['run', '-d', '--runtime', KATA, ...podAnnotations(P, P), IMG, P, 'sleep', '1000000'], { timeoutMs: CTR_MS });
    if (s.code !== 0) throw new Error(`ctr run -d ${P}: ${show(s)}`);
    await waitStatus(c, P, 'RUNNING', QUICK_MS);
    const sock = shimSocket(c, P);
    log(`(a) pod ${P} up (shim socket ${sock}); ${n} cycles`);
    for (let i = 1; i <= n; i++) {
      const x = `x${i}`;
      const code = (i % 250) + 1;
      ids.push(x);
      const w = { from: logMark(c), started: false, i };
      windows.push(w);
      const run = await c.ctr(['run', '-d', '--runtime', KATA, ...podAnnotations(P, x), IMG, x, 'sh', '-c', `sleep ${exitDelayS}; exit ${code}`],
        { timeoutMs: CTR_MS });
      if (run.code !== 0) {
        r.startFailed++;
        err(`(a) cycle ${i}: ctr run -d ${x}: ${show(run)}`);
        await removeIfPresent(c, [x]);
        continue;
      }
      w.started = true;
      const before = (await tasks(c)).get(x)?.status;
      if (before !== 'RUNNING') err(`(a) cycle ${i}: ${x} is ${before} before the kill, not RUNNING`);

      await c.kill9();
      let down = '';
      try {
        const seen = await exitSeenByShim(sock, x, QUICK_MS);
        if (seen.firstRunning) r.exitedWhileDown++;
        down = seen.firstRunning ? `exited ${seen.exitStatus} while down` : `had already exited (${seen.exitStatus}) at the kill`;
        if (seen.exitStatus !== code) err(`(a) cycle ${i}: the shim's State says exit ${seen.exitStatus}, want ${code}`);
      } catch (e) {
        down = 'no exit seen while down';
        err(`(a) cycle ${i}: while containerd was down: ${msg(e)}`);
      }
      const t0 = Date.now();
      await c.restart();
      r.restartMs.push(Date.now() - t0);

      let stopped = false;
      try {
        await waitStatus(c, x, 'STOPPED', QUICK_MS);
        stopped = true;
      } catch (e) {
        err(`(a) cycle ${i}: after the restart: ${msg(e)}`);
      }
      const del = await c.ctr(['task', 'delete', x], { timeoutMs: CTR_MS });
      const m = /task \S+ exit with non-zero exit code (\d+)/.exec(del.stderr);
      let verdict: string;
      if (del.code !== 0 || !m || !stopped) {
        r.lost++;
        verdict = 'LOST';
        err(`(a) cycle ${i}: exit of ${x} not delivered: task delete: ${show(del)}`);
      } else if (Number(m[1]) !== code) {
        r.wrong++;
        verdict = `WRONG (${m[1]})`;
        err(`(a) cycle ${i}: ${x}: task delete reports exit code ${m[1]}, want ${code}`);
      } else {
        r.delivered++;
        verdict = 'delivered';
      }
      const cd = await c.ctr(['containers', 'delete', x], { timeoutMs: QUICK_MS });
      if (cd.code !== 0) {
        err(`(a) cycle ${i}: containers delete ${x}: ${show(cd)}`);
        await removeIfPresent(c, [x]);
      }
      // The TaskExit itself: the shim resends it (backoff ≤ 2 s) once containerd is back.
      const seenEvent = await waitFor(() => forwardedEvents(c, '/tasks/exit', w.from) >= 1, { timeoutMs: 30_000, intervalMs: 100, what: 'TaskExit' })
        .then(() => true, () => false);
      log(`(a) cycle ${i}/${n}: ${x} ${down}; containerd back in ${r.restartMs.at(-1)} ms; exit ${code} ${verdict}; ` +
        `TaskExit ${seenEvent ? 'forwarded' : 'NOT forwarded (yet)'}`);
    }
    // Exactly once per cycle: count each cycle's window of containerd's log (late resends land in the next one).
    await sleep(3_000);
    const end = logMark(c);
    windows.forEach((w, k) => {
      const got = forwardedEvents(c, '/tasks/exit', w.from, windows[k + 1]?.from ?? end);
      const want = w.started ? 1 : 0;
      if (got === want) {
        if (w.started) r.eventsOnce++;
      } else if (got < want) {
        r.eventsMissing++;
        err(`(a) cycle ${w.i}: no TaskExit forwarded to containerd`);
      } else {
        r.eventsDuplicated += got - want;
        err(`(a) cycle ${w.i}: ${got} TaskExit events forwarded, want ${want}`);
      }
    });
    await endContainer(c, P);
    r.leaks = await podLeaks(c, b, '(a) the pod after its last container');
  } catch (e) {
    r.aborted = msg(e);
    log(`(a) aborted: ${r.aborted}\n${c.logTail(40)}`);
  } finally {
    await removeIfPresent(c, ids).catch(() => undefined);
  }
  return r;
}

// ---------------------------------------------------------------------------
// (b) ctr run --rm

interface RunSoak {
  runs: number;
  ok: number;
  failed: number;
  ms: number[];
  errors: string[];
  leaks: string[];
  aborted?: string;
}

async function soakRuns(c: Containerd, n: number): Promise<RunSoak> {
  const r: RunSoak = { runs: n, ok: 0, failed: 0, ms: [], errors: [], leaks: [] };
  try {
    // One run first, not counted: containerd opens some files lazily on first use and keeps them
    // (the overlayfs snapshotter's metadata.db after a restart), which are not leaks of the runs.
    const w = await c.ctr(['run', '--rm', '--runtime', KATA, IMG, 'r0', 'true'], { timeoutMs: CTR_MS });
    log(`(b) warm-up run (not counted): ${w.code === 0 ? 'ok' : `FAILED (${show(w)})`} in ${w.durationMs} ms`);
    if (w.code !== 0) await removeIfPresent(c, ['r0']);
    await sleep(2_000);
    const b = podBaseline(c);
    for (let i = 1; i <= n; i++) {
      const id = `r${i}`;
      const res = await c.ctr(['run', '--rm', '--runtime', KATA, IMG, id, 'true'], { timeoutMs: CTR_MS });
      if (res.code === 0) {
        r.ok++;
        r.ms.push(res.durationMs);
      } else {
        r.failed++;
        r.errors.push(`(b) run ${i}: ${show(res)}`);
        await removeIfPresent(c, [id]);
      }
      log(`(b) run ${i}/${n}: ${res.code === 0 ? 'ok' : `FAILED (${show(res)})`} in ${res.durationMs} ms`);
    }
    r.leaks = await podLeaks(c, b, `(b) after ${n} × ctr run --rm`);
  } catch (e) {
    r.aborted = msg(e);
    log(`(b) aborted: ${r.aborted}`);
  }
  return r;
}

// ---------------------------------------------------------------------------
// (c) execs into one container

interface ExecSoak {
  execs: number;
  ok: number;
  failed: number;
  ms: number[];
  fds: { before?: number; warm?: number; after?: number };
  rss: { before?: number; warm?: number; after?: number };
  /** V8 heapUsed of the shim (its SIGUSR1 debug dump): after the warm-up, and its smallest over the last quarter of the execs. */
  heap: { warm?: number; lastQuarterMin?: number };
  /** Fds open after all the execs that were not open after the warm-up. */
  newFds: string[];
  errors: string[];
  leaks: string[];
  aborted?: string;
}

/** The shim's V8 heapUsed, from the debug dump it logs on SIGUSR1 (containerd copies shim logs into its own). */
async function shimHeapUsed(c: Containerd, shim: number): Promise<number | undefined> {
  const from = logMark(c);
  try {
    process.kill(shim, 'SIGUSR1');
    return await waitFor(() => {
      const text = readFileSync(c.logPath).subarray(from).toString('utf8');
      const m = /"heapUsed":(\d+)[^\n]*"msg":"debug dump"/.exec(text);
      return m ? Number(m[1]) : undefined;
    }, { timeoutMs: 5_000, intervalMs: 50, what: 'the shim\'s debug dump' });
  } catch {
    return undefined;
  }
}

async function soakExecs(c: Containerd, n: number): Promise<ExecSoak> {
  const r: ExecSoak = { execs: n, ok: 0, failed: 0, ms: [], fds: {}, rss: {}, heap: {}, newFds: [], errors: [], leaks: [] };
  const E = 'soak-exec';
  const b = podBaseline(c);
  try {
    const run = await c.ctr(['run', '-d', '--runtime', KATA, IMG, E, 'sleep', '1000000'], { timeoutMs: CTR_MS });
    if (run.code !== 0) throw new Error(`ctr run -d ${E}: ${show(run)}`);
    const shim = await waitFor(() => c.shimPids().find((p) => !b.shims.includes(p)), { timeoutMs: 60_000, what: `the shim of ${E}` });
    await waitStatus(c, E, 'RUNNING', QUICK_MS);
    await sleep(2_000);
    const fdsNow = () => openFds(shim) ?? [];
    r.fds.before = fdsNow().length;
    r.rss.before = rssBytes(shim);
    log(`(c) ${E} running, shim ${shim}: ${r.fds.before} fds, ${mib(r.rss.before)}`);
    const warm = Math.min(WARMUP_EXECS, n);
    let warmFds: string[] = [];
    for (let i = 1; i <= n; i++) {
      const res = await c.ctr(['task', 'exec', '--exec-id', `e${i}`, E, 'true'], { timeoutMs: QUICK_MS });
      if (res.code === 0) {
        r.ok++;
        r.ms.push(res.durationMs);
      } else {
        r.failed++;
        r.errors.push(`(c) exec ${i}: ${show(res)}`);
        log(`(c) exec ${i}: FAILED: ${show(res)}`);
      }
      if (i === warm) {
        await sleep(2_000);
        warmFds = fdsNow();
        r.fds.warm = warmFds.length;
        r.rss.warm = rssBytes(shim);
        r.heap.warm = await shimHeapUsed(c, shim);
        log(`(c) after ${i} execs (warm-up): ${r.fds.warm} fds, ${mib(r.rss.warm)}, heapUsed ${mib(r.heap.warm)}`);
      } else if (i % 10 === 0) {
        const heap = await shimHeapUsed(c, shim);
        if (i > n - n / 4 && heap !== undefined) r.heap.lastQuarterMin = Math.min(r.heap.lastQuarterMin ?? Infinity, heap);
        log(`(c) exec ${i}/${n}: ${fdsNow().length} fds, ${mib(rssBytes(shim))}, heapUsed ${mib(heap)}`);
      }
    }
    // Let closes that follow an exec's end settle before counting.
    await waitFor(() => fdsNow().length <= warmFds.length, { timeoutMs: 10_000, intervalMs: 200, what: 'shim fds' }).catch(() => undefined);
    const end = fdsNow();
    r.fds.after = end.length;
    r.rss.after = rssBytes(shim);
    const rest = [...warmFds];
    for (const t of end) {
      const k = rest.indexOf(t);
      if (k >= 0) rest.splice(k, 1);
      else r.newFds.push(t);
    }
    log(`(c) after ${n} execs: ${r.fds.after} fds, ${mib(r.rss.after)}`);
    await endContainer(c, E);
    r.leaks = await podLeaks(c, b, `(c) the pod after ${n} execs`);
  } catch (e) {
    r.aborted = msg(e);
    log(`(c) aborted: ${r.aborted}`);
  } finally {
    await removeIfPresent(c, [E]).catch(() => undefined);
  }
  return r;
}

// ---------------------------------------------------------------------------

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) throw new Error('bench:soak needs root (containerd, mounts, virtiofsd)');
  const nRestarts = knob('SOAK_RESTARTS', 50);
  const nRuns = knob('SOAK_RUNS', 100);
  const nExecs = knob('SOAK_EXECS', 100);
  const exitDelayS = knob('SOAK_EXIT_DELAY_S', 3);
  const started = Date.now();
  const c = await startContainerd({
    extraPath: [join(projectRoot(), 'bin')],
    runtimes: { kata: { runtimeType: KATA } },
    // (a) counts the TaskExit events containerd accepts from its debug log.
    logLevel: nRestarts > 0 ? 'debug' : 'info',
    startTimeoutMs: 60_000,
  });
  let a: RestartSoak | undefined;
  let b: RunSoak | undefined;
  let x: ExecSoak | undefined;
  try {
    log(`containerd ${c.dir} (snapshotter ${c.snapshotter}, log ${c.logPath})`);
    await importImage(c);
    if (nRestarts > 0) {
      a = await soakRestarts(c, nRestarts, exitDelayS);
      // Back to info for (b) and (c): at debug containerd starts shims with -debug.
      setContainerdLogLevel(c, 'info');
      await c.restart();
    }
    if (nRuns > 0) b = await soakRuns(c, nRuns);
    if (nExecs > 0) x = await soakExecs(c, nExecs);
  } finally {
    await c.stop();
  }

  // ---- the table
  const rows: [string, string, string, string][] = [];
  const failures: string[] = [];
  const verdict = (pass: boolean, what: string) => {
    if (!pass) failures.push(what);
    return pass ? 'PASS' : 'FAIL';
  };
  const leakCell = (l: string[]) => (l.length ? `${l.length} line(s): ${l[0]!.replace(/\|/g, '\\|').slice(0, 160)}…` : 'none');
  if (a) {
    const s = '(a) containerd kill -9 + restart';
    rows.push([s, 'cycles (one pod VM, a container exiting while containerd is down)', `${a.cycles}${a.aborted ? ` (aborted: ${a.aborted.slice(0, 120)})` : ''}`,
      verdict(!a.aborted && a.startFailed === 0, `${s}: ${a.aborted ? 'aborted' : `${a.startFailed} starts failed`}`)]);
    rows.push(['', 'exits while containerd was down (the shim\'s State)', `${a.exitedWhileDown}`, '']);
    rows.push(['', 'exit codes delivered exactly (task ls STOPPED + task delete code)', `${a.delivered}`,
      verdict(a.delivered === a.cycles, `${s}: ${a.cycles - a.delivered} not delivered exactly`)]);
    rows.push(['', 'lost', `${a.lost}`, verdict(a.lost === 0, `${s}: ${a.lost} lost`)]);
    rows.push(['', 'wrong code', `${a.wrong}`, verdict(a.wrong === 0, `${s}: ${a.wrong} wrong`)]);
    rows.push(['', 'TaskExit forwarded to containerd exactly once (debug log)', `${a.eventsOnce} (missing ${a.eventsMissing}, duplicated ${a.eventsDuplicated})`,
      verdict(a.eventsMissing === 0 && a.eventsDuplicated === 0 && a.eventsOnce === a.cycles - a.startFailed, `${s}: TaskExit events`)]);
    rows.push(['', 'containerd restart (median, max)', `${secs(median(a.restartMs))}, ${secs(max(a.restartMs))}`, '']);
    rows.push(['', 'leaks after the pod\'s end', leakCell(a.leaks), verdict(a.leaks.length === 0, `${s}: leaks`)]);
  }
  if (b) {
    const s = '(b) `ctr run --rm … true`';
    rows.push([s, 'runs (a VM boot each)', `${b.runs}${b.aborted ? ` (aborted: ${b.aborted.slice(0, 120)})` : ''}`, verdict(!b.aborted, `${s}: aborted`)]);
    rows.push(['', 'ok / failed', `${b.ok} / ${b.failed}`, verdict(b.failed === 0 && b.ok === b.runs, `${s}: ${b.failed} failed`)]);
    rows.push(['', 'wall time of the ok runs (median, min–max)', `${secs(median(b.ms))}, ${secs(min(b.ms))}–${secs(max(b.ms))}`, '']);
    rows.push(['', 'leaks (shims, QEMU, virtiofsd, mounts, state dirs, containerd fds)', leakCell(b.leaks), verdict(b.leaks.length === 0, `${s}: leaks`)]);
  }
  if (x) {
    const s = '(c) `ctr task exec … true` into one container';
    rows.push([s, 'execs', `${x.execs}${x.aborted ? ` (aborted: ${x.aborted.slice(0, 120)})` : ''}`, verdict(!x.aborted, `${s}: aborted`)]);
    rows.push(['', 'ok / failed', `${x.ok} / ${x.failed}`, verdict(x.failed === 0 && x.ok === x.execs, `${s}: ${x.failed} failed`)]);
    rows.push(['', 'exec wall time (median)', secs(median(x.ms)), '']);
    const grew = x.fds.after !== undefined && x.fds.warm !== undefined ? x.fds.after - x.fds.warm : undefined;
    rows.push(['', `shim fds: before / after ${Math.min(WARMUP_EXECS, x.execs)} (warm-up) / after all`,
      `${x.fds.before ?? '?'} / ${x.fds.warm ?? '?'} / ${x.fds.after ?? '?'}${x.newFds.length ? ` (new: ${x.newFds.slice(0, 5).join(', ')})` : ''}`,
      verdict(grew !== undefined && grew <= 0, `${s}: shim fds grew after the warm-up (${grew ?? '?'})`)]);
    const rssGrowth = x.rss.after !== undefined && x.rss.warm !== undefined ? ` (${x.rss.after >= x.rss.warm ? '+' : ''}${mib(x.rss.after - x.rss.warm)} after warm-up)` : '';
    rows.push(['', 'shim RSS: before / after warm-up / after all', `${mib(x.rss.before)} / ${mib(x.rss.warm)} / ${mib(x.rss.after)}${rssGrowth}`, '']);
    rows.push(['', 'shim V8 heapUsed: after warm-up / smallest sample of the last quarter', `${mib(x.heap.warm)} / ${mib(x.heap.lastQuarterMin)}`, '']);
    rows.push(['', 'leaks after the pod\'s end', leakCell(x.leaks), verdict(x.leaks.length === 0, `${s}: leaks`)]);
  }
  const lines = [
    `containerd-shim-kata-v2 soaks on one private containerd 1.6 — SOAK_RESTARTS=${nRestarts} SOAK_RUNS=${nRuns} SOAK_EXECS=${nExecs} ` +
      `SOAK_EXIT_DELAY_S=${exitDelayS}; host ${cpus().length} × ${cpus()[0]?.model ?? '?'}; ${((Date.now() - started) / 60_000).toFixed(1)} min`,
    '',
    '| soak | check | result | verdict |',
    '| --- | --- | --- | --- |',
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ];
  const details = [
    ...(a ? [...a.errors, ...a.leaks.map((l) => `(a) leak: ${l}`)] : []),
    ...(b ? [...b.errors, ...b.leaks.map((l) => `(b) leak: ${l}`)] : []),
    ...(x ? [...x.errors, ...x.newFds.map((f) => `(c) new shim fd: ${f}`), ...x.leaks.map((l) => `(c) leak: ${l}`)] : []),
  ];
  if (details.length) lines.push('', 'Details:', '', ...details.map((d) => `- ${d.replace(/\n/g, ' ')}`));
  lines.push('', failures.length ? `FAILED: ${failures.join('; ')}` : 'all soaks passed');
  console.log(lines.join('\n'));
  return failures.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench:soak: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  },
);
