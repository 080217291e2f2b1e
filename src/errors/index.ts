/**
 * Errors carry a gRPC status code. Every layer throws these (or plain errors,
 * which become INTERNAL); the ttrpc server turns them into a google.rpc.Status
 * in exactly one place (`toStatus`), and the ttrpc client turns a received
 * status back into a `StatusError` (`fromStatus`). Nobody matches error text.
 */

/** gRPC status codes (google.rpc.Code), the numbers are on the wire. */
export enum Code {
  OK = 0,
  CANCELLED = 1,
  UNKNOWN = 2,
  INVALID_ARGUMENT = 3,
  DEADLINE_EXCEEDED = 4,
  NOT_FOUND = 5,
  ALREADY_EXISTS = 6,
  PERMISSION_DENIED = 7,
  RESOURCE_EXHAUSTED = 8,
  FAILED_PRECONDITION = 9,
  ABORTED = 10,
  OUT_OF_RANGE = 11,
  UNIMPLEMENTED = 12,
  INTERNAL = 13,
  UNAVAILABLE = 14,
  DATA_LOSS = 15,
  UNAUTHENTICATED = 16,
}

export interface StatusErrorOptions {
  cause?: unknown;
}

/** An error with a gRPC status code. The message is what the peer sees. */
export class StatusError extends Error {
  readonly code: Code;

  constructor(code: Code, message: string, options?: StatusErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.name = `StatusError(${Code[code] ?? code})`;
  }
}

function kind(code: Code, name: string) {
  return class extends StatusError {
    constructor(message: string, options?: StatusErrorOptions) {
      super(code, message, options);
      this.name = name;
    }
  };
}

export const InvalidArgumentError = kind(Code.INVALID_ARGUMENT, 'InvalidArgumentError');
export const NotFoundError = kind(Code.NOT_FOUND, 'NotFoundError');
export const AlreadyExistsError = kind(Code.ALREADY_EXISTS, 'AlreadyExistsError');
export const FailedPreconditionError = kind(Code.FAILED_PRECONDITION, 'FailedPreconditionError');
export const UnimplementedError = kind(Code.UNIMPLEMENTED, 'UnimplementedError');
export const UnavailableError = kind(Code.UNAVAILABLE, 'UnavailableError');
export const DeadlineExceededError = kind(Code.DEADLINE_EXCEEDED, 'DeadlineExceededError');
export const CancelledError = kind(Code.CANCELLED, 'CancelledError');
export const InternalError = kind(Code.INTERNAL, 'InternalError');
export const ResourceExhaustedError = kind(Code.RESOURCE_EXHAUSTED, 'ResourceExhaustedError');

/** The status a thrown value maps to on the wire. Plain errors are INTERNAL. */
export function toStatus(err: unknown): { code: Code; message: string } {
  if (err instanceof StatusError) return { code: err.code, message: err.message };
  if (err instanceof Error) {
    if (err.name === 'AbortError' || err.name === 'TimeoutError') {
      return { code: Code.DEADLINE_EXCEEDED, message: err.message };
    }
    return { code: Code.INTERNAL, message: err.message };
  }
  return { code: Code.INTERNAL, message: String(err) };
}

/** The error a received non-OK status becomes. */
export function fromStatus(code: number, message: string): StatusError {
  const known = code in Code ? (code as Code) : Code.UNKNOWN;
  return new StatusError(known, message);
}

/** True when `err` is a StatusError with the given code. */
export function hasCode(err: unknown, code: Code): boolean {
  return err instanceof StatusError && err.code === code;
}

/** Adds context in front of an error's message, keeping its code. */
export function wrap(err: unknown, context: string): StatusError {
  const { code, message } = toStatus(err);
  return new StatusError(code, `${context}: ${message}`, { cause: err });
}
