// What makes a VM restored from a template its own, guest side
// (src/agent/clone-identity.ts): the input checks (INVALID_ARGUMENT naming
// the field), and CloneIdentity running its helper — absent (FAILED_PRECONDITION),
// a fake helper (a shell script recording its argv and stdin), a failing one
// (its stderr in the error) and a hanging one (DEADLINE_EXCEEDED).
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { expectCode } from '../harness/status.js';
import { Code, StatusError } from '../../src/errors/index.js';
import { checkDateTime, checkMachineId, checkSeed, CloneIdentity } from '../../src/agent/clone-identity.js';

const dir = mkdtempSync(join(tmpdir(), 'clone-id-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function invalidField(fn: () => unknown, field: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof StatusError, String(err));
    assert.equal(Code[err.code], Code[Code.INVALID_ARGUMENT]);
    assert.ok(err.message.startsWith(`${field}: `), `${JSON.stringify(err.message)} does not name ${field}`);
    return true;
  });
}

const rejectsWith = expectCode;

/** An executable shell script in the temp dir. */
let n = 0;
function script(body: string): string {
  const p = join(dir, `helper-${++n}.sh`);
  writeFileSync(p, `#!/bin/sh\n${body}\n`);
  chmodSync(p, 0o755);
  return p;
}

/** A helper that records one line per argument and its stdin, then exits 0. */
function recordingHelper(): { path: string; args: () => string[]; stdin: () => Buffer; ran: () => boolean } {
  const out = join(dir, `rec-${n + 1}`);
  const path = script(`printf '%s\\n' "$@" > '${out}.args'\ncat > '${out}.stdin'\nexit 0`);
  return {
    path,
    args: () => readFileSync(`${out}.args`, 'utf8').split('\n').slice(0, -1),
    stdin: () => readFileSync(`${out}.stdin`),
    ran: () => existsSync(`${out}.args`),
  };
}

test('checkSeed: 16-512 bytes', () => {
  for (const len of [16, 64, 512]) assert.equal(checkSeed(new Uint8Array(len)).length, len);
  for (const len of [0, 15, 513, 4096]) invalidField(() => checkSeed(new Uint8Array(len)), 'data');
});

test('checkDateTime: a non-negative integer second, 0-999999 µs', () => {
  assert.deepEqual(checkDateTime(0, 0), { sec: 0, usec: 0 });
  assert.deepEqual(checkDateTime(1_700_000_000, 999_999), { sec: 1_700_000_000, usec: 999_999 });
  for (const sec of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53]) invalidField(() => checkDateTime(sec, 0), 'sec');
  for (const usec of [-1, 1_000_000, 0.5, Number.NaN]) invalidField(() => checkDateTime(1, usec), 'usec');
});

test('checkMachineId: 32 lowercase hex digits', () => {
  const ok = '0123456789abcdef0123456789abcdef';
  assert.equal(checkMachineId(ok), ok);
  for (const bad of ['', ok.slice(1), `${ok}0`, ok.toUpperCase(), `${ok.slice(0, 31)}g`, `${ok}\n`, `-${ok.slice(1)}`]) {
    invalidField(() => checkMachineId(bad), 'machine_id');
  }
});

test('no helper in the image: FAILED_PRECONDITION, for both reseed and settime', async () => {
  const ci = new CloneIdentity(undefined);
  await rejectsWith(ci.reseed(new Uint8Array(32)), Code.FAILED_PRECONDITION, /sys-helper is not in the guest image/);
  await rejectsWith(ci.setTime(1_700_000_000, 5), Code.FAILED_PRECONDITION, /sys-helper is not in the guest image/);
});

test('reseed: the helper runs with ["reseed"] and gets exactly the seed bytes on stdin', async () => {
  const h = recordingHelper();
  const seed = new Uint8Array(64);
  for (let i = 0; i < seed.length; i++) seed[i] = (i * 37 + 1) & 0xff; // binary, with 0x00 and 0xff-ish bytes
  seed[10] = 0;
  seed[11] = 0x0a;
  await new CloneIdentity(h.path).reseed(seed);
  assert.deepEqual(h.args(), ['reseed']);
  assert.deepEqual([...h.stdin()], [...seed]);
});

test('setTime: the helper runs with ["settime", sec, usec] and an empty stdin', async () => {
  const h = recordingHelper();
  await new CloneIdentity(h.path).setTime(1_700_000_123, 456_789);
  assert.deepEqual(h.args(), ['settime', '1700000123', '456789']);
  assert.equal(h.stdin().length, 0);
});

test('bad input never runs the helper', async () => {
  const h = recordingHelper();
  const ci = new CloneIdentity(h.path);
  await assert.rejects(async () => ci.reseed(new Uint8Array(8)), (e: unknown) => e instanceof StatusError && e.code === Code.INVALID_ARGUMENT);
  await assert.rejects(async () => ci.setTime(1, 1_000_000), (e: unknown) => e instanceof StatusError && e.code === Code.INVALID_ARGUMENT);
  assert.equal(h.ran(), false);
});

test('a failing helper: INTERNAL carrying its stderr and the subcommand', async () => {
  const ci = new CloneIdentity(script(`cat > /dev/null\necho "RNDADDENTROPY: Operation not permitted" >&2\nexit 1`));
  const err = await rejectsWith(ci.reseed(new Uint8Array(16)), Code.INTERNAL, /^sys-helper reseed: RNDADDENTROPY: Operation not permitted$/);
  assert.ok(err.cause instanceof Error, 'the exec error is the cause');
  const quiet = new CloneIdentity(script('exit 3'));
  await rejectsWith(quiet.setTime(1, 2), Code.INTERNAL, /^sys-helper settime: .*(fail|code 3)/i);
});

test('a helper that does not exist: INTERNAL naming the subcommand', async () => {
  await rejectsWith(new CloneIdentity(join(dir, 'no-such-helper')).setTime(1, 2), Code.INTERNAL, /^sys-helper settime: .*ENOENT/);
});

test('a hanging helper is killed after the timeout: DEADLINE_EXCEEDED', async () => {
  const ci = new CloneIdentity(script('exec sleep 30'), 200);
  const t0 = Date.now();
  await rejectsWith(ci.setTime(1, 2), Code.DEADLINE_EXCEEDED, /^sys-helper settime: timed out after 200 ms$/);
  assert.ok(Date.now() - t0 < 10_000);
});
