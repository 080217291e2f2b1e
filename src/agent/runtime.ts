/**
 * The OCI runtime (crun; runc works too) as the agent drives it: argv for the
 * long-lived foreground commands (`run`, `exec`, spawned by process.ts as
 * direct children so their exit status is the container's), and short
 * commands (`kill`, `pause`, `resume`, `update`, `delete`, `ps`) run to
 * completion with a named timeout.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import type { Logger } from '../log/index.js';
import { DeadlineExceededError, StatusError, Code } from '../errors/index.js';

export interface RuntimeOptions {
  /** The runtime binary (default /usr/bin/crun). */
  path: string;
  /** The runtime's state root (`--root`), e.g. /run/agent/crun. */
  root: string;
  /** Pass --no-pivot to `run` (needed when the guest root is an initramfs). */
  noPivot: boolean;
  logger: Logger;
}

/** How long a short runtime command may take (crun takes ~0.25 s under TCG). */
export const RUNTIME_COMMAND_TIMEOUT_MS = 30_000;

export interface RunArgs {
  id: string;
  bundle: string;
  pidFile: string;
  logFile: string;
  consoleSocket?: string;
}

export interface ExecArgs {
  id: string;
  processFile: string;
  pidFile: string;
  logFile: string;
  consoleSocket?: string;
}

export class OciRuntime {
  constructor(private readonly opts: RuntimeOptions) {}

  get path(): string {
    return this.opts.path;
  }

  /** argv (without the binary) of a foreground `run`. */
  runArgv(a: RunArgs): string[] {
    return [
      ...this.global(a.logFile), 'run', '--bundle', a.bundle, '--pid-file', a.pidFile,
      ...(this.opts.noPivot ? ['--no-pivot'] : []),
      ...(a.consoleSocket ? ['--console-socket', a.consoleSocket] : []),
      a.id,
    ];
  }

  /** argv (without the binary) of a foreground `exec`. */
  execArgv(a: ExecArgs): string[] {
    return [
      ...this.global(a.logFile), 'exec', '--process', a.processFile, '--pid-file', a.pidFile,
      ...(a.consoleSocket ? ['--console-socket', a.consoleSocket] : []),
      a.id,
    ];
  }

  async kill(id: string, signal: number, all: boolean): Promise<void> {
    await this.run(['kill', ...(all ? ['--all'] : []), id, String(signal)]);
  }

  async pause(id: string): Promise<void> {
    await this.run(['pause', id]);
  }

  async resume(id: string): Promise<void> {
    await this.run(['resume', id]);
  }

  async update(id: string, resourcesFile: string): Promise<void> {
    await this.run(['update', '--resources', resourcesFile, id]);
  }

  async delete(id: string): Promise<void> {
    await this.run(['delete', '--force', id]);
  }

  /** Pids in the container, from `ps --format json`. */
  async ps(id: string): Promise<number[]> {
    const out = await this.run(['ps', '--format', 'json', id]);
    const parsed: unknown = JSON.parse(out || '[]');
    return Array.isArray(parsed) ? parsed.filter((p): p is number => Number.isInteger(p)) : [];
  }

  /** The runtime's version line, for Check. */
  async version(): Promise<string> {
    const out = await this.run(['--version']);
    return out.split('\n')[0]?.trim() ?? '';
  }

  private global(logFile?: string): string[] {
    return ['--root', this.opts.root, ...(logFile ? ['--log', logFile, '--log-format', 'json'] : [])];
  }

  /** Runs a short command; a failure becomes an error carrying the runtime's message. */
  private run(args: string[]): Promise<string> {
    const argv = args[0] === '--version' ? args : [...this.global(), ...args];
    return new Promise((resolve, reject) => {
      execFile(this.opts.path, argv, { timeout: RUNTIME_COMMAND_TIMEOUT_MS, killSignal: 'SIGKILL', maxBuffer: 4 << 20 },
        (err, stdout, stderr) => {
          if (!err) {
            resolve(stdout);
            return;
          }
          const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: number | string };
          const what = `${this.opts.path} ${args.join(' ')}`;
          if (e.killed) {
            reject(new DeadlineExceededError(`${what}: runtime command timeout of ${RUNTIME_COMMAND_TIMEOUT_MS} ms exceeded`));
            return;
          }
          const msg = stderr.trim().split('\n').pop() || e.message;
          this.opts.logger.debug({ args, stderr: stderr.trim() }, 'runtime command failed');
          reject(new RuntimeError(`${args[0]}: ${msg}`, { cause: err }));
        });
    });
  }
}

/** A runtime command failed; the message is the runtime's own. */
export class RuntimeError extends StatusError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(Code.UNKNOWN, message, options);
    this.name = 'RuntimeError';
  }
}

/**
 * The last error the runtime wrote to its JSON log file (`--log-format
 * json`: one {"msg","level"} object per line), or undefined.
 */
export async function lastRuntimeError(logFile: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(logFile, 'utf8');
  } catch {
    return undefined;
  }
  let last: string | undefined;
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const entry = JSON.parse(line) as { msg?: unknown; level?: unknown };
      if (typeof entry.msg === 'string' && (entry.level === 'error' || entry.level === 'fatal' || last === undefined)) last = entry.msg;
    } catch {
      last = line.trim();
    }
  }
  return last;
}
