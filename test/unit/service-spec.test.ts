import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Code } from '../../src/errors/index.js';
import { BoundedChannel } from '../../src/service/channel.js';
import { guestProcess, guestSpec } from '../../src/service/guest-spec.js';
import { ShimProcess } from '../../src/service/process.js';
import { mountArgv } from '../../src/service/rootfs.js';
import { GO_ZERO_TIMESTAMP, exitTimestamp, toTimestamp } from '../../src/proto/timestamp.js';
import { expectCode } from '../harness/status.js';

const stdio = { stdin: '', stdout: '', stderr: '', terminal: false };

describe('guest spec', () => {
  const host = {
    ociVersion: '1.0.2',
    process: { args: ['sh'], cwd: '/', apparmorProfile: 'cri-containerd.apparmor.d' },
    root: { path: '/var/lib/containerd/x/rootfs', readonly: true },
    hooks: { prestart: [{ path: '/usr/bin/true' }] },
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/etc/hosts', type: 'bind', source: '/var/lib/containerd/sb/hosts', options: ['rbind', 'ro'] },
      { destination: '/dev/shm', type: 'bind', source: '/dev/shm', options: ['rbind'] },
    ],
    linux: {
      namespaces: [{ type: 'pid' }, { type: 'network', path: '/var/run/netns/cni-1' }, { type: 'ipc', path: '/proc/42/ns/ipc' }, { type: 'mount' }],
      devices: [{ path: '/dev/fuse', type: 'c', major: 10, minor: 229 }],
      cgroupsPath: '/default/t1',
    },
  };
  it('points the root at the shared dir and shares host binds, naming nothing else of the host', () => {
    const r = guestSpec(host, '/run/kata-containers/shared/containers/t1');
    assert.deepEqual(r.spec['root'], { path: '/run/kata-containers/shared/containers/t1/rootfs', readonly: true });
    assert.equal(r.spec['hooks'], undefined);
    assert.equal((r.spec['process'] as Record<string, unknown>)['apparmorProfile'], undefined);
    const mounts = r.spec['mounts'] as Array<Record<string, unknown>>;
    assert.equal(mounts.length, 2, 'the /dev/shm bind of the host is dropped');
    assert.equal(mounts[1]!['source'], '/run/kata-containers/shared/containers/t1/mounts/1-hosts');
    assert.deepEqual(r.binds, [{ source: '/var/lib/containerd/sb/hosts', target: 'mounts/1-hosts', readOnly: true }]);
    const linux = r.spec['linux'] as Record<string, unknown>;
    assert.deepEqual(linux['namespaces'], [{ type: 'pid' }, { type: 'ipc' }, { type: 'mount' }], 'no sandbox in the guest: a new ipc namespace');
    assert.equal(linux['devices'], undefined);
    assert.equal(linux['cgroupsPath'], '/default/t1');
    assert.ok(!JSON.stringify(r.spec).includes('/var/lib/containerd'), 'no host path left');
    assert.equal(host.hooks.prestart.length, 1, 'the input is not modified');
  });
  it('CRI workload containers join the sandbox container in the guest, by its guest pid', () => {
    const r = guestSpec(host, '/g/c2', { sandboxGuestPid: 57 });
    const linux = r.spec['linux'] as Record<string, unknown>;
    assert.deepEqual(linux['namespaces'], [{ type: 'pid' }, { type: 'ipc', path: '/proc/57/ns/ipc' }, { type: 'mount' }]);
  });
  it('refuses what cannot be a spec, naming the field', async () => {
    assert.throws(() => guestSpec([], '/g'), (e: { code?: Code }) => e.code === Code.INVALID_ARGUMENT);
    assert.throws(() => guestSpec({ root: {} }, '/g'), /process: must be an object/);
    assert.throws(() => guestSpec({ process: {}, mounts: [{ type: 'bind', source: 'rel' }] }, '/g'), /mounts\[0\]\.source/);
    assert.throws(() => guestProcess({ args: [] }), /spec.args/);
    assert.deepEqual(guestProcess({ args: ['ls'], selinuxLabel: 'x' }), { args: ['ls'] });
  });
});

