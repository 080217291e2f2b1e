// VM layer pieces that need no QEMU: the lifecycle table, option validation,
// the state record, process identity helpers, cancellation helpers, and the
// accelerator choice (with a fake QEMU binary).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { Code, StatusError } from '../../src/errors/index.js';
import { silentLogger } from '../../src/log/index.js';
import { abortError, deadline, settlesWithin, sleep, withDeadline } from '../../src/vm/abort.js';
import { chooseAccel, resetAccelCache } from '../../src/vm/accel.js';
import { identify, isAlive, signalIfSame, tailFile, terminate } from '../../src/vm/proc.js';
import { QemuVm, type QemuVmOptions } from '../../src/vm/qemu.js';
import { parseVmState, VM_STATE_VERSION } from '../../src/vm/state.js';
import { checkOp, opAllowed, type VmOp, type VmPhase } from '../../src/vm/vm.js';

function tmp(t: TestContext, prefix = 'vm-unit-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

function code(c: Code) {
  return (err: unknown): boolean => err instanceof StatusError && err.code === c;
}

// ---------------------------------------------------------------------------
// lifecycle table

const PHASES: VmPhase[] = ['created', 'starting', 'running', 'paused', 'stopping', 'stopped', 'exited'];
const OPS: VmOp[] = ['start', 'waitReady', 'pause', 'resume', 'stop'];
const LEGAL: Record<VmPhase, VmOp[]> = {
  created: ['start', 'stop'],
  starting: ['stop'],
  running: ['waitReady', 'pause', 'stop'],
  paused: ['resume', 'stop'],
  stopping: ['stop'],
  stopped: ['stop'],
  exited: ['stop'],
};

for (const phase of PHASES) {
  test(`lifecycle: ${phase}`, () => {
    for (const op of OPS) {
      const legal = LEGAL[phase].includes(op);
      assert.equal(opAllowed(phase, op), legal, `${op} in ${phase}`);
      if (legal) checkOp('s1', phase, op);
      else {
        assert.throws(() => checkOp('s1', phase, op), (err: unknown) => {
          assert.ok(code(Code.FAILED_PRECONDITION)(err));
          assert.equal((err as Error).message, `vm s1: cannot ${op} in ${phase} state`);
          return true;
        });
      }
    }
  });
}

// ---------------------------------------------------------------------------
// QemuVm options and phases without QEMU

function opts(dir: string, over: Partial<QemuVmOptions> = {}): QemuVmOptions {
  return {
    sandboxId: 'sb-1',
    dir,
    accel: 'tcg',
    vcpus: 1,
    memoryMiB: 128,
    kernel: '/nonexistent/vmlinux',
    logger: silentLogger(),
    ...over,
  };
}

test('QemuVm: invalid options fail in the constructor, naming the field', () => {
  const cases: Array<[Partial<QemuVmOptions>, string]> = [
    [{ sandboxId: 'a b' }, 'sandboxId'],
    [{ dir: 'relative' }, 'dir'],
    [{ vcpus: 0 }, 'vcpus'],
    [{ memoryMiB: 1 }, 'memoryMiB'],
    [{ kernel: 'vmlinux' }, 'kernel'],
    [{ machine: 'pc' as never }, 'machine'],
    [{ accel: 'hvf' as never }, 'accel'],
    [{ agent: { transport: 'vsock', guestCid: 1 } }, 'devices[0].guestCid'],
    [{ sharedFs: { sharedDir: 'rel' } }, 'sharedFs.sharedDir'],
    [{ sharedFs: { sharedDir: '/s', tag: 'x'.repeat(40) } }, 'devices[1].tag'],
    [{ dir: '/' + 'd'.repeat(100) }, 'qmpSocket'],
  ];
  for (const [over, field] of cases) {
    assert.throws(() => new QemuVm(opts('/run/x', over)), (err: unknown) => {
      assert.ok(code(Code.INVALID_ARGUMENT)(err), String(err));
      assert.ok((err as Error).message.startsWith(`${field}: `), (err as Error).message);
      return true;
    });
  }
});

test('QemuVm: state of a created VM round-trips; stop of a never-started VM; start after stop refused', async (t) => {
  const dir = join(tmp(t), 'sb');
  const vm = new QemuVm(opts(dir, { sharedFs: { sharedDir: '/srv/share' }, agent: { transport: 'virtio-serial', portName: 'agent.1' } }));
  assert.equal(vm.phase, 'created');
  assert.equal(vm.pid, undefined);
  assert.deepEqual(vm.agent, { transport: 'virtio-serial', socketPath: join(dir, 'agent.sock'), portName: 'agent.1' });
  const st = vm.state();
  assert.deepEqual(parseVmState(JSON.parse(JSON.stringify(st))), st);
  assert.equal(st.qemu, undefined);
  assert.ok(st.files.includes('virtiofsd.sock') && st.files.includes('agent.sock') && st.files.includes('vm.json'));
  await vm.stop();
  assert.equal(vm.phase, 'stopped');
  await assert.rejects(vm.start(), code(Code.FAILED_PRECONDITION));
  await assert.rejects(vm.pause(), (err: unknown) => code(Code.FAILED_PRECONDITION)(err) && /cannot pause in stopped state/.test((err as Error).message));
});

test('QemuVm: a missing kernel fails start() with the path, creating nothing', async (t) => {
  const root = tmp(t);
  const vm = new QemuVm(opts(join(root, 'sb'), { kernel: join(root, 'missing-vmlinux') }));
  await assert.rejects(vm.start(), (err: unknown) => code(Code.INVALID_ARGUMENT)(err) && (err as Error).message === `kernel: ${join(root, 'missing-vmlinux')}: no such file`);
  assert.equal(vm.phase, 'stopped');
  assert.throws(() => readFileSync(join(root, 'sb', 'vm.json')));
});

test('parseVmState: rejects records that could make cleanup act at random', () => {
  const good = {
    version: VM_STATE_VERSION, sandboxId: 's', dir: '/run/x/s', ownsDir: true, files: ['qmp.sock'],
    machine: 'microvm', accel: 'tcg', qmpSocket: '/run/x/s/qmp.sock', consoleLog: '/run/x/s/console.log',
    qemuLog: '/run/x/s/qemu.log', agent: { transport: 'vsock', guestCid: 3 }, mounts: [], createdAt: '2026-01-01T00:00:00Z',
    qemu: { pid: 10, startTime: 5, binary: 'qemu-system-x86_64' },
  };
  parseVmState(good);
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ ...good, version: 2 }, /^vm state: version:/],
    [{ ...good, dir: '/' }, /^vm state: dir:/],
    [{ ...good, dir: 'rel' }, /^vm state: dir:/],
    [{ ...good, ownsDir: 'yes' }, /^vm state: ownsDir:/],
    [{ ...good, qemu: { pid: -1, startTime: 5, binary: 'q' } }, /^vm state: qemu:/],
    [{ ...good, qemu: { pid: 10, startTime: 5 } }, /^vm state: qemu:/],
    [{ ...good, virtiofsd: { pid: 1, startTime: 1, socketPath: '/s' } }, /^vm state: virtiofsd\.sharedDir:/],
    [{ ...good, files: [1] }, /^vm state: files:/],
  ];
  for (const [rec, re] of bad) assert.throws(() => parseVmState(rec), (err: unknown) => code(Code.INVALID_ARGUMENT)(err) && re.test((err as Error).message));
});

