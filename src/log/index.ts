/**
 * Logging: pino, set up once per process and passed down as child loggers
 * ({ module: 'vm', sandbox }) — never a module global.
 */
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

export interface LoggerOptions {
  /** `-debug` on the shim CLI turns this on. */
  debug?: boolean;
  /** Where logs go: an fd or a stream (the shim's log FIFO); stderr by default. */
  destination?: number | DestinationStream;
  name?: string;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const dest = typeof opts.destination === 'object'
    ? opts.destination
    : pino.destination({ dest: opts.destination ?? 2, sync: false });
  return pino({
    name: opts.name,
    level: opts.debug ? 'debug' : (process.env.KATA_LOG_LEVEL ?? 'info'),
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  }, dest);
}

/** A logger that drops everything (for unit tests and library defaults). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
