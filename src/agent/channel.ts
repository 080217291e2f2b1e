/**
 * The agent channel's connection layer, under ttrpc: a one-line handshake
 * that marks where a host connection starts, so no byte of an earlier
 * connection is ever read as part of a later one.
 *
 *   host  → agent   "KATAAGENT1 HELLO <nonce>\n"   (repeated until answered)
 *   agent → host    "KATAAGENT1 READY <nonce>\n"
 *   then ttrpc frames both ways.
 *
 * Why: on a virtio-serial port the guest cannot see the host connect; it
 * learns of a disconnect from a read returning 0, and a write issued while
 * the host is away blocks until the next host connects and is then delivered
 * to it. So (1) the host discards everything before its READY line (stale
 * bytes of the previous connection), (2) the agent drops every queued write
 * of a connection that ended and sends READY only behind a write already in
 * progress, and (3) the agent watches ttrpc frame boundaries for a HELLO:
 * a HELLO with a new nonce starts a new connection even when the agent missed
 * the disconnect. A HELLO repeated with the same nonce (the host retries
 * because data it sent while the guest port was closed is lost) is ignored.
 * No ttrpc frame can start with "KATA": its length would be over 1 GiB.
 *
 * The lines themselves are in src/agent-protocol/handshake.ts (the host's
 * client imports them from there, never from the guest's code).
 *
 * This file is pure (no I/O): ChannelParser turns bytes into events, and
 * ChannelSession turns events into one Duplex per host connection. The
 * transports (serial-port-stream.ts, transport.ts) feed them.
 */
import { EventEmitter } from 'node:events';
import { Duplex } from 'node:stream';

import { HELLO_PREFIX, isValidNonce, readyLine } from '../agent-protocol/handshake.js';

export { CHANNEL_MAGIC, findReady, helloLine, isValidNonce, readyLine } from '../agent-protocol/handshake.js';

/** "KATA": the first bytes of every handshake line. */
const MAGIC4 = HELLO_PREFIX.subarray(0, 4);
/** A handshake line longer than this is garbage. */
const MAX_LINE = 128;
const TTRPC_HEADER = 10;

export type ChannelEvent = { kind: 'hello'; nonce: string } | { kind: 'data'; data: Buffer };

/**
 * Agent side: splits the bytes from the host into handshakes and ttrpc data.
 * Before the first HELLO everything is discarded. After it, data passes
 * through; at every ttrpc frame boundary bytes starting with "KATA" are
 * parsed as a handshake line again.
 */
export class ChannelParser {
  private buf: Buffer = Buffer.alloc(0);
  private mode: 'scan' | 'frames' = 'scan';
  /** Bytes of the current ttrpc frame still to pass through. */
  private frameLeft = 0;

  /** Back to "waiting for a HELLO" (the host went away). */
  reset(): void {
    this.buf = Buffer.alloc(0);
    this.mode = 'scan';
    this.frameLeft = 0;
  }

  push(chunk: Buffer): ChannelEvent[] {
    const out: ChannelEvent[] = [];
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    for (;;) {
      if (this.mode === 'scan') {
        if (!this.scan(out)) break;
        continue;
      }
      if (this.frameLeft > 0) {
        if (this.buf.length === 0) break;
        const take = Math.min(this.frameLeft, this.buf.length);
        out.push({ kind: 'data', data: this.buf.subarray(0, take) });
        this.frameLeft -= take;
        this.buf = this.buf.subarray(take);
        continue;
      }
      // At a frame boundary: a handshake line, or the next frame's header.
      if (this.buf.length < MAGIC4.length) break;
      if (this.buf.subarray(0, MAGIC4.length).equals(MAGIC4)) {
        this.mode = 'scan';
        continue;
      }
      if (this.buf.length < TTRPC_HEADER) break;
      this.frameLeft = TTRPC_HEADER + this.buf.readUInt32BE(0);
    }
    // Never hold on to a big buffer we already passed on.
    if (this.buf.length === 0) this.buf = Buffer.alloc(0);
    return out;
  }

