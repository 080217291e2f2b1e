/** The agent's create-time lookup of a container's command (src/agent/exec-lookup.ts), on a temp rootfs. */
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { missingCommand, pathFromEnv, resolveInRoot } from '../../src/agent/exec-lookup.js';

describe('agent exec lookup', () => {
  let root: string;
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'kata-lookup-'));
    for (const d of ['bin', 'usr/bin', 'opt/app', 'etc']) mkdirSync(join(root, d), { recursive: true });
    writeFileSync(join(root, 'bin', 'busybox'), '');
    chmodSync(join(root, 'bin', 'busybox'), 0o755);
    symlinkSync('/bin/busybox', join(root, 'bin', 'sh')); // absolute: relative to the rootfs, not the host
    symlinkSync('busybox', join(root, 'bin', 'ls'));
    symlinkSync('../../bin/busybox', join(root, 'usr', 'bin', 'env'));
    symlinkSync('/nonexistent', join(root, 'bin', 'dangling'));
    symlinkSync('/bin/loop2', join(root, 'bin', 'loop1'));
    symlinkSync('/bin/loop1', join(root, 'bin', 'loop2'));
    writeFileSync(join(root, 'etc', 'passwd'), '');
    writeFileSync(join(root, 'opt', 'app', 'run'), '');
    chmodSync(join(root, 'opt', 'app', 'run'), 0o755);
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  it('resolves symlinks inside the rootfs as chroot would', async () => {
    assert.deepEqual(await resolveInRoot(root, '/bin/sh'), { kind: 'found', guestPath: '/bin/busybox' });
    assert.deepEqual(await resolveInRoot(root, '/usr/bin/env'), { kind: 'found', guestPath: '/bin/busybox' });
    assert.deepEqual(await resolveInRoot(root, '/../../../bin/ls'), { kind: 'found', guestPath: '/bin/busybox' }, '.. stops at the root');
    assert.deepEqual(await resolveInRoot(root, '/bin/dangling'), { kind: 'missing' });
    assert.deepEqual(await resolveInRoot(root, '/bin/loop1'), { kind: 'missing' }, 'a symlink loop');
    assert.deepEqual(await resolveInRoot(root, '/etc/passwd/x'), { kind: 'missing' }, 'through a file');
    assert.deepEqual(await resolveInRoot(root, '/data/x', ['/data']), { kind: 'unknown' }, 'under a mount of the spec');
  });

  it('refuses only a command that is certainly missing, in runc\'s words', async () => {
    assert.equal(await missingCommand(root, '/bin/sh'), undefined);
    assert.equal(await missingCommand(root, 'sh'), undefined);
    assert.equal(await missingCommand(root, 'env'), undefined);
    assert.equal(await missingCommand(root, './run', { cwd: '/opt/app' }), undefined);
    assert.equal(await missingCommand(root, 'run', { pathEnv: '/opt/app' }), undefined);
    assert.equal(await missingCommand(root, '/x'), 'exec: "/x": stat /x: no such file or directory');
    assert.equal(await missingCommand(root, 'nope'), 'exec: "nope": executable file not found in $PATH');
    assert.equal(await missingCommand(root, 'passwd', { pathEnv: '/etc' }), 'exec: "passwd": executable file not found in $PATH', 'not executable');
    assert.equal(await missingCommand(root, ''), 'exec: "": the command is empty');
    assert.equal(await missingCommand(root, '/data/tool', { mountPoints: ['/data'] }), undefined, 'in a volume: left to the runtime');
    assert.equal(await missingCommand(root, 'tool', { pathEnv: '/data:/bin', mountPoints: ['/data'] }), undefined);
  });

  it('reads PATH from the process env (the last one wins)', () => {
    assert.equal(pathFromEnv(['A=1', 'PATH=/a', 'PATH=/b']), '/b');
    assert.equal(pathFromEnv(['A=1']), undefined);
    assert.equal(pathFromEnv(undefined), undefined);
  });
});
