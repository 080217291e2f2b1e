/**
 * binary:///path?args: a logging binary started per process, as containerd's
 * runc shim does (NewBinaryIO): environment CONTAINER_ID and
 * CONTAINER_NAMESPACE only, argv from the URI's query, stdout on fd 3,
 * stderr on fd 4, and fd 5 a readiness channel: the binary is ready when it
 * writes to fd 5 or closes it (EOF). We wait for that, bounded.
 *
 * Node cannot make a plain pipe(2): fds 3-5 are the child's ends of unix
 * socketpairs (libuv's stdio 'pipe'). A logger reading fd 3/4 with read(2)
 * and closing/writing fd 5 cannot tell the difference.
 *
 * stop(): the pipes are closed (the binary reads EOF); it gets half the
 * timeout to exit by itself, then SIGTERM (as containerd sends), then SIGKILL
 * at the timeout.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import type net from 'node:net';
import {
  CancelledError, DeadlineExceededError, InternalError, InvalidArgumentError, type StatusError,
} from '../errors/index.js';
import type { Logger } from '../log/index.js';
import { fsError } from './fs-error.js';
import { SocketSink, type Sink } from './sink.js';
import type { BinaryLogTarget } from './stdio-config.js';

/** How long a logging binary gets to signal readiness on fd 5. */
export const DEFAULT_LOGGER_READY_TIMEOUT_MS = 10_000;
/** After SIGKILL, how long we still wait for the exit to be seen. */
const KILL_WAIT_MS = 2_000;

export interface BinaryLoggerOptions {
  containerId: string;
  namespace: string;
  logger: Logger;
  readyTimeoutMs?: number;
  signal?: AbortSignal;
}

export class BinaryLogger {
  readonly stdout: Sink;
  readonly stderr: Sink;
  private stopping: Promise<void> | undefined;

  private constructor(private readonly child: ChildProcess, private readonly target: BinaryLogTarget,
    private readonly log: Logger, private readonly exited: Promise<void>) {
    const [, , , out, err] = child.stdio as (net.Socket | null)[];
    this.stdout = new SocketSink(out!, `stdout logging binary ${target.path}`, log);
    this.stderr = new SocketSink(err!, `stderr logging binary ${target.path}`, log);
    child.once('exit', (code, signal) => {
      if (!this.stopping) log.warn({ pid: child.pid, binary: target.path, code, signal }, 'logging binary exited early');
    });
  }

  /** Starts the binary and waits until it is ready. Leaves nothing behind on failure. */
  static async start(target: BinaryLogTarget, opts: BinaryLoggerOptions): Promise<BinaryLogger> {
    const what = `logging binary ${target.path}`;
    try {
      const st = await fs.promises.stat(target.path);
      if (!st.isFile()) throw new InvalidArgumentError(`stdout: ${what} is not a regular file`);
      await fs.promises.access(target.path, fs.constants.X_OK);
    } catch (err) {
      throw err instanceof InvalidArgumentError ? err : fsError('stdout', what, err);
    }
    let child: ChildProcess;
    try {
      child = spawn(target.path, target.args, {
        env: { CONTAINER_ID: opts.containerId, CONTAINER_NAMESPACE: opts.namespace },
        stdio: ['ignore', 'ignore', 'ignore', 'pipe', 'pipe', 'pipe'],
      });
    } catch (err) {
      throw fsError('stdout', what, err);
    }
    // A later 'error' (a failed kill) must never go unhandled.
    child.on('error', (err) => {
      if (child.pid !== undefined) opts.logger.warn({ err, binary: target.path }, 'logging binary error');
    });
    const sockets = (child.stdio as (net.Socket | null)[]).filter((s): s is net.Socket => s !== null);
    for (const s of sockets) s.on('error', () => {}); // the sinks log write errors; fd 5 errors mean "ready"
    const log = opts.logger;
    const exited = exitOf(child);
    try {
      await waitReady(child, opts.readyTimeoutMs ?? DEFAULT_LOGGER_READY_TIMEOUT_MS, what, opts.signal);
    } catch (err) {
      for (const s of sockets) s.destroy();
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await raceTimeout(exited, KILL_WAIT_MS);
      throw err;
    }
    readyPipe(child)?.destroy();
    log.debug({ pid: child.pid, binary: target.path, args: target.args }, 'logging binary ready');
    return new BinaryLogger(child, target, log, exited);
  }

  /**
   * Closes the binary's pipes and waits for it to exit: by itself for half
   * of `timeoutMs`, then after SIGTERM, then SIGKILL. Idempotent.
   */
  stop(timeoutMs: number): Promise<void> {
    this.stopping ??= this.doStop(timeoutMs);
    return this.stopping;
  }

  private async doStop(timeoutMs: number): Promise<void> {
    await Promise.all([this.stdout.close(), this.stderr.close()]);
    for (const s of this.child.stdio) (s as net.Socket | null)?.destroy();
    const half = Math.max(0, Math.floor(timeoutMs / 2));
    if (await raceTimeout(this.exited, half)) return;
    this.log.debug({ pid: this.child.pid }, 'logging binary still running after EOF: SIGTERM');
    this.child.kill('SIGTERM');
    if (await raceTimeout(this.exited, timeoutMs - half)) return;
    this.log.warn({ pid: this.child.pid, binary: this.target.path }, `logging binary did not exit within ${timeoutMs} ms: SIGKILL`);
    this.child.kill('SIGKILL');
    await raceTimeout(this.exited, KILL_WAIT_MS);
  }
}

/** fd 5 of the child (Node's stdio tuple type stops at 4). */
function readyPipe(child: ChildProcess): net.Socket | null {
  return (child.stdio as unknown as (net.Socket | null)[])[5] ?? null;
}

function exitOf(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', () => { if (child.pid === undefined) resolve(); });
  });
}

/** True if `p` settled within `ms`. */
async function raceTimeout(p: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), ms); });
  try {
    return await Promise.race([p.then(() => true), timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves when the binary writes to or closes fd 5; rejects on spawn error, timeout or abort. */
function waitReady(child: ChildProcess, timeoutMs: number, what: string, signal?: AbortSignal): Promise<void> {
  const ready = readyPipe(child);
  return new Promise<void>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const cleanup = (): void => {
      clearTimeout(timer);
      ready?.off('data', ok).off('end', ok).off('close', ok);
      child.off('error', failSpawn);
      signal?.removeEventListener('abort', onAbort);
    };
    const ok = (): void => { cleanup(); resolve(); };
    const fail = (err: StatusError): void => { cleanup(); reject(err); };
    const failSpawn = (err: Error): void => fail(fsError('stdout', what, err));
    const onAbort = (): void => fail(new CancelledError(`stdout: ${what}: cancelled while waiting for it to be ready`));
    if (!ready) {
      fail(new InternalError(`stdout: ${what}: no readiness pipe`));
      return;
    }
    ready.on('data', ok).on('end', ok).on('close', ok);
    child.on('error', failSpawn);
    signal?.addEventListener('abort', onAbort, { once: true });
    timer = setTimeout(() => fail(new DeadlineExceededError(
      `stdout: ${what}: not ready (nothing written to or close of fd 5) within ${timeoutMs} ms`)), timeoutMs);
    if (signal?.aborted) onAbort();
  });
}
