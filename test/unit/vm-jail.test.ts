// The jailed QEMU's command line (src/vm/jail.ts): which paths the jail binds, and kata-ts-jailer's argv.

import assert from 'node:assert/strict';
import { lstatSync } from 'node:fs';
import { test } from 'node:test';
import {
  binaryPaths, checkJailSettings, DEFAULT_SECCOMP_SANDBOX, FILE_CAPS, FIRST_TAP_FD, flattenBinds, jailedCommand, systemPaths, type JailPlan,
} from '../../src/vm/jail.js';
import { DEFAULT_UID_LEASE_DIR, DEFAULT_UID_RANGE } from '../../src/vm/uid-lease.js';
import { flagValues } from '../harness/argv.js';
import { resolveOnPath } from '../../src/vm/host.js';
import { throwsNaming } from '../harness/vm-config.js';

// ---------------------------------------------------------------------------
// flattenBinds

test('flattenBinds: disjoint paths are kept as given, in order', () => {
  assert.deepEqual(flattenBinds(['/usr', '/guest/vmlinux', '/guest/initrd.img'], ['/run/vc/sb/qemu', '/run/vc/tmpl/memory']), {
    readOnly: ['/usr', '/guest/vmlinux', '/guest/initrd.img'],
    readWrite: ['/run/vc/sb/qemu', '/run/vc/tmpl/memory'],
  });
  assert.deepEqual(flattenBinds([], []), { readOnly: [], readWrite: [] });
});

test('flattenBinds: a path under another of the same list is dropped (visible through its parent)', () => {
  assert.deepEqual(flattenBinds(['/usr/share/qemu/bios.bin', '/usr', '/usr/lib/x86_64-linux-gnu'], []).readOnly, ['/usr']);
  assert.deepEqual(flattenBinds([], ['/run/vc/sb/qemu/qmp.sock', '/run/vc/sb/qemu', '/run/vc/sb/qemu/console.log']).readWrite, ['/run/vc/sb/qemu']);
  // A prefix that is not a parent dir is not nesting: /usrx is not under /usr.
  assert.deepEqual(flattenBinds(['/usr', '/usrx', '/opt/kata/bin', '/opt/kata/binaries'], []).readOnly, ['/usr', '/usrx', '/opt/kata/bin', '/opt/kata/binaries']);
});

test('flattenBinds: duplicates are dropped, the first occurrence keeps its place', () => {
  assert.deepEqual(flattenBinds(['/usr', '/guest/vmlinux', '/usr', '/guest/vmlinux'], ['/run/a', '/run/b', '/run/a']), {
    readOnly: ['/usr', '/guest/vmlinux'],
    readWrite: ['/run/a', '/run/b'],
  });
});

test('flattenBinds: a read-only path that is also (or lies under) a writable one is bound writable only', () => {
  assert.deepEqual(flattenBinds(['/run/vc/sb/qemu', '/run/vc/sb/qemu/agent.sock', '/usr'], ['/run/vc/sb/qemu']), {
    readOnly: ['/usr'],
    readWrite: ['/run/vc/sb/qemu'],
  });
});

test('flattenBinds: a writable path under a read-only one is refused, naming both', () => {
  throwsNaming(() => flattenBinds(['/usr'], ['/usr/share/qemu/vars.fd']), 'jail', /\/usr\/share\/qemu\/vars\.fd must be writable/, /read-only \/usr\b/);
  throwsNaming(() => flattenBinds(['/guest'], ['/guest/template/memory']), 'jail', /\/guest\/template\/memory/, /read-only \/guest$/);
});

