/** Turns a file-system error into a StatusError naming the stdio field. */
import {
  Code, InternalError, InvalidArgumentError, NotFoundError, StatusError,
} from '../errors/index.js';
import type { StdioField } from './stdio-config.js';

/** `${field}: ${what}: no such file` and the like; `what` names the object ("fifo /x"). */
export function fsError(field: StdioField, what: string, err: unknown): StatusError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const message = err instanceof Error ? err.message : String(err);
  switch (code) {
    case 'ENOENT':
      return new NotFoundError(`${field}: ${what}: no such file`, { cause: err });
    case 'EACCES':
    case 'EPERM':
      return new StatusError(Code.PERMISSION_DENIED, `${field}: ${what}: permission denied`, { cause: err });
    case 'ENOTDIR':
    case 'EISDIR':
    case 'ELOOP':
    case 'ENAMETOOLONG':
    case 'ENXIO':
      return new InvalidArgumentError(`${field}: ${what}: ${message}`, { cause: err });
    default:
      return new InternalError(`${field}: ${what}: ${message}`, { cause: err });
  }
}
