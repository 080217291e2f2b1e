// Proves the e2e harness against the real runc runtime (io.containerd.runc.v2):
// a private containerd, a locally built busybox image, exit codes and signals
// through ctr, kill -9 + restart recovery, full teardown, raw bundles, leaks.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { BUSYBOX_IMAGE, busyboxImage, importImage, makeBundle } from '../harness/busybox.js';
import { findShimPids, mountsUnder, pidAlive, startContainerd, waitFor, withLogOnFailure, type Containerd } from '../harness/containerd.js';
import { assertClean, assertNoLeaks, findLeaks, snapshot } from '../harness/leaks.js';

const IMG = BUSYBOX_IMAGE;

/** Pid and status of a task from `ctr task ls`, or undefined. */
async function taskInfo(c: Containerd, id: string): Promise<{ pid: number; status: string } | undefined> {
  const r = await c.ctr(['task', 'ls'], { timeoutMs: 10_000 });
  const m = r.stdout.match(new RegExp(`^${id}\\s+(\\d+)\\s+(\\S+)`, 'm'));
  return m ? { pid: Number(m[1]), status: m[2]! } : undefined;
}

function ok(r: { code: number | null; stdout: string; stderr: string }, what: string): void {
  assert.equal(r.code, 0, `${what}: exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
}

/** No shim with our address, no mount under the dir, dir gone. */
function assertTornDown(dir: string, address: string): void {
  assert.deepEqual(findShimPids(address), [], 'shims left');
  assert.deepEqual(mountsUnder(dir), [], 'mounts left');
  assertClean(snapshot(dir));
  assert.equal(existsSync(dir), false, `${dir} still exists`);
}

test('busybox image is built once and cached by content', () => {
  const a = busyboxImage();
  const b = busyboxImage();
  assert.equal(a.tarPath, b.tarPath);
  assert.equal(a.manifestDigest, b.manifestDigest);
  assert.equal(a.name, IMG);
  const other = busyboxImage({ name: 'example.com/other:v1', cmd: ['sleep', '1'] });
  assert.notEqual(other.tarPath, a.tarPath);
  assert.notEqual(other.manifestDigest, a.manifestDigest);
});

test('private containerd + runc: output, exit codes, signals, teardown', { timeout: 120_000 }, async (t) => {
  const t0 = Date.now();
  const runDirBefore = existsSync('/run/containerd');
  const c = await startContainerd();
  t.after(() => c.stop());
  const { dir, address } = c;
  assert.ok(existsSync(c.address) && existsSync(c.ttrpcAddress));
  assert.match(readFileSync(c.configPath, 'utf8'), /"io\.containerd\.grpc\.v1\.cri"/); // disabled
  t.diagnostic(`containerd up in ${Date.now() - t0} ms, snapshotter ${c.snapshotter}, ns ${c.namespace}`);

  await withLogOnFailure(c, async () => {
    let t1 = Date.now();
    await importImage(c);
    t.diagnostic(`import ${Date.now() - t1} ms`);
    const before = snapshot(dir);

    t1 = Date.now();
    let r = await c.ctr(['run', '--rm', IMG, 't1', 'echo', 'hi']);
    ok(r, 'run echo');
    assert.equal(r.stdout, 'hi\n');
    t.diagnostic(`ctr run --rm echo: ${Date.now() - t1} ms`);

    r = await c.ctr(['run', '--rm', IMG, 't2', 'sh', '-c', 'exit 3']);
    assert.equal(r.code, 3, r.stderr);

    // stdin is /dev/null unless given; a reader that stops by itself sees given data.
    r = await c.ctr(['run', '--rm', IMG, 't2b', 'head', '-n1'], { stdin: 'line1\nline2\n' });
    ok(r, 'run head');
    assert.equal(r.stdout, 'line1\n');

    // Foreground run killed from outside: 128 + 9.
    const fg = c.ctr(['run', '--rm', IMG, 't3', 'sleep', '100'], { timeoutMs: 30_000 });
    await waitFor(async () => (await taskInfo(c, 't3'))?.status === 'RUNNING', { timeoutMs: 10_000, what: 't3 RUNNING' });
    ok(await c.ctr(['task', 'kill', '-s', 'KILL', 't3']), 'task kill');
    r = await fg;
    assert.equal(r.code, 137, `ctr run after SIGKILL: ${r.code} ${r.stderr}`);
    assert.equal(r.timedOut, false);
    assert.doesNotMatch((await c.ctr(['containers', 'ls', '-q'])).stdout, /^t3$/m, '--rm removed t3');

    // Exec'd process killing itself with SIGTERM: 128 + 15.
    ok(await c.ctr(['run', '-d', IMG, 't4', 'sleep', '100']), 'run -d');
    r = await c.ctr(['task', 'exec', '--exec-id', 'e1', 't4', 'sh', '-c', 'kill -TERM $$']);
    assert.equal(r.code, 143, `exec kill -TERM: ${r.code} ${r.stderr}`);
    r = await c.ctr(['task', 'exec', '--exec-id', 'e2', 't4', 'sh', '-c', 'echo out; echo err >&2; exit 7']);
    assert.equal(r.code, 7);
    assert.equal(r.stdout, 'out\n');
    assert.match(r.stderr, /err/);

    // Clean up t4 the way a test should.
    ok(await c.ctr(['task', 'kill', '-s', 'KILL', 't4']), 'kill t4');
    await waitFor(async () => (await taskInfo(c, 't4'))?.status === 'STOPPED', { timeoutMs: 10_000, what: 't4 STOPPED' });
    ok(await c.ctr(['task', 'rm', 't4']), 'task rm');
    ok(await c.ctr(['containers', 'rm', 't4']), 'containers rm');
    await waitFor(() => c.shimPids().length === 0, { timeoutMs: 10_000, what: 'shims to exit' });
    assertNoLeaks(before, snapshot(dir));
    // ctr's FIFOs and runc's state were kept under our dir, not /run/containerd.
    assert.ok(existsSync(join(dir, 'fifo')), 'fifo dir under the temp dir');
    assert.ok(existsSync(c.runcRoot), 'runc root under the temp dir');
  });

  const t2 = Date.now();
  await c.stop();
  t.diagnostic(`stop ${Date.now() - t2} ms, whole test ${Date.now() - t0} ms`);
  assertTornDown(dir, address);
  await c.stop(); // idempotent
  // The runc shim always makes /run/containerd/s; stop() removes it again when it made it (and nothing else runs).
  t.diagnostic(`/run/containerd ${runDirBefore ? 'existed before' : existsSync('/run/containerd') ? 'left behind (another containerd or shim is running?)' : 'absent before and after'}`);
});

test('kill -9 of containerd keeps the task; restart() recovers it; stop() removes everything', { timeout: 120_000 }, async (t) => {
  const c = await startContainerd();
  t.after(() => c.stop());
  const { dir, address, namespace } = c;
  let pid = 0;
  let shims: number[] = [];
  await withLogOnFailure(c, async () => {
    await importImage(c);
    ok(await c.ctr(['run', '-d', IMG, 'r1', 'sleep', '100']), 'run -d');
    const info = await waitFor(() => taskInfo(c, 'r1'), { what: 'r1 listed' });
    pid = info.pid;
    assert.equal(info.status, 'RUNNING');
    shims = c.shimPids();
    assert.equal(shims.length, 1, 'one shim');
    assert.ok(mountsUnder(dir).length >= 1, 'rootfs mounted under the temp dir');

    const old = c.pid;
    await c.kill9();
    assert.equal(c.pid, undefined);
    assert.ok(pidAlive(shims[0]!), 'shim survives containerd');
    assert.ok(pidAlive(pid), 'container survives containerd');

    await c.restart();
    assert.ok(c.pid !== undefined && c.pid !== old);
    const again = await waitFor(() => taskInfo(c, 'r1'), { what: 'r1 after restart' });
    assert.deepEqual(again, { pid, status: 'RUNNING' });
    const r = await c.ctr(['task', 'exec', '--exec-id', 'after', 'r1', 'echo', 'still here']);
    ok(r, 'exec after restart');
    assert.equal(r.stdout, 'still here\n');
  });

  // The task is deliberately left running: stop() must end it.
  await c.stop();
  assert.equal(pidAlive(pid), false, 'container process ended');
  assert.equal(pidAlive(shims[0]!), false, 'shim ended');
  assertTornDown(dir, address);
  for (const h of ['pids', 'memory', 'unified', '']) {
    assert.equal(existsSync(join('/sys/fs/cgroup', h, namespace)), false, `cgroup ${h}/${namespace} removed`);
  }
});

test('stop() without graceful cleanup kills shims and containers by pid', { timeout: 60_000 }, async (t) => {
  const c = await startContainerd();
  t.after(() => c.stop());
  const { dir, address } = c;
  await importImage(c);
  ok(await c.ctr(['run', '-d', IMG, 'h1', 'sleep', '100']), 'run -d');
  const { pid } = await waitFor(() => taskInfo(c, 'h1'), { what: 'h1' });
  const shim = c.shimPids()[0]!;
  await c.stop({ graceful: false });
  assert.equal(pidAlive(pid), false);
  assert.equal(pidAlive(shim), false);
  assertTornDown(dir, address);
});

test('CRI config: plugin loads with runtime handlers', { timeout: 60_000 }, async (t) => {
  const c = await startContainerd({
    cri: true,
    runtimes: { kata: { runtimeType: 'io.containerd.kata.v2', options: { ConfigPath: '/nonexistent/configuration.toml' } } },
  });
  t.after(() => c.stop());
  const cfg = readFileSync(c.configPath, 'utf8');
  assert.match(cfg, /\[plugins\."io\.containerd\.grpc\.v1\.cri"\.containerd\.runtimes\.kata\]\n {2}runtime_type = "io\.containerd\.kata\.v2"/);
  assert.match(cfg, /\[plugins\."io\.containerd\.grpc\.v1\.cri"\.containerd\.runtimes\.kata\.options\]\n {2}ConfigPath = /);
  const r = await c.ctr(['plugins', 'ls']);
  ok(r, 'plugins ls');
  assert.match(r.stdout, /io\.containerd\.grpc\.v1\s+cri\s+linux\/\w+\s+ok/, r.stdout + c.logTail(30));
  const dir = c.dir;
  await c.stop();
  assert.equal(existsSync(dir), false);
});

test('extraPath: containerd finds containerd-shim-<name>-v2 on the PATH it was given', { timeout: 60_000 }, async (t) => {
  // How the project's shim is found: a dir holding containerd-shim-kata-v2 goes into extraPath.
  // Here the runc shim under another name stands in for it.
  const bin = mkdtempSync(join(tmpdir(), 'kata-e2e-bin-'));
  t.after(() => rmSync(bin, { recursive: true, force: true }));
  symlinkSync('/usr/bin/containerd-shim-runc-v2', join(bin, 'containerd-shim-harnesstest-v2'));
  const c = await startContainerd({ extraPath: [bin] });
  t.after(() => c.stop());
  await withLogOnFailure(c, async () => {
    await importImage(c);
    const r = await c.ctr(['run', '--rm', '--runtime', 'io.containerd.harnesstest.v2', IMG, 'p1', 'echo', 'via extraPath']);
    ok(r, 'run with renamed shim');
    assert.equal(r.stdout, 'via extraPath\n');
  });
  const { dir, address } = c;
  await c.stop();
  assertTornDown(dir, address);
});

/** Run a command with a timeout (SIGKILL), collecting output. */
function run(cmd: string, args: string[], timeoutMs = 20_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((res, rej) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (b: Buffer) => (stdout += b));
    p.stderr.on('data', (b: Buffer) => (stderr += b));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.once('error', rej);
    p.once('close', (code) => {
      clearTimeout(timer);
      res({ code, stdout, stderr });
    });
  });
}

test('makeBundle: a bundle runc runs directly', { timeout: 60_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kata-e2e-bundle-'));
  const root = join(dir, 'runc');
  const id = 'kata-e2e-bundle-' + randomBytes(4).toString('hex');
  t.after(async () => {
    await run('runc', ['--root', root, 'delete', '-f', id]).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });
  const b = await makeBundle(join(dir, 'b1'), {
    args: ['sh', '-c', 'echo bundle-ok; hostname; echo $FOO; ls /dev/shm /dev/mqueue /proc/self >/dev/null && exit 5'],
    env: ['PATH=/bin', 'FOO=bar'],
  });
  assert.equal(JSON.parse(readFileSync(b.configPath, 'utf8')).process.terminal, false);
  const r = await run('runc', ['--root', root, 'run', '-b', b.dir, id]);
  assert.equal(r.code, 5, r.stderr);
  assert.equal(r.stdout, 'bundle-ok\nbusybox\nbar\n');

  // terminal: true — a foreground `runc run` needs a controlling tty of its own: give it one with script(1).
  const tb = await makeBundle(join(dir, 'b2'), { args: ['sh', '-c', 'tty; echo TERM=$TERM'], terminal: true });
  assert.ok(tb.spec.process.env.includes('TERM=xterm'));
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const r2 = await run('script', ['-qec', ['runc', '--root', root, 'run', '-b', tb.dir, id + '-t'].map(q).join(' '), '/dev/null']);
  assert.equal(r2.code, 0, r2.stderr + r2.stdout);
  assert.match(r2.stdout, /\/dev\/pts\/\d+\r?\nTERM=xterm\r?\n$/);
  assert.deepEqual(mountsUnder(dir), []);
});

test('leaks: processes, mounts and fds are reported', { timeout: 30_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kata-e2e-leaks-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const before = snapshot(dir, { pids: [process.pid] });
  assert.deepEqual(findLeaks(before, before), []);
  const child = spawn('sleep', ['30'], { stdio: 'ignore' }); // does not mention the dir
  writeFileSync(join(dir, 'marker'), '');
  const marked = spawn('tail', ['-f', join(dir, 'marker')], { stdio: 'ignore' }); // does
  t.after(() => {
    child.kill('SIGKILL');
    marked.kill('SIGKILL');
  });
  const fd = openSync(join(dir, 'f'), 'w');
  try {
    await waitFor(() => snapshot(dir).processes.some((p) => p.pid === marked.pid), { what: 'marked process visible' });
    const after = snapshot(dir, { pids: [process.pid] });
    const leaks = findLeaks(before, after);
    assert.ok(leaks.some((l) => l.startsWith(`process ${marked.pid}:`)), leaks.join('\n'));
    assert.ok(!leaks.some((l) => l.startsWith(`process ${child.pid}:`)), 'unrelated process not reported');
    assert.ok(leaks.some((l) => l.includes(join(dir, 'f'))), 'new fd reported: ' + leaks.join('\n'));
    assert.throws(() => assertNoLeaks(before, after), /leaks under/);
  } finally {
    closeSync(fd);
  }
  marked.kill('SIGKILL');
  await waitFor(() => !pidAlive(marked.pid!), { what: 'marked process gone' });
  assert.ok(!snapshot(dir).processes.some((p) => p.pid === marked.pid));
});