test('flattenBinds: a read-only parent of writable paths is refused, whatever the order and nesting of the writable ones', () => {
  // The writable list nests (one dropped under the other); the survivor still lies under the read-only parent.
  throwsNaming(() => flattenBinds(['/run/vc'], ['/run/vc/sb/qemu/qmp.sock', '/run/vc/sb/qemu']), 'jail', /\/run\/vc\/sb\/qemu must be writable/, /read-only \/run\/vc$/);
  // Read-only parent listed after unrelated paths.
  throwsNaming(() => flattenBinds(['/guest/vmlinux', '/usr', '/run'], ['/run/vc/tmpl/memory']), 'jail', /read-only \/run$/);
  // The whole file system read-only hides everything.
  throwsNaming(() => flattenBinds(['/'], ['/run/vc/sb/qemu']), 'jail', /read-only \/$/);
});

// ---------------------------------------------------------------------------
// binaryPaths, systemPaths

test('binaryPaths: a binary under /usr needs nothing more; one elsewhere needs its directory', () => {
  assert.deepEqual(binaryPaths('/usr/bin/qemu-system-x86_64'), []);
  assert.deepEqual(binaryPaths('/usr/local/bin/qemu-system-x86_64'), []);
  assert.deepEqual(binaryPaths('/opt/kata/bin/qemu'), ['/opt/kata/bin']);
  assert.deepEqual(binaryPaths('/usrlocal/qemu'), ['/usrlocal'], '/usrlocal is not under /usr');
});

test('systemPaths: /usr is bound first; /lib, /lib64, /bin, /sbin are symlinks or binds as this host has them', () => {
  const sys = systemPaths();
  assert.equal(sys.binds[0], '/usr');
  for (const p of ['/lib', '/lib64', '/bin', '/sbin']) {
    let st;
    try {
      st = lstatSync(p);
    } catch {
      st = undefined;
    }
    const link = sys.symlinks.find((s) => s.startsWith(`${p}=`));
    if (st?.isSymbolicLink()) {
      assert.ok(link !== undefined && link.length > p.length + 1, `${p} is a symlink on this host: ${JSON.stringify(sys.symlinks)}`);
      assert.ok(!sys.binds.includes(p));
    } else if (st?.isDirectory()) {
      assert.ok(sys.binds.includes(p), `${p} is a directory on this host: ${JSON.stringify(sys.binds)}`);
      assert.equal(link, undefined);
    } else {
      assert.ok(!sys.binds.includes(p) && link === undefined, `${p} is absent on this host`);
    }
  }
});

// ---------------------------------------------------------------------------
// jailedCommand

const PLAN: JailPlan = {
  uid: 1879048200,
  gid: 1879048201,
  root: '/run/vc/sb/root',
  readOnly: ['/guest/vmlinux', '/guest/initrd.img', '/usr/share/qemu/bios.bin'],
  readWrite: ['/run/vc/sb/qemu', '/run/vc/tmpl/memory'],
  devices: ['/dev/null', '/dev/zero', '/dev/urandom', '/dev/kvm'],
  keepCaps: FILE_CAPS,
  taps: [{ fd: FIRST_TAP_FD, ifname: 'tap0_kata' }, { fd: FIRST_TAP_FD + 1, ifname: 'tap1_kata' }],
  netns: '/var/run/netns/cni-1234',
  pdeathsig: true,
};

const QEMU_ARGS = ['-sandbox', DEFAULT_SECCOMP_SANDBOX, '-machine', 'q35', '-netdev', 'tap,id=net0,fd=10'];

