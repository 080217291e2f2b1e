/**
 * A process's stdio as the host sees it through the agent: pull-based output
 * and acknowledged input, with no unbounded buffer anywhere.
 *
 * Output (OutputStream): the host asks for at most N bytes (ReadStdout) and
 * the agent answers at once with what it holds, as soon as it holds some.
 * The pipe is a Readable in paused mode: it reads ahead at most its
 * high-water mark plus one chunk, then stops reading, the kernel's pipe
 * buffer fills and the container's write() blocks. While nobody has read,
 * nothing more is taken from the pipe. Once the host reads, the stream reads
 * ahead up to the size the host last asked for (≤ MAX_READ_LEN) while the
 * host's next read is on its way, so that a stream the host drains quickly
 * travels in answers of up to that size: under TCG an agent call costs
 * ~4-12 ms whatever its size, so 64 KiB answers held a container's stdout
 * at ~4 MB/s; answers of up to 1 MiB more than doubled that. Reads
 * queue in call order; a read whose caller went away (connection closed)
 * leaves the queue without consuming anything, so a reconnected host gets
 * the data.
 *
 * Input (StdinSink): WriteStdin answers once the bytes were handed to the
 * kernel (the write callback), so a container that does not read its stdin
 * stalls the host's writer instead of the agent's memory.
 *
 * Both exist before the process does (the host may read stdout of a created
 * container before starting it): the child's pipes are attached later.
 */
import type { Readable, Writable } from 'node:stream';
import { CancelledError, FailedPreconditionError } from '../errors/index.js';

export interface ReadResult {
  data: Buffer;
  /** No data will ever come again (data is then empty). */
  eof: boolean;
}

/** The biggest answer to one read: well under ttrpc's 4 MiB message limit. */
export const MAX_READ_LEN = 1 << 20;
export const DEFAULT_READ_LEN = 64 * 1024;

interface PendingRead {
  max: number;
  resolve(r: ReadResult): void;
  reject(err: Error): void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

const EOF: ReadResult = Object.freeze({ data: Buffer.alloc(0), eof: true }) as ReadResult;

/** One output stream (stdout or stderr) of one process. */
export class OutputStream {
  private source: Readable | undefined;
  /** Set once the source ended and every byte was handed out, or close() was called. */
  private ended = false;
  // guarded by pump(): the head is served first; aborted entries are spliced out.
  private readonly queue: PendingRead[] = [];
  /** Bytes taken from the source, not handed out yet (at most `target()`, plus one chunk). */
  private readonly held: Buffer[] = [];
  private heldLen = 0;
  /** The size of the last read served: how far to read ahead for the next one (0 until a read). */
  private prefetch = 0;

  /** Attaches the child's pipe. The stream reads it only as reads demand. */
  attach(source: Readable): void {
    if (this.source || this.ended) {
      source.destroy();
      return;
    }
    this.source = source;
    source.on('readable', () => this.pump());
    source.on('end', () => this.finish());
    // A read error on a pipe means the child end is gone: treat as EOF.
    source.on('error', () => this.finish());
    source.on('close', () => this.finish());
    this.pump();
  }

  /** No (more) data will come: pending and future reads get EOF; held bytes are dropped. */
  close(): void {
    this.held.length = 0;
    this.heldLen = 0;
    this.finish();
    this.source?.destroy();
  }

  /** True once EOF has been reached (every byte was read). */
  get isEof(): boolean {
    return this.ended && this.heldLen === 0;
  }

  /** Number of reads waiting. */
  get pendingReads(): number {
    return this.queue.length;
  }

