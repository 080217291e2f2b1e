/**
 * A bounded buffered channel (Go's `make(chan T, n)`): send waits while it is
 * full, one consumer takes items in order. The shim's process exits go
 * through one (capacity 32, as in Kata) to the single loop that records them.
 */
import { CancelledError, UnavailableError } from '../errors/index.js';

export class BoundedChannel<T> {
  private readonly items: T[] = [];
  private readonly senders: Array<() => void> = [];
  private receiver: (() => void) | undefined;
  private closedValue = false;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity must be a positive integer (got ${capacity})`);
  }

  get length(): number {
    return this.items.length;
  }

  get closed(): boolean {
    return this.closedValue;
  }

  /** Queues `item`, waiting for room while the channel is full. */
  async send(item: T, signal?: AbortSignal): Promise<void> {
    while (this.items.length >= this.capacity) {
      if (this.closedValue) throw new UnavailableError('channel closed');
      if (signal?.aborted) throw new CancelledError('send cancelled');
      await new Promise<void>((resolve) => {
        const onAbort = (): void => resolve();
        signal?.addEventListener('abort', onAbort, { once: true });
        this.senders.push(() => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        });
      });
    }
    if (this.closedValue) throw new UnavailableError('channel closed');
    this.items.push(item);
    const r = this.receiver;
    this.receiver = undefined;
    r?.();
  }

  /** The next item, or undefined once the channel is closed and empty. */
  async receive(): Promise<T | undefined> {
    while (this.items.length === 0) {
      if (this.closedValue) return undefined;
      await new Promise<void>((resolve) => { this.receiver = resolve; });
    }
    const item = this.items.shift()!;
    this.senders.shift()?.();
    return item;
  }

  /** No more sends; the consumer still gets what is queued. */
  close(): void {
    this.closedValue = true;
    for (const s of this.senders.splice(0)) s();
    const r = this.receiver;
    this.receiver = undefined;
    r?.();
  }
}