test('jailedCommand: the whole argv for a full plan, the program and its args after --', () => {
  const sys = systemPaths();
  const { command, args } = jailedCommand('/usr/libexec/kata-ts/kata-ts-jailer', PLAN, '/opt/kata/bin/qemu-system-x86_64', QEMU_ARGS);
  assert.equal(command, '/usr/libexec/kata-ts/kata-ts-jailer');
  assert.deepEqual(args, [
    '--uid', '1879048200', '--gid', '1879048201',
    '--netns', '/var/run/netns/cni-1234',
    '--tap', '10:tap0_kata', '--tap', '11:tap1_kata',
    '--root', '/run/vc/sb/root',
    // the host's system dirs, QEMU's own dir (not under /usr), then the plan's files; bios.bin is under /usr
    ...[...sys.binds, '/opt/kata/bin', '/guest/vmlinux', '/guest/initrd.img'].flatMap((p) => ['--bind-ro', p]),
    '--bind', '/run/vc/sb/qemu', '--bind', '/run/vc/tmpl/memory',
    ...sys.symlinks.flatMap((s) => ['--symlink', s]),
    '--dev', '/dev/null', '--dev', '/dev/zero', '--dev', '/dev/urandom', '--dev', '/dev/kvm',
    '--keep-cap', 'chown', '--keep-cap', 'dac_override', '--keep-cap', 'fowner', '--keep-cap', 'fsetid',
    '--pdeathsig',
    '--', '/opt/kata/bin/qemu-system-x86_64', ...QEMU_ARGS,
  ]);
  // Whatever the host: /usr is always bound read-only, never writable.
  assert.ok(flagValues(args, '--bind-ro').includes('/usr'));
  assert.ok(!flagValues(args, '--bind').includes('/usr'));
});

test('jailedCommand: a minimal plan has no --netns, --tap, --keep-cap, --pdeathsig; QEMU under /usr adds no bind', () => {
  const plan: JailPlan = { ...PLAN, netns: undefined, taps: [], keepCaps: [], pdeathsig: false, readOnly: ['/guest/vmlinux'], readWrite: ['/run/vc/sb/qemu'], devices: ['/dev/null'] };
  delete plan.netns;
  const { args } = jailedCommand('/j', plan, '/usr/bin/qemu-system-x86_64', ['-name', 'x', '--', '--uid']);
  const sep = args.indexOf('--');
  const opts = args.slice(0, sep);
  for (const f of ['--netns', '--tap', '--keep-cap', '--pdeathsig', '--proc']) assert.ok(!opts.includes(f), `${f} in ${JSON.stringify(opts)}`);
  assert.deepEqual(opts.slice(0, 6), ['--uid', '1879048200', '--gid', '1879048201', '--root', '/run/vc/sb/root']);
  assert.deepEqual(flagValues(opts, '--bind-ro'), [...systemPaths().binds, '/guest/vmlinux']);
  assert.deepEqual(flagValues(opts, '--bind'), ['/run/vc/sb/qemu']);
  assert.deepEqual(flagValues(opts, '--dev'), ['/dev/null']);
  // Everything after the first `--` is the program's, in order, even flags that look like the jailer's.
  assert.deepEqual(args.slice(sep + 1), ['/usr/bin/qemu-system-x86_64', '-name', 'x', '--', '--uid']);
});

test('jailedCommand: netns given alone, pdeathsig alone', () => {
  const onlyNetns = jailedCommand('/j', { ...PLAN, taps: [], pdeathsig: false }, '/usr/bin/q', []).args;
  assert.deepEqual(flagValues(onlyNetns, '--netns'), ['/var/run/netns/cni-1234']);
  assert.ok(!onlyNetns.includes('--pdeathsig'));
  assert.deepEqual(onlyNetns.slice(-2), ['--', '/usr/bin/q']);
  const noNetns: JailPlan = { ...PLAN };
  delete noNetns.netns;
  const a = jailedCommand('/j', noNetns, '/usr/bin/q', []).args;
  assert.ok(!a.includes('--netns'));
  assert.deepEqual(flagValues(a, '--tap'), ['10:tap0_kata', '11:tap1_kata']);
  assert.equal(a[a.indexOf('--') - 1], '--pdeathsig');
});

test('jailedCommand: --proc only when the plan asks for it, after the devices and before the capabilities', () => {
  const withProc = jailedCommand('/j', { ...PLAN, proc: true }, '/usr/bin/q', []).args;
  assert.equal(withProc.filter((a) => a === '--proc').length, 1);
  const i = withProc.indexOf('--proc');
  assert.deepEqual(withProc.slice(i - 2, i + 3), ['--dev', '/dev/kvm', '--proc', '--keep-cap', 'chown']);
  assert.ok(!jailedCommand('/j', { ...PLAN, proc: false }, '/usr/bin/q', []).args.includes('--proc'));
  assert.ok(!jailedCommand('/j', PLAN, '/usr/bin/q', []).args.includes('--proc'));
});

