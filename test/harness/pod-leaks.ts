// The leak check of the fault tests (issue 8): what a pod's end must give
// back, compared with a baseline taken before the test started it.
//
//   const b = podBaseline(c);            // before
//   … start pods, break things, delete …
//   await assertPodGone(c, b, 'after X'); // everything back to the baseline
//
// Counted: shim, QEMU and virtiofsd processes of this containerd; mounts
// under the test's temp dir; entries in containerd's task state dir (the
// bundles) and in the kata run root (pod dirs) with every socket under it;
// containerd's open fds (while the same containerd runs) and the open fds of
// the shims that were there before (pods the test keeps); any other process
// naming the temp dir.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { procCmdline, waitFor, type Containerd } from './containerd.js';
import { entries, qemuPids, socketsUnder, taskStateDir, virtiofsdPids } from './ctr.js';
import { fdGrowth, findLeaks, openFds, snapshot, type LeakSnapshot } from './leaks.js';

export interface PodBaseline {
  snap: LeakSnapshot;
  shims: number[];
  qemus: number[];
  virtiofsds: number[];
  runRoot: string[];
  taskState: string[];
  containerdPid: number | undefined;
  containerdFds: string[] | undefined;
  /** Open fds of each shim alive at baseline time. */
  shimFds: Map<number, string[] | undefined>;
}

/**
 * containerd's open fds, without its own stores under its root (bolt
 * databases such as the snapshotter's metadata.db, opened once on first use
 * after a restart and kept: not a per-pod resource).
 */
function containerdFds(c: Containerd): string[] | undefined {
  if (c.pid === undefined) return undefined;
  return openFds(c.pid)?.filter((f) => !f.startsWith(`${c.root}/`));
}

export function podBaseline(c: Containerd): PodBaseline {
  const shims = c.shimPids();
  return {
    snap: snapshot(c.dir),
    shims,
    qemus: qemuPids(c),
    virtiofsds: virtiofsdPids(c),
    runRoot: entries(c.kataRunRoot),
    taskState: entries(taskStateDir(c)),
    containerdPid: c.pid,
    containerdFds: containerdFds(c),
    shimFds: new Map(shims.map((p) => [p, openFds(p)])),
  };
}

export interface PodGoneOptions {
  /** Is the runtime ours (VM, run root) — false for the runc shim. Default true. */
  vm?: boolean;
  /** The pod's shim socket, checked removed. */
  socket?: string;
  /** How long processes may take to end (default 60 s). */
  timeoutMs?: number;
  /** containerd fd growth tolerated (default 0). */
  containerdFdSlack?: number;
}

/**
 * Waits until the pod's processes are gone, then asserts that every count is
 * back at the baseline. Fds are compared after a short settle (containerd
 * closes a dead shim's connection and log FIFO asynchronously).
 */
export async function assertPodGone(c: Containerd, b: PodBaseline, what: string, opts: PodGoneOptions = {}): Promise<void> {
  const vm = opts.vm ?? true;
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const fresh = (now: number[], had: number[]) => now.filter((p) => !had.includes(p));
  const describe = (pids: number[]) => pids.map((p) => `${p} ${procCmdline(p).join(' ').slice(0, 200)}`).join('; ');
  for (const [name, list, had] of [
    ['shim', () => c.shimPids(), b.shims],
    ['QEMU', () => qemuPids(c), b.qemus],
    ['virtiofsd', () => virtiofsdPids(c), b.virtiofsds],
  ] as const) {
    await waitFor(() => fresh(list(), had).length === 0, { timeoutMs, what: `${what}: ${name} exits` }).catch((e: Error) => {
      throw new Error(`${e.message}: ${describe(fresh(list(), had))}`);
    });
  }
  if (opts.socket !== undefined) assert.equal(existsSync(opts.socket), false, `${what}: shim socket ${opts.socket} removed`);
  // containerd removes a bundle right after the shim's delete: give it a moment.
  await waitFor(() => entries(taskStateDir(c)).filter((e) => !b.taskState.includes(e)).length === 0, { timeoutMs: 10_000, what: `${what}: task state dir back to its baseline` })
    .catch((e: Error) => { throw new Error(`${e.message}: ${entries(taskStateDir(c)).filter((x) => !b.taskState.includes(x)).join(' ')}`); });
  if (vm) {
    assert.deepEqual(socketsUnder(c.kataRunRoot).filter((s) => !b.runRoot.some((r) => s.startsWith(`${c.kataRunRoot}/${r}/`))), [],
      `${what}: sockets left under the run root`);
    assert.deepEqual(entries(c.kataRunRoot).filter((e) => !b.runRoot.includes(e)), [], `${what}: pod dirs left under the run root`);
  }
  const leaks = findLeaks(b.snap, snapshot(c.dir), { ignorePids: c.pid !== undefined ? [c.pid] : [] });
  // fds: containerd (same process only) and the shims that were there before.
  let fdLeaks: string[] = [];
  await waitFor(() => {
    fdLeaks = [];
    if (c.pid !== undefined && c.pid === b.containerdPid) {
      fdLeaks.push(...fdGrowth(`containerd ${c.pid}`, b.containerdFds, containerdFds(c), opts.containerdFdSlack ?? 0));
    }
    for (const [pid, fds] of b.shimFds) fdLeaks.push(...fdGrowth(`shim ${pid}`, fds, openFds(pid), 0));
    return fdLeaks.length === 0;
  }, { timeoutMs: 5_000, intervalMs: 100, what: `${what}: fds back to the baseline` }).catch(() => undefined);
  leaks.push(...fdLeaks);
  if (leaks.length) throw new Error(`${what}: leaks under ${c.dir}:\n  ${leaks.join('\n  ')}`);
}