// ---------------------------------------------------------------------------
// process identity

test('proc: identity, liveness, refusing a recycled pid, SIGTERM then SIGKILL', async (t) => {
  const me = identify(process.pid)!;
  assert.ok(me.startTime > 0);
  assert.equal(isAlive(me), true);
  assert.equal(isAlive({ pid: process.pid, startTime: me.startTime + 1 }), false);
  assert.equal(identify(0), undefined);

  const polite = spawn('sleep', ['30'], { stdio: 'ignore', detached: true });
  t.after(() => polite.kill('SIGKILL'));
  const stubborn = spawn('sh', ['-c', 'trap "" TERM; echo ready; while :; do sleep 1; done'], { stdio: ['ignore', 'pipe', 'ignore'], detached: true });
  t.after(() => {
    try {
      process.kill(-stubborn.pid!, 'SIGKILL');
    } catch {
      /* gone */
    }
  });
  await new Promise((r) => stubborn.stdout!.once('data', r));
  const p = identify(polite.pid!)!;
  const s = identify(stubborn.pid!)!;

  // a wrong start time is never signalled
  assert.equal(signalIfSame({ pid: p.pid, startTime: p.startTime - 1 }, 'SIGTERM'), false);
  assert.equal(isAlive(p), true);

  const exitedP = new Promise((r) => polite.once('exit', r));
  assert.equal(await terminate(p, { termTimeoutMs: 2000, killTimeoutMs: 2000, what: 'sleep', exited: exitedP }), 'sigterm');
  const exitedS = new Promise((r) => stubborn.once('exit', r));
  assert.equal(await terminate(s, { termTimeoutMs: 200, killTimeoutMs: 2000, group: true, what: 'sh', exited: exitedS }), 'sigkill');
  assert.equal(await terminate(s, { termTimeoutMs: 10, killTimeoutMs: 10, what: 'sh' }), 'gone');
});

