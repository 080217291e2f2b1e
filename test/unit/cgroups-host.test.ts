/**
 * src/cgroups/host.ts on plain directories standing in for cgroup mounts:
 * the hierarchies chosen from mountinfo (v1, hybrid, v2, a namespaced root),
 * cgroupsPath checks, create (parents, v1 cpuset inherited), enter,
 * leave, remove (what was made only, deepest first; a parent others use stays).
 * The real cgroupfs is exercised by test/e2e/shim-config.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cgroupPathOf, HostCgroup, parseHostCgroupState, podCgroupMounts, removeCreated, type CgroupMount } from '../../src/cgroups/host.js';
import { Code } from '../../src/errors/index.js';

const MOUNTINFO_HYBRID = `30 24 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
37 30 0:33 / /sys/fs/cgroup/devices rw,nosuid - cgroup cgroup rw,devices
38 30 0:34 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
39 30 0:35 /ns /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
`;

test('podCgroupMounts: v1 controller hierarchies (hybrid: the empty cgroup2 is ignored), or the v2 mount', () => {
  assert.deepEqual(podCgroupMounts(MOUNTINFO_HYBRID), [
    { mountPoint: '/sys/fs/cgroup/cpu,cpuacct', root: '/', version: 1, controllers: ['cpu', 'cpuacct'] },
    { mountPoint: '/sys/fs/cgroup/memory', root: '/', version: 1, controllers: ['memory'] },
    { mountPoint: '/sys/fs/cgroup/pids', root: '/ns', version: 1, controllers: ['pids'] },
  ]);
  assert.deepEqual(podCgroupMounts('25 21 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n'), [
    { mountPoint: '/sys/fs/cgroup', root: '/', version: 2, controllers: [] },
  ]);
  assert.deepEqual(podCgroupMounts('1 0 0:1 / / rw - ext4 /dev/sda rw\n'), []);
});

test('cgroupsPath: cgroupfs paths normalized; systemd form, "..", the root refused naming the field', () => {
  assert.equal(cgroupPathOf('/default/p1'), '/default/p1');
  assert.equal(cgroupPathOf('kubepods//pod1/abc/'), '/kubepods/pod1/abc');
  const refused = (p: string, code: Code, re: RegExp): void => {
    assert.throws(() => cgroupPathOf(p), (err: unknown) => {
      assert.equal((err as { code: number }).code, code);
      assert.match((err as Error).message, /^linux\.cgroupsPath /);
      assert.match((err as Error).message, re);
      return true;
    });
  };
  refused('system.slice:kata:p1', Code.FAILED_PRECONDITION, /systemd form.*not supported/);
  refused('/a/../../etc', Code.INVALID_ARGUMENT, /"\.\." is not allowed/);
  refused('/', Code.INVALID_ARGUMENT, /root cgroup/);
});

test('create, enter, leave, remove on stand-in hierarchies', async () => {
  const root = mkdtempSync(join(tmpdir(), 'cg-unit-'));
  try {
    const cpuset = join(root, 'cpuset');
    const memory = join(root, 'memory');
    const pids = join(root, 'pids');
    for (const d of [cpuset, memory, join(pids, 'ns')]) mkdirSync(d, { recursive: true });
    writeFileSync(join(cpuset, 'cpuset.cpus'), '0-1\n');
    writeFileSync(join(cpuset, 'cpuset.mems'), '0\n');
    // Another pod's cgroup already under /default in the memory hierarchy.
    mkdirSync(join(memory, 'default', 'other'), { recursive: true });
    mkdirSync(join(memory, 'origin'));
    const mounts: CgroupMount[] = [
      { mountPoint: cpuset, root: '/', version: 1, controllers: ['cpuset'] },
      { mountPoint: memory, root: '/', version: 1, controllers: ['memory'] },
      // A namespaced mount: its root is /ns, so /ns/default/p1 is <pids>/default/p1.
      { mountPoint: pids, root: '/ns', version: 1, controllers: ['pids'] },
    ];
    await assert.rejects(HostCgroup.create('/outside/p1', mounts), /outside the .*pids mount/);
    const cg = await HostCgroup.create('/ns/default/p1', mounts);
    assert.deepEqual(cg.dirs, [join(cpuset, 'ns/default/p1'), join(memory, 'ns/default/p1'), join(pids, 'default/p1')]);
    assert.deepEqual(cg.state().created, [
      join(cpuset, 'ns'), join(cpuset, 'ns/default'), join(cpuset, 'ns/default/p1'),
      join(memory, 'ns'), join(memory, 'ns/default'), join(memory, 'ns/default/p1'),
      join(pids, 'default'), join(pids, 'default/p1'),
    ]);
    // v1 cpuset: cpus and mems copied down from the parent, level by level.
    assert.equal(readFileSync(join(cpuset, 'ns/default/p1/cpuset.cpus'), 'utf8'), '0-1');
    assert.equal(readFileSync(join(cpuset, 'ns/default/p1/cpuset.mems'), 'utf8'), '0');
    await cg.enter(4242);
    for (const d of cg.dirs) assert.equal(readFileSync(join(d, 'cgroup.procs'), 'utf8'), '4242\n');
    await cg.leave(4242, '5:memory:/origin\n3:cpuset:/\n2:pids:/ns\n');
    assert.equal(readFileSync(join(memory, 'origin/cgroup.procs'), 'utf8'), '4242\n');
    assert.equal(readFileSync(join(cpuset, 'cgroup.procs'), 'utf8'), '4242\n');
    assert.equal(readFileSync(join(pids, 'cgroup.procs'), 'utf8'), '4242\n');
    // An origin the pids mount cannot see: the others are still moved back, the failure names the mount.
    rmSync(join(memory, 'origin/cgroup.procs'));
    await assert.rejects(cg.leave(4343, '5:memory:/origin\n3:cpuset:/\n2:pids:/elsewhere\n'), (err: unknown) => {
      assert.equal((err as { code: number }).code, Code.FAILED_PRECONDITION);
      assert.match((err as Error).message, /moving 4343 out of cgroup \/ns\/default\/p1: .*pids: no origin cgroup under this mount/);
      return true;
    });
    assert.equal(readFileSync(join(memory, 'origin/cgroup.procs'), 'utf8'), '4343\n', 'memory moved back despite pids');
    // A real cgroupfs has no files to delete: stand-ins drop theirs first.
    for (const d of cg.dirs) for (const f of ['cgroup.procs', 'cpuset.cpus', 'cpuset.mems']) rmSync(join(d, f), { force: true });
    for (const d of ['ns', 'ns/default']) for (const f of ['cpuset.cpus', 'cpuset.mems']) rmSync(join(cpuset, d, f), { force: true });
    await cg.remove();
    for (const d of cg.dirs) assert.equal(existsSync(d), false, d);
    assert.equal(existsSync(join(memory, 'ns')), false, 'the parents it made went too');
    assert.equal(existsSync(join(memory, 'default', 'other')), true, 'what it did not make stays');
    // A pod cgroup that cannot be removed is an error naming it; a parent in use is not.
    const busy = join(root, 'busy');
    mkdirSync(join(busy, 'p2'), { recursive: true });
    writeFileSync(join(busy, 'p2', 'cgroup.procs'), '1\n');
    mkdirSync(join(root, 'shared', 'p3'), { recursive: true });
    mkdirSync(join(root, 'shared', 'someone-else'));
    await assert.rejects(removeCreated([join(busy, 'p2')], 100), (err: unknown) => {
      assert.equal((err as { code: number }).code, Code.FAILED_PRECONDITION);
      assert.match((err as Error).message, /cgroup dirs not removed: .*busy\/p2: ENOTEMPTY/);
      return true;
    });
    await removeCreated([join(root, 'shared'), join(root, 'shared', 'p3')]);
    assert.equal(existsSync(join(root, 'shared', 'p3')), false);
    assert.equal(existsSync(join(root, 'shared', 'someone-else')), true);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('cgroup.json read back: only normalized dirs under a cgroup mount', () => {
  const mounts: CgroupMount[] = [{ mountPoint: '/sys/fs/cgroup/memory', root: '/', version: 1, controllers: ['memory'] }];
  assert.deepEqual(parseHostCgroupState({ created: ['/sys/fs/cgroup/memory/ns', '/sys/fs/cgroup/memory/ns/p1'] }, mounts),
    { created: ['/sys/fs/cgroup/memory/ns', '/sys/fs/cgroup/memory/ns/p1'] });
  for (const bad of [{ created: ['/sys/fs/cgroup/memory/../../etc'] }, { created: ['/etc/x'] }, { created: ['/sys/fs/cgroup/memory'] }, { created: [1] }, { created: 'x' }, null]) {
    assert.throws(() => parseHostCgroupState(bad, mounts), /not a cgroup state/, JSON.stringify(bad));
  }
});
