/**
 * ttrpc server: serves registered services on unix sockets or on any duplex
 * byte stream (the guest agent serves on a virtio-serial port).
 *
 * Behaviour follows containerd/ttrpc's server so that containerd sees the same
 * answers: unknown service or method → UNIMPLEMENTED; an oversized frame is
 * discarded and answered with RESOURCE_EXHAUSTED on its stream, and the
 * connection lives on; an undecodable Request → INVALID_ARGUMENT; even stream
 * ids → INVALID_ARGUMENT; frames of unknown type are ignored; a handler that
 * throws → its status (INTERNAL for plain errors). timeout_nano becomes a
 * deadline: the handler's signal aborts and the caller gets DEADLINE_EXCEEDED.
 */
import net from 'node:net';
import { unlink } from 'node:fs/promises';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { Code, DeadlineExceededError, InvalidArgumentError, toStatus } from '../errors/index.js';
import { FrameDecoder, MESSAGE_LENGTH_MAX, MessageType, writeFrame } from './frame.js';
import { decodeRequest, encodeResponse, type Metadata } from './messages.js';
import type { MessageCodec } from './client.js';

export interface CallContext {
  service: string;
  method: string;
  metadata: Metadata;
  /** Aborts when the deadline passes, the connection closes or the server shuts down. */
  signal: AbortSignal;
}

/** A raw method handler: request payload in, response payload out. */
export type Handler = (payload: Uint8Array, ctx: CallContext) => Promise<Uint8Array>;

export type ServiceHandlers = Record<string, Handler>;

/** Adapts a typed handler to a raw one, using generated message codecs. */
export function unary<Req, Res>(
  reqType: MessageCodec<Req, unknown>,
  resType: MessageCodec<unknown, Res>,
  fn: (req: Req, ctx: CallContext) => Promise<Res>,
): Handler {
  return async (payload, ctx) => {
    let req: Req;
    try {
      req = reqType.decode(payload);
    } catch (err) {
      throw new InvalidArgumentError(`cannot decode ${ctx.service}/${ctx.method} request: ${(err as Error).message}`);
    }
    // A view of the writer's buffer (the writer is dropped): no second copy of
    // a large answer (ReadStdout's up to 1 MiB; copies are dear under TCG).
    return resType.encode(await fn(req, ctx)).finish(true);
  };
}

export interface ServerOptions {
  logger?: Logger;
  /** How long close() waits for in-flight calls before cutting connections. */
  drainTimeoutMs?: number;
}

/**
 * An AbortController created only when a handler reads ctx.signal: one per
 * call costs more than a small call itself. An abort() that comes first is
 * remembered, and the signal is then born aborted with the same reason.
 */
class LazyAbortController {
  private controller: AbortController | undefined;
  private aborted = false;
  private reason: unknown;

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.aborted) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    this.controller?.abort(reason);
  }
}

interface Conn {
  stream: Duplex;
  inflight: Map<number, LazyAbortController>;
}

export class TtrpcServer {
  private readonly services = new Map<string, ServiceHandlers>();
  private readonly conns = new Set<Conn>();
  private readonly listeners: { server: net.Server; path: string }[] = [];
  private closing = false;
  private readonly logger?: Logger;
  private readonly drainTimeoutMs: number;

  constructor(opts: ServerOptions = {}) {
    this.logger = opts.logger;
    this.drainTimeoutMs = opts.drainTimeoutMs ?? 5_000;
  }

  /** Registers a service's methods by their wire names (e.g. "containerd.task.v2.Task", { Create: … }). */
  register(service: string, handlers: ServiceHandlers): this {
    if (this.services.has(service)) throw new Error(`ttrpc: service ${service} already registered`);
    this.services.set(service, handlers);
    return this;
  }

