/**
 * virtiofsd for one sandbox's shared dir: QEMU's C virtiofsd
 * (/usr/lib/qemu/virtiofsd, from qemu-system-common).
 *
 * Start: bind the shared dir onto itself + `--make-shared` (so that mounts
 * made under it later reach virtiofsd's namespace sandbox), spawn virtiofsd
 * detached (own session, stdio to a log file: it must outlive a shim restart),
 * wait for its socket. It serves only `source=<shared dir>`: with
 * `sandbox=namespace` it pivots into that dir, so nothing outside it — not
 * even through a symlink — is reachable from the guest.
 * Stop: SIGTERM then SIGKILL (it also exits by itself when QEMU disconnects),
 * remove its socket and lock file, unmount the bind.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { FailedPreconditionError, InvalidArgumentError, UnavailableError } from '../errors/index.js';
import type { Logger } from '../log/index.js';
import { abortError, deadline, sleep } from './abort.js';
import { bindSelfShared, unmountTree } from './mounts.js';
import { dieWithParent, identify, isAlive, tailFile, terminate, type ProcessIdentity } from './proc.js';
import { checkAbsPath, checkSocketPath } from './validate.js';

export const DEFAULT_VIRTIOFSD = '/usr/lib/qemu/virtiofsd';
/** Where QEMU 7.2's virtiofsd keeps its per-socket lock file (localstatedir=/var). */
export const VIRTIOFSD_LOCK_DIR = '/var/run/virtiofsd';
/** Bound on spawn → socket present. */
export const VIRTIOFSD_START_TIMEOUT_MS = 5_000;
export const VIRTIOFSD_TERM_TIMEOUT_MS = 2_000;
export const VIRTIOFSD_KILL_TIMEOUT_MS = 2_000;

export type VirtiofsCache = 'always' | 'auto' | 'none';

export interface VirtiofsdOptions {
  /** Default /usr/lib/qemu/virtiofsd. */
  binary?: string;
  socketPath: string;
  /** The only host directory the guest sees. */
  sharedDir: string;
  /**
   * `always` for read-only content (binaries start fast), `auto` (default)
   * when host and guest both write, `none` for strict coherence.
   */
  cache?: VirtiofsCache;
  /** Default `namespace`; `chroot` where namespaces are not allowed. */
  sandbox?: 'namespace' | 'chroot';
  /** `-o announce_submounts`: submounts get their own st_dev in the guest. */
  announceSubmounts?: boolean;
  /** virtiofsd's stderr. */
  logFile: string;
  /** Bind + make-shared the shared dir first (default true). */
  makeShared?: boolean;
  /** SIGKILLed when its starter dies (see QemuVmOptions.dieWithParent). */
  dieWithParent?: boolean;
  extraArgs?: readonly string[];
  logger: Logger;
  signal?: AbortSignal;
  startTimeoutMs?: number;
}

/** Everything a later process needs to clean a virtiofsd up. */
export interface VirtiofsdState extends ProcessIdentity {
  socketPath: string;
  sharedDir: string;
  logFile: string;
  lockFile: string;
  /** Mount points we created (the self-bind of the shared dir). */
  mounts: string[];
}

/** The lock file virtiofsd creates for a socket path. */
export function virtiofsdLockFile(socketPath: string): string {
  return `${VIRTIOFSD_LOCK_DIR}/${socketPath.replaceAll('/', '.')}.pid`;
}

/** A running virtiofsd we started (or re-attached to). */
export class Virtiofsd {
  private stopping: Promise<void> | undefined;

  private constructor(
    private readonly st: VirtiofsdState,
    private readonly log: Logger,
    /** Resolves when our child exits; undefined when re-attached. */
    private readonly exited: Promise<void> | undefined,
  ) {}

