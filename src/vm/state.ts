/**
 * The VM's state record: everything a later process (a restarted shim, or
 * `shim delete` after the shim died) needs to re-attach to the VM or to
 * remove every trace of it. QemuVm writes it to `<dir>/vm.json` as soon as
 * each process is spawned, so even a shim killed mid-start leaves a record.
 *
 * `cleanupFromState` signals a recorded process only while its pid AND start
 * time still match: a recycled pid is never killed.
 */
import { execFile } from 'node:child_process';
import { renameSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { InvalidArgumentError, NotFoundError } from '../errors/index.js';
import type { Logger } from '../log/index.js';
import { mountsUnder, unmountTree } from './mounts.js';
import { isAlive, readStat, terminate, type ProcessIdentity } from './proc.js';
import type { Accelerator, MachineType } from './qemu-args.js';
import { stopVirtiofsd, type VirtiofsdState } from './virtiofsd.js';
import { releaseUid } from './uid-lease.js';
import type { AgentEndpoint } from './vm.js';

export const VM_STATE_VERSION = 1;
/** The state file's name inside the sandbox dir. */
export const VM_STATE_FILE = 'vm.json';

export interface QemuProcessState extends ProcessIdentity {
  binary: string;
}

export interface VmState {
  version: typeof VM_STATE_VERSION;
  sandboxId: string;
  /** The per-sandbox 0700 directory. */
  dir: string;
  /** True when the VM created `dir` (then it removes it whole). */
  ownsDir: boolean;
  /** Files the VM created in `dir` (sockets, logs, this record). */
  files: string[];
  machine: MachineType;
  accel: Accelerator;
  /** Absent until QEMU was spawned. */
  qemu?: QemuProcessState;
  virtiofsd?: VirtiofsdState;
  qmpSocket: string;
  consoleLog: string;
  qemuLog: string;
  agent: AgentEndpoint;
  /** Mount points the VM made (virtiofsd's self-bind of the shared dir). */
  mounts: string[];
  /** The network namespace QEMU runs in (not the VM's to remove: whoever made it does). */
  netns?: string;
  /** A jailed QEMU's uid (= gid), where its lease is (given back when the VM is gone), and the jailer (which ends the uid's processes). */
  jail?: { uid: number; gid: number; leaseDir: string; jailer?: string };
  /** ISO time the record was first written. */
  createdAt: string;
}

function need(cond: boolean, field: string, what: string): void {
  if (!cond) throw new InvalidArgumentError(`vm state: ${field}: ${what}`);
}

function isIdentity(v: unknown): v is ProcessIdentity {
  const o = v as Record<string, unknown> | null;
  return typeof o === 'object' && o !== null && Number.isInteger(o['pid']) && (o['pid'] as number) > 0 && Number.isInteger(o['startTime']);
}

const isStr = (v: unknown): v is string => typeof v === 'string' && v !== '';
const isStrArray = (v: unknown): v is string[] => Array.isArray(v) && v.every(isStr);

/** Checks a record read back from disk (a wrong one must not make us kill or delete at random). */
export function parseVmState(value: unknown): VmState {
  const o = value as Record<string, unknown>;
  need(typeof o === 'object' && o !== null, 'state', 'must be an object');
  need(o['version'] === VM_STATE_VERSION, 'version', `must be ${VM_STATE_VERSION} (got ${JSON.stringify(o['version'])})`);
  for (const f of ['sandboxId', 'dir', 'qmpSocket', 'consoleLog', 'qemuLog', 'createdAt', 'machine', 'accel']) {
    need(isStr(o[f]), f, 'must be a non-empty string');
  }
  need((o['dir'] as string).startsWith('/') && (o['dir'] as string) !== '/', 'dir', 'must be an absolute path other than /');
  need(typeof o['ownsDir'] === 'boolean', 'ownsDir', 'must be a boolean');
  need(isStrArray(o['files']), 'files', 'must be an array of strings');
  need(isStrArray(o['mounts']), 'mounts', 'must be an array of strings');
  need(typeof o['agent'] === 'object' && o['agent'] !== null, 'agent', 'must be an object');
  if (o['netns'] !== undefined) need(isStr(o['netns']), 'netns', 'must be a non-empty string');
  if (o['qemu'] !== undefined) {
    need(isIdentity(o['qemu']) && isStr((o['qemu'] as unknown as Record<string, unknown>)['binary']), 'qemu', 'must hold pid, startTime, binary');
  }
  if (o['jail'] !== undefined) {
    const j = o['jail'] as Record<string, unknown>;
    need(typeof j === 'object' && j !== null && Number.isInteger(j['uid']) && (j['uid'] as number) > 0 && Number.isInteger(j['gid']) && (j['gid'] as number) > 0 && isStr(j['leaseDir']), 'jail', 'must hold uid, gid (above 0) and leaseDir');
    need(j['jailer'] === undefined || (isStr(j['jailer']) && (j['jailer'] as string).startsWith('/')), 'jail.jailer', 'must be an absolute path');
  }
  if (o['virtiofsd'] !== undefined) {
    const v = o['virtiofsd'] as Record<string, unknown>;
    need(isIdentity(v), 'virtiofsd', 'must hold pid and startTime');
    for (const f of ['socketPath', 'sharedDir', 'logFile', 'lockFile']) need(isStr(v[f]), `virtiofsd.${f}`, 'must be a non-empty string');
    need(isStrArray(v['mounts']), 'virtiofsd.mounts', 'must be an array of strings');
  }
  return o as unknown as VmState;
}

/** Writes `<dir>/vm.json` atomically (write + rename). */
export function writeStateFile(state: VmState): void {
  const path = join(state.dir, VM_STATE_FILE);
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, path);
}

