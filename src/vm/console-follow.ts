/**
 * Follows a growing text file (the guest console QEMU writes) and hands each
 * complete line to a callback: polled reads from the last offset, so it
 * never blocks (a regular file, read through fs.promises) and never holds
 * more than one read buffer plus one partial line (cut at maxLineBytes).
 * stop() reads what is left, delivers a last partial line, closes the file.
 */
import { open, type FileHandle } from 'node:fs/promises';

export interface FollowOptions {
  /** Poll period (default 250 ms). */
  intervalMs?: number;
  /** A longer line is delivered in pieces of this size (default 8 KiB). */
  maxLineBytes?: number;
}

export interface Follower {
  /** Reads to the end once more, then stops. Idempotent. */
  stop(): Promise<void>;
}

const CHUNK = 64 * 1024;

export function followFile(path: string, onLine: (line: string) => void, opts: FollowOptions = {}): Follower {
  const interval = opts.intervalMs ?? 250;
  const maxLine = opts.maxLineBytes ?? 8192;
  const buf = Buffer.allocUnsafe(CHUNK);
  let fh: FileHandle | undefined;
  let pos = 0;
  let partial = Buffer.alloc(0);
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  let stopped: Promise<void> | undefined;

  const deliverOne = (b: Buffer): void => {
    try {
      onLine(b.toString('utf8').replace(/\r$/, ''));
    } catch {
      /* the callback's problem: never stop following for it */
    }
  };
  const deliver = (b: Buffer): void => {
    for (let i = maxLine; i < b.length; i += maxLine) deliverOne(b.subarray(i - maxLine, i));
    deliverOne(b.subarray(b.length === 0 ? 0 : Math.floor((b.length - 1) / maxLine) * maxLine));
  };
  const consume = (data: Buffer): void => {
    let start = 0;
    for (let nl = data.indexOf(10); nl !== -1; nl = data.indexOf(10, start)) {
      const piece = data.subarray(start, nl);
      deliver(partial.length ? Buffer.concat([partial, piece]) : piece);
      partial = Buffer.alloc(0);
      start = nl + 1;
    }
    partial = Buffer.concat([partial, data.subarray(start)]);
    while (partial.length >= maxLine) {
      deliver(partial.subarray(0, maxLine));
      partial = Buffer.from(partial.subarray(maxLine));
    }
  };
  const readAvailable = async (): Promise<void> => {
    try {
      fh ??= await open(path, 'r');
    } catch {
      return; // not there yet
    }
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, CHUNK, pos);
      if (bytesRead === 0) return;
      pos += bytesRead;
      consume(buf.subarray(0, bytesRead));
    }
  };
  const tick = (): void => {
    running = readAvailable().catch(() => {}).finally(() => {
      if (!stopped) timer = setTimeout(tick, interval);
    });
  };
  timer = setTimeout(tick, 0);

  return {
    stop(): Promise<void> {
      stopped ??= (async () => {
        clearTimeout(timer);
        await running;
        await readAvailable().catch(() => {});
        if (partial.length) deliver(partial);
        partial = Buffer.alloc(0);
        await fh?.close().catch(() => {});
      })();
      return stopped;
    },
  };
}
