/**
 * Kata's `tcfilter` model: a tap next to the pod's veth, in the pod's
 * network namespace, joined to it by tc both ways:
 *
 *   ip tuntap add dev <tap> mode tap                 (single queue)
 *   ip link set dev <tap> mtu <veth mtu> up
 *   tc qdisc add dev <veth> handle ffff: ingress
 *   tc qdisc add dev <tap> handle ffff: ingress
 *   tc filter add dev <veth> parent ffff: pref 49 protocol all u32 match u8 0 0 action mirred egress redirect dev <tap>
 *   tc filter add dev <tap>  parent ffff: pref 49 protocol all u32 match u8 0 0 action mirred egress redirect dev <veth>
 *
 * Every frame that arrives on the veth leaves through the tap (to QEMU, to
 * the guest), and every frame QEMU writes to the tap leaves through the
 * veth; the namespace's own IP stack sees none of them.
 *
 * State: each step is recorded in a TapState *before* it runs (and dropped
 * again if it fails), handed to `onProgress` so the caller can persist it;
 * detach(state) undoes the recorded steps last-first, tolerating those
 * already undone, so a crash at any point leaves a record that cleans up.
 */
import { FailedPreconditionError, InvalidArgumentError, StatusError } from '../errors/index.js';
import type { Logger } from '../log/index.js';
import { failureWords, isNetnsGone, runIn, type Exec } from './command.js';
import { checkNetnsPath, execOf, type NetworkCallOptions, type PodInterface } from './discover.js';
import { parseIpAddrJson, parseQdiscJson } from './iproute.js';
import { existsSync } from 'node:fs';

export const DEFAULT_TAP_NAME = 'tap0_kata';
/** The tc filter priority of our redirect filters (deleted by it). */
export const FILTER_PREF = 49;
export const TAP_STATE_VERSION = 1;

/** What attachTap does, one undoable step each. */
export type TapStep = 'tap' | 'veth-qdisc' | 'tap-qdisc' | 'veth-filter' | 'tap-filter';
const STEPS: readonly TapStep[] = ['tap', 'veth-qdisc', 'tap-qdisc', 'veth-filter', 'tap-filter'];

/** The record of an attachment: persist it (JSON) to undo it after a crash. */
export interface TapState {
  version: typeof TAP_STATE_VERSION;
  netnsPath: string;
  /** The pod's veth. */
  veth: string;
  tap: string;
  mtu: number;
  /** The veth's MAC: the guest NIC's MAC. */
  mac: string;
  filterPref: number;
  /** Steps begun, in order (a step is recorded before it runs). */
  created: TapStep[];
}

export interface AttachOptions extends NetworkCallOptions {
  /** Default: the veth's MTU. */
  mtu?: number;
  /** Called with a copy of the state before each step and at the end. */
  onProgress?: (state: TapState) => void;
  logger?: Logger;
}

export interface DetachOptions extends NetworkCallOptions {
  logger?: Logger;
}

export interface DetachReport {
  /** Steps undone now. */
  removed: TapStep[];
  /** Steps whose object was already gone. */
  alreadyGone: TapStep[];
  /** The namespace itself is gone (with everything in it). */
  netnsGone: boolean;
}

export function checkIfName(name: string, field: string): void {
  if (typeof name !== 'string' || !/^[A-Za-z0-9_.-]{1,15}$/.test(name)) {
    throw new InvalidArgumentError(`${field}: ${JSON.stringify(name)} must be 1-15 letters, digits, '_', '.', '-'`);
  }
}

// -----------------------------------------------------------------------------
// argv (pure)

export function redirectFilterArgs(from: string, to: string, pref = FILTER_PREF): string[] {
  return ['filter', 'add', 'dev', from, 'parent', 'ffff:', 'pref', String(pref), 'protocol', 'all',
    'u32', 'match', 'u8', '0', '0', 'action', 'mirred', 'egress', 'redirect', 'dev', to];
}

