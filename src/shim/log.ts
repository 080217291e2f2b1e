/**
 * The serving shim's log: pino into the `log` FIFO containerd made in the
 * bundle (containerd copies it into its own log). Opened O_RDWR|O_NONBLOCK:
 * the open never blocks, a containerd restart never makes our writes fail
 * with EPIPE (we hold the FIFO open both ways), and while nobody reads the
 * FIFO fills up and pino's destination drops what exceeds its buffer instead
 * of growing without bound. Without a FIFO (run by hand) logs go to stderr,
 * or nowhere for `start` (its stdout+stderr pipe is read as the address).
 */
import { constants, fstatSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { createLogger, silentLogger, type Logger } from '../log/index.js';

/** At most this much log is buffered in the shim while nobody reads the FIFO. */
const LOG_BUFFER_MAX = 4 * 1024 * 1024;

export function openShimLog(bundle: string, debug: boolean, opts: { fallbackToStderr?: boolean } = {}): Logger {
  let fd = -1;
  try {
    const f = openSync(join(bundle, 'log'), constants.O_RDWR | constants.O_NONBLOCK);
    if (fstatSync(f).isFIFO()) fd = f;
  } catch {
    /* no FIFO */
  }
  if (fd < 0) {
    if (opts.fallbackToStderr === false) return silentLogger();
    fd = 2;
  }
  const dest = pino.destination({ fd, sync: false, maxLength: LOG_BUFFER_MAX });
  dest.on('error', () => { /* a log write failing must never take the shim down */ });
  return createLogger({ debug, destination: dest, name: 'containerd-shim-kata-v2' });
}
