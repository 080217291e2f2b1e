// What a jailed QEMU's argv and state carry: `-sandbox` (src/vm/qemu-args.ts), a tap given as a
// descriptor (src/vm/devices/tap-net.ts), and the `jail` field of the VM's state (src/vm/state.ts).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Code, StatusError } from '../../src/errors/index.js';
import type { DeviceConfig } from '../../src/vm/devices/index.js';
import { DEFAULT_SECCOMP_SANDBOX, FIRST_TAP_FD } from '../../src/vm/jail.js';
import { buildQemuArgs, type QemuConfig } from '../../src/vm/qemu-args.js';
import { parseVmState, VM_STATE_VERSION } from '../../src/vm/state.js';
import { flagValues } from '../harness/argv.js';
import { BASE_QEMU_CONFIG, throwsNaming } from '../harness/vm-config.js';

const BASE: QemuConfig = BASE_QEMU_CONFIG;

// ---------------------------------------------------------------------------
// -sandbox

test('seccompSandbox: -sandbox <value> comes first, before -name and -machine; the rest of argv is unchanged', () => {
  const plain = buildQemuArgs(BASE);
  const args = buildQemuArgs({ ...BASE, seccompSandbox: DEFAULT_SECCOMP_SANDBOX });
  assert.deepEqual(args.slice(0, 2), ['-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny']);
  assert.deepEqual(args.slice(2), plain);
  const named = buildQemuArgs({ ...BASE, name: 'sandbox-s1', seccompSandbox: 'on' });
  assert.deepEqual(named.slice(0, 4), ['-sandbox', 'on', '-name', 'sandbox-s1,debug-threads=on']);
  assert.deepEqual(flagValues(named, '-sandbox'), ['on'], 'exactly one -sandbox');
});

test('seccompSandbox: absent, no -sandbox', () => {
  assert.ok(!buildQemuArgs(BASE).includes('-sandbox'));
  assert.equal(buildQemuArgs(BASE)[0], '-machine');
});

test('seccompSandbox: every allow/deny/children feature list passes', () => {
  for (const v of ['on', 'on,spawn=deny', 'on,obsolete=allow,spawn=children', DEFAULT_SECCOMP_SANDBOX]) {
    assert.deepEqual(flagValues(buildQemuArgs({ ...BASE, seccompSandbox: v }), '-sandbox'), [v]);
  }
});

test('seccompSandbox: anything else is refused naming seccompSandbox', () => {
  for (const v of ['off;rm', 'on,spawn=maybe', 'off', '', 'on,', 'on,spawn=deny,', 'on,spawn=deny -append x', 'on,Spawn=deny', ' on', 'on\n']) {
    throwsNaming(() => buildQemuArgs({ ...BASE, seccompSandbox: v }), 'seccompSandbox');
  }
});

// ---------------------------------------------------------------------------
// tap-net with an inherited descriptor

const TAP_FD: DeviceConfig = { kind: 'tap-net', id: 'net0', ifname: 'tap0_kata', fd: FIRST_TAP_FD, mac: '52:54:00:AA:bb:01' };

test('tap-net fd: -netdev tap,id=net0,fd=10 (no ifname, no scripts); the NIC is unchanged', () => {
  assert.equal(FIRST_TAP_FD, 10);
  const args = buildQemuArgs({ ...BASE, devices: [TAP_FD] });
  assert.deepEqual(flagValues(args, '-netdev'), ['tap,id=net0,fd=10']);
  assert.deepEqual(flagValues(args, '-device'), ['virtio-net-device,netdev=net0,mac=52:54:00:aa:bb:01']);
  // The same tap by name: what the fd replaces.
  const byName = buildQemuArgs({ ...BASE, devices: [{ kind: 'tap-net', id: 'net0', ifname: 'tap0_kata', mac: '52:54:00:AA:bb:01' }] });
  assert.deepEqual(flagValues(byName, '-netdev'), ['tap,id=net0,ifname=tap0_kata,script=no,downscript=no']);
  assert.deepEqual(flagValues(byName, '-device'), flagValues(args, '-device'));
});