test('jailedCommand: a writable path under a read-only one is refused', () => {
  throwsNaming(() => jailedCommand('/j', { ...PLAN, readWrite: ['/usr/share/qemu'] }, '/usr/bin/q', []), 'jail', /\/usr\/share\/qemu must be writable/);
  throwsNaming(() => jailedCommand('/j', { ...PLAN, readWrite: ['/opt/kata/bin/state'] }, '/opt/kata/bin/qemu', []), 'jail', /read-only \/opt\/kata\/bin$/);
});

// ---------------------------------------------------------------------------
// checkJailSettings

test('checkJailSettings: lease dir and uid range default', () => {
  assert.deepEqual(checkJailSettings({ jailer: '/usr/libexec/kata-ts/kata-ts-jailer' }, 'jail'), {
    jailer: '/usr/libexec/kata-ts/kata-ts-jailer',
    leaseDir: DEFAULT_UID_LEASE_DIR,
    uids: DEFAULT_UID_RANGE,
  });
  assert.equal(DEFAULT_UID_LEASE_DIR, '/run/kata-ts/.uids');
  assert.deepEqual(DEFAULT_UID_RANGE, { first: 1879048192, last: 1879113727 });
  const given = { jailer: '/j', leaseDir: '/tmp/leases', uids: { first: 5000, last: 5000 } };
  assert.deepEqual(checkJailSettings(given, 'jail'), given);
});

test('checkJailSettings: each bad setting is named under the given field', () => {
  throwsNaming(() => checkJailSettings({ jailer: 'kata-ts-jailer' }, 'jail'), 'jail.jailer', /"kata-ts-jailer"/);
  throwsNaming(() => checkJailSettings({ jailer: '' }, 'opts.jail'), 'opts.jail.jailer');
  throwsNaming(() => checkJailSettings({ jailer: '/j\n--uid 0' }, 'jail'), 'jail.jailer');
  throwsNaming(() => checkJailSettings({ jailer: '/j', leaseDir: 'run/uids' }, 'jail'), 'jail.leaseDir');
  throwsNaming(() => checkJailSettings({ jailer: '/j', uids: { first: 0, last: 10 } }, 'jail'), 'jail.uids');
  throwsNaming(() => checkJailSettings({ jailer: '/j', uids: { first: 10, last: 9 } }, 'jail'), 'jail.uids');
  throwsNaming(() => checkJailSettings({ jailer: '/j', uids: { first: 1.5, last: 9 } }, 'jail'), 'jail.uids');
});

test('jailedCommand: a sealed inherit is --inherit-sealed, kept descriptors are --keep-fd', () => {
  const plan: JailPlan = {
    uid: 1879048200, gid: 1879048200, root: '/run/p/root', readOnly: [], readWrite: [], devices: [], keepCaps: [], taps: [], pdeathsig: false,
    inherits: [{ fd: 4, path: '/proc/77/fd/3', sealed: true }, { fd: 5, path: '/x/file' }], keepFds: [3],
  };
  const { args } = jailedCommand('/j', plan, '/usr/bin/qemu', []);
  assert.deepEqual(flagValues(args, '--inherit-sealed'), ['4=/proc/77/fd/3']);
  assert.deepEqual(flagValues(args, '--inherit'), ['5=/x/file']);
  assert.deepEqual(flagValues(args, '--keep-fd'), ['3']);
});

test('resolveOnPath: a name on PATH becomes its absolute path; a path stays; a name nowhere is undefined', () => {
  assert.equal(resolveOnPath('sh', '/nonexistent-dir::/bin'), '/bin/sh');
  assert.equal(resolveOnPath('/opt/q/qemu', '/bin'), '/opt/q/qemu');
  assert.equal(resolveOnPath('no-such-binary-here', '/bin:/usr/bin'), undefined);
});
