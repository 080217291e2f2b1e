/**
 * The agent's end of a virtio-serial port as a series of host connections.
 *
 * Node cannot poll a virtio-serial character device (`net.Socket({ fd })`
 * fails with ERR_INVALID_FD_TYPE), so the port is one fd opened 'r+' for the
 * agent's whole life, read by a loop of blocking fs.read calls (each holds a
 * libuv pool thread: raise UV_THREADPOOL_SIZE) and written with fs.write.
 *
 * - A read returning 0 bytes means the host end is not connected: the loop
 *   ends the current connection (the ttrpc server aborts its calls; frame
 *   state goes with it), backs off a few ms and reads again.
 * - A HELLO starts a connection (see channel.ts); the ttrpc server gets a
 *   fresh Duplex for each, so no frame state crosses connections, while
 *   containers and pending exits live on in the Sandbox.
 * - Writes go through one FIFO, one fs.write at a time; writes of a
 *   connection that ended are dropped before they start. A write in progress
 *   when the host left blocks until a host connects and reaches it ahead of
 *   READY, where the host's handshake discards it.
 * - Backpressure: the loop stops reading while the ttrpc side is full.
 */
import { EventEmitter } from 'node:events';
import { close, open, read, write } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from '../log/index.js';
import { ChannelSession, type ChannelConnection } from './channel.js';

const readAsync = promisify(read);
const writeAsync = promisify(write);
const openAsync = promisify(open);
const closeAsync = promisify(close);

/** The port's I/O, injectable for tests. read() resolves 0 when the host is not connected. */
export interface PortIo {
  read(buf: Buffer): Promise<number>;
  write(buf: Buffer): Promise<number>;
  close(): Promise<void>;
}

/** PortIo over one fd (opened 'r+' by openPort). */
export function fdPortIo(fd: number): PortIo {
  return {
    read: (buf) => readAsync(fd, buf, 0, buf.length, null).then((r) => r.bytesRead),
    write: (buf) => writeAsync(fd, buf, 0, buf.length, null).then((r) => r.bytesWritten),
    close: () => closeAsync(fd),
  };
}

/**
 * Finds the device of the virtio-serial port named `name` (without udev there
 * is no /dev/virtio-ports/<name> link): /sys/class/virtio-ports/<dev>/name.
 */
export async function findPortDevice(name: string, sysDir = '/sys/class/virtio-ports'): Promise<string | undefined> {
  let entries: string[];
  try {
    entries = await readdir(sysDir);
  } catch {
    return undefined;
  }
  for (const dev of entries.sort()) {
    const n = await readFile(join(sysDir, dev, 'name'), 'utf8').catch(() => '');
    if (n.trim() === name) return `/dev/${dev}`;
  }
  return undefined;
}

/** Opens a port device read-write for the agent's lifetime. */
export async function openPort(device: string): Promise<PortIo> {
  return fdPortIo(await openAsync(device, 'r+'));
}

export interface SerialPortOptions {
  logger: Logger;
  /** Read buffer size (the port hands reads over in pieces of at most 4 KiB anyway). */
  readSize?: number;
  /** Back-off after a 0-byte read: from min to max ms, doubling. */
  idleMinMs?: number;
  idleMaxMs?: number;
  /** Back-off after a read error. */
  errorDelayMs?: number;
}

export interface SerialPortEvents {
  connection: [ChannelConnection];
  /** The host end went away (a 0-byte read after a connection). */
  disconnect: [];
}

interface QueuedWrite {
  conn: ChannelConnection;
  data: Buffer;
  done(err?: Error): void;
}

export class SerialPort extends EventEmitter<SerialPortEvents> {
  private readonly session: ChannelSession;
  private readonly writes: QueuedWrite[] = [];
  private writing = false;
  private closed = false;
  private loop: Promise<void> | undefined;
  private hostConnected = false;
  private readonly logger: Logger;

  constructor(private readonly io: PortIo, private readonly opts: SerialPortOptions) {
    super();
    this.logger = opts.logger.child({ module: 'serial-port' });
    this.session = new ChannelSession((conn, data) => this.enqueueWrite(conn, data));
    this.session.on('connection', (conn) => {
      this.logger.info({ nonce: conn.nonce }, 'host connected');
      // Writes of earlier connections that have not started are stale.
      this.dropStaleWrites();
      this.emit('connection', conn);
    });
  }

  /** Starts the read loop. */
  start(): void {
    this.loop ??= this.readLoop();
  }

  /** Stops the loop after the read in progress (which may block until the host sends). */
  async close(): Promise<void> {
    this.closed = true;
    this.session.hostGone();
    await this.io.close().catch(() => {});
  }

  private async readLoop(): Promise<void> {
    const buf = Buffer.allocUnsafe(this.opts.readSize ?? 64 * 1024);
    const idleMin = this.opts.idleMinMs ?? 5;
    const idleMax = this.opts.idleMaxMs ?? 50;
    let idle = idleMin;
    while (!this.closed) {
      await this.session.whenReady();
      let n: number;
      try {
        n = await this.io.read(buf);
      } catch (err) {
        if (this.closed) break;
        this.logger.warn({ err }, 'serial port read failed');
        this.hostGone();
        await sleep(this.opts.errorDelayMs ?? 200);
        continue;
      }
      if (n === 0) {
        this.hostGone();
        await sleep(idle);
        idle = Math.min(idle * 2, idleMax);
        continue;
      }
      idle = idleMin;
      this.hostConnected = true;
      this.session.input(Buffer.from(buf.subarray(0, n)));
    }
  }

  private hostGone(): void {
    if (this.hostConnected) {
      this.hostConnected = false;
      this.logger.info('host disconnected');
      this.emit('disconnect');
    }
    this.session.hostGone();
    this.dropStaleWrites();
  }

  private enqueueWrite(conn: ChannelConnection, data: Buffer): Promise<void> {
    return new Promise((resolve) => {
      // A write failure ends the connection, not the agent: resolve anyway.
      this.writes.push({ conn, data, done: () => resolve() });
      void this.pumpWrites();
    });
  }

  private dropStaleWrites(): void {
    const live = this.session.connection;
    for (let i = this.writes.length - 1; i >= 0; i--) {
      const w = this.writes[i];
      if (w.conn !== live) {
        this.writes.splice(i, 1);
        w.done();
      }
    }
  }

  private async pumpWrites(): Promise<void> {
    if (this.writing) return;
    this.writing = true;
    try {
      for (let w = this.writes.shift(); w; w = this.writes.shift()) {
        if (w.conn !== this.session.connection) {
          w.done(); // its connection ended: stale
          continue;
        }
        try {
          let off = 0;
          while (off < w.data.length) off += await this.io.write(w.data.subarray(off));
        } catch (err) {
          this.logger.warn({ err }, 'serial port write failed');
          w.conn.destroy();
        }
        w.done();
      }
    } finally {
      this.writing = false;
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