describe('rootfs mount argv', () => {
  it('overlay from the snapshotter, bind of the bundle rootfs', () => {
    assert.deepEqual(mountArgv({ type: 'overlay', source: 'overlay', options: ['workdir=/w', 'upperdir=/u', 'lowerdir=/l1:/l2'] }, '/t'),
      ['-t', 'overlay', '-o', 'nodev,nosuid,workdir=/w,upperdir=/u,lowerdir=/l1:/l2', 'overlay', '/t']);
    // nodev and nosuid once, whatever the snapshotter gave (a jailed 9p QEMU must not open an image's device nodes).
    assert.deepEqual(mountArgv({ type: 'overlay', source: 'overlay', options: ['nosuid', 'lowerdir=/l'] }, '/t'), ['-t', 'overlay', '-o', 'nodev,nosuid,lowerdir=/l', 'overlay', '/t']);
    assert.deepEqual(mountArgv({ type: 'bind', source: '/s', options: ['ro'] }, '/t'), ['-o', 'rbind,ro', '/s', '/t']);
    assert.deepEqual(mountArgv({ type: 'bind', source: '/s', options: ['rbind', 'rw'] }, '/t'), ['-o', 'rbind,rw', '/s', '/t']);
    assert.throws(() => mountArgv({ type: 'overlay', source: 'o', target: 'x', options: [] }, '/t'), /target/);
  });
});

describe('bounded channel', () => {
  it('keeps order and makes senders wait while full', async () => {
    const ch = new BoundedChannel<number>(2);
    await ch.send(1);
    await ch.send(2);
    let third = false;
    const p = ch.send(3).then(() => { third = true; });
    await new Promise((r) => setImmediate(r));
    assert.equal(third, false, 'a full channel holds the sender');
    assert.equal(await ch.receive(), 1);
    await p;
    assert.equal(third, true);
    assert.equal(await ch.receive(), 2);
    assert.equal(await ch.receive(), 3);
    ch.close();
    assert.equal(await ch.receive(), undefined);
    await expectCode(ch.send(4), Code.UNAVAILABLE);
  });
  it('a send waiting for room can be cancelled', async () => {
    const ch = new BoundedChannel<number>(1);
    await ch.send(1);
    const ac = new AbortController();
    const p = ch.send(2, ac.signal);
    ac.abort();
    await expectCode(p, Code.CANCELLED);
    assert.equal(ch.length, 1);
  });
});

describe('shim process', () => {
  it('one exit, seen by every waiter, before and after', async () => {
    const p = new ShimProcess('c', 'e1', stdio);
    assert.equal(p.id, 'e1');
    p.state = 'running';
    const w1 = p.waitExit();
    const ac = new AbortController();
    const w2 = p.waitExit(ac.signal);
    ac.abort();
    await expectCode(w2, Code.CANCELLED);
    const at = new Date();
    assert.equal(p.setExited({ status: 143, at }), true);
    assert.equal(p.setExited({ status: 0, at: new Date() }), false, 'the first exit wins');
    assert.deepEqual(await w1, { status: 143, at });
    assert.deepEqual(await p.waitExit(), { status: 143, at });
    assert.equal(p.state, 'stopped');
    assert.throws(() => p.checkSignalable(), (e: { code?: Code }) => e.code === Code.NOT_FOUND);
    assert.throws(() => p.checkStartable(), (e: { code?: Code }) => e.code === Code.FAILED_PRECONDITION);
  });
  it('timestamps: Go zero time for no exit', () => {
    assert.deepEqual(exitTimestamp(undefined), GO_ZERO_TIMESTAMP);
    assert.deepEqual(toTimestamp(new Date(1500)), { seconds: 1, nanos: 500_000_000 });
  });
});
