/**
 * Where a process's stdout or stderr goes: a FIFO or a logging binary's pipe
 * (SocketSink, over a libuv pipe handle: never a pool thread, backpressure
 * through 'drain'), or a regular file (FileSink).
 *
 * A sink never throws: a failed sink (the logging binary died: EPIPE; disk
 * full) logs once and from then on drops what it is given, so that the copy
 * keeps reading and the container is never blocked by a dead log.
 */
import type net from 'node:net';
import type { FileHandle } from 'node:fs/promises';
import type { Logger } from '../log/index.js';

export interface Sink {
  /**
   * Hands `data` over. Resolves when the sink can take more (after 'drain'
   * under backpressure), or at once when `signal` fires. Resolves false once
   * the sink has failed or been closed (the data was dropped). Never rejects.
   */
  write(data: Buffer, signal: AbortSignal): Promise<boolean>;
  /**
   * Flushes what was written, then closes (the reader sees EOF). If `signal`
   * fires first, closes at once. Never rejects.
   */
  end(signal: AbortSignal): Promise<void>;
  /** Closes at once, dropping what is not flushed; resolves once the fd is released. Idempotent. */
  close(): Promise<void>;
}

/** A sink over a writable net.Socket (a FIFO fd or a socketpair to a logging binary). */
export class SocketSink implements Sink {
  private failed = false;
  private readonly closed: Promise<void>;

  constructor(private readonly sock: net.Socket, private readonly what: string, private readonly log: Logger) {
    this.closed = new Promise((resolve) => sock.once('close', () => resolve()));
    sock.on('error', (err) => {
      if (!this.failed) {
        this.failed = true;
        this.log.warn({ err }, `${this.what}: write failed, further output is discarded`);
      }
      sock.destroy();
    });
  }

  write(data: Buffer, signal: AbortSignal): Promise<boolean> {
    const sock = this.sock;
    if (this.failed || sock.destroyed || sock.writableEnded) return Promise.resolve(false);
    if (sock.write(data) || signal.aborted) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (): void => {
        sock.off('drain', done);
        sock.off('close', done);
        signal.removeEventListener('abort', done);
        resolve(!this.failed && !sock.destroyed);
      };
      sock.on('drain', done);
      sock.on('close', done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  end(signal: AbortSignal): Promise<void> {
    const sock = this.sock;
    if (sock.destroyed || signal.aborted) return this.close();
    return new Promise<void>((resolve) => {
      const done = (): void => {
        sock.off('finish', done);
        sock.off('close', done);
        signal.removeEventListener('abort', done);
        resolve(this.close());
      };
      sock.on('finish', done);
      sock.on('close', done);
      signal.addEventListener('abort', done, { once: true });
      if (!sock.writableEnded) sock.end();
    });
  }

  close(): Promise<void> {
    this.sock.destroy();
    return this.closed;
  }
}

/**
 * A sink appending to a regular file (O_APPEND). `users` sinks share one
 * file (stdout and stderr to one file://): the file is closed when every
 * user has ended it, or at once by close().
 */
export class FileSink implements Sink {
  private failed = false;
  private users: number;
  private closing: Promise<void> | undefined;

  constructor(private readonly fh: FileHandle, private readonly what: string, private readonly log: Logger, users = 1) {
    this.users = users;
  }

  async write(data: Buffer, _signal: AbortSignal): Promise<boolean> {
    if (this.failed || this.closing) return false;
    try {
      let off = 0;
      while (off < data.length) {
        const { bytesWritten } = await this.fh.write(data, off, data.length - off, null);
        off += bytesWritten;
      }
      return true;
    } catch (err) {
      if (!this.failed && !this.closing) {
        this.log.warn({ err }, `${this.what}: write failed, further output is discarded`);
      }
      this.failed = true;
      return false;
    }
  }

  async end(_signal: AbortSignal): Promise<void> {
    this.users -= 1;
    if (this.users <= 0) await this.close();
  }

  close(): Promise<void> {
    this.closing ??= this.fh.close().catch((err: unknown) => {
      this.log.warn({ err }, `${this.what}: close failed`);
    });
    return this.closing;
  }
}
