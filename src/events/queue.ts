/**
 * The shim's event path to containerd: a bounded FIFO queue and one delivery
 * loop.
 *
 * - Order: events leave strictly in the order they were published; one
 *   event is in flight at a time and the next one waits until it is
 *   delivered (a TaskExit must never overtake its TaskStart).
 * - Nothing is lost: a failed delivery is retried, the SAME event, with
 *   backoff (50 ms doubling to 2 s), for as long as it takes: containerd may
 *   be down for a while (restart, recovery), and it reconnects to the shim
 *   afterwards expecting every exit. Only an event containerd itself rejects
 *   as malformed (INVALID_ARGUMENT, UNIMPLEMENTED) is dropped, with an error,
 *   since retrying it would wedge every later event.
 * - Backpressure, no drops: at most `capacity` undelivered events are held
 *   (128, as Kata's events channel); `publish` then waits, in line, until
 *   delivery frees room. Its promise resolves once the event is queued, not
 *   delivered.
 * - Logs: one warn when an outage starts, one info when delivery resumes.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { CancelledError, Code, InvalidArgumentError, UnavailableError, hasCode } from '../errors/index.js';

/** One event as it goes to containerd (`containerd.services.events.ttrpc.v1.Envelope`). */
export interface EventEnvelope {
  /** When the event was published (the envelope's timestamp). */
  timestamp: Date;
  namespace: string;
  /** e.g. "/tasks/exit". */
  topic: string;
  /** The bare full name of the event's message, e.g. "containerd.events.TaskExit". */
  typeUrl: string;
  /** The event message, protobuf-encoded. */
  value: Uint8Array;
}

/** Hands one envelope to containerd; rejects when it was not delivered. */
export interface EventPublisher {
  forward(env: EventEnvelope, signal: AbortSignal): Promise<void>;
  /** Releases connections; called by EventQueue.close(). */
  close?(): void;
}

/** An encoded event: its message's full name (no URL prefix) and bytes. */
export interface RawEvent {
  typeName: string;
  value: Uint8Array;
}

/** What a generated protobufjs message class offers (static encode + getTypeUrl). */
export interface EventMessageType<P> {
  encode(message: P): { finish(): Uint8Array };
  getTypeUrl(prefix?: string): string;
}

export interface PublishOptions {
  /** Gives up waiting for room in a full queue (the event is then not queued). */
  signal?: AbortSignal;
}

export interface EventQueueOptions {
  publisher: EventPublisher;
  /** The shim's `-namespace`; every envelope carries it. */
  namespace: string;
  logger?: Logger;
  /** Most undelivered events held before publish() waits (default 128). */
  capacity?: number;
  /** First retry delay (default 50 ms); doubles per failure... */
  minBackoffMs?: number;
  /** ...up to this (default 2 s). */
  maxBackoffMs?: number;
}

const DEFAULT_CAPACITY = 128;
const DEFAULT_MIN_BACKOFF_MS = 50;
const DEFAULT_MAX_BACKOFF_MS = 2_000;

/**
 * The bare full name of a generated message class, e.g.
 * `typeNameOf(containerd.events.TaskExit)` → "containerd.events.TaskExit".
 * containerd 1.6 looks Any type URLs up by this bare name (docs/protos.md):
 * pbjs' default "type.googleapis.com/" prefix must not be sent.
 */
export function typeNameOf(type: { getTypeUrl(prefix?: string): string }): string {
  const url = type.getTypeUrl('');
  return url.slice(url.lastIndexOf('/') + 1);
}

interface Waiter {
  env: EventEnvelope;
  resolve(): void;
  reject(err: Error): void;
  cleanup(): void;
}

export class EventQueue {
  private readonly publisher: EventPublisher;
  private readonly namespace: string;
  private readonly logger?: Logger;
  readonly capacity: number;
  private readonly minBackoffMs: number;
  private readonly maxBackoffMs: number;

  /** Undelivered events, oldest first; [0] is the one being delivered. */
  private readonly queue: EventEnvelope[] = [];
  /** publish() calls waiting for room, in call order. */
  private readonly waiters: Waiter[] = [];
  private readonly stop = new AbortController();
  private closed = false;
  /** Undelivered events dropped by close(). */
  private droppedOnClose = 0;
  private wakeLoop: (() => void) | undefined;
  private readonly drainedListeners = new Set<() => void>();
  private readonly loopDone: Promise<void>;

  constructor(opts: EventQueueOptions) {
    if (!opts.namespace) throw new InvalidArgumentError('event queue: namespace required');
    this.publisher = opts.publisher;
    this.namespace = opts.namespace;
    this.logger = opts.logger;
    this.capacity = Math.max(1, opts.capacity ?? DEFAULT_CAPACITY);
    this.minBackoffMs = opts.minBackoffMs ?? DEFAULT_MIN_BACKOFF_MS;
    this.maxBackoffMs = Math.max(this.minBackoffMs, opts.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS);
    this.loopDone = this.loop();
  }

  /** Undelivered events: queued ones plus the one in flight (not the publishers still waiting for room). */
  get pending(): number {
    return this.queue.length;
  }

  /** publish() calls waiting for room in a full queue. */
  get waiting(): number {
    return this.waiters.length;
  }

