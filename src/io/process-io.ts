/**
 * ProcessIo: the host side of one process's stdio (containerd's Create/Exec
 * stdin/stdout/stderr + terminal), independent of containerd's API and of the
 * VM. The service opens it before creating the process in the guest (so bad
 * paths fail the request early), calls start() with the process's streams
 * as soon as the process exists, closeStdin() for CloseIO, waits for
 * `drained` (bounded) before reporting the exit, and close() on delete.
 */
import { CancelledError, FailedPreconditionError } from '../errors/index.js';
import type { Logger } from '../log/index.js';
import { BinaryLogger, DEFAULT_LOGGER_READY_TIMEOUT_MS } from './binary-logger.js';
import { copyOutput, DEFAULT_READ_CHUNK, StdinCopy, type ProcessStreams } from './copy.js';
import { openOutputPath, openStdinFifo } from './fifo.js';
import { openLogFile } from './log-file.js';
import type { Sink } from './sink.js';
import { parseStdio, type StdioConfig } from './stdio-config.js';

/** close()'s default bound on waiting for a logging binary to exit. */
export const DEFAULT_CLOSE_TIMEOUT_MS = 10_000;
/** CloseIO forwards what stdin still brings for at most this long, then cuts it (aborting the write in flight). */
export const DEFAULT_STDIN_CLOSE_GRACE_MS = 5_000;

export interface ProcessIoOptions {
  /** CONTAINER_ID of a logging binary. */
  containerId: string;
  /** CONTAINER_NAMESPACE of a logging binary. */
  namespace: string;
  logger: Logger;
  /** Cancels open() (e.g. while waiting for a logging binary to be ready). */
  signal?: AbortSignal;
  /** Bytes asked for per readStdout/readStderr (DEFAULT_READ_CHUNK, 1 MiB). */
  readChunk?: number;
  /** How long a binary:// logger gets to be ready (10 s), then DEADLINE_EXCEEDED. */
  loggerReadyTimeoutMs?: number;
  /** See DEFAULT_STDIN_CLOSE_GRACE_MS. */
  stdinCloseGraceMs?: number;
}

interface Opened {
  stdin: StdinCopy | null;
  stdout: Sink | null;
  stderr: Sink | null;
  logger: BinaryLogger | null;
}

export class ProcessIo {
  /** A stdin FIFO was given: tell the agent to keep a stdin pipe. */
  readonly hasStdin: boolean;
  readonly terminal: boolean;
  /**
   * Resolves when the stdout and stderr copies reached EOF (or failed) and
   * their sinks were flushed and closed; also once close() is done. Never rejects.
   */
  readonly drained: Promise<void>;

  private readonly abort = new AbortController();
  private resolveDrained!: () => void;
  private started = false;
  private closing: Promise<void> | undefined;
  private readonly log: Logger;

  private constructor(private readonly res: Opened, terminal: boolean, log: Logger, private readonly chunk: number) {
    this.hasStdin = res.stdin !== null;
    this.terminal = terminal;
    this.log = log;
    this.drained = new Promise((resolve) => { this.resolveDrained = resolve; });
  }

  /**
   * Validates the config, opens the FIFOs / log file / starts the logging
   * binary. On failure releases everything it opened and throws a
   * StatusError naming the field (INVALID_ARGUMENT, NOT_FOUND, ...).
   */
  static async open(cfg: StdioConfig, opts: ProcessIoOptions): Promise<ProcessIo> {
    const p = parseStdio(cfg);
    const log = opts.logger;
    const res: Opened = { stdin: null, stdout: null, stderr: null, logger: null };
    const check = (): void => {
      if (opts.signal?.aborted) throw new CancelledError('stdio: open cancelled');
    };
    try {
      check();
      if (p.stdin !== null) {
        res.stdin = new StdinCopy(await openStdinFifo(p.stdin), log,
          opts.stdinCloseGraceMs ?? DEFAULT_STDIN_CLOSE_GRACE_MS);
        check();
      }
      if (p.log?.kind === 'binary') {
        res.logger = await BinaryLogger.start(p.log, {
          containerId: opts.containerId,
          namespace: opts.namespace,
          logger: log,
          readyTimeoutMs: opts.loggerReadyTimeoutMs ?? DEFAULT_LOGGER_READY_TIMEOUT_MS,
          signal: opts.signal,
        });
        res.stdout = res.logger.stdout;
        res.stderr = res.logger.stderr;
      } else if (p.log?.kind === 'file') {
        res.stdout = res.stderr = await openLogFile(p.log.path, log);
      } else {
        if (p.stdout !== null) res.stdout = await openOutputPath('stdout', p.stdout, log);
        check();
        if (p.stderr !== null) res.stderr = await openOutputPath('stderr', p.stderr, log);
      }
      check();
    } catch (err) {
      await release(res, 1_000);
      throw err;
    }
    return new ProcessIo(res, cfg.terminal, log, opts.readChunk ?? DEFAULT_READ_CHUNK);
  }

  /**
   * Begins copying. Call once, as soon as the process exists in the guest
   * (its output is only read from the container while the host reads).
   * With a terminal, stderr is not read (a pty has only stdout) and a stderr
   * FIFO, if any, is closed at once.
   */
  start(streams: ProcessStreams): void {
    if (this.closing) throw new FailedPreconditionError('stdio: already closed');
    if (this.started) throw new FailedPreconditionError('stdio: already started');
    this.started = true;
    const signal = this.abort.signal;
    const out = copyOutput({
      name: 'stdout', read: (n, s) => streams.readStdout(n, s), sink: this.res.stdout, signal, chunk: this.chunk, log: this.log,
    });
    const err = this.terminal
      ? (this.res.stderr?.end(signal) ?? Promise.resolve())
      : copyOutput({
        name: 'stderr', read: (n, s) => streams.readStderr(n, s), sink: this.res.stderr, signal, chunk: this.chunk, log: this.log,
      });
    void Promise.all([out, err]).then(() => this.resolveDrained());
    this.res.stdin?.start(streams);
  }

  /**
   * containerd's CloseIO: forwards what the stdin FIFO still holds (until
   * EOF, or until it stays silent for STDIN_DRAIN_IDLE_MS, at most the grace
   * period), then closes the process's stdin (once) and the FIFO. Before
   * start(), the FIFO is closed now and the process's stdin as soon as
   * start() is called. Idempotent; a no-op without stdin. Rejects only with
   * the error of streams.closeStdin().
   */
  async closeStdin(): Promise<void> {
    await this.res.stdin?.closeStdin();
  }

  /**
   * Abandons the copies, closes every fd and, for binary://, waits for the
   * logging binary to exit (SIGTERM at half of timeoutMs, SIGKILL at
   * timeoutMs). Returns within about timeoutMs. Idempotent; never rejects.
   */
  close(timeoutMs = DEFAULT_CLOSE_TIMEOUT_MS): Promise<void> {
    this.closing ??= (async () => {
      this.abort.abort(new CancelledError('stdio closed'));
      await release(this.res, timeoutMs).catch((err: unknown) => this.log.warn({ err }, 'stdio: release failed'));
      this.resolveDrained();
    })();
    return this.closing;
  }
}

async function release(res: Opened, timeoutMs: number): Promise<void> {
  await Promise.all([
    res.stdin?.destroy(),
    res.stdout?.close(),
    res.stderr?.close(),
  ]);
  await res.logger?.stop(timeoutMs);
}