/** The command that performs a step: [tool, args]. */
export function stepArgs(step: TapStep, s: Pick<TapState, 'veth' | 'tap' | 'filterPref'>): ['ip' | 'tc', string[]] {
  switch (step) {
    case 'tap': return ['ip', ['tuntap', 'add', 'dev', s.tap, 'mode', 'tap']];
    case 'veth-qdisc': return ['tc', ['qdisc', 'add', 'dev', s.veth, 'handle', 'ffff:', 'ingress']];
    case 'tap-qdisc': return ['tc', ['qdisc', 'add', 'dev', s.tap, 'handle', 'ffff:', 'ingress']];
    case 'veth-filter': return ['tc', redirectFilterArgs(s.veth, s.tap, s.filterPref)];
    case 'tap-filter': return ['tc', redirectFilterArgs(s.tap, s.veth, s.filterPref)];
  }
}

/** The command that undoes a step. */
export function undoArgs(step: TapStep, s: Pick<TapState, 'veth' | 'tap' | 'filterPref'>): ['ip' | 'tc', string[]] {
  switch (step) {
    case 'tap': return ['ip', ['link', 'del', 'dev', s.tap]];
    case 'veth-qdisc': return ['tc', ['qdisc', 'del', 'dev', s.veth, 'ingress']];
    case 'tap-qdisc': return ['tc', ['qdisc', 'del', 'dev', s.tap, 'ingress']];
    case 'veth-filter': return ['tc', ['filter', 'del', 'dev', s.veth, 'parent', 'ffff:', 'pref', String(s.filterPref)]];
    case 'tap-filter': return ['tc', ['filter', 'del', 'dev', s.tap, 'parent', 'ffff:', 'pref', String(s.filterPref)]];
  }
}

/** The tap's MTU and state: `ip link set dev <tap> mtu <mtu> up`. */
export function tapUpArgs(tap: string, mtu: number): string[] {
  return ['link', 'set', 'dev', tap, 'mtu', String(mtu), 'up'];
}

/** What tc/ip say when the thing to delete is not there (undo is idempotent). */
export function isAlreadyGone(words: string): boolean {
  return /cannot find device|no such device|cannot find specified filter chain|invalid handle|parent qdisc doesn't exist|filter with specified priority\/protocol not found|no such file or directory/i.test(words);
}

// -----------------------------------------------------------------------------
// state

/** Checks a TapState read back from disk (a wrong one must not delete at random). */
export function parseTapState(value: unknown): TapState {
  const o = value as Record<string, unknown> | null;
  const bad = (f: string, what: string) => new InvalidArgumentError(`tap state: ${f}: ${what}`);
  if (typeof o !== 'object' || o === null) throw bad('state', 'must be an object');
  if (o['version'] !== TAP_STATE_VERSION) throw bad('version', `must be ${TAP_STATE_VERSION}`);
  if (typeof o['netnsPath'] !== 'string' || !o['netnsPath'].startsWith('/')) throw bad('netnsPath', 'must be an absolute path');
  checkIfName(o['veth'] as string, 'tap state: veth');
  checkIfName(o['tap'] as string, 'tap state: tap');
  if (o['veth'] === o['tap']) throw bad('tap', 'must differ from veth');
  if (!Number.isInteger(o['mtu'])) throw bad('mtu', 'must be an integer');
  if (typeof o['mac'] !== 'string') throw bad('mac', 'must be a string');
  if (!Number.isInteger(o['filterPref']) || (o['filterPref'] as number) < 1 || (o['filterPref'] as number) > 0xffff) throw bad('filterPref', 'must be 1-65535');
  if (!Array.isArray(o['created']) || !o['created'].every((s) => (STEPS as readonly unknown[]).includes(s))) {
    throw bad('created', `must be an array of ${STEPS.join(', ')}`);
  }
  return o as unknown as TapState;
}

// -----------------------------------------------------------------------------
// attach / detach

/**
 * Creates `tapName` in the namespace and joins it to the pod's veth both ways.
 * FAILED_PRECONDITION when the tap already exists or the veth already has
 * an ingress/clsact qdisc (not ours to share); on any failure, what was made
 * is removed before the error is thrown.
 */
