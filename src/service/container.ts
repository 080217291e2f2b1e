/**
 * One container of the pod as the shim tracks it: its bundle, its dir in the
 * shared dir, its init process and its execs, and whether it is paused.
 * State-changing operations on a container run one at a time (serial()).
 */
import { NotFoundError } from '../errors/index.js';
import type { StdioConfig } from '../io/index.js';
import { ShimProcess } from './process.js';
import type { MountInfo } from './task-events.js';

/** containerd.v1.types.Status */
export const enum TaskStatus {
  UNKNOWN = 0,
  CREATED = 1,
  RUNNING = 2,
  STOPPED = 3,
  PAUSED = 4,
  PAUSING = 5,
}

export class ShimContainer {
  readonly init: ShimProcess;
  readonly execs = new Map<string, ShimProcess>();
  paused = false;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    readonly id: string,
    readonly bundle: string,
    /** Host path of the container's dir in the shared dir (rootfs + shared files). */
    readonly hostDir: string,
    readonly rootfs: MountInfo[],
    stdio: StdioConfig,
  ) {
    this.init = new ShimProcess(id, '', stdio);
  }

  /** The init ("") or an exec; NOT_FOUND otherwise. */
  process(execId: string): ShimProcess {
    if (execId === '') return this.init;
    const p = this.execs.get(execId);
    if (!p) throw new NotFoundError(`exec ${execId} in container ${this.id}: not found`);
    return p;
  }

  processes(): ShimProcess[] {
    return [this.init, ...this.execs.values()];
  }

  status(p: ShimProcess): TaskStatus {
    switch (p.state) {
      case 'created': return TaskStatus.CREATED;
      case 'stopped': return TaskStatus.STOPPED;
      case 'running': return this.paused ? TaskStatus.PAUSED : TaskStatus.RUNNING;
    }
  }

  /** Runs `fn` after every earlier serial operation of this container. */
  serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => {});
    return next;
  }
}
