// The agent's OnlineCPUMem (src/agent/cpu-mem.ts) against a fake sysfs tree in a temp dir.

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, test } from 'node:test';
import { Code, StatusError } from '../../src/errors/index.js';
import { checkOnlineRequest, onlineCpuMem } from '../../src/agent/cpu-mem.js';
import { MAX_VCPUS as MAX_CPUS } from '../../src/agent-protocol/limits.js';

let sys: string;

const cpuDir = (n: string) => join(sys, 'devices/system/cpu', n);
const memDir = (n: string) => join(sys, 'devices/system/memory', n);
const read = (path: string) => readFileSync(path, 'utf8');

function put(dir: string, file: string, value: string): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, file), value);
}

beforeEach(() => {
  sys = mkdtempSync(join(tmpdir(), 'kata-sysfs-'));
  mkdirSync(cpuDir('cpu0'), { recursive: true }); // the boot CPU: no online file
  put(cpuDir('cpu1'), 'online', '1\n');
  put(cpuDir('cpu2'), 'online', '0\n');
  // Not a CPU, though its name starts with "cpu": left alone.
  put(cpuDir('cpuidle'), 'online', '0\n');
  put(memDir('memory8'), 'state', 'offline\n');
  put(memDir('memory9'), 'state', 'online\n');
});

afterEach(() => {
  rmSync(sys, { recursive: true, force: true });
});

/** Asserts that `p` rejects with a StatusError of `code`; returns it. */
async function rejectsWith(p: Promise<unknown>, code: Code): Promise<StatusError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof StatusError, `expected a StatusError, got ${String(err)}`);
    assert.equal(Code[err.code], Code[code], err.message);
    return err;
  }
  assert.fail(`expected ${Code[code]}, got success`);
}

test('onlines offline CPUs and memory blocks, leaves online ones, returns the counts', async () => {
  const r = await onlineCpuMem({ cpus: 1, cpuOnly: false }, { sysRoot: sys, timeoutMs: 2_000 });
  assert.deepEqual(r, { cpus: 1, memoryBlocks: 1 });
  assert.equal(read(join(cpuDir('cpu2'), 'online')), '1');
  assert.equal(read(join(cpuDir('cpu1'), 'online')), '1\n', 'an online CPU is not written');
  assert.equal(read(join(cpuDir('cpuidle'), 'online')), '0\n', 'only cpu<N> dirs are CPUs');
  assert.equal(read(join(memDir('memory8'), 'state')), 'online');
  assert.equal(read(join(memDir('memory9'), 'state')), 'online\n', 'an online block is not written');
  // Nothing left to online: a second call with cpus 0 finds nothing and does not wait.
  assert.deepEqual(await onlineCpuMem({ cpus: 0, cpuOnly: false }, { sysRoot: sys, timeoutMs: 2_000 }), { cpus: 0, memoryBlocks: 0 });
});

test('cpus 0 onlines what is there at once', async () => {
  assert.deepEqual(await onlineCpuMem({ cpus: 0, cpuOnly: false }, { sysRoot: sys, timeoutMs: 2_000 }), { cpus: 1, memoryBlocks: 1 });
  assert.equal(read(join(cpuDir('cpu2'), 'online')), '1');
});

test('cpuOnly leaves memory alone', async () => {
  assert.deepEqual(await onlineCpuMem({ cpus: 1, cpuOnly: true }, { sysRoot: sys, timeoutMs: 2_000 }), { cpus: 1, memoryBlocks: 0 });
  assert.equal(read(join(cpuDir('cpu2'), 'online')), '1');
  assert.equal(read(join(memDir('memory8'), 'state')), 'offline\n');
});

test('waits for a hot-plugged CPU the kernel announces later', async () => {
  const t0 = Date.now();
  const timer = setTimeout(() => put(cpuDir('cpu3'), 'online', '0\n'), 100);
  try {
    const r = await onlineCpuMem({ cpus: 2, cpuOnly: false }, { sysRoot: sys, timeoutMs: 5_000 });
    assert.deepEqual(r, { cpus: 2, memoryBlocks: 1 });
    assert.ok(Date.now() - t0 >= 90, 'it answered before the CPU appeared');
    assert.equal(read(join(cpuDir('cpu2'), 'online')), '1');
    assert.equal(read(join(cpuDir('cpu3'), 'online')), '1');
  } finally {
    clearTimeout(timer);
  }
});

test('DEADLINE_EXCEEDED naming the counts when the CPUs never appear; memory is not touched then', async () => {
  const t0 = Date.now();
  const err = await rejectsWith(onlineCpuMem({ cpus: 3, cpuOnly: false }, { sysRoot: sys, timeoutMs: 150 }), Code.DEADLINE_EXCEEDED);
  assert.ok(Date.now() - t0 >= 140, 'gave up before its deadline');
  assert.match(err.message, /1 of 3/);
  assert.equal(read(join(cpuDir('cpu2'), 'online')), '1', 'the CPU that was there is onlined');
  assert.equal(read(join(memDir('memory8'), 'state')), 'offline\n');
});

test('no CPU directory at all: nothing onlined, the wait times out', async () => {
  rmSync(join(sys, 'devices/system/cpu'), { recursive: true });
  assert.deepEqual(await onlineCpuMem({ cpus: 0, cpuOnly: true }, { sysRoot: sys, timeoutMs: 100 }), { cpus: 0, memoryBlocks: 0 });
  await rejectsWith(onlineCpuMem({ cpus: 1, cpuOnly: true }, { sysRoot: sys, timeoutMs: 100 }), Code.DEADLINE_EXCEEDED);
});

test('an abort ends the wait', async () => {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), 50);
  try {
    await assert.rejects(onlineCpuMem({ cpus: 5, cpuOnly: false }, { sysRoot: sys, timeoutMs: 10_000, signal: ac.signal }), { name: 'AbortError' });
  } finally {
    clearTimeout(timer);
  }
});

test('checkOnlineRequest: nb_cpus an integer 0..MAX_CPUS', () => {
  assert.deepEqual(checkOnlineRequest(0, false), { cpus: 0, cpuOnly: false });
  assert.deepEqual(checkOnlineRequest(3, true), { cpus: 3, cpuOnly: true });
  assert.deepEqual(checkOnlineRequest(MAX_CPUS, false), { cpus: MAX_CPUS, cpuOnly: false });
  for (const bad of [-1, 1.5, 256, Number.NaN]) {
    assert.throws(() => checkOnlineRequest(bad, false), (err: unknown) => {
      assert.ok(err instanceof StatusError, String(err));
      assert.equal(Code[err.code], Code[Code.INVALID_ARGUMENT]);
      assert.match(err.message, /^nb_cpus: /);
      return true;
    }, `nb_cpus ${bad}`);
  }
});
