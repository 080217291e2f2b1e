/**
 * One process of a container (its init or an exec), run as a DIRECT child of
 * the agent: a foreground `crun run` / `crun exec`, or, for a terminal, the
 * tty-helper that runs crun with a console socket. Node reaps only its own
 * children, and a foreground crun exits with the container process's exact
 * status (its code, or 128+signal), so the exit status is exact by
 * construction.
 *
 * The pid the host sees is the container process's (from crun's --pid-file),
 * not crun's. Signals go straight to that pid while crun is alive: crun waits
 * for the process, so the pid cannot be reused before crun exits, and once it
 * has exited the process is refused as exited.
 *
 * Exits are kept: wait() answers at once for an exited process, for as long
 * as the container exists (across host reconnects).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Writable } from 'node:stream';
import type { Logger } from '../log/index.js';
import { CancelledError, DeadlineExceededError, FailedPreconditionError, NotFoundError, StatusError, Code } from '../errors/index.js';
import { OutputStream, StdinSink } from './stdio.js';
import { checkProcessOp, nextProcessState, type ProcessState } from './state.js';
import { lastRuntimeError } from './runtime.js';

export interface ExitInfo {
  /** Exit code, or 128 + signal number. */
  status: number;
  exitedAt: Date;
}

/** How the process is launched. */
export interface LaunchSpec {
  /** The runtime binary. */
  runtimePath: string;
  /** The runtime's argv; gets the console socket path when terminal. */
  runtimeArgv(consoleSocket: string | undefined): string[];
  pidFile: string;
  /** The runtime's --log file (its error message when start fails). */
  logFile: string;
  /** Where the tty-helper listens for the pty master (terminal only). */
  consoleSocket: string;
  /** The tty-helper binary (terminal only). */
  ttyHelper?: string;
  /** A command the launch goes through first (ContainerEnv.launchPrefix). */
  launchPrefix?: readonly string[];
}

export interface ProcessOptions {
  containerId: string;
  /** "" for the init process. */
  execId: string;
  terminal: boolean;
  stdin: boolean;
  rows?: number;
  cols?: number;
  logger: Logger;
}

/** How long the runtime may take to report the pid (crun run ~0.25 s under TCG; generous). */
export const START_TIMEOUT_MS = 120_000;
/** Diagnostics kept from the tty-helper's stderr. */
const HELPER_STDERR_KEEP = 4096;

export class ContainerProcess {
  readonly containerId: string;
  readonly execId: string;
  readonly terminal: boolean;
  readonly hasStdin: boolean;
  readonly stdout = new OutputStream();
  readonly stderr = new OutputStream();
  readonly stdin: StdinSink;

  // guarded by the event loop: changes only in start() and onExit().
  private stateValue: ProcessState = 'created';
  private pidValue = 0;
  private exitInfo: ExitInfo | undefined;
  private readonly exitPromise: Promise<ExitInfo>;
  private resolveExit!: (e: ExitInfo) => void;
  private child: ChildProcess | undefined;
  /** tty-helper's control pipe (fd 3): "rows cols\n" lines. */
  private control: Writable | undefined;
  private size: { rows: number; cols: number } | undefined;
  private helperStderr = '';
  private abandoned: StatusError | undefined;
  /** Pending waits, failed by abandon(). */
  private readonly waiters = new Set<(err: Error) => void>();
  private readonly logger: Logger;

  constructor(opts: ProcessOptions) {
    this.containerId = opts.containerId;
    this.execId = opts.execId;
    this.terminal = opts.terminal;
    this.hasStdin = opts.stdin;
    this.stdin = new StdinSink(this.name, opts.stdin);
    if (opts.rows && opts.cols) this.size = { rows: opts.rows, cols: opts.cols };
    // A terminal merges stderr into the pty: there is no separate stderr.
    if (this.terminal) this.stderr.close();
    this.logger = opts.logger.child({ container: opts.containerId, exec: opts.execId || undefined });
    this.exitPromise = new Promise((r) => (this.resolveExit = r));
  }

