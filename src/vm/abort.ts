/**
 * Cancellation helpers for the VM layer. Every wait here takes an optional
 * caller `AbortSignal` and a named timeout; `deadline()` combines both, and
 * `abortError()` turns the reason into a StatusError with the phase named:
 * our own timeout → DEADLINE_EXCEEDED, the caller's abort → CANCELLED (or
 * DEADLINE_EXCEEDED when the caller's signal was itself a timeout).
 */
import { CancelledError, Code, DeadlineExceededError, StatusError } from '../errors/index.js';

/** A signal that fires when `signal` does or after `timeoutMs`. */
export interface Deadline {
  signal: AbortSignal;
  /** The timeout as a fact for messages ("within 5000 ms"). */
  timeoutMs: number;
  /** Clears the timer (the signal stays usable, it simply never fires by time). */
  dispose(): void;
}

const TIMED_OUT = Symbol('timed out');

/**
 * `AbortSignal.any([signal, timeout])`, but with a timer we clear when the
 * wait ends, and whose expiry we can tell apart from the caller's own
 * AbortSignal.timeout() (ours names the phase and our timeout).
 */
export function deadline(timeoutMs: number, signal?: AbortSignal): Deadline {
  const ctl = new AbortController();
  // Ref'd on purpose: a pending wait keeps the process alive until it ends
  // or times out. Every user disposes of it in a finally block.
  const timer = setTimeout(() => ctl.abort(TIMED_OUT), timeoutMs);
  const onAbort = (): void => ctl.abort(signal?.reason);
  if (signal) {
    if (signal.aborted) ctl.abort(signal.reason);
    else signal.addEventListener('abort', onAbort, { once: true });
  }
  return {
    signal: ctl.signal,
    timeoutMs,
    dispose() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    },
  };
}

/** The error for an aborted wait: `phase` says what was being waited for. */
export function abortError(signal: AbortSignal, phase: string, timeoutMs?: number): StatusError {
  const reason: unknown = signal.reason;
  if (reason === TIMED_OUT) {
    return new DeadlineExceededError(`${phase}: timed out${timeoutMs === undefined ? '' : ` after ${timeoutMs} ms`}`);
  }
  if (reason instanceof StatusError) return reason;
  if (reason instanceof Error && reason.name === 'TimeoutError') {
    return new DeadlineExceededError(`${phase}: ${reason.message}`, { cause: reason });
  }
  return new CancelledError(`${phase}: cancelled`, { cause: reason });
}

/** Throws `abortError()` if the signal has fired. */
export function throwIfAborted(signal: AbortSignal | undefined, phase: string, timeoutMs?: number): void {
  if (signal?.aborted) throw abortError(signal, phase, timeoutMs);
}

/** Resolves after `ms`, or rejects with `abortError(signal, phase)`. */
export function sleep(ms: number, signal?: AbortSignal, phase = 'sleep'): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortError(signal, phase));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(abortError(signal!, phase));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Runs `fn` with a deadline signal; converts an abort of that signal (our
 * timeout or the caller's) into the named StatusError.
 */
export async function withDeadline<T>(
  phase: string,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  fn: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const d = deadline(timeoutMs, signal);
  try {
    throwIfAborted(d.signal, phase, timeoutMs);
    return await fn(d.signal);
  } catch (err) {
    // An abort seen deeper down (an inner sleep, a QMP call) is reported as
    // this phase's timeout/cancellation; any other failure keeps its own code.
    const isAbort = !(err instanceof StatusError) || err.code === Code.CANCELLED || err.code === Code.DEADLINE_EXCEEDED;
    if (d.signal.aborted && isAbort) throw abortError(d.signal, phase, timeoutMs);
    throw err;
  } finally {
    d.dispose();
  }
}

/**
 * Waits for `p` at most `ms`; resolves true if it settled in time. The timer
 * is cleared as soon as `p` settles; `ref: false` lets the process exit meanwhile.
 */
export function settlesWithin(p: Promise<unknown>, ms: number, opts: { ref?: boolean } = {}): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    if (opts.ref === false) timer.unref();
    p.then(
      () => {
        clearTimeout(timer);
        resolve(true);
      },
      () => {
        clearTimeout(timer);
        resolve(true);
      },
    );
  });
}
