/**
 * OOM events: a container whose cgroup's oom_kill counter rose. Detected by
 * inotify on memory.events (cgroup v2) and by a slow poll (cgroup v1 has no
 * file to watch, and a missed inotify event must not lose an OOM). Events
 * wait in a bounded queue until GetOOMEvent takes them, each exactly once.
 */
import { watch, type FSWatcher } from 'node:fs';
import type { Logger } from '../log/index.js';
import { CancelledError } from '../errors/index.js';
import type { Container } from './container.js';

/** Poll period for the counters (cgroup v1, and a backstop on v2). */
export const OOM_POLL_MS = 1_000;
/** Events kept for a host that is not asking (oldest dropped first). */
export const OOM_QUEUE_MAX = 128;

interface Waiter {
  resolve(containerId: string): void;
}

export class OomMonitor {
  private readonly queue: string[] = [];
  private readonly waiters: Waiter[] = [];
  private readonly watchers = new Map<Container, FSWatcher>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly containers: () => Iterable<Container>,
    private readonly logger: Logger,
    private readonly pollMs = OOM_POLL_MS,
  ) {}

  /** Starts watching a container that just started. */
  watch(c: Container): void {
    const file = c.oomEventsFile();
    if (file && !this.watchers.has(c)) {
      try {
        const w = watch(file, { persistent: false }, () => void this.check(c));
        w.on('error', () => this.unwatch(c));
        this.watchers.set(c, w);
      } catch (err) {
        this.logger.debug({ err, file }, 'cannot watch memory.events; polling only');
      }
    }
    this.timer ??= setInterval(() => void this.poll(), this.pollMs).unref();
  }

  /** Stops watching (the container stopped or was removed). */
  unwatch(c: Container): void {
    this.watchers.get(c)?.close();
    this.watchers.delete(c);
  }

  /** Reads one container's counter and queues an event when it rose. */
  async check(c: Container): Promise<void> {
    try {
      if (await c.checkOom()) this.push(c.id);
    } catch (err) {
      this.logger.debug({ err, container: c.id }, 'oom check failed');
    }
  }

  /** The next OOM event's container id; rejects CANCELLED when `signal` aborts. */
  next(signal?: AbortSignal): Promise<string> {
    const first = this.queue.shift();
    if (first !== undefined) return Promise.resolve(first);
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        resolve: (id) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(id);
        },
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new CancelledError('GetOOMEvent cancelled'));
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(w);
    });
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
  }

  private push(containerId: string): void {
    this.logger.info({ container: containerId }, 'oom event');
    const w = this.waiters.shift();
    if (w) {
      w.resolve(containerId);
      return;
    }
    this.queue.push(containerId);
    if (this.queue.length > OOM_QUEUE_MAX) this.queue.shift();
  }

  private async poll(): Promise<void> {
    let any = false;
    for (const c of this.containers()) {
      if (c.state !== 'running' && c.state !== 'paused') continue;
      any = true;
      await this.check(c);
    }
    if (!any && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }
}