  /** "c1" for an init process, "c1/e1" for an exec. */
  get name(): string {
    return this.execId ? `${this.containerId}/${this.execId}` : this.containerId;
  }

  get state(): ProcessState {
    return this.stateValue;
  }

  get pid(): number {
    return this.pidValue;
  }

  get exit(): ExitInfo | undefined {
    return this.exitInfo;
  }

  /** Resolves when the process has exited (never rejects). */
  get exited(): Promise<ExitInfo> {
    return this.exitPromise;
  }

  /**
   * Spawns the runtime and resolves with the container process's pid once
   * the runtime wrote it. Rejects (and records an exit) when the runtime
   * fails before that; the error carries the runtime's message.
   */
  async start(spec: LaunchSpec): Promise<number> {
    this.stateValue = nextProcessState(this.name, this.stateValue, 'start');
    let command = spec.runtimePath;
    let args = spec.runtimeArgv(undefined);
    if (this.terminal) {
      if (!spec.ttyHelper) {
        this.onExit(125);
        throw new FailedPreconditionError(`process ${this.name}: a terminal needs the tty-helper binary, which was not found`);
      }
      command = spec.ttyHelper;
      args = [
        '--socket', spec.consoleSocket,
        ...(this.size ? ['--rows', String(this.size.rows), '--cols', String(this.size.cols)] : []),
        ...(this.hasStdin ? [] : ['--no-stdin']),
        '--', spec.runtimePath, ...spec.runtimeArgv(spec.consoleSocket),
      ];
    }
    if (spec.launchPrefix && spec.launchPrefix.length > 0) {
      args = [...spec.launchPrefix.slice(1), command, ...args];
      command = spec.launchPrefix[0]!;
    }
    this.logger.debug({ command, args }, 'spawning process');
    const child = spawn(command, args, {
      stdio: [this.hasStdin ? 'pipe' : 'ignore', 'pipe', 'pipe', ...(this.terminal ? ['pipe' as const] : [])],
      // Its own session: signals aimed at the agent's process group (a ^C in
      // a test terminal) must not reach the containers.
      detached: true,
    });
    this.child = child;
    let spawnError: Error | undefined;
    child.on('error', (err) => {
      if (child.pid === undefined && !spawnError) {
        spawnError = err;
        this.onExit(127);
      } else {
        this.logger.warn({ err }, 'process error');
      }
    });
    child.on('exit', (code, signal) => {
      const status = code ?? 128 + (signal ? (osConstants.signals[signal] ?? 0) : 0);
      this.onExit(status);
    });
    if (child.stdin) this.stdin.attach(child.stdin);
    else this.stdin.detach(`process ${this.name} has no stdin`);
    this.stdout.attach(child.stdout!);
    if (this.terminal) {
      this.control = child.stdio[3] as Writable;
      this.control.on('error', () => {});
      // The helper's and crun's own messages: keep the tail for diagnostics.
      child.stderr!.setEncoding('utf8');
      child.stderr!.on('data', (s: string) => {
        this.helperStderr = (this.helperStderr + s).slice(-HELPER_STDERR_KEEP);
      });
    } else {
      this.stderr.attach(child.stderr!);
    }

    const pid = await this.waitForPid(spec, () => spawnError);
    this.pidValue = pid;
    this.logger.debug({ pid }, 'process started');
    return pid;
  }

  /**
   * Resolves with the exit; rejects CANCELLED when `signal` aborts first, and
   * NOT_FOUND when the process is abandoned (its container removed before
   * it ever ran).
   */
  wait(signal?: AbortSignal): Promise<ExitInfo> {
    if (this.exitInfo) return Promise.resolve(this.exitInfo);
    if (this.abandoned) return Promise.reject(this.abandoned);
    return new Promise((resolve, reject) => {
      const cancel = () => finish(() => reject(new CancelledError(`wait for process ${this.name} cancelled`)));
      const finish = (settle: () => void) => {
        signal?.removeEventListener('abort', cancel);
        this.waiters.delete(onAbandon);
        settle();
      };
      const onAbandon = (err: Error) => finish(() => reject(err));
      if (signal?.aborted) return cancel();
      signal?.addEventListener('abort', cancel, { once: true });
      this.waiters.add(onAbandon);
      void this.exitPromise.then((e) => finish(() => resolve(e)));
    });
  }

