// JSON input files (pod and container configs) in crictl's format. crictl
// decodes them with Go's encoding/json into the generated CRI structs, whose
// JSON names are the proto field names (snake_case: "log_directory") and
// which matches keys case-insensitively; the protobuf JSON mapping uses
// lowerCamelCase ("logDirectory"). Both are accepted here, in any case.
// Enums may be numbers (as Go writes them: "network": 2) or names ("NODE").
//
// Keys inside map fields (labels, annotations, sysctls, …) are user data and
// are never rewritten. Keys that match no field are reported (crictl ignores
// them silently; a typo in a pod config is worth a warning).

/** CRI fields of type map<string,string>, by their camelCase name. */
const MAP_FIELDS = new Set(['labels', 'annotations', 'sysctls', 'unified', 'labelSelector', 'info']);

export interface MessageType<T> {
  fromObject(object: { [k: string]: unknown }): T;
  toObject(message: T, options?: { defaults?: boolean; arrays?: boolean; objects?: boolean }): { [k: string]: unknown };
}

export class InputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InputError';
  }
}

/** snake_case → lowerCamelCase, the way protobufjs names fields. */
export function camelCase(key: string): string {
  return key.replace(/_([a-zA-Z0-9])/g, (_, c: string) => c.toUpperCase());
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Rewrite every key to camelCase, recursively, leaving the contents of map fields alone. */
export function normaliseKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(normaliseKeys);
  if (!isObject(v)) return v;
  const out: Record<string, unknown> = {};
  for (const [k, val] of Object.entries(v)) {
    const key = camelCase(k);
    out[key] = MAP_FIELDS.has(key) ? val : normaliseKeys(val);
  }
  return out;
}

/**
 * Walk `input` against `known` (the same message turned back into an object
 * with every field present): rename keys that differ only in case, collect the
 * ones that match nothing. Returns whether anything was renamed.
 */
function reconcile(input: Record<string, unknown>, known: Record<string, unknown>, path: string, unknown: string[]): boolean {
  let renamed = false;
  for (const k of Object.keys(input)) {
    let key = k;
    if (!(key in known)) {
      const match = Object.keys(known).find((kk) => kk.toLowerCase() === key.toLowerCase());
      if (match === undefined) {
        unknown.push(path + k);
        continue;
      }
      input[match] = input[k];
      delete input[k];
      key = match;
      renamed = true;
    }
    if (MAP_FIELDS.has(key)) continue;
    const iv = input[key];
    const kv = known[key];
    if (isObject(iv) && isObject(kv)) {
      renamed = reconcile(iv, kv, `${path}${key}.`, unknown) || renamed;
    } else if (Array.isArray(iv) && Array.isArray(kv)) {
      iv.forEach((el, i) => {
        const kel = kv[i];
        if (isObject(el) && isObject(kel)) renamed = reconcile(el, kel, `${path}${key}[${i}].`, unknown) || renamed;
      });
    }
  }
  return renamed;
}

export interface Decoded<T> {
  message: T;
  /** Dotted paths of keys that match no field (ignored). */
  unknownFields: string[];
}

/** Build a message from a JSON value in crictl's format (see the file comment). `what` names it in errors. */
export function decodeMessage<T>(type: MessageType<T>, value: unknown, what: string): Decoded<T> {
  if (!isObject(value)) throw new InputError(`${what}: a JSON object is required`);
  const norm = normaliseKeys(value) as Record<string, unknown>;
  let unknownFields: string[] = [];
  for (let round = 0; round < 16; round++) {
    let back: Record<string, unknown>;
    try {
      back = type.toObject(type.fromObject(norm), { defaults: true, arrays: true, objects: true }) as Record<string, unknown>;
    } catch (e) {
      throw new InputError(`${what}: ${(e as Error).message.replace(/^\.runtime\.v1\./, '')}`);
    }
    unknownFields = [];
    if (!reconcile(norm, back, '', unknownFields)) break;
  }
  try {
    return { message: type.fromObject(norm), unknownFields };
  } catch (e) {
    throw new InputError(`${what}: ${(e as Error).message}`);
  }
}

/** Parse a JSON document (the text of a config file). */
export function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new InputError(`${what}: invalid JSON: ${(e as Error).message}`);
  }
}