export async function attachTap(netnsPath: string, iface: Pick<PodInterface, 'name' | 'mtu' | 'mac'>, tapName = DEFAULT_TAP_NAME,
  opts: AttachOptions = {}): Promise<TapState> {
  checkNetnsPath(netnsPath);
  checkIfName(iface.name, 'iface.name');
  checkIfName(tapName, 'tapName');
  if (tapName === iface.name) throw new InvalidArgumentError(`tapName: must differ from the veth (${iface.name})`);
  const mtu = opts.mtu ?? iface.mtu;
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new InvalidArgumentError(`mtu: ${mtu} out of range 68-65535`);
  const ex = execOf(opts);
  const what = `network: attach ${tapName} to ${iface.name} in ${netnsPath}`;
  const t0 = Date.now();

  // Preconditions: the veth is there, the tap is not, nobody filters the veth's ingress.
  const links = parseIpAddrJson((await runIn(ex, netnsPath, 'ip', ['-d', '-j', 'addr', 'show'], what)).stdout);
  if (!links.some((l) => l.name === iface.name)) throw new FailedPreconditionError(`${what}: no interface ${iface.name} there`);
  if (links.some((l) => l.name === tapName)) {
    throw new FailedPreconditionError(`${what}: ${tapName} already exists there (left by a crash? detach its recorded state)`);
  }
  const qdiscs = parseQdiscJson((await runIn(ex, netnsPath, 'tc', ['-j', 'qdisc', 'show', 'dev', iface.name], what)).stdout);
  const ingress = qdiscs.find((q) => q.kind === 'ingress' || q.kind === 'clsact');
  if (ingress) throw new FailedPreconditionError(`${what}: ${iface.name} already has a ${ingress.kind} qdisc (something else filters its traffic)`);

  const state: TapState = {
    version: TAP_STATE_VERSION, netnsPath, veth: iface.name, tap: tapName, mtu, mac: iface.mac, filterPref: FILTER_PREF, created: [],
  };
  const report = () => opts.onProgress?.(structuredClone(state));
  const step = async (s: TapStep) => {
    state.created.push(s);
    report();
    const [tool, args] = stepArgs(s, state);
    try {
      await runIn(ex, netnsPath, tool, args, what);
    } catch (err) {
      state.created.pop(); // it did nothing
      report();
      throw err;
    }
  };
  try {
    await step('tap');
    await runIn(ex, netnsPath, 'ip', tapUpArgs(tapName, mtu), what);
    await step('veth-qdisc');
    await step('tap-qdisc');
    await step('veth-filter');
    await step('tap-filter');
  } catch (err) {
    await detach(state, opts).catch((e: unknown) => opts.logger?.error({ err: e }, 'network: undo after failed attach'));
    state.created = [];
    report();
    throw err;
  }
  report();
  opts.logger?.info({ netns: netnsPath, veth: iface.name, tap: tapName, mtu, ms: Date.now() - t0 }, 'tap attached');
  return structuredClone(state);
}

/**
 * Undoes what `state` records, last first: the filters, the qdiscs, the
 * tap. Idempotent: an object already gone (or the whole namespace gone) is
 * no error. Stop QEMU first (it holds the tap open).
 */
export async function detach(state: TapState, opts: DetachOptions = {}): Promise<DetachReport> {
  const st = parseTapState(structuredClone(state));
  const report: DetachReport = { removed: [], alreadyGone: [], netnsGone: false };
  if (!existsSync(st.netnsPath)) {
    report.netnsGone = true;
    return report;
  }
  const ex: Exec = execOf(opts);
  const what = `network: detach ${st.tap} from ${st.veth} in ${st.netnsPath}`;
  let first: unknown;
  for (const s of [...st.created].reverse()) {
    const [tool, args] = undoArgs(s, st);
    try {
      await runIn(ex, st.netnsPath, tool, args, what);
      report.removed.push(s);
    } catch (err) {
      const cause = err instanceof StatusError ? (err.cause ?? err) : err;
      if (isNetnsGone(cause)) {
        report.netnsGone = true;
        break;
      }
      if (isAlreadyGone(failureWords(cause))) {
        report.alreadyGone.push(s);
        continue;
      }
      opts.logger?.warn({ err, step: s }, 'network: undo step failed');
      first ??= err;
    }
  }
  if (first !== undefined) throw first;
  opts.logger?.info({ netns: st.netnsPath, tap: st.tap, removed: report.removed, alreadyGone: report.alreadyGone }, 'tap detached');
  return report;
}