  /** Starts virtiofsd; on failure nothing it made is left behind. */
  static async start(opts: VirtiofsdOptions): Promise<Virtiofsd> {
    checkSocketPath(opts.socketPath, 'sharedFs.socketPath');
    checkAbsPath(opts.sharedDir, 'sharedFs.sharedDir');
    checkAbsPath(opts.logFile, 'sharedFs.logFile');
    let isDir = false;
    try {
      isDir = statSync(opts.sharedDir).isDirectory();
    } catch {
      /* reported below */
    }
    if (!isDir) throw new InvalidArgumentError(`sharedFs.sharedDir: ${opts.sharedDir}: not a directory`);
    if (existsSync(opts.socketPath)) {
      throw new FailedPreconditionError(`virtiofsd: socket ${opts.socketPath} already exists`);
    }
    const binary = opts.binary ?? DEFAULT_VIRTIOFSD;
    const log = opts.logger.child({ component: 'virtiofsd' });
    const mounts: string[] = [];
    let child: ReturnType<typeof spawn> | undefined;
    let id: ProcessIdentity | undefined;
    let exited: Promise<void> | undefined;
    try {
      if (opts.makeShared ?? true) {
        await bindSelfShared(opts.sharedDir);
        mounts.push(opts.sharedDir);
      }
      const args = [
        `--socket-path=${opts.socketPath}`,
        '-o', `source=${opts.sharedDir}`,
        '-o', `cache=${opts.cache ?? 'auto'}`,
        '-o', `sandbox=${opts.sandbox ?? 'namespace'}`,
        ...(opts.announceSubmounts ? ['-o', 'announce_submounts'] : []),
        ...(opts.extraArgs ?? []),
      ];
      const logFd = openSync(opts.logFile, 'a', 0o600);
      try {
        const launch = opts.dieWithParent ? dieWithParent(binary, args) : { command: binary, args };
        child = spawn(launch.command, launch.args, { detached: true, stdio: ['ignore', logFd, logFd] });
      } finally {
        closeSync(logFd);
      }
      const c = child;
      let exitInfo: string | undefined;
      exited = new Promise<void>((res) => {
        c.once('exit', (code, sig) => {
          exitInfo = sig ? `killed by ${sig}` : `exit code ${code}`;
          res();
        });
        c.once('error', (err) => {
          exitInfo = err.message;
          res();
        });
      });
      child.unref();
      if (child.pid === undefined) {
        await exited;
        throw new UnavailableError(`virtiofsd: cannot start ${binary}: ${exitInfo}`);
      }
      id = identify(child.pid);
      if (!id) {
        await exited;
        throw new UnavailableError(`virtiofsd: exited at once (${exitInfo}): ${tailFile(opts.logFile, 10)}`);
      }
      log.debug({ pid: id.pid, args }, 'virtiofsd spawned');
      await waitForSocket(opts.socketPath, opts.startTimeoutMs ?? VIRTIOFSD_START_TIMEOUT_MS, opts.signal, () =>
        exitInfo === undefined ? undefined : `virtiofsd exited (${exitInfo}): ${tailFile(opts.logFile, 10)}`,
      );
    } catch (err) {
      if (id) await terminate(id, { termTimeoutMs: VIRTIOFSD_TERM_TIMEOUT_MS, killTimeoutMs: VIRTIOFSD_KILL_TIMEOUT_MS, group: true, what: 'virtiofsd', logger: log, ...(exited ? { exited } : {}) });
      removeQuietly(opts.socketPath);
      if (id) removeLockFile(virtiofsdLockFile(opts.socketPath), id.pid);
      for (const m of mounts.reverse()) await unmountTree(m).catch((e: unknown) => log.error({ err: e, mount: m }, 'unmount failed'));
      throw err;
    }
    const st: VirtiofsdState = {
      pid: id.pid,
      startTime: id.startTime,
      socketPath: opts.socketPath,
      sharedDir: opts.sharedDir,
      logFile: opts.logFile,
      lockFile: virtiofsdLockFile(opts.socketPath),
      mounts,
    };
    log.info({ pid: st.pid, sharedDir: st.sharedDir, cache: opts.cache ?? 'auto' }, 'virtiofsd started');
    return new Virtiofsd(st, log, exited);
  }

  /** Re-attaches to a virtiofsd recorded by an earlier process (it may be gone). */
  static attach(state: VirtiofsdState, logger: Logger): Virtiofsd {
    return new Virtiofsd({ ...state, mounts: [...state.mounts] }, logger.child({ component: 'virtiofsd' }), undefined);
  }

  get pid(): number {
    return this.st.pid;
  }

  /** True while the recorded process runs. */
  isAlive(): boolean {
    return isAlive(this.st);
  }

  /** A JSON-serializable record for cleanupFromState. */
  state(): VirtiofsdState {
    return { ...this.st, mounts: [...this.st.mounts] };
  }

  /** Terminates virtiofsd, removes its socket and lock file, unmounts. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= stopVirtiofsd(this.st, this.log, this.exited);
    return this.stopping;
  }
}

/** Teardown shared by Virtiofsd.stop() and cleanupFromState(). */
export async function stopVirtiofsd(st: VirtiofsdState, log: Logger, exited?: Promise<void>): Promise<void> {
  const how = await terminate(st, {
    termTimeoutMs: VIRTIOFSD_TERM_TIMEOUT_MS,
    killTimeoutMs: VIRTIOFSD_KILL_TIMEOUT_MS,
    group: true,
    what: 'virtiofsd',
    logger: log,
    ...(exited ? { exited } : {}),
  });
  removeQuietly(st.socketPath);
  removeLockFile(st.lockFile, st.pid);
  for (const m of [...st.mounts].reverse()) await unmountTree(m);
  log.debug({ pid: st.pid, how }, 'virtiofsd stopped');
}

/** Removes virtiofsd's lock file if it still names `pid` (a newer one may own it). */
function removeLockFile(path: string, pid: number): void {
  try {
    if (Number(readFileSync(path, 'utf8').trim()) === pid) rmSync(path, { force: true });
  } catch {
    /* absent */
  }
}

function removeQuietly(path: string): void {
  rmSync(path, { force: true });
}

/** Polls for a socket file; `failed()` returns a reason once the process died. */
async function waitForSocket(
  path: string,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  failed: () => string | undefined,
): Promise<void> {
  const d = deadline(timeoutMs, signal);
  try {
    for (;;) {
      const why = failed();
      if (why !== undefined) throw new UnavailableError(why);
      if (existsSync(path)) return;
      if (!existsSync(dirname(path))) throw new UnavailableError(`virtiofsd: ${dirname(path)} vanished`);
      if (d.signal.aborted) throw abortError(d.signal, `virtiofsd: wait for socket ${path}`, timeoutMs);
      await sleep(10, d.signal, 'virtiofsd socket').catch(() => {});
    }
  } finally {
    d.dispose();
  }
}
