/**
 * One process of a container as the shim tracks it: the init process or an
 * exec. A small state machine — created → running → stopped — plus its
 * stdio, its exit record and the Wait callers parked on it.
 *
 * The exit is set only by the pod's exits loop (setExited), which then
 * publishes /tasks/exit; Wait answers from the same record, so a Wait after
 * the exit returns at once and every Wait sees the same status and time.
 */
import { CancelledError, FailedPreconditionError, NotFoundError } from '../errors/index.js';
import type { ProcessIo, StdioConfig } from '../io/index.js';

export type ProcessState = 'created' | 'running' | 'stopped';

export interface ExitRecord {
  /** Exit code, or 128 + signal. */
  status: number;
  at: Date;
}

export class ShimProcess {
  state: ProcessState = 'created';
  /** The guest pid once started (0 before). */
  guestPid = 0;
  io: ProcessIo | undefined;
  /** After the exit: when its output is cut at the latest (ms since the epoch); undefined before. */
  outputDeadline: number | undefined = undefined;
  /** Set while Start runs, so that a second Start is refused at once. */
  starting = false;
  private exitValue: ExitRecord | undefined;
  private readonly exitWaiters = new Set<(e: ExitRecord) => void>();

  constructor(
    readonly containerId: string,
    /** "" for the init process. */
    readonly execId: string,
    readonly stdio: StdioConfig,
    /** The exec's OCI Process (JSON object); undefined for the init. */
    readonly processSpec?: Record<string, unknown>,
  ) {}

  /** containerd's name for it: the exec id, or the container id for the init. */
  get id(): string {
    return this.execId || this.containerId;
  }

  get name(): string {
    return this.execId ? `${this.containerId}/${this.execId}` : this.containerId;
  }

  get exit(): ExitRecord | undefined {
    return this.exitValue;
  }

  /** Refuses a second Start, or a Start of a process that already ran. */
  checkStartable(): void {
    if (this.starting || this.state !== 'created') {
      throw new FailedPreconditionError(`process ${this.name} is ${this.starting ? 'starting' : this.state}: cannot start it again`);
    }
  }

  /** Kill's check: NOT_FOUND once the process has finished, as containerd's runc shim answers. */
  checkSignalable(): void {
    if (this.state === 'stopped') throw new NotFoundError(`process ${this.name}: process already finished: not found`);
  }

  /** Recorded once, by the exits loop; wakes every waiter. */
  setExited(e: ExitRecord): boolean {
    if (this.exitValue) return false;
    this.exitValue = e;
    this.state = 'stopped';
    for (const w of this.exitWaiters) w(e);
    this.exitWaiters.clear();
    return true;
  }

  /** Resolves with the exit (at once if there is one); rejects CANCELLED on abort. */
  waitExit(signal?: AbortSignal): Promise<ExitRecord> {
    if (this.exitValue) return Promise.resolve(this.exitValue);
    return new Promise((resolve, reject) => {
      const onExit = (e: ExitRecord): void => {
        signal?.removeEventListener('abort', onAbort);
        resolve(e);
      };
      const onAbort = (): void => {
        this.exitWaiters.delete(onExit);
        reject(new CancelledError(`wait for ${this.name} cancelled`));
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.exitWaiters.add(onExit);
    });
  }
}
