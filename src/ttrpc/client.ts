/**
 * ttrpc client: many concurrent unary calls on one connection, completed in
 * any order. One reader owns the socket; every call has its own deadline or
 * AbortSignal; when the connection drops every outstanding call fails with
 * UNAVAILABLE instead of hanging.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import {
  CancelledError,
  DeadlineExceededError,
  InternalError,
  ResourceExhaustedError,
  StatusError,
  UnavailableError,
  fromStatus,
} from '../errors/index.js';
import { Code } from '../errors/index.js';
import { FrameDecoder, MESSAGE_LENGTH_MAX, MessageType, writeFrame } from './frame.js';
import { decodeResponse, encodeRequest, type Metadata } from './messages.js';

export interface CallOptions {
  /** Deadline for this call; sent to the server as timeout_nano. */
  timeoutMs?: number;
  /** Cancels the call (the server is not told; its deadline still applies). */
  signal?: AbortSignal;
  metadata?: Record<string, string | string[]>;
}

export interface ConnectOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
  logger?: Logger;
}

/** Encoder/decoder pair of a generated protobufjs message type. */
export interface MessageCodec<T, P = T> {
  encode(message: P): { finish(shared?: boolean): Uint8Array };
  decode(bytes: Uint8Array): T;
}

interface Pending {
  resolve(payload: Uint8Array): void;
  reject(err: Error): void;
}

const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

export class TtrpcClient {
  private nextStreamId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly decoder = new FrameDecoder();
  private closedError: StatusError | null = null;
  private readonly closedPromise: Promise<void>;
  private resolveClosed!: () => void;

  /** Wraps an already connected stream (a unix socket, or any duplex byte stream). */
  constructor(private readonly stream: Duplex, private readonly logger?: Logger) {
    this.closedPromise = new Promise((r) => (this.resolveClosed = r));
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('error', (err) => this.fail(new UnavailableError(`ttrpc: connection error: ${err.message}`, { cause: err })));
    stream.on('close', () => this.fail(new UnavailableError('ttrpc: closed')));
    stream.on('end', () => this.fail(new UnavailableError('ttrpc: closed')));
  }

  /** Connects to a ttrpc server on a unix socket. */
  static connect(path: string, opts: ConnectOptions = {}): Promise<TtrpcClient> {
    const signal = AbortSignal.any([
      AbortSignal.timeout(opts.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS),
      ...(opts.signal ? [opts.signal] : []),
    ]);
    return new Promise((resolve, reject) => {
      const sock = net.createConnection({ path });
      const onAbort = () => {
        sock.destroy();
        reject(new DeadlineExceededError(`ttrpc: connect ${path}: ${String(signal.reason?.message ?? 'aborted')}`));
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      sock.once('connect', () => {
        signal.removeEventListener('abort', onAbort);
        sock.removeAllListeners('error');
        resolve(new TtrpcClient(sock, opts.logger));
      });
      sock.once('error', (err) => {
        signal.removeEventListener('abort', onAbort);
        reject(new UnavailableError(`ttrpc: connect ${path}: ${err.message}`, { cause: err }));
      });
    });
  }

  /** Resolves when the connection has closed, for whatever reason. */
  get closed(): Promise<void> {
    return this.closedPromise;
  }

  get isClosed(): boolean {
    return this.closedError !== null;
  }

  /** A raw unary call: payload bytes in, payload bytes out. */
  call(service: string, method: string, payload: Uint8Array, opts: CallOptions = {}): Promise<Uint8Array> {
    if (this.closedError) return Promise.reject(this.closedError);
    const streamId = this.nextStreamId;
    // Client-initiated streams are odd; wrap before 2^32 like containerd/ttrpc.
    this.nextStreamId = (this.nextStreamId + 2) >>> 0 || 1;

    const metadata: Metadata = new Map();
    for (const [k, v] of Object.entries(opts.metadata ?? {})) metadata.set(k, Array.isArray(v) ? v : [v]);
    const request = encodeRequest({
      service,
      method,
      payload,
      timeoutNano: opts.timeoutMs ? Math.round(opts.timeoutMs * 1e6) : 0,
      metadata,
    });
    if (request.length > MESSAGE_LENGTH_MAX) {
      return Promise.reject(new ResourceExhaustedError(
        `message length ${request.length} exceed maximum message size of ${MESSAGE_LENGTH_MAX}`));
    }

    return new Promise<Uint8Array>((resolve, reject) => {
      const what = `${service}/${method}`;
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        this.pending.delete(streamId);
        if (timer) clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
      };
      const onAbort = () => {
        done();
        reject(new CancelledError(`ttrpc: ${what} cancelled`, { cause: opts.signal?.reason }));
      };
      if (opts.signal?.aborted) return onAbort();
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      if (opts.timeoutMs) {
        timer = setTimeout(() => {
          done();
          reject(new DeadlineExceededError(`ttrpc: ${what}: deadline of ${opts.timeoutMs} ms exceeded`));
        }, opts.timeoutMs);
      }
      this.pending.set(streamId, {
        resolve: (p) => { done(); resolve(p); },
        reject: (e) => { done(); reject(e); },
      });
      writeFrame(this.stream, streamId, MessageType.Request, 0, request);
    });
  }

  /** A typed unary call through generated message codecs. */
  async request<Req, Res>(
    service: string,
    method: string,
    reqType: MessageCodec<unknown, Req>,
    resType: MessageCodec<Res, unknown>,
    req: Req,
    opts?: CallOptions,
  ): Promise<Res> {
    const payload = await this.call(service, method, reqType.encode(req).finish(), opts);
    try {
      return resType.decode(payload);
    } catch (err) {
      throw new InternalError(`ttrpc: ${service}/${method}: cannot decode response: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Closes the connection; outstanding calls fail with UNAVAILABLE. */
  close(): void {
    this.fail(new UnavailableError('ttrpc: client closed'));
  }

  private onData(chunk: Buffer): void {
    for (const frame of this.decoder.push(chunk)) {
      const pending = this.pending.get(frame.streamId);
      if (frame.kind === 'oversized') {
        pending?.reject(new ResourceExhaustedError(
          `message length ${frame.length} exceed maximum message size of ${MESSAGE_LENGTH_MAX}`));
        continue;
      }
      if (frame.type !== MessageType.Response) continue; // ignored for future compatibility
      if (!pending) {
        this.logger?.debug({ streamId: frame.streamId }, 'ttrpc response for unknown stream');
        continue;
      }
      let res;
      try {
        res = decodeResponse(frame.payload);
      } catch (err) {
        pending.reject(new InternalError(`ttrpc: cannot decode response: ${(err as Error).message}`));
        continue;
      }
      if (res.code === Code.OK) pending.resolve(res.payload);
      else pending.reject(fromStatus(res.code, res.message));
    }
  }

  private fail(err: StatusError): void {
    if (this.closedError) return;
    this.closedError = err;
    for (const p of [...this.pending.values()]) p.reject(err);
    this.pending.clear();
    this.stream.destroy();
    this.resolveClosed();
  }
}
