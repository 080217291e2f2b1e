/** Container and exec ids the shim accepts (they name dirs in the pod's shared dir). */
import { InvalidArgumentError } from '../errors/index.js';

export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export function checkId(field: string, v: string): void {
  if (v === '') throw new InvalidArgumentError(`${field}: must not be empty`);
  if (!ID_PATTERN.test(v)) throw new InvalidArgumentError(`${field}: ${JSON.stringify(v)} is not a valid id (letters, digits, "_", ".", "-"; at most 128)`);
}
