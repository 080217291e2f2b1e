// A template's migration stream through a unix socket into its state file (src/vm/migration-sink.ts).

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { listenForMigration } from '../../src/vm/migration-sink.js';

const root = mkdtempSync(join(tmpdir(), 'kata-migsink-'));
after(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
function paths(): { sock: string; out: string } {
  n++;
  return { sock: join(root, `mig-${n}.sock`), out: join(root, `state-${n}.bin`) };
}

/** Connects, writes `data` in a few chunks, ends, and waits for the socket to close. */
async function send(sock: string, data: Buffer): Promise<void> {
  const s = connect(sock);
  await new Promise<void>((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
  const step = Math.max(1, Math.ceil(data.length / 7));
  for (let i = 0; i < data.length; i += step) s.write(data.subarray(i, i + step));
  s.end();
  await new Promise<void>((resolve, reject) => {
    s.once('close', () => resolve());
    s.once('error', reject);
  });
}

test('listenForMigration: done resolves with the byte count; the file holds the bytes, mode 0600; close removes the socket', async () => {
  const { sock, out } = paths();
  const sink = await listenForMigration(sock, out);
  assert.ok(statSync(sock).isSocket(), 'listening on a unix socket');
  const data = randomBytes(1024 * 1024 + 123);
  await send(sock, data);
  assert.equal(await sink.done, data.length);
  assert.ok(readFileSync(out).equals(data), 'the file holds exactly the bytes sent');
  assert.equal(statSync(out).mode & 0o777, 0o600);
  await sink.close();
  assert.equal(existsSync(sock), false);
  await sink.close(); // idempotent
});

test('listenForMigration: close() before any connection removes the socket', async () => {
  const { sock, out } = paths();
  const sink = await listenForMigration(sock, out);
  assert.ok(existsSync(sock));
  await sink.close();
  assert.equal(existsSync(sock), false);
  assert.equal(existsSync(out), false, 'no connection, no file');
  await assert.rejects(new Promise<void>((resolve, reject) => {
    const s = connect(sock);
    s.once('connect', () => {
      s.destroy();
      resolve();
    });
    s.once('error', reject);
  }), 'nothing listens any more');
});

test('listenForMigration: an empty stream gives 0 bytes and an empty 0600 file', async () => {
  const { sock, out } = paths();
  const sink = await listenForMigration(sock, out);
  await send(sock, Buffer.alloc(0));
  assert.equal(await sink.done, 0);
  assert.equal(readFileSync(out).length, 0);
  assert.equal(statSync(out).mode & 0o777, 0o600);
  await sink.close();
});

test('listenForMigration: a leftover file at the socket path is replaced', async () => {
  const { sock, out } = paths();
  writeFileSync(sock, 'stale');
  const sink = await listenForMigration(sock, out);
  assert.ok(statSync(sock).isSocket());
  await send(sock, Buffer.from('QEVM state'));
  assert.equal(await sink.done, 10);
  assert.equal(readFileSync(out, 'utf8'), 'QEVM state');
  await sink.close();
});

test('listenForMigration: only the first connection is written; a later one gets nothing in', async () => {
  const { sock, out } = paths();
  const sink = await listenForMigration(sock, out);
  const first = connect(sock);
  await new Promise<void>((resolve, reject) => {
    first.once('connect', resolve);
    first.once('error', reject);
  });
  first.write('first ');
  // A second peer: refused (the server stopped listening) or cut off; its bytes never reach the file.
  const second: Socket = connect(sock);
  second.on('error', () => {});
  second.on('connect', () => second.write('SECOND'));
  await new Promise<void>((resolve) => second.once('close', () => resolve()));
  first.end('stream');
  assert.equal(await sink.done, 12);
  assert.equal(readFileSync(out, 'utf8'), 'first stream');
  await sink.close();
});

test('listenForMigration: owner given, the socket is chowned to it (a jailed QEMU connects as its own uid)', async (t) => {
  if (process.getuid?.() !== 0) {
    t.skip('chown to another uid needs root');
    return;
  }
  const { sock, out } = paths();
  const sink = await listenForMigration(sock, out, { uid: 1879048200, gid: 1879048201 });
  const st = statSync(sock);
  assert.equal(st.uid, 1879048200);
  assert.equal(st.gid, 1879048201);
  await sink.close();
});

test('listenForMigration: an output file that cannot be created rejects done with INTERNAL', async () => {
  const { sock } = paths();
  const sink = await listenForMigration(sock, join(root, 'no-such-dir', 'state.bin'));
  const s = connect(sock);
  s.on('error', () => {});
  s.on('connect', () => s.end('x'));
  await assert.rejects(sink.done, (err: unknown) => {
    assert.equal((err as Error).name, 'InternalError');
    assert.match((err as Error).message, /^migration stream to .*no-such-dir\/state\.bin: /);
    return true;
  });
  s.destroy();
  await sink.close();
});