  /**
   * Queues an event for `topic` ("/tasks/exit"). Its timestamp is taken now.
   * Resolves once queued (at once unless the queue is full; then when
   * delivery frees room, after every earlier waiting publish). Rejects with
   * CANCELLED when `signal` aborts first, UNAVAILABLE after close().
   */
  publish(topic: string, event: RawEvent, opts: PublishOptions = {}): Promise<void> {
    if (this.closed) return Promise.reject(new UnavailableError('event queue closed'));
    if (!topic.startsWith('/')) return Promise.reject(new InvalidArgumentError(`event topic ${JSON.stringify(topic)} must start with "/"`));
    if (!event.typeName || event.typeName.includes('/')) {
      return Promise.reject(new InvalidArgumentError(`event type ${JSON.stringify(event.typeName)}: want a bare message name`));
    }
    const env: EventEnvelope = {
      timestamp: new Date(),
      namespace: this.namespace,
      topic,
      typeUrl: event.typeName,
      value: event.value,
    };
    if (this.waiters.length === 0 && this.queue.length < this.capacity) {
      this.enqueue(env);
      return Promise.resolve();
    }
    const signal = opts.signal;
    if (signal?.aborted) return Promise.reject(abortError(signal, topic));
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(abortError(signal!, topic));
      };
      const waiter: Waiter = {
        env,
        resolve,
        reject,
        cleanup: () => signal?.removeEventListener('abort', onAbort),
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  /** publish() for a generated message class: encodes `message` and takes the bare type name from the class. */
  publishMessage<P>(topic: string, type: EventMessageType<P>, message: P, opts?: PublishOptions): Promise<void> {
    return this.publish(topic, { typeName: typeNameOf(type), value: type.encode(message).finish() }, opts);
  }

  /**
   * Waits until every queued event (and every waiting publish) is delivered,
   * at most `timeoutMs`. Returns how many are still undelivered (0: all).
   */
  async flush(timeoutMs: number): Promise<number> {
    const left = () => (this.closed ? this.droppedOnClose : this.queue.length + this.waiters.length);
    if (left() === 0 || this.closed) return left();
    let onDrained!: () => void;
    const drained = new Promise<void>((resolve) => (onDrained = resolve));
    this.drainedListeners.add(onDrained);
    const timeout = new AbortController();
    try {
      await Promise.race([drained, sleep(timeoutMs, undefined, { signal: timeout.signal }).catch(() => {})]);
    } finally {
      timeout.abort();
      this.drainedListeners.delete(onDrained);
    }
    return left();
  }

  /**
   * Stops the delivery loop (an event in flight is abandoned) and rejects
   * waiting publishers with UNAVAILABLE. Undelivered events are dropped, with
   * a warning: flush() first to give them a chance.
   */
  async close(): Promise<void> {
    if (this.closed) return this.loopDone;
    this.closed = true;
    this.stop.abort(new UnavailableError('event queue closed'));
    this.wakeLoop?.();
    const dropped = this.queue.length + this.waiters.length;
    this.droppedOnClose = dropped;
    if (dropped > 0) {
      this.logger?.warn({ dropped, topics: [...this.queue, ...this.waiters.map((w) => w.env)].map((e) => e.topic) },
        'event queue closed with undelivered events');
    }
    for (const w of this.waiters.splice(0)) {
      w.cleanup();
      w.reject(new UnavailableError('event queue closed'));
    }
    this.queue.length = 0;
    for (const l of this.drainedListeners) l();
    await this.loopDone;
    this.publisher.close?.();
  }

  private enqueue(env: EventEnvelope): void {
    this.queue.push(env);
    this.wakeLoop?.();
  }

  /** Moves waiting publishers into the queue while there is room. */
  private admitWaiters(): void {
    while (this.waiters.length > 0 && this.queue.length < this.capacity) {
      const w = this.waiters.shift()!;
      w.cleanup();
      this.queue.push(w.env);
      w.resolve();
    }
    if (this.queue.length === 0 && this.waiters.length === 0) {
      for (const l of this.drainedListeners) l();
    }
  }

  private async loop(): Promise<void> {
    const signal = this.stop.signal;
    let failures = 0;
    let outageStart = 0;
    while (!this.closed) {
      if (this.queue.length === 0) {
        await new Promise<void>((resolve) => (this.wakeLoop = resolve));
        this.wakeLoop = undefined;
        continue;
      }
      const env = this.queue[0]!;
      try {
        await this.publisher.forward(env, signal);
      } catch (err) {
        if (this.closed) break;
        if (hasCode(err, Code.INVALID_ARGUMENT) || hasCode(err, Code.UNIMPLEMENTED)) {
          // containerd refused this event for what it is: retrying cannot help.
          this.logger?.error({ err, topic: env.topic, type: env.typeUrl }, 'event rejected by containerd, dropped');
          this.delivered();
          continue;
        }
        failures++;
        const delay = Math.min(this.maxBackoffMs, this.minBackoffMs * 2 ** Math.min(failures - 1, 30));
        if (failures === 1) {
          outageStart = Date.now();
          this.logger?.warn({ err, topic: env.topic, pending: this.queue.length },
            'cannot publish event to containerd, retrying until it is back');
        } else {
          this.logger?.debug({ err, topic: env.topic, failures, delayMs: delay }, 'event publish retry failed');
        }
        await sleep(delay, undefined, { signal }).catch(() => {});
        continue;
      }
      if (failures > 0) {
        this.logger?.info({ failures, outageMs: Date.now() - outageStart, pending: this.queue.length },
          'publishing events to containerd again');
        failures = 0;
      }
      this.delivered();
    }
  }

  private delivered(): void {
    this.queue.shift();
    this.admitWaiters();
  }
}

function abortError(signal: AbortSignal, topic: string): Error {
  return new CancelledError(`publish ${topic}: cancelled while the event queue was full`, { cause: signal.reason });
}