/** Reads and checks `<dir>/vm.json`; NOT_FOUND when there is none. */
export function readStateFile(dir: string): VmState {
  let text: string;
  try {
    text = readFileSync(join(dir, VM_STATE_FILE), 'utf8');
  } catch (err) {
    throw new NotFoundError(`vm state: no ${VM_STATE_FILE} in ${dir}`, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new InvalidArgumentError(`vm state: ${join(dir, VM_STATE_FILE)}: invalid JSON`, { cause: err });
  }
  return parseVmState(json);
}

export const CLEANUP_TERM_TIMEOUT_MS = 3_000;
export const CLEANUP_KILL_TIMEOUT_MS = 3_000;

export interface CleanupOptions {
  logger: Logger;
  termTimeoutMs?: number;
  killTimeoutMs?: number;
}

/** What cleanupFromState did. */
export interface CleanupReport {
  /** Processes signalled (they matched pid + start time and were running). */
  killed: Array<{ what: 'qemu' | 'virtiofsd'; pid: number }>;
  /** Recorded processes whose pid is gone or now names another process. */
  skipped: Array<{ what: 'qemu' | 'virtiofsd'; pid: number; why: 'gone' | 'start time differs' }>;
  unmounted: string[];
  removed: string[];
  /** Mount points still present under `dir` (then the dir was not removed). */
  leftMounts: string[];
}

/**
 * Removes a VM recorded by an earlier process: terminates QEMU and virtiofsd
 * if (and only if) pid and start time still match, unmounts what it mounted,
 * removes its files and, if it created it, the directory. Idempotent.
 */
export async function cleanupFromState(state: VmState, opts: CleanupOptions): Promise<CleanupReport> {
  const st = parseVmState(state);
  const log = opts.logger.child({ module: 'vm', sandbox: st.sandboxId });
  const report: CleanupReport = { killed: [], skipped: [], unmounted: [], removed: [], leftMounts: [] };
  const term = opts.termTimeoutMs ?? CLEANUP_TERM_TIMEOUT_MS;
  const kill = opts.killTimeoutMs ?? CLEANUP_KILL_TIMEOUT_MS;

  const check = (what: 'qemu' | 'virtiofsd', id: ProcessIdentity): boolean => {
    if (isAlive(id)) return true;
    // Gone, a zombie of it (same start time), or a recycled pid.
    const now = readStat(id.pid);
    const differs = now !== undefined && now.startTime !== id.startTime;
    report.skipped.push({ what, pid: id.pid, why: differs ? 'start time differs' : 'gone' });
    if (differs) log.warn({ pid: id.pid, what }, 'recorded pid now names another process: not killing it');
    return false;
  };

  const ownMounts = [...new Set([...st.mounts, ...(st.virtiofsd?.mounts ?? [])])];
  const mountedBefore = ownMounts.filter((m) => mountsUnder(m).length > 0);
  if (st.qemu && check('qemu', st.qemu)) {
    await terminate(st.qemu, { termTimeoutMs: term, killTimeoutMs: kill, group: true, what: 'qemu', logger: log });
    report.killed.push({ what: 'qemu', pid: st.qemu.pid });
  }
  if (st.virtiofsd) {
    if (check('virtiofsd', st.virtiofsd)) report.killed.push({ what: 'virtiofsd', pid: st.virtiofsd.pid });
    // stopVirtiofsd re-checks the identity before any signal, then removes
    // its socket and lock file and unmounts.
    await stopVirtiofsd(st.virtiofsd, log);
  }
  for (const m of ownMounts) await unmountTree(m);
  report.unmounted.push(...mountedBefore);
  try {
    if (st.jail) await endJailedUid(st.jail, log);
    removeVmFiles(st, report, log);
  } finally {
    if (st.jail) await releaseUid(st.jail.leaseDir, st.jail.uid, st.sandboxId);
  }
  log.info({ killed: report.killed, skipped: report.skipped }, 'vm cleaned up from state');
  return report;
}

/** Bound on `kata-ts-jailer --kill-uid` (it gives up after 2 s itself). */
export const KILL_UID_TIMEOUT_MS = 10_000;

/**
 * Ends every process of a jailed QEMU's uid (`kata-ts-jailer --kill-uid`):
 * whatever QEMU may have left (a fork, were seccomp's spawn=deny off) must not
 * run while its dir is removed, nor when the uid is leased to another VM.
 * A failure is logged; the caller goes on.
 */
export async function endJailedUid(jail: NonNullable<VmState['jail']>, log: Logger): Promise<void> {
  if (jail.jailer === undefined) return;
  const r = await new Promise<{ code: number | null; err: string }>((resolve) => {
    execFile(jail.jailer!, ['--kill-uid', String(jail.uid)], { timeout: KILL_UID_TIMEOUT_MS }, (e, _out, err) => {
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, err: String(err) });
    });
  });
  if (r.code !== 0) log.error({ uid: jail.uid, code: r.code, stderr: r.err.trim() }, 'ending the jailed uid\'s processes failed');
}

/** Removes the VM's files, and its dir if it made it and nothing is mounted there. */
export function removeVmFiles(st: VmState, report: Pick<CleanupReport, 'removed' | 'leftMounts'>, log: Logger): void {
  const left = mountsUnder(st.dir);
  if (st.ownsDir && left.length === 0) {
    rmSync(st.dir, { recursive: true, force: true });
    report.removed.push(st.dir);
    return;
  }
  if (left.length > 0) {
    report.leftMounts.push(...left);
    log.error({ dir: st.dir, mounts: left }, 'mounts left under the sandbox dir: not removing it');
  }
  for (const f of st.files) {
    // Only plain names inside dir: a tampered record cannot point elsewhere.
    if (basename(f) !== f || f === '.' || f === '..' || f === '') continue;
    // A jailed QEMU's dirs (qemu/, root/) too: nothing is mounted there (checked above).
    rmSync(join(st.dir, f), { force: true, recursive: true });
    report.removed.push(join(st.dir, f));
  }
}
