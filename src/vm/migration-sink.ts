/**
 * Where a template's saved state goes: QEMU migrates to a unix socket the
 * shim listens on (`migrate unix:<path>`) and the shim writes the stream to
 * the state file. Neither a shell (`exec:`, which QEMU's seccomp `spawn=deny`
 * forbids) nor a path QEMU could write outside its jail is involved.
 */
import { lchown, lstat, rm } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { pipeline } from 'node:stream/promises';
import { InternalError } from '../errors/index.js';

export interface MigrationSink {
  /** Resolves with the bytes written once QEMU closed the stream and the file is flushed. */
  done: Promise<number>;
  /** Stops listening and removes the socket (idempotent). */
  close(): Promise<void>;
}

/**
 * Listens on `socketPath` (owned by `owner` when given: a jailed QEMU must
 * be able to connect) and writes the first connection's bytes to `outFile`
 * (0600). Later connections are refused.
 */
export async function listenForMigration(socketPath: string, outFile: string, owner?: { uid: number; gid: number }): Promise<MigrationSink> {
  await rm(socketPath, { force: true });
  const server: Server = createServer();
  let settle!: { resolve: (n: number) => void; reject: (e: Error) => void };
  const done = new Promise<number>((resolve, reject) => (settle = { resolve, reject }));
  done.catch(() => {}); // the caller awaits it; a failure before that must not be unhandled
  let taken = false;
  server.on('connection', (sock: Socket) => {
    if (taken) {
      sock.destroy();
      return;
    }
    taken = true;
    server.close();
    const out = createWriteStream(outFile, { mode: 0o600 });
    pipeline(sock, out).then(
      () => settle.resolve(out.bytesWritten),
      (err: Error) => settle.reject(new InternalError(`migration stream to ${outFile}: ${err.message}`, { cause: err })),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  if (owner) {
    // The dir is the jailed uid's: never follow what might have replaced our socket there (lchown),
    // and hand over only the socket we bound.
    try {
      await lchown(socketPath, owner.uid, owner.gid);
      const st = await lstat(socketPath);
      if (!st.isSocket()) throw new InternalError(`migration socket ${socketPath} was replaced`);
    } catch (err) {
      server.close();
      throw err;
    }
  }
  let closed = false;
  return {
    done,
    close: async () => {
      if (closed) return;
      closed = true;
      server.close();
      await rm(socketPath, { force: true });
    },
  };
}