test('proc: tailFile returns the last lines only', (t) => {
  const f = join(tmp(t), 'log');
  writeFileSync(f, Array.from({ length: 100 }, (_, i) => `line ${i}`).join('\n') + '\n');
  assert.equal(tailFile(f, 3), 'line 97\nline 98\nline 99');
  assert.equal(tailFile(f, 5, 12), 'line 99', 'a partial first line is dropped');
  assert.equal(tailFile(f, 5, 17), 'line 98\nline 99');
  assert.equal(tailFile(join(tmp(t), 'missing')), '');
});

// ---------------------------------------------------------------------------
// cancellation helpers

test('abort helpers: named timeouts, caller cancellation, settlesWithin', async () => {
  await assert.rejects(withDeadline('boot', 20, undefined, (s) => sleep(5000, s)), (err: unknown) => {
    assert.ok(code(Code.DEADLINE_EXCEEDED)(err));
    assert.equal((err as Error).message, 'boot: timed out after 20 ms');
    return true;
  });
  const ac = new AbortController();
  const p = withDeadline('connect', 5000, ac.signal, (s) => sleep(5000, s));
  ac.abort();
  await assert.rejects(p, (err: unknown) => code(Code.CANCELLED)(err) && /^connect: cancelled/.test((err as Error).message));
  // a non-abort failure keeps its own code
  await assert.rejects(withDeadline('x', 1000, undefined, async () => { throw new StatusError(Code.NOT_FOUND, 'nope'); }), code(Code.NOT_FOUND));
  assert.equal(await withDeadline('y', 1000, undefined, async () => 7), 7);
  const d = deadline(10_000, AbortSignal.timeout(1));
  await new Promise((r) => d.signal.addEventListener('abort', r));
  assert.ok(code(Code.DEADLINE_EXCEEDED)(abortError(d.signal, 'z')));
  d.dispose();
  assert.equal(await settlesWithin(Promise.resolve(), 1000), true);
  assert.equal(await settlesWithin(new Promise(() => {}), 10), false);
});

// ---------------------------------------------------------------------------
// accelerator choice

