// One host uid per jailed QEMU (src/vm/uid-lease.ts): leases as O_EXCL files, never taken over, the range parsed.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Code, StatusError } from '../../src/errors/index.js';
import { leaseUid, parseUidRange, releaseUid, type UidRange } from '../../src/vm/uid-lease.js';

const root = mkdtempSync(join(tmpdir(), 'kata-uid-lease-'));
after(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
/** A fresh lease dir (not created: leaseUid makes it) and a VM dir that exists. */
function fresh(): { dir: string; vmDir: (name: string) => string } {
  const base = join(root, `case-${++n}`);
  mkdirSync(base);
  return {
    dir: join(base, '.uids'),
    vmDir: (name: string) => {
      const d = join(base, name);
      mkdirSync(d, { recursive: true });
      return d;
    },
  };
}

function hasCode(code: Code) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof StatusError, String(err));
    assert.equal(Code[err.code], Code[code]);
    return true;
  };
}

function lease(dir: string, uid: number): unknown {
  return JSON.parse(readFileSync(join(dir, String(uid)), 'utf8'));
}

const RANGE: UidRange = { first: 200000, last: 200015 };

test('leaseUid: two sandboxes get two different uids in the range; each lease file names its VM', async () => {
  const { dir, vmDir } = fresh();
  const a = await leaseUid({ dir, range: RANGE, sandboxId: 'sb-a', vmDir: vmDir('a') });
  const b = await leaseUid({ dir, range: RANGE, sandboxId: 'sb-b', vmDir: vmDir('b') });
  assert.notEqual(a, b);
  for (const uid of [a, b]) assert.ok(Number.isInteger(uid) && uid >= RANGE.first && uid <= RANGE.last, `uid ${uid} outside the range`);
  assert.deepEqual(lease(dir, a), { sandboxId: 'sb-a', vmDir: vmDir('a') });
  assert.deepEqual(lease(dir, b), { sandboxId: 'sb-b', vmDir: vmDir('b') });
  assert.deepEqual(readdirSync(dir).sort(), [String(a), String(b)].sort());
  assert.equal(statSync(join(dir, String(a))).mode & 0o777, 0o600);
  assert.equal(statSync(dir).mode & 0o777, 0o700);
});

test('leaseUid: every uid of a range leased, in parallel too, no uid twice', async () => {
  const { dir, vmDir } = fresh();
  const range = { first: 300000, last: 300007 };
  const uids = await Promise.all(Array.from({ length: 8 }, (_, i) => leaseUid({ dir, range, sandboxId: `sb-${i}`, vmDir: vmDir(`vm-${i}`) })));
  assert.deepEqual([...uids].sort((x, y) => x - y), [300000, 300001, 300002, 300003, 300004, 300005, 300006, 300007]);
  await assert.rejects(leaseUid({ dir, range, sandboxId: 'sb-9', vmDir: vmDir('vm-9') }), hasCode(Code.RESOURCE_EXHAUSTED));
});

test('leaseUid: a range of one uid leased twice is RESOURCE_EXHAUSTED; a lease whose VM dir exists is not taken over', async () => {
  const { dir, vmDir } = fresh();
  const one = { first: 400000, last: 400000 };
  assert.equal(await leaseUid({ dir, range: one, sandboxId: 'first', vmDir: vmDir('first') }), 400000);
  await assert.rejects(leaseUid({ dir, range: one, sandboxId: 'second', vmDir: vmDir('second') }), (err: unknown) =>
    hasCode(Code.RESOURCE_EXHAUSTED)(err) && /400000-400000/.test((err as Error).message));
  assert.deepEqual(lease(dir, 400000), { sandboxId: 'first', vmDir: vmDir('first') }, 'the live lease is untouched');
});