  /** Looks for a HELLO line; returns true when it made progress. */
  private scan(out: ChannelEvent[]): boolean {
    const i = this.buf.indexOf(HELLO_PREFIX);
    if (i < 0) {
      // Keep a tail that may be the start of a HELLO split across reads.
      const keep = Math.min(this.buf.length, HELLO_PREFIX.length - 1);
      this.buf = Buffer.from(this.buf.subarray(this.buf.length - keep));
      return false;
    }
    const nl = this.buf.indexOf(0x0a, i);
    if (nl < 0) {
      if (this.buf.length - i > MAX_LINE) {
        this.buf = this.buf.subarray(i + 1);
        return true;
      }
      this.buf = this.buf.subarray(i);
      return false;
    }
    const nonce = this.buf.toString('latin1', i + HELLO_PREFIX.length, nl).trim();
    this.buf = this.buf.subarray(nl + 1);
    if (!isValidNonce(nonce)) return true;
    out.push({ kind: 'hello', nonce });
    this.mode = 'frames';
    this.frameLeft = 0;
    return true;
  }
}

/** Writes bytes for a connection; resolves once written (or dropped: the connection ended). */
export type ChannelWriter = (conn: ChannelConnection, data: Buffer) => Promise<void>;

/**
 * One host connection as a Duplex for TtrpcServer.serve(). Ends (and is
 * destroyed) when the host goes away or a new host connection replaces it.
 */
export class ChannelConnection extends Duplex {
  constructor(
    readonly nonce: string,
    private readonly writer: ChannelWriter,
    private readonly onDemand: () => void,
  ) {
    super({ allowHalfOpen: false });
  }

  override _read(): void {
    this.onDemand();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.writer(this, chunk).then(() => cb(), (err: Error) => cb(err));
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    // One frame (header + payload, corked together) goes out in one write.
    this.writer(this, Buffer.concat(chunks.map((c) => c.chunk))).then(() => cb(), (err: Error) => cb(err));
  }

  /** The host is gone: end the readable side and close. */
  hostGone(): void {
    if (this.destroyed) return;
    this.push(null);
    this.destroy();
  }
}

export interface ChannelSessionEvents {
  connection: [ChannelConnection];
}

/**
 * Agent side: the byte stream of one transport (a serial port, a socket) as
 * a sequence of host connections. Feed it with input(); it emits
 * 'connection' for each handshake and answers READY through `writer`.
 */
export class ChannelSession extends EventEmitter<ChannelSessionEvents> {
  private readonly parser = new ChannelParser();
  private current: ChannelConnection | undefined;
  private demandWaiters: Array<() => void> = [];
  private full = false;

  constructor(private readonly writer: ChannelWriter) {
    super();
  }

  /** The live connection, if any. */
  get connection(): ChannelConnection | undefined {
    return this.current && !this.current.destroyed ? this.current : undefined;
  }

  /**
   * Bytes from the host. Returns false when the connection's reader is full:
   * the caller should await whenReady() before feeding more.
   */
  input(chunk: Buffer): boolean {
    for (const ev of this.parser.push(chunk)) {
      if (ev.kind === 'hello') {
        if (this.current && !this.current.destroyed && this.current.nonce === ev.nonce) continue; // a retried HELLO
        this.startConnection(ev.nonce);
        continue;
      }
      const conn = this.connection;
      if (!conn) continue;
      if (!conn.push(Buffer.from(ev.data))) this.full = true;
    }
    return !this.full;
  }

  /** Resolves when the current reader wants more (at once if not full). */
  whenReady(): Promise<void> {
    if (!this.full || !this.connection) {
      this.full = false;
      return Promise.resolve();
    }
    return new Promise((r) => this.demandWaiters.push(r));
  }

  /** The host went away: end the connection; wait for a new HELLO. */
  hostGone(): void {
    this.parser.reset();
    this.endCurrent();
  }

  private startConnection(nonce: string): void {
    this.endCurrent();
    const conn = new ChannelConnection(nonce, this.writer, () => this.onDemand());
    this.current = conn;
    conn.on('close', () => {
      if (this.current === conn) this.onDemand();
    });
    // READY goes through the same writer as the frames, so it is queued
    // behind any write of the old connection already in progress.
    void this.writer(conn, readyLine(nonce)).catch(() => {});
    this.emit('connection', conn);
  }

  private endCurrent(): void {
    const old = this.current;
    this.current = undefined;
    old?.hostGone();
    this.onDemand();
  }

  private onDemand(): void {
    this.full = false;
    for (const r of this.demandWaiters.splice(0)) r();
  }
}
