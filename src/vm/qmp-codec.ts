/**
 * QMP wire format, no I/O: QEMU writes one JSON object per line ("\r\n"
 * terminated); we send one JSON object per line too. `QmpDecoder.push()`
 * takes bytes as they arrive (a message may be split across reads, a read may
 * hold several) and returns the complete messages, classified.
 */
import { InternalError } from '../errors/index.js';

/** QEMU's version triple and capabilities, from the greeting. */
export interface QmpGreeting {
  version: { qemu: { major: number; minor: number; micro: number }; package: string };
  capabilities: string[];
}

/** An asynchronous QMP event with its payload and QEMU's timestamp. */
export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp: Date;
  /** Microseconds part of QEMU's timestamp (Date keeps only milliseconds). */
  microseconds: number;
}

export type QmpMessage =
  | { type: 'greeting'; greeting: QmpGreeting }
  | { type: 'return'; id: string | undefined; value: unknown }
  | { type: 'error'; id: string | undefined; errorClass: string; desc: string }
  | { type: 'event'; event: QmpEvent };

/** Longest line we accept before calling the peer broken (query replies are small). */
export const MAX_QMP_LINE_BYTES = 16 * 1024 * 1024;

/** A peer that does not speak QMP. */
export class QmpProtocolError extends InternalError {}

/** Splits a byte stream into QMP messages. */
export class QmpDecoder {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  /** Feeds bytes; returns every message completed by them, in order. */
  push(chunk: Buffer): QmpMessage[] {
    const out: QmpMessage[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl < 0) break;
      const piece = chunk.subarray(start, nl);
      const line = this.pendingBytes === 0 ? piece : Buffer.concat([...this.pending, piece]);
      this.pending = [];
      this.pendingBytes = 0;
      start = nl + 1;
      const text = line.toString('utf8').trim();
      if (text !== '') out.push(parseMessage(text));
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      this.pendingBytes += rest.length;
      if (this.pendingBytes > MAX_QMP_LINE_BYTES) {
        throw new QmpProtocolError(`qmp: line longer than ${MAX_QMP_LINE_BYTES} bytes`);
      }
      // Copy: the caller may reuse its buffer.
      this.pending.push(Buffer.from(rest));
    }
    return out;
  }

  /** Bytes of an unfinished line held back. */
  get buffered(): number {
    return this.pendingBytes;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function idOf(obj: Record<string, unknown>): string | undefined {
  const id = obj['id'];
  if (id === undefined) return undefined;
  return typeof id === 'string' ? id : JSON.stringify(id);
}

/** Classifies one decoded line. */
export function parseMessage(text: string): QmpMessage {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    throw new QmpProtocolError(`qmp: invalid JSON line: ${text.slice(0, 200)}`, { cause: err });
  }
  if (!isObject(obj)) throw new QmpProtocolError(`qmp: not an object: ${text.slice(0, 200)}`);
  if (isObject(obj['QMP'])) {
    const g = obj['QMP'];
    const v = isObject(g['version']) ? g['version'] : {};
    const q = isObject(v['qemu']) ? v['qemu'] : {};
    return {
      type: 'greeting',
      greeting: {
        version: {
          qemu: { major: Number(q['major'] ?? 0), minor: Number(q['minor'] ?? 0), micro: Number(q['micro'] ?? 0) },
          package: typeof v['package'] === 'string' ? v['package'] : '',
        },
        capabilities: Array.isArray(g['capabilities']) ? g['capabilities'].map(String) : [],
      },
    };
  }
  if ('return' in obj) return { type: 'return', id: idOf(obj), value: obj['return'] };
  if (isObject(obj['error'])) {
    const e = obj['error'];
    return {
      type: 'error',
      id: idOf(obj),
      errorClass: typeof e['class'] === 'string' ? e['class'] : 'GenericError',
      desc: typeof e['desc'] === 'string' ? e['desc'] : JSON.stringify(e),
    };
  }
  if (typeof obj['event'] === 'string') {
    const ts = isObject(obj['timestamp']) ? obj['timestamp'] : {};
    const seconds = Number(ts['seconds'] ?? 0);
    const microseconds = Number(ts['microseconds'] ?? 0);
    return {
      type: 'event',
      event: {
        event: obj['event'],
        data: isObject(obj['data']) ? obj['data'] : {},
        timestamp: new Date(seconds * 1000 + Math.floor(microseconds / 1000)),
        microseconds,
      },
    };
  }
  throw new QmpProtocolError(`qmp: unknown message: ${text.slice(0, 200)}`);
}

/** One command line to send. */
export function encodeCommand(execute: string, args: Record<string, unknown> | undefined, id: string): string {
  const msg: Record<string, unknown> = { execute };
  if (args !== undefined) msg['arguments'] = args;
  msg['id'] = id;
  return JSON.stringify(msg) + '\n';
}
