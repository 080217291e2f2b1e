/**
 * The ttrpc Request/Response envelopes and the small conversions around them.
 * Generated types stay here; client and server see plain objects.
 */
import { ttrpc } from '../proto/gen/ttrpc.js';
import { Code } from '../errors/index.js';

/** Call metadata: ttrpc carries it as repeated key/value pairs. */
export type Metadata = Map<string, string[]>;

export interface RequestEnvelope {
  service: string;
  method: string;
  payload: Uint8Array;
  /** 0 means no deadline. */
  timeoutNano: number;
  metadata: Metadata;
}

export interface ResponseEnvelope {
  code: Code;
  message: string;
  payload: Uint8Array;
}

/** int64 fields decode as Long objects when the `long` package is present. */
export function int64ToNumber(v: number | { toNumber(): number } | null | undefined): number {
  if (v == null) return 0;
  return typeof v === 'number' ? v : v.toNumber();
}

export function encodeRequest(req: RequestEnvelope): Uint8Array {
  const metadata: { key: string; value: string }[] = [];
  for (const [key, values] of req.metadata) for (const value of values) metadata.push({ key, value });
  return ttrpc.Request.encode({
    service: req.service,
    method: req.method,
    payload: req.payload,
    timeoutNano: req.timeoutNano,
    metadata,
  }).finish();
}

/** Throws when the bytes are not a Request. */
export function decodeRequest(bytes: Uint8Array): RequestEnvelope {
  const r = ttrpc.Request.decode(bytes);
  const metadata: Metadata = new Map();
  for (const kv of r.metadata) {
    const key = kv.key ?? '';
    const list = metadata.get(key);
    if (list) list.push(kv.value ?? '');
    else metadata.set(key, [kv.value ?? '']);
  }
  return {
    service: r.service,
    method: r.method,
    payload: r.payload,
    timeoutNano: int64ToNumber(r.timeoutNano),
    metadata,
  };
}

export function encodeResponse(res: ResponseEnvelope): Uint8Array {
  return ttrpc.Response.encode({
    // containerd/ttrpc always sets status, OK included.
    status: { code: res.code, message: res.message },
    payload: res.code === Code.OK ? res.payload : new Uint8Array(0),
  }).finish(true); // a view of the writer's own buffer: one copy of the payload, not two
}

/** Throws when the bytes are not a Response. */
export function decodeResponse(bytes: Uint8Array): ResponseEnvelope {
  const r = ttrpc.Response.decode(bytes);
  return {
    code: (r.status?.code ?? Code.OK) as Code,
    message: r.status?.message ?? '',
    payload: r.payload,
  };
}
