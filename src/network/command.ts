/**
 * Commands inside a network namespace: `nsenter --net=<path> -- ip|tc …`
 * (Node has no setns). Each is a child process with a timeout; a failure
 * becomes a StatusError naming what it was for, the command and its words.
 */
import { execFile } from 'node:child_process';
import { DeadlineExceededError, FailedPreconditionError, InternalError, NotFoundError, StatusError } from '../errors/index.js';

/** Bound on one ip/tc command. */
export const NETWORK_COMMAND_TIMEOUT_MS = 10_000;

export interface CommandResult {
  stdout: string;
  stderr: string;
}

/** Runs a command to completion; rejects with an Error carrying `stderr`, and `killed` on timeout. */
export type CommandRunner = (cmd: string, args: readonly string[], timeoutMs: number) => Promise<CommandResult>;

interface Failure extends Error {
  stderr?: string;
  killed?: boolean;
}

export const defaultRunner: CommandRunner = (cmd, args, timeoutMs) =>
  new Promise((resolve, reject) => {
    execFile(cmd, [...args], { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 8 << 20 }, (err, stdout, stderr) => {
      if (!err) {
        resolve({ stdout: String(stdout), stderr: String(stderr) });
        return;
      }
      const e = err as Failure;
      e.stderr = String(stderr);
      reject(e);
    });
  });

/** argv of `cmd args…` run in the network namespace at `netnsPath`. */
export function inNetns(netnsPath: string, cmd: 'ip' | 'tc', args: readonly string[]): { cmd: string; args: string[] } {
  return { cmd: 'nsenter', args: [`--net=${netnsPath}`, '--', cmd, ...args] };
}

/** The stderr of a failed command (one line), or its message. */
export function failureWords(err: unknown): string {
  const e = err as Failure;
  return (e?.stderr ?? '').trim().split('\n').filter(Boolean).join('; ') || String(e?.message ?? err);
}

/** nsenter could not enter the namespace: its file is gone, or no longer a namespace. */
export function isNetnsGone(err: unknown): boolean {
  const w = failureWords(err);
  return /nsenter: cannot open .*No such file or directory/.test(w) || /nsenter: reassociate to namespace 'ns\/net' failed/.test(w);
}

export interface Exec {
  runner: CommandRunner;
  timeoutMs: number;
}

/** Runs `cmd args` in the namespace; failures → StatusError with `what` as context. */
export async function runIn(ex: Exec, netnsPath: string, cmd: 'ip' | 'tc', args: readonly string[], what: string): Promise<CommandResult> {
  const c = inNetns(netnsPath, cmd, args);
  try {
    return await ex.runner(c.cmd, c.args, ex.timeoutMs);
  } catch (err) {
    throw toStatus(err, what, `${cmd} ${args.join(' ')}`, ex.timeoutMs, netnsPath);
  }
}

function toStatus(err: unknown, what: string, cmdline: string, timeoutMs: number, netnsPath: string): StatusError {
  if (err instanceof StatusError) return err;
  const e = err as Failure;
  if (e.killed) return new DeadlineExceededError(`${what}: ${cmdline}: timed out after ${timeoutMs} ms`, { cause: err });
  const words = failureWords(err);
  if (isNetnsGone(err)) return new NotFoundError(`${what}: network namespace ${netnsPath} is gone: ${words}`, { cause: err });
  const msg = `${what}: ${cmdline}: ${words}`;
  if (/cannot find device|no such device/i.test(words)) return new NotFoundError(msg, { cause: err });
  if (/file exists|resource busy|exclusivity flag/i.test(words)) return new FailedPreconditionError(msg, { cause: err });
  return new InternalError(msg, { cause: err });
}