test('tap-net fd: vhost and a second tap', () => {
  const args = buildQemuArgs({
    ...BASE,
    machine: 'q35',
    devices: [
      { kind: 'tap-net', id: 'net0', ifname: 'tap0_kata', fd: 10, vhost: true },
      { kind: 'tap-net', id: 'net1', ifname: 'tap1_kata', fd: 11, mtu: 1450 },
    ],
  });
  assert.deepEqual(flagValues(args, '-netdev'), ['tap,id=net0,fd=10,vhost=on', 'tap,id=net1,fd=11']);
  assert.deepEqual(flagValues(args, '-device'), ['virtio-net-pci,netdev=net0', 'virtio-net-pci,netdev=net1,host_mtu=1450']);
});

test('tap-net fd: without ifname, or outside 3-1023, or not an integer, refused naming the fd', () => {
  throwsNaming(() => buildQemuArgs({ ...BASE, devices: [{ kind: 'tap-net', id: 'net0', fd: 10 }] }), 'devices[0].fd');
  for (const fd of [2, 0, -1, 1024, 10.5, Number.NaN]) {
    throwsNaming(() => buildQemuArgs({ ...BASE, devices: [{ kind: 'tap-net', id: 'net0', ifname: 'tap0', fd }] }), 'devices[0].fd');
  }
  throwsNaming(() => buildQemuArgs({ ...BASE, devices: [{ kind: 'tap-net', id: 'net0', ifname: 'tap0', fd: '10' as unknown as number }] }), 'devices[0].fd');
  // The bounds themselves pass.
  assert.deepEqual(flagValues(buildQemuArgs({ ...BASE, devices: [{ kind: 'tap-net', id: 'n', ifname: 't', fd: 3 }] }), '-netdev'), ['tap,id=n,fd=3']);
  assert.deepEqual(flagValues(buildQemuArgs({ ...BASE, devices: [{ kind: 'tap-net', id: 'n', ifname: 't', fd: 1023 }] }), '-netdev'), ['tap,id=n,fd=1023']);
});

// ---------------------------------------------------------------------------
// the state record's jail

const GOOD = {
  version: VM_STATE_VERSION, sandboxId: 's', dir: '/run/x/s', ownsDir: true, files: ['qmp.sock'],
  machine: 'microvm', accel: 'tcg', qmpSocket: '/run/x/s/qemu/qmp.sock', consoleLog: '/run/x/s/qemu/console.log',
  qemuLog: '/run/x/s/qemu.log', agent: { transport: 'vsock', guestCid: 3 }, mounts: [], createdAt: '2026-01-01T00:00:00Z',
  qemu: { pid: 10, startTime: 5, binary: '/opt/kata/bin/qemu-system-x86_64' },
};
const JAIL = { uid: 1879048200, gid: 1879048200, leaseDir: '/run/kata-ts/.uids' };

test('parseVmState: a jail with uid, gid and leaseDir is accepted and kept', () => {
  const st = parseVmState(JSON.parse(JSON.stringify({ ...GOOD, jail: JAIL })));
  assert.deepEqual(st.jail, JAIL);
  assert.equal(parseVmState({ ...GOOD }).jail, undefined, 'a record without jail is still valid');
});

test('parseVmState: a jail without a usable uid, gid or leaseDir is refused naming jail', () => {
  const { leaseDir: _omit, ...noLeaseDir } = JAIL;
  const bad: unknown[] = [
    { ...JAIL, uid: 0 },
    { ...JAIL, gid: 0 },
    { ...JAIL, uid: -5 },
    { ...JAIL, uid: 1.5 },
    { ...JAIL, uid: '1879048200' },
    { gid: 1879048200, leaseDir: '/run/kata-ts/.uids' },
    noLeaseDir,
    { ...JAIL, leaseDir: '' },
    { ...JAIL, leaseDir: 7 },
    null,
    'jail',
  ];
  for (const jail of bad) {
    assert.throws(() => parseVmState({ ...GOOD, jail }), (err: unknown) => {
      assert.ok(err instanceof StatusError, String(err));
      assert.equal(Code[err.code], Code[Code.INVALID_ARGUMENT]);
      assert.match(err.message, /^vm state: jail: /, JSON.stringify(jail));
      return true;
    }, JSON.stringify(jail));
  }
});
