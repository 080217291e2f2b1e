/**
 * Opening containerd's stdio FIFOs without ever blocking a libuv pool thread.
 *
 * - stdout/stderr: O_RDWR|O_NONBLOCK. Opening read-write never waits for a
 *   reader, and holding a read end ourselves means ctr going away (or never
 *   coming) cannot break the container's output with EPIPE: data waits in
 *   the pipe for the next reader, and when the pipe is full our writes wait
 *   (backpressure up to the agent and the container). This is what the runc
 *   shim does (it opens a reader next to its writer).
 * - stdin: O_RDWR|O_NONBLOCK, as the runc shim holds it (a writer of its
 *   own beside the reader): the client closing its end is NOT the process's
 *   EOF — containerd's CloseIO is (checked against the runc shim in
 *   test/e2e/shim.test.ts); and a client that reattaches after a containerd
 *   restart finds the FIFO still open.
 *
 * The fd goes into a net.Socket (a libuv pipe handle): reads and writes are
 * async, and closing it is destroy(). Opening itself uses the pool, but a
 * non-blocking open of a FIFO returns at once.
 */
import fs from 'node:fs';
import net from 'node:net';
import { promisify } from 'node:util';
import { InvalidArgumentError } from '../errors/index.js';
import type { Logger } from '../log/index.js';
import { fsError } from './fs-error.js';
import { FileSink, SocketSink, type Sink } from './sink.js';
import type { StdioField } from './stdio-config.js';

const open = promisify(fs.open);
const fstat = promisify(fs.fstat);
const closeFd = promisify(fs.close);
const { O_RDWR, O_WRONLY, O_APPEND, O_NONBLOCK } = fs.constants;

/**
 * The sink of a stdout/stderr path: a FIFO held read-write, or an existing
 * regular file appended to (the runc shim accepts those too).
 */
export async function openOutputPath(field: StdioField, path: string, log: Logger): Promise<Sink> {
  const st = await statPath(field, path);
  if (st.isFIFO()) {
    const sock = await openFifoSocket(field, path, O_RDWR | O_NONBLOCK, { readable: false, writable: true });
    return new SocketSink(sock, `${field} fifo ${path}`, log);
  }
  if (st.isFile()) {
    let fh;
    try {
      fh = await fs.promises.open(path, O_WRONLY | O_APPEND);
    } catch (err) {
      throw fsError(field, `file ${path}`, err);
    }
    return new FileSink(fh, `${field} file ${path}`, log);
  }
  throw new InvalidArgumentError(`${field}: ${path} is not a fifo or a regular file`);
}

/** The stdin FIFO, opened O_RDWR|O_NONBLOCK (never EOF by itself: see above), as a readable socket. */
export async function openStdinFifo(path: string): Promise<net.Socket> {
  const st = await statPath('stdin', path);
  if (!st.isFIFO()) throw new InvalidArgumentError(`stdin: ${path} is not a fifo`);
  return openFifoSocket('stdin', path, O_RDWR | O_NONBLOCK, { readable: true, writable: false });
}

async function statPath(field: StdioField, path: string): Promise<fs.Stats> {
  try {
    return await fs.promises.stat(path);
  } catch (err) {
    throw fsError(field, `fifo ${path}`, err);
  }
}

async function openFifoSocket(field: StdioField, path: string, flags: number,
  mode: { readable: boolean; writable: boolean }): Promise<net.Socket> {
  let fd: number;
  try {
    fd = await open(path, flags);
  } catch (err) {
    throw fsError(field, `fifo ${path}`, err);
  }
  try {
    // The path may have been replaced between stat and open: check the fd.
    if (!(await fstat(fd)).isFIFO()) throw new InvalidArgumentError(`${field}: ${path} is not a fifo`);
    return new net.Socket({ fd, ...mode });
  } catch (err) {
    await closeFd(fd).catch(() => {});
    throw err instanceof InvalidArgumentError ? err : fsError(field, `fifo ${path}`, err);
  }
}
