// The agent's shared-dir mount (src/agent/shared-fs.ts) with a fake mount
// command and a fake mountinfo: validation, idempotence, refusals, unmount
// with its lazy fallback, serialization. The real mount is exercised in the
// VM by test/e2e/sandbox-vm.test.ts.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Code, InternalError, StatusError } from '../../src/errors/index.js';
import { silentLogger } from '../../src/log/index.js';
import { checkSharedFs, mountArgs, mountAt, SharedFs, type CommandRunner } from '../../src/agent/shared-fs.js';

function code(fn: () => unknown): Code | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof StatusError ? err.code : undefined;
  }
  return Code.OK;
}

const line = (id: number, point: string, fstype: string, source: string) =>
  `${id} 1 0:${id} / ${point} rw,relatime shared:${id} - ${fstype} ${source} rw`;

test('checkSharedFs: both or neither, tag and path rules', () => {
  assert.equal(checkSharedFs('', ''), undefined);
  assert.deepEqual(checkSharedFs('kataShared', '/run/shared'), { tag: 'kataShared', mountPoint: '/run/shared', fstype: 'virtiofs' });
  assert.deepEqual(checkSharedFs('kataShared', '/run/shared', '9p', 65536), { tag: 'kataShared', mountPoint: '/run/shared', fstype: '9p', msize: 65536 });
  assert.throws(() => checkSharedFs('kataShared', '/run/shared', 'nfs'), /shared_fs_type: "nfs" must be "virtiofs" or "9p"/);
  assert.throws(() => checkSharedFs('kataShared', '/run/shared', 'virtiofs', 65536), /msize_9p: 65536 .* only with shared_fs_type "9p"/);
  assert.throws(() => checkSharedFs('kataShared', '/run/shared', '9p', 100), /msize_9p: 100 must be 4096-4194304/);
  assert.throws(() => checkSharedFs('', '', '9p'), /shared_fs_type: given without shared_fs_tag/);
  assert.deepEqual(mountArgs({ tag: 't', mountPoint: '/m', fstype: '9p' }), ['-t', '9p', '-o', 'trans=virtio,version=9p2000.L,cache=mmap,msize=524288', 't', '/m']);
  assert.deepEqual(mountArgs({ tag: 't', mountPoint: '/m' }), ['-t', 'virtiofs', 't', '/m']);
  for (const [tag, mp] of [
    ['kataShared', ''], ['', '/run/x'], ['a b', '/run/x'], ['x'.repeat(37), '/run/x'], ['t', 'run/x'], ['t', '/'],
    ['t', '/run/../etc'], ['t', '/run/x/'], ['t', '/run/a b'],
  ] as const) {
    assert.equal(code(() => checkSharedFs(tag, mp)), Code.INVALID_ARGUMENT, `${tag} ${mp}`);
  }
  try {
    checkSharedFs('kataShared', '');
  } catch (err) {
    assert.match((err as Error).message, /^shared_fs_mount_point:/);
  }
});

test('mountAt: the last mount on a path wins; octal escapes', () => {
  const mi = [line(20, '/', 'erofs', '/dev/vda'), line(21, '/run', 'tmpfs', 'tmpfs'), line(22, '/run/a\\040b', 'virtiofs', 'tag1'),
    line(23, '/run/s', 'tmpfs', 'x'), line(24, '/run/s', 'virtiofs', 'kataShared')].join('\n');
  assert.deepEqual(mountAt(mi, '/run/s'), { fstype: 'virtiofs', source: 'kataShared' });
  assert.deepEqual(mountAt(mi, '/run/a b'), { fstype: 'virtiofs', source: 'tag1' });
  assert.equal(mountAt(mi, '/run/none'), undefined);
});

function fixture(opts: { failUmount?: number } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'sharedfs-unit-'));
  const mounts: Array<{ point: string; fstype: string; source: string }> = [{ point: '/', fstype: 'ext4', source: '/dev/root' }];
  const calls: string[] = [];
  let umountFailures = opts.failUmount ?? 0;
  const run: CommandRunner = async (cmd, args) => {
    calls.push([cmd, ...args].join(' '));
    await new Promise((r) => setTimeout(r, 5));
    if (cmd === 'mount') {
      const [, fstype, source, point] = args as [string, string, string, string];
      if (source === 'missing') throw new InternalError(`mount: mounting ${source} on ${point} failed: No such file or directory`);
      mounts.push({ point, fstype, source });
    } else if (cmd === 'umount') {
      if (umountFailures > 0) {
        umountFailures--;
        throw new InternalError('umount: can\'t unmount: Resource busy');
      }
      const point = args[args.length - 1]!;
      const i = mounts.map((m) => m.point).lastIndexOf(point);
      if (i >= 0) mounts.splice(i, 1);
    }
  };
  const readMountinfo = async () => mounts.map((m, i) => line(i + 20, m.point, m.fstype, m.source)).join('\n') + '\n';
  const fs = new SharedFs({ logger: silentLogger(), run, readMountinfo });
  return { dir, mounts, calls, fs, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

test('SharedFs: mounts once, creates the mount point, idempotent, unmounts', async (t) => {
  const f = fixture();
  t.after(f.cleanup);
  const mp = join(f.dir, 'run/kata/shared');
  await Promise.all([f.fs.ensure({ tag: 'kataShared', mountPoint: mp }), f.fs.ensure({ tag: 'kataShared', mountPoint: mp })]);
  assert.ok(existsSync(mp));
  assert.deepEqual(f.calls, [`mount -t virtiofs kataShared ${mp}`]);
  assert.deepEqual(f.fs.current, { tag: 'kataShared', mountPoint: mp });
  // A second, different share is refused.
  await assert.rejects(f.fs.ensure({ tag: 'other', mountPoint: mp }), (e: StatusError) => e.code === Code.FAILED_PRECONDITION);
  await f.fs.release();
  assert.deepEqual(f.calls.slice(1), [`umount ${mp}`]);
  assert.equal(f.fs.current, undefined);
  await f.fs.release(); // no-op
  assert.equal(f.calls.length, 2);
});

test('SharedFs: adopts an existing mount of the same tag (restarted shim), refuses a foreign one', async (t) => {
  const f = fixture();
  t.after(f.cleanup);
  const mp = join(f.dir, 'a');
  f.mounts.push({ point: mp, fstype: 'virtiofs', source: 'kataShared' });
  await f.fs.ensure({ tag: 'kataShared', mountPoint: mp });
  assert.deepEqual(f.calls, []);
  const mp2 = join(f.dir, 'b');
  const g = fixture();
  t.after(g.cleanup);
  g.mounts.push({ point: mp2, fstype: 'tmpfs', source: 'tmpfs' });
  await assert.rejects(g.fs.ensure({ tag: 'kataShared', mountPoint: mp2 }), /already has a tmpfs mount/);
});

test('SharedFs: a failed mount leaves nothing recorded; busy unmount falls back to lazy', async (t) => {
  const f = fixture({ failUmount: 1 });
  t.after(f.cleanup);
  const mp = join(f.dir, 'm');
  await assert.rejects(f.fs.ensure({ tag: 'missing', mountPoint: mp }), /No such file/);
  assert.equal(f.fs.current, undefined);
  await f.fs.ensure({ tag: 'kataShared', mountPoint: mp });
  await f.fs.release();
  assert.deepEqual(f.calls.slice(-2), [`umount ${mp}`, `umount -l ${mp}`]);
  assert.equal(f.mounts.some((m) => m.point === mp), false);
});
