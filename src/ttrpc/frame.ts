/**
 * ttrpc framing: a 10-byte big-endian header (payload length u32, stream id
 * u32, message type u8, flags u8) followed by the payload. The decoder is a
 * pure codec (no I/O): push bytes in, take whole frames out. It is tested by
 * splitting input at every byte offset. writeFrame is the one helper that
 * writes to a stream.
 */
import type { Writable } from 'node:stream';

export const HEADER_LENGTH = 10;
/** containerd/ttrpc's messageLengthMax: 4 MiB. */
export const MESSAGE_LENGTH_MAX = 4 << 20;

export enum MessageType {
  Request = 0x1,
  Response = 0x2,
  Data = 0x3,
}

export const Flags = {
  RemoteClosed: 0x1,
  RemoteOpen: 0x2,
  NoData: 0x4,
} as const;

export interface Frame {
  kind: 'frame';
  streamId: number;
  type: number;
  flags: number;
  payload: Buffer;
}

/**
 * A frame whose declared length was over the limit. Its payload was read and
 * discarded (as containerd/ttrpc does), so the connection stays usable and the
 * receiver can answer that stream with RESOURCE_EXHAUSTED.
 */
export interface OversizedFrame {
  kind: 'oversized';
  streamId: number;
  type: number;
  flags: number;
  length: number;
}

export type DecodedFrame = Frame | OversizedFrame;

/** Encodes one frame. Throws RangeError when the payload is over the limit. */
export function encodeFrame(streamId: number, type: number, flags: number, payload: Uint8Array): Buffer {
  const out = allocFrame(streamId, type, flags, payload.length, payload.length);
  out.set(payload, HEADER_LENGTH);
  return out;
}

/** A buffer of HEADER_LENGTH + extra bytes with the header filled in. */
function allocFrame(streamId: number, type: number, flags: number, length: number, extra: number): Buffer {
  if (length > MESSAGE_LENGTH_MAX) {
    throw new RangeError(`message length ${length} exceed maximum message size of ${MESSAGE_LENGTH_MAX}`);
  }
  const out = Buffer.allocUnsafe(HEADER_LENGTH + extra);
  out.writeUInt32BE(length, 0);
  out.writeUInt32BE(streamId >>> 0, 4);
  out.writeUInt8(type, 8);
  out.writeUInt8(flags, 9);
  return out;
}

/**
 * Payloads at least this long are not copied behind their header: header and
 * payload are written as two chunks of one corked write (a single writev on a
 * socket). Below it, one copy is cheaper than the extra chunk.
 */
const GATHER_WRITE_MIN = 16 * 1024;

/**
 * Writes one frame to a stream, as encodeFrame would encode it. Throws
 * RangeError (writing nothing) when the payload is over the limit.
 */
export function writeFrame(stream: Writable, streamId: number, type: number, flags: number, payload: Uint8Array): void {
  if (payload.length < GATHER_WRITE_MIN) {
    stream.write(encodeFrame(streamId, type, flags, payload));
    return;
  }
  const header = allocFrame(streamId, type, flags, payload.length, 0);
  stream.cork();
  stream.write(header);
  stream.write(payload);
  stream.uncork();
}

/** Incremental frame decoder; keeps partial input between pushes. */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Bytes of an oversized payload still to skip, and the frame they belong to. */
  private discarding: OversizedFrame | null = null;
  private discardLeft = 0;

  constructor(private readonly maxLength = MESSAGE_LENGTH_MAX) {}

  /** Bytes held that do not yet form a whole frame (0 at a frame boundary). */
  get pending(): number {
    return this.buffered + (this.discarding ? this.discardLeft : 0);
  }

  push(chunk: Buffer): DecodedFrame[] {
    const out: DecodedFrame[] = [];
    let input = chunk;
    if (this.discarding) {
      const skip = Math.min(this.discardLeft, input.length);
      this.discardLeft -= skip;
      input = input.subarray(skip);
      if (this.discardLeft > 0) return out;
      out.push(this.discarding);
      this.discarding = null;
    }
    if (input.length > 0) {
      this.chunks.push(input);
      this.buffered += input.length;
    }
    for (;;) {
      if (this.buffered < HEADER_LENGTH) break;
      const header = this.peek(HEADER_LENGTH);
      const length = header.readUInt32BE(0);
      const streamId = header.readUInt32BE(4);
      const type = header.readUInt8(8);
      const flags = header.readUInt8(9);
      if (length > this.maxLength) {
        this.take(HEADER_LENGTH);
        const oversized: OversizedFrame = { kind: 'oversized', streamId, type, flags, length };
        const skip = Math.min(length, this.buffered);
        this.take(skip);
        if (skip < length) {
          // The rest of the oversized payload is not here yet: skip it as it comes.
          this.discarding = oversized;
          this.discardLeft = length - skip;
          break;
        }
        out.push(oversized);
        continue;
      }
      if (this.buffered < HEADER_LENGTH + length) break;
      this.take(HEADER_LENGTH);
      out.push({ kind: 'frame', streamId, type, flags, payload: this.take(length) });
    }
    return out;
  }

  /** Returns the first n buffered bytes without consuming them. */
  private peek(n: number): Buffer {
    if (this.chunks[0]!.length >= n) return this.chunks[0]!.subarray(0, n);
    const first = Buffer.concat(this.chunks);
    this.chunks = [first];
    return first.subarray(0, n);
  }

  /** Consumes and returns the first n buffered bytes (copied only when split). */
  private take(n: number): Buffer {
    this.buffered -= n;
    const head = this.chunks[0];
    if (head && head.length >= n) {
      if (head.length === n) this.chunks.shift();
      else this.chunks[0] = head.subarray(n);
      return head.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0]!;
      const want = n - off;
      if (c.length <= want) {
        c.copy(out, off);
        off += c.length;
        this.chunks.shift();
      } else {
        c.copy(out, off, 0, want);
        this.chunks[0] = c.subarray(want);
        off += want;
      }
    }
    return out;
  }
}