  /** Listens on a unix socket path (removing a stale socket file first). */
  async listen(path: string): Promise<net.Server> {
    await unlink(path).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
    const server = net.createServer((sock) => this.serve(sock));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.logger?.error({ err, path }, 'ttrpc listener error'));
    this.listeners.push({ server, path });
    return server;
  }

  /** Serves one connection on an already open duplex stream. */
  serve(stream: Duplex): void {
    if (this.closing) {
      stream.destroy();
      return;
    }
    const conn: Conn = { stream, inflight: new Map() };
    const decoder = new FrameDecoder();
    this.conns.add(conn);
    stream.on('data', (chunk: Buffer) => {
      let frames;
      try {
        frames = decoder.push(chunk);
      } catch (err) {
        this.logger?.warn({ err }, 'ttrpc: bad input, closing connection');
        stream.destroy();
        return;
      }
      for (const frame of frames) {
        if (frame.kind === 'oversized') {
          this.send(conn, frame.streamId, Code.RESOURCE_EXHAUSTED,
            `message length ${frame.length} exceed maximum message size of ${MESSAGE_LENGTH_MAX}`);
          continue;
        }
        if (frame.type !== MessageType.Request) continue; // ignored for future compatibility
        this.dispatch(conn, frame.streamId, frame.payload);
      }
    });
    stream.on('error', (err) => this.logger?.debug({ err }, 'ttrpc connection error'));
    stream.on('close', () => {
      for (const ac of conn.inflight.values()) ac.abort(new Error('ttrpc: connection closed'));
      conn.inflight.clear();
      this.conns.delete(conn);
    });
  }

  /**
   * Stops accepting, lets in-flight calls finish (up to drainTimeoutMs), then
   * closes every connection and removes the socket files.
   */
  async close(): Promise<void> {
    this.closing = true;
    // net.Server.close() calls back only once every connection is gone, so
    // stop accepting first and await the listeners after the connections end.
    const listenersClosed = Promise.all(this.listeners.splice(0).map(({ server, path }) => new Promise<void>((resolve) => {
      server.close(() => resolve());
      unlink(path).catch(() => {});
    })));
    const deadline = Date.now() + this.drainTimeoutMs;
    while ([...this.conns].some((c) => c.inflight.size > 0) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    for (const c of this.conns) {
      for (const ac of c.inflight.values()) ac.abort(new Error('ttrpc: server closed'));
      c.stream.destroy();
    }
    this.conns.clear();
    await listenersClosed;
  }

  private dispatch(conn: Conn, streamId: number, payload: Buffer): void {
    let req;
    try {
      req = decodeRequest(payload);
    } catch (err) {
      this.send(conn, streamId, Code.INVALID_ARGUMENT, `unmarshal request error: ${(err as Error).message}`);
      return;
    }
    if (streamId % 2 !== 1) {
      this.send(conn, streamId, Code.INVALID_ARGUMENT, 'StreamID must be odd for client initiated streams');
      return;
    }
    if (conn.inflight.has(streamId)) {
      this.send(conn, streamId, Code.INVALID_ARGUMENT, `stream ${streamId} is already in use`);
      return;
    }
    const service = this.services.get(req.service);
    const handler = service && Object.hasOwn(service, req.method) ? service[req.method] : undefined;
    if (!service) {
      this.send(conn, streamId, Code.UNIMPLEMENTED, `service ${req.service}`);
      return;
    }
    if (!handler) {
      this.send(conn, streamId, Code.UNIMPLEMENTED, `method ${req.method}`);
      return;
    }

    const ac = new LazyAbortController();
    conn.inflight.set(streamId, ac);
    const ctx: CallContext = {
      service: req.service,
      method: req.method,
      metadata: req.metadata,
      get signal() {
        return ac.signal;
      },
    };
    const started = Date.now();
    let timer: NodeJS.Timeout | undefined;
    let result = Promise.resolve().then(() => handler(req.payload, ctx));
    if (req.timeoutNano > 0) {
      const ms = Math.max(1, Math.ceil(req.timeoutNano / 1e6));
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          const err = new DeadlineExceededError(`${req.service}/${req.method}: deadline exceeded after ${ms} ms`);
          ac.abort(err);
          reject(err);
        }, ms);
      });
      result = Promise.race([result, deadline]);
    }
    result.then(
      (out) => this.send(conn, streamId, Code.OK, '', out),
      (err: unknown) => {
        const status = toStatus(err);
        if (status.code === Code.INTERNAL || status.code === Code.UNKNOWN) {
          this.logger?.warn({ err, service: req.service, method: req.method }, 'ttrpc handler failed');
        }
        this.send(conn, streamId, status.code, status.message);
      },
    ).finally(() => {
      clearTimeout(timer);
      conn.inflight.delete(streamId);
      this.logger?.trace({ service: req.service, method: req.method, ms: Date.now() - started }, 'ttrpc call');
    });
  }

  private send(conn: Conn, streamId: number, code: Code, message: string, payload: Uint8Array = new Uint8Array(0)): void {
    if (conn.stream.destroyed || !conn.stream.writable) return;
    let body = encodeResponse({ code, message, payload });
    if (body.length > MESSAGE_LENGTH_MAX) {
      body = encodeResponse({
        code: Code.RESOURCE_EXHAUSTED,
        message: `message length ${body.length} exceed maximum message size of ${MESSAGE_LENGTH_MAX}`,
        payload: new Uint8Array(0),
      });
    }
    writeFrame(conn.stream, streamId, MessageType.Response, 0, body);
  }
}
