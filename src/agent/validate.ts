/**
 * Input checks for the agent's handlers: ids, OCI JSON documents, numbers.
 * Every failure is an InvalidArgumentError naming the field.
 */
import { InvalidArgumentError } from '../errors/index.js';

/** Container and exec ids: what crun accepts as a name, and safe as a path component. */
export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** Throws unless `id` is a valid container id. */
export function checkContainerId(id: string, field = 'container_id'): string {
  if (!ID_PATTERN.test(id)) {
    throw new InvalidArgumentError(`${field}: ${JSON.stringify(id)} must match ${ID_PATTERN.source}`);
  }
  return id;
}

/** Throws unless `id` is "" (the init process) or a valid exec id. */
export function checkExecId(id: string, field = 'exec_id'): string {
  if (id !== '' && !ID_PATTERN.test(id)) {
    throw new InvalidArgumentError(`${field}: ${JSON.stringify(id)} must be empty or match ${ID_PATTERN.source}`);
  }
  return id;
}

/** A JSON object (not an array, not null). */
export type JsonObject = Record<string, unknown>;

/** Parses bytes as a JSON object, or throws naming the field. */
export function parseJsonObject(bytes: Uint8Array, field: string): JsonObject {
  if (bytes.length === 0) throw new InvalidArgumentError(`${field}: empty`);
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch (err) {
    throw new InvalidArgumentError(`${field}: malformed JSON: ${(err as Error).message}`);
  }
  if (!isObject(value)) throw new InvalidArgumentError(`${field}: must be a JSON object`);
  return value;
}

export function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Checks the parts of an OCI Process the agent relies on: a non-empty args
 * array of strings, and a cwd when present. The runtime checks the rest.
 */
export function checkOciProcess(proc: unknown, field: string): JsonObject {
  if (!isObject(proc)) throw new InvalidArgumentError(`${field}: must be an object`);
  const args = proc.args;
  if (!Array.isArray(args) || args.length === 0 || !args.every((a) => typeof a === 'string')) {
    throw new InvalidArgumentError(`${field}.args: must be a non-empty array of strings`);
  }
  if (proc.cwd !== undefined && (typeof proc.cwd !== 'string' || !proc.cwd.startsWith('/'))) {
    throw new InvalidArgumentError(`${field}.cwd: must be an absolute path`);
  }
  if (proc.env !== undefined && (!Array.isArray(proc.env) || !proc.env.every((e) => typeof e === 'string'))) {
    throw new InvalidArgumentError(`${field}.env: must be an array of strings`);
  }
  return proc;
}

/** Checks an OCI runtime spec enough for the agent to write a bundle from it. */
export function checkOciSpec(spec: JsonObject, field: string): JsonObject {
  checkOciProcess(spec.process, `${field}.process`);
  if (spec.root !== undefined && !isObject(spec.root)) throw new InvalidArgumentError(`${field}.root: must be an object`);
  if (spec.linux !== undefined && !isObject(spec.linux)) throw new InvalidArgumentError(`${field}.linux: must be an object`);
  if (spec.mounts !== undefined && !Array.isArray(spec.mounts)) throw new InvalidArgumentError(`${field}.mounts: must be an array`);
  return spec;
}

/** A signal number the kernel knows (1 … 64). */
export function checkSignal(sig: number, field = 'signal'): number {
  if (!Number.isInteger(sig) || sig < 1 || sig > 64) throw new InvalidArgumentError(`${field}: ${sig} is not a signal number`);
  return sig;
}

/** A terminal dimension (1 … 65535). */
export function checkWinSize(rows: number, cols: number): void {
  if (!Number.isInteger(rows) || rows < 1 || rows > 0xffff) throw new InvalidArgumentError(`rows: ${rows} out of range 1-65535`);
  if (!Number.isInteger(cols) || cols < 1 || cols > 0xffff) throw new InvalidArgumentError(`cols: ${cols} out of range 1-65535`);
}