test('accel: configured settings skip the probe; auto without a usable /dev/kvm or probe picks TCG', async (t) => {
  resetAccelCache();
  const log = silentLogger();
  assert.deepEqual(await chooseAccel({ setting: 'kvm', logger: log }), { accel: 'kvm', reason: 'configured', probed: false });
  assert.deepEqual(await chooseAccel({ setting: 'tcg', logger: log }), { accel: 'tcg', reason: 'configured', probed: false });
  const dir = tmp(t);
  const noKvm = await chooseAccel({ setting: 'auto', logger: log, probe: { kernel: '/k', initrd: '/i', kvmDevice: join(dir, 'kvm') } });
  assert.equal(noKvm.accel, 'tcg');
  assert.match(noKvm.reason, /^KVM unusable: .*kvm: ENOENT/);
  // A stand-in for /dev/kvm we can open read-write.
  const kvm = join(dir, 'fake-kvm');
  writeFileSync(kvm, '');
  const missing = await chooseAccel({ setting: 'auto', logger: log, probe: { kernel: join(dir, 'vmlinux'), initrd: '/i', kvmDevice: kvm } });
  assert.deepEqual(missing, { accel: 'tcg', reason: `KVM not probed: ${join(dir, 'vmlinux')} missing`, probed: false });
});

test('accel: auto boots the probe guest under KVM; QEMU\'s error becomes the reason; cached per process', async (t) => {
  resetAccelCache();
  const dir = tmp(t);
  const kvm = join(dir, 'fake-kvm');
  const kernel = join(dir, 'vmlinux');
  const initrd = join(dir, 'initrd');
  for (const f of [kvm, kernel, initrd]) writeFileSync(f, '');
  const calls = join(dir, 'calls');
  const fake = (name: string, body: string): string => {
    const p = join(dir, name);
    writeFileSync(p, `#!/bin/sh\necho "$*" >> ${calls}\n${body}\n`);
    chmodSync(p, 0o755);
    return p;
  };
  const failing = fake('qemu-fail', 'echo "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69" >&2\nexit 1');
  const log = silentLogger();
  const probe = { kernel, initrd, kvmDevice: kvm, qemuBinary: failing, timeoutMs: 5000 };
  const c = await chooseAccel({ setting: 'auto', logger: log, probe });
  assert.deepEqual(c, { accel: 'tcg', reason: 'KVM unusable: qemu exit code 1: qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69', probed: true });
  const args = readFileSync(calls, 'utf8');
  assert.match(args, /-accel kvm -cpu host/);
  assert.match(args, /-kernel .*vmlinux -initrd .*initrd/);
  await chooseAccel({ setting: 'auto', logger: log, probe });
  assert.equal(readFileSync(calls, 'utf8').trim().split('\n').length, 1, 'probed once per process');

  const booting = fake('qemu-ok', 'echo "Run /init as init process"\necho PROBE-MARK\nexit 0');
  const ok = await chooseAccel({ setting: 'auto', logger: log, probe: { ...probe, qemuBinary: booting, marker: 'PROBE-MARK' } });
  assert.equal(ok.accel, 'kvm');
  assert.match(ok.reason, /^KVM probe guest reached userspace in \d+ ms$/);
  const noMark = await chooseAccel({ setting: 'auto', logger: log, probe: { ...probe, qemuBinary: booting, marker: 'OTHER' } });
  assert.deepEqual([noMark.accel, noMark.reason], ['tcg', 'KVM unusable: probe guest exited without printing "OTHER"']);
  const panicking = fake('qemu-panic', 'echo "Kernel panic - not syncing: VFS: Unable to mount root fs"\nexit 0');
  const p = await chooseAccel({ setting: 'auto', logger: log, probe: { ...probe, qemuBinary: panicking } });
  assert.deepEqual([p.accel, p.reason], ['tcg', 'KVM unusable: probe guest panicked: Kernel panic - not syncing: VFS: Unable to mount root fs']);
  const hanging = fake('qemu-hang', 'exec sleep 30');
  const h = await chooseAccel({ setting: 'auto', logger: log, probe: { ...probe, qemuBinary: hanging, timeoutMs: 200 } });
  assert.deepEqual([h.accel, h.reason], ['tcg', 'KVM unusable: probe guest did not finish within 200 ms']);
});
