/**
 * Field checks for VM configs. Each throws InvalidArgumentError whose message
 * starts with the field's path ("devices[2].socketPath: …"), so a caller can
 * tell which setting is wrong without matching text.
 */
import { isAbsolute } from 'node:path';
import { InvalidArgumentError } from '../errors/index.js';

export function invalid(field: string, what: string): InstanceType<typeof InvalidArgumentError> {
  return new InvalidArgumentError(`${field}: ${what}`);
}

/** No NUL or newline: such a value cannot be a path or a QEMU option. */
function plain(value: string): boolean {
  return !/[\0\n\r]/.test(value);
}

export function checkString(value: unknown, field: string): asserts value is string {
  if (typeof value !== 'string' || value === '') throw invalid(field, 'must be a non-empty string');
  if (!plain(value)) throw invalid(field, 'must not contain NUL or line breaks');
}

export function checkAbsPath(value: unknown, field: string): asserts value is string {
  checkString(value, field);
  if (!isAbsolute(value)) throw invalid(field, `must be an absolute path (got ${JSON.stringify(value)})`);
}

/** A unix socket path must fit sockaddr_un.sun_path (108 bytes with the NUL). */
export const MAX_SOCKET_PATH_BYTES = 107;

export function checkSocketPath(value: unknown, field: string): asserts value is string {
  checkAbsPath(value, field);
  if (Buffer.byteLength(value) > MAX_SOCKET_PATH_BYTES) {
    throw invalid(field, `socket path longer than ${MAX_SOCKET_PATH_BYTES} bytes: ${value}`);
  }
}

export function checkInt(value: unknown, field: string, min: number, max: number): asserts value is number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalid(field, `must be an integer from ${min} to ${max} (got ${JSON.stringify(value)})`);
  }
}

/** QEMU ids: a letter, then letters, digits, '-', '.', '_' (qemu's id_wellformed). */
export function checkQemuId(value: unknown, field: string): asserts value is string {
  checkString(value, field);
  if (!/^[A-Za-z][A-Za-z0-9._-]{0,63}$/.test(value)) {
    throw invalid(field, `must start with a letter and hold only letters, digits, '-', '.', '_' (got ${JSON.stringify(value)})`);
  }
}

export function checkOneOf<T extends string>(value: unknown, field: string, allowed: readonly T[]): asserts value is T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw invalid(field, `must be one of ${allowed.join(', ')} (got ${JSON.stringify(value)})`);
  }
}

/** Escapes a value for QEMU's key=value option syntax (a comma is doubled). */
export function opt(value: string | number): string {
  return String(value).replaceAll(',', ',,');
}
