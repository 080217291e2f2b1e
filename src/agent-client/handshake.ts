/**
 * Host side of the agent channel's handshake (the protocol is described in
 * src/agent/channel.ts): send "HELLO <nonce>" — again every interval, since
 * bytes sent while the guest has the port closed are lost — and discard
 * everything received before "READY <nonce>": those are stale bytes of an
 * earlier connection. What follows READY is ttrpc.
 */
import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { CancelledError, DeadlineExceededError, UnavailableError } from '../errors/index.js';
import { findReady, helloLine } from '../agent-protocol/handshake.js';

export interface HandshakeOptions {
  /** Give up after this long (default 10 s). */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Resend HELLO this often until READY (default 250 ms). */
  helloIntervalMs?: number;
}

export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
const DEFAULT_HELLO_INTERVAL_MS = 250;
/** Stale bytes kept while looking for READY (only a tail is needed). */
const KEEP_TAIL = 256;

/**
 * Performs the handshake on a connected stream. On success the stream is
 * paused, positioned at the first ttrpc byte (any extra bytes unshifted).
 */
export function agentHandshake(stream: Duplex, opts: HandshakeOptions = {}): Promise<void> {
  const nonce = randomBytes(12).toString('hex');
  const hello = helloLine(nonce);
  const timeoutMs = opts.timeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  return new Promise<void>((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    let settled = false;
    const finish = (err?: Error, rest?: Buffer) => {
      if (settled) return;
      settled = true;
      clearInterval(resend);
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      stream.off('data', onData);
      stream.off('close', onClose);
      stream.off('error', onError);
      stream.pause();
      if (err) {
        reject(err);
        return;
      }
      if (rest && rest.length > 0) stream.unshift(rest);
      resolve();
    };
    const onData = (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      const end = findReady(buf, nonce);
      if (end >= 0) {
        finish(undefined, buf.subarray(end));
        return;
      }
      if (buf.length > KEEP_TAIL) buf = Buffer.from(buf.subarray(buf.length - KEEP_TAIL));
    };
    const onClose = () => finish(new UnavailableError('agent handshake: connection closed'));
    const onError = (err: Error) => finish(new UnavailableError(`agent handshake: ${err.message}`, { cause: err }));
    const onAbort = () => finish(new CancelledError('agent handshake cancelled', { cause: opts.signal?.reason }));
    const timer = setTimeout(
      () => finish(new DeadlineExceededError(`agent handshake: no answer from the agent within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const send = () => {
      if (!stream.destroyed && stream.writable) stream.write(hello);
    };
    const resend = setInterval(send, opts.helloIntervalMs ?? DEFAULT_HELLO_INTERVAL_MS);
    if (opts.signal?.aborted) return onAbort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    stream.on('data', onData);
    stream.on('close', onClose);
    stream.on('error', onError);
    send();
  });
}