test('leaseUid: a lease is never taken over, even when its VM dir is gone (two QEMUs must never share a uid)', async () => {
  const { dir, vmDir } = fresh();
  const two = { first: 410000, last: 410001 };
  const gone = vmDir('gone');
  const first = await leaseUid({ dir, range: two, sandboxId: 'crashed', vmDir: gone });
  rmSync(gone, { recursive: true });
  const next = await leaseUid({ dir, range: two, sandboxId: 'next', vmDir: vmDir('next') });
  assert.notEqual(next, first, 'the next VM gets the other uid');
  assert.deepEqual(lease(dir, first), { sandboxId: 'crashed', vmDir: gone }, 'the left lease stays as it was');
  await assert.rejects(leaseUid({ dir, range: two, sandboxId: 'third', vmDir: vmDir('third') }), hasCode(Code.RESOURCE_EXHAUSTED));
});

test('leaseUid: an unreadable lease file is left alone (not taken over)', async () => {
  const { dir, vmDir } = fresh();
  mkdirSync(dir);
  writeFileSync(join(dir, '420000'), 'not json');
  await assert.rejects(leaseUid({ dir, range: { first: 420000, last: 420000 }, sandboxId: 's', vmDir: vmDir('s') }), hasCode(Code.RESOURCE_EXHAUSTED));
  assert.equal(readFileSync(join(dir, '420000'), 'utf8'), 'not json');
});

test('releaseUid: another sandbox\'s lease stays; the owner\'s goes; the last one out removes the dir; idempotent', async () => {
  const { dir, vmDir } = fresh();
  const a = await leaseUid({ dir, range: RANGE, sandboxId: 'sb-a', vmDir: vmDir('a') });
  const b = await leaseUid({ dir, range: RANGE, sandboxId: 'sb-b', vmDir: vmDir('b') });

  await releaseUid(dir, a, 'sb-b');
  assert.deepEqual(lease(dir, a), { sandboxId: 'sb-a', vmDir: vmDir('a') }, 'sb-b cannot give back sb-a\'s uid');

  await releaseUid(dir, a, 'sb-a');
  assert.equal(existsSync(join(dir, String(a))), false);
  assert.ok(existsSync(dir), 'the dir stays while sb-b holds a lease');
  assert.deepEqual(readdirSync(dir), [String(b)]);

  await releaseUid(dir, b, 'sb-b');
  assert.equal(existsSync(dir), false, 'the last release removes the lease dir');
  await releaseUid(dir, b, 'sb-b'); // again: nothing there, no error

  // The next lease makes the dir again.
  const c = await leaseUid({ dir, range: RANGE, sandboxId: 'sb-c', vmDir: vmDir('c') });
  assert.deepEqual(lease(dir, c), { sandboxId: 'sb-c', vmDir: vmDir('c') });
});

test('parseUidRange: "first-last" within 1000-2147483647', () => {
  assert.deepEqual(parseUidRange('1879048192-1879113727', 'rootless_uids'), { first: 1879048192, last: 1879113727 });
  assert.deepEqual(parseUidRange(' 1000-1000\n', 'rootless_uids'), { first: 1000, last: 1000 });
  assert.deepEqual(parseUidRange('1000-2147483647', 'rootless_uids'), { first: 1000, last: 2147483647 });
});

test('parseUidRange: bad ranges are refused naming the field', () => {
  for (const text of ['5-3', 'abc', '0-10', '10-2147483648', '3000-2000', '999-2000', '1000', '1000-', '-1000-2000', '1000 - 2000', '']) {
    assert.throws(() => parseUidRange(text, '[hypervisor.qemu] rootless_uids'), (err: unknown) => {
      hasCode(Code.INVALID_ARGUMENT)(err);
      const msg = (err as Error).message;
      assert.ok(msg.startsWith('[hypervisor.qemu] rootless_uids: '), `${JSON.stringify(text)}: ${msg}`);
      assert.ok(msg.includes(JSON.stringify(text)), `${msg} does not quote ${JSON.stringify(text)}`);
      return true;
    }, text);
  }
});
