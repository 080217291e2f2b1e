/**
 * Where the agent listens for the host. Three transports, one contract: each
 * host connection becomes a ChannelConnection (handshake done, see
 * channel.ts) handed to `serve` — a fresh TtrpcServer.serve() per host
 * connection.
 *
 * - serial: a virtio-serial port (the VM's agent channel; see
 *   serial-port-stream.ts).
 * - unix: a unix socket (the host tests run the agent on the host).
 * - vsock: Node has no AF_VSOCK; `socat VSOCK-LISTEN:<port> STDIO` accepts
 *   one connection at a time and relays it over pipes. Kept behind the same
 *   interface; untestable here (no /dev/vhost-vsock).
 */
import net from 'node:net';
import { spawn } from 'node:child_process';
import { unlink } from 'node:fs/promises';
import type { Logger } from '../log/index.js';
import { ChannelSession, type ChannelConnection } from './channel.js';
import { SerialPort, findPortDevice, openPort } from './serial-port-stream.js';

export type TransportConfig =
  | { kind: 'serial'; portName: string }
  | { kind: 'unix'; path: string }
  | { kind: 'vsock'; port: number; socat?: string };

export interface Transport {
  close(): Promise<void>;
}

export type ServeFn = (conn: ChannelConnection) => void;

export async function startTransport(cfg: TransportConfig, serve: ServeFn, logger: Logger): Promise<Transport> {
  switch (cfg.kind) {
    case 'serial':
      return startSerial(cfg.portName, serve, logger);
    case 'unix':
      return startUnix(cfg.path, serve, logger);
    case 'vsock':
      return startVsock(cfg.port, cfg.socat ?? 'socat', serve, logger);
  }
}

async function startSerial(portName: string, serve: ServeFn, logger: Logger): Promise<Transport> {
  // The port may appear a little after the agent starts (module loading).
  let device: string | undefined;
  for (let i = 0; i < 100 && !device; i++) {
    device = await findPortDevice(portName);
    if (!device) await new Promise((r) => setTimeout(r, 50));
  }
  if (!device) throw new Error(`virtio-serial port ${portName} not found under /sys/class/virtio-ports`);
  const port = new SerialPort(await openPort(device), { logger });
  port.on('connection', serve);
  port.start();
  logger.info({ device, portName }, 'serving on virtio-serial port');
  return { close: () => port.close() };
}

/** Runs a ChannelSession over a socket-like pair of streams. */
function sessionOver(input: NodeJS.ReadableStream & { pause(): unknown; resume(): unknown }, output: NodeJS.WritableStream, serve: ServeFn): ChannelSession {
  const session = new ChannelSession((conn, data) => new Promise((resolve) => {
    if (conn !== session.connection) {
      resolve(); // stale: its connection ended
      return;
    }
    output.write(data, () => resolve());
  }));
  session.on('connection', serve);
  input.on('data', (chunk: Buffer) => {
    if (!session.input(chunk)) {
      input.pause();
      void session.whenReady().then(() => input.resume());
    }
  });
  input.on('end', () => session.hostGone());
  input.on('close', () => session.hostGone());
  input.on('error', () => session.hostGone());
  return session;
}

async function startUnix(path: string, serve: ServeFn, logger: Logger): Promise<Transport> {
  await unlink(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('error', () => {});
    sock.on('close', () => sockets.delete(sock));
    const session: ChannelSession = sessionOver(sock, sock, (conn) => {
      // The socket lives as long as its connection, unless a new HELLO on
      // the same socket replaced that connection.
      conn.on('close', () => {
        if (!session.connection) sock.destroy();
      });
      serve(conn);
    });
    sock.on('close', () => session.hostGone());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => logger.error({ err }, 'listener error'));
  logger.info({ path }, 'serving on unix socket');
  return {
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      await unlink(path).catch(() => {});
    },
  };
}

async function startVsock(port: number, socat: string, serve: ServeFn, logger: Logger): Promise<Transport> {
  let closed = false;
  let child: ReturnType<typeof spawn> | undefined;
  const runOne = () => {
    if (closed) return;
    // One host connection per socat; a new one is started when it ends.
    child = spawn(socat, ['-b', '65536', `VSOCK-LISTEN:${port},reuseaddr`, 'STDIO'], { stdio: ['pipe', 'pipe', 'inherit'] });
    const c = child;
    c.on('error', (err) => {
      logger.error({ err, socat }, 'cannot run socat for vsock');
    });
    const session = sessionOver(c.stdout!, c.stdin!, serve);
    c.stdin!.on('error', () => {});
    c.on('exit', () => {
      session.hostGone();
      if (!closed) setTimeout(runOne, 100);
    });
  };
  runOne();
  logger.info({ port }, 'serving on vsock (through socat)');
  return {
    close: async () => {
      closed = true;
      child?.kill('SIGTERM');
    },
  };
}