  /**
   * Resolves with 1 … maxLen bytes as soon as some are there, or EOF. Reads
   * are served in call order. Aborting `signal` drops the read (CANCELLED)
   * without consuming data.
   */
  read(maxLen: number, signal?: AbortSignal): Promise<ReadResult> {
    const max = Math.min(Math.max(1, maxLen || DEFAULT_READ_LEN), MAX_READ_LEN);
    if (this.ended && this.queue.length === 0 && this.heldLen === 0) return Promise.resolve(EOF);
    return new Promise<ReadResult>((resolve, reject) => {
      const p: PendingRead = { max, resolve, reject, signal };
      if (signal) {
        if (signal.aborted) {
          reject(new CancelledError('read cancelled'));
          return;
        }
        p.onAbort = () => {
          const i = this.queue.indexOf(p);
          if (i >= 0) this.queue.splice(i, 1);
          reject(new CancelledError('read cancelled'));
        };
        signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.queue.push(p);
      this.pump();
    });
  }

  private finish(): void {
    if (this.ended) return;
    // Bytes still buffered in the Readable are handed out first: 'end' only
    // fires after they were read, and close()/error drop them on purpose.
    this.ended = true;
    this.pump();
  }

  private settle(p: PendingRead, r: ReadResult): void {
    if (p.onAbort) p.signal?.removeEventListener('abort', p.onAbort);
    p.resolve(r);
  }

  /** How many bytes to hold: what the head read wants, or what the last one wanted. */
  private target(): number {
    return Math.max(this.queue[0]?.max ?? 0, this.prefetch);
  }

  /** Takes up to `max` held bytes, oldest first. */
  private take(max: number): Buffer {
    if (this.held.length === 1 && this.held[0]!.length <= max) {
      this.heldLen = 0;
      return this.held.pop()!;
    }
    const parts: Buffer[] = [];
    let n = 0;
    while (n < max && this.held.length > 0) {
      const b = this.held[0]!;
      if (n + b.length <= max) {
        parts.push(b);
        n += b.length;
        this.held.shift();
      } else {
        parts.push(b.subarray(0, max - n));
        this.held[0] = b.subarray(max - n);
        n = max;
      }
    }
    this.heldLen -= n;
    if (parts.length === 1) return parts[0]!;
    // Buffer.concat measured several times slower than copy() in the guest.
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    for (const part of parts) off += part.copy(out, off);
    return out;
  }

  private pump(): void {
    for (;;) {
      // Take what the source has buffered, up to the target.
      const src = this.source;
      const live = src !== undefined && !src.destroyed;
      while (live && this.heldLen < this.target() && src.readableLength > 0) {
        const chunk = src.read() as Buffer | null;
        if (!chunk || chunk.length === 0) break;
        this.held.push(chunk);
        this.heldLen += chunk.length;
      }
      if (this.queue.length > 0 && this.heldLen > 0) {
        const p = this.queue.shift()!;
        this.prefetch = p.max;
        this.settle(p, { data: this.take(p.max), eof: false });
        continue; // more reads, or room to read ahead again
      }
      if (this.queue.length > 0 && this.ended) {
        for (const p of this.queue.splice(0)) this.settle(p, EOF);
        return;
      }
      // Below the target: ask the source for more. read(0) starts a read of
      // the pipe and arms 'readable' for when data (or EOF) arrives.
      if (live && !this.ended && this.heldLen < this.target()) src.read(0);
      return;
    }
  }
}

/** The stdin of one process. */
export class StdinSink {
  private sink: Writable | undefined;
  private closed = false;
  private failed: Error | undefined;
  // Writes that came before the process started; flushed in order on attach.
  private readonly early: Array<() => void> = [];
  private endRequested = false;

  constructor(private readonly name: string, private readonly enabled: boolean) {}

  /** Attaches the child's stdin pipe. */
  attach(sink: Writable): void {
    this.sink = sink;
    sink.on('error', (err) => {
      this.failed ??= err;
    });
    for (const run of this.early.splice(0)) run();
    if (this.endRequested) sink.end();
  }

  /** The process is gone (or never started): writes fail from now on. */
  detach(reason: string): void {
    this.failed ??= new FailedPreconditionError(reason);
    for (const run of this.early.splice(0)) run();
  }

  /**
   * Writes bytes; resolves with their count once the child's pipe accepted
   * them all (not merely queued them).
   */
  write(data: Uint8Array): Promise<number> {
    if (!this.enabled) return Promise.reject(new FailedPreconditionError(`process ${this.name} has no stdin`));
    if (this.closed) return Promise.reject(new FailedPreconditionError(`stdin of process ${this.name} is closed`));
    if (data.length === 0) return Promise.resolve(0);
    return new Promise<number>((resolve, reject) => {
      const run = () => {
        const sink = this.sink;
        if (this.failed || !sink || sink.destroyed || sink.writableEnded) {
          reject(this.writeError());
          return;
        }
        sink.write(data, (err) => (err ? reject(this.writeError(err)) : resolve(data.length)));
      };
      if (this.sink || this.failed) run();
      else this.early.push(run);
    });
  }

  /** Closes stdin after the writes already accepted; later writes fail. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.sink) this.sink.end();
    else this.endRequested = true;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private writeError(cause?: Error): Error {
    return new FailedPreconditionError(`cannot write to stdin of process ${this.name}: the process has exited or closed its stdin`, {
      cause: cause ?? this.failed,
    });
  }
}