  /** The process will never run (its container is removed): pending waits fail NOT_FOUND. */
  abandon(): void {
    if (this.exitInfo || this.abandoned) return;
    this.abandoned = new NotFoundError(`process ${this.name} not found: its container was removed before it ran`);
    for (const w of [...this.waiters]) w(this.abandoned);
    this.stdin.detach(`process ${this.name} will never run`);
  }

  /** Sends a signal to the container process. */
  signal(sig: number): void {
    checkProcessOp(this.name, this.stateValue, 'signal');
    if (this.pidValue <= 0) throw new FailedPreconditionError(`process ${this.name} has no pid yet`);
    try {
      process.kill(this.pidValue, sig);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') {
        throw new NotFoundError(`process ${this.name}: process already finished`, { cause: err });
      }
      throw err;
    }
  }

  /** Sets the terminal size (kept until the terminal exists when called early). */
  resize(rows: number, cols: number): void {
    if (!this.terminal) throw new FailedPreconditionError(`process ${this.name} has no terminal`);
    checkProcessOp(this.name, this.stateValue, 'resize');
    this.size = { rows, cols };
    if (this.control && !this.control.destroyed) this.control.write(`${rows} ${cols}\n`);
  }

  /** Kills the runtime child itself (last resort during teardown). */
  killRuntime(): void {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) {
      try {
        this.child.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }

  private onExit(status: number): void {
    if (this.exitInfo) return;
    this.stateValue = nextProcessState(this.name, this.stateValue, 'exit');
    this.exitInfo = { status, exitedAt: new Date() };
    this.stdin.detach(`process ${this.name} has exited`);
    this.control?.destroy();
    this.logger.debug({ status }, 'process exited');
    this.resolveExit(this.exitInfo);
  }

  private async waitForPid(spec: LaunchSpec, spawnError: () => Error | undefined): Promise<number> {
    const deadline = Date.now() + START_TIMEOUT_MS;
    // inotify on the directory wakes the loop as soon as the runtime writes
    // the pid file (crun run takes ~0.25 s under TCG: polling alone would add
    // up to a poll period); the poll is the fallback.
    let wake: (() => void) | undefined;
    let watcher: FSWatcher | undefined;
    try {
      watcher = watch(dirname(spec.pidFile), { persistent: false }, () => wake?.());
      watcher.on('error', () => {});
    } catch {
      watcher = undefined;
    }
    try {
      let delay = 2;
      for (;;) {
        const pid = await readPidFile(spec.pidFile);
        if (pid) return pid;
        if (this.exitInfo) {
          // The runtime exited: a pid written just before counts (a process
          // that ran and exited at once); otherwise the start failed.
          const late = await readPidFile(spec.pidFile);
          if (late) return late;
          throw await this.startError(spec, spawnError());
        }
        if (Date.now() > deadline) {
          this.killRuntime();
          throw new DeadlineExceededError(`process ${this.name}: runtime did not report a pid within ${START_TIMEOUT_MS} ms`);
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, delay);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
          void this.exitPromise.then(wake);
        });
        wake = undefined;
        delay = Math.min(delay * 2, 100);
      }
    } finally {
      watcher?.close();
    }
  }

  private async startError(spec: LaunchSpec, spawnError: Error | undefined): Promise<StatusError> {
    if (spawnError) {
      return new FailedPreconditionError(`process ${this.name}: cannot run ${spec.runtimePath}: ${spawnError.message}`, { cause: spawnError });
    }
    const msg = (await lastRuntimeError(spec.logFile)) ?? this.helperStderr.trim().split('\n').pop() ?? '';
    return new StatusError(Code.UNKNOWN,
      `process ${this.name}: runtime failed to start it (exit status ${this.exitInfo?.status}): ${msg || 'no message'}`);
  }
}

async function readPidFile(path: string): Promise<number | undefined> {
  try {
    const n = Number.parseInt((await readFile(path, 'utf8')).trim(), 10);
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}
