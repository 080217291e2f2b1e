/**
 * The installed runtime, not the checkout (scripts/install.sh, docs/install.md):
 *
 * 1. install version A into a temp prefix, its commands linked into a temp
 *    bindir; move the checkout's build/ out of the way (the install must need
 *    nothing of it);
 * 2. a private containerd whose PATH has only that bindir and the system's
 *    dirs (no checkout, no /usr/local/bin) runs a `ctr run` pod on A;
 * 3. `kata-ts-runtime containerd-config` adds the kata handler to that
 *    containerd's config (with a backup); after a restart, a CRI pod runs
 *    through it (the installed kata-crictl);
 * 4. upgrade: a pod runs on A, version B is installed (`current` switched);
 *    the A pod still execs and is deleted cleanly, a new pod runs on B;
 * 5. --uninstall refuses while a pod runs, naming it; then removes
 *    everything it made, and nothing of the install is left.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { busyboxImage, importImage, pauseImage, projectRoot } from '../harness/busybox.js';
import { createTestNetwork, type TestNetwork } from '../harness/cni.js';
import { allPids, procCmdline, startContainerd, waitFor, type Containerd } from '../harness/containerd.js';
import { qemuPids } from '../harness/ctr.js';
import { runCommand } from '../harness/run.js';

const ROOT = projectRoot();
const BUILD = join(ROOT, 'build');
const KATA = 'io.containerd.kata.v2';

const sh = (cmd: string, args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 600_000) => runCommand(cmd, args, { env, timeoutMs });

let prefix = '';
/** The busybox image's name, taken before build/ is hidden (its tar lives under build/). */
let BUSYBOX = '';
let bindir = '';
let moved = '';
let c: Containerd | undefined;
let net: TestNetwork | undefined;

const install = (version: string) => sh('bash', [join(ROOT, 'scripts/install.sh'), '--prefix', prefix, '--bindir', bindir, '--version', version]);
const uninstall = (...more: string[]) => sh('bash', [join(ROOT, 'scripts/install.sh'), '--uninstall', '--prefix', prefix, '--bindir', bindir, ...more]);

/** build/ out of the way (the installed runtime must not need it), and back. */
function hideBuild(): void {
  moved = `${BUILD}.install-test-${process.pid}`;
  renameSync(BUILD, moved);
}
function restoreBuild(): void {
  if (moved && existsSync(moved) && !existsSync(BUILD)) renameSync(moved, BUILD);
  moved = '';
}

/** The serving shims' command lines (node + bundle paths) of this containerd. */
function shimCmdlines(): string[] {
  return (c?.shimPids() ?? []).map((p) => procCmdline(p).join(' '));
}

before(async () => {
  prefix = join(mkdtempSync(join(tmpdir(), 'kata-ts-install-')), 'opt');
  bindir = mkdtempSync(join(tmpdir(), 'kata-ts-bin-'));
  BUSYBOX = busyboxImage().name;
  pauseImage();
}, { timeout: 600_000 });

after(async () => {
  try {
    await c?.stop();
  } finally {
    restoreBuild();
    net?.close();
    if (prefix) rmSync(join(prefix, '..'), { recursive: true, force: true });
    if (bindir) rmSync(bindir, { recursive: true, force: true });
  }
});

test('install A: one versioned prefix, current, three links; a pod runs with the checkout\'s build/ gone', { timeout: 900_000 }, async () => {
  const r = await install('test-a');
  assert.equal(r.code, 0, r.err);
  assert.equal(readlinkSync(join(prefix, 'current')), 'versions/test-a');
  for (const cmd of ['containerd-shim-kata-v2', 'kata-ts-runtime', 'kata-crictl']) {
    assert.equal(readlinkSync(join(bindir, cmd)), join(prefix, 'current/bin', cmd));
  }
  const v = join(prefix, 'versions/test-a');
  for (const f of ['bin/node', 'lib/containerd-shim-kata-v2.mjs', 'libexec/kata-ts-jailer', 'share/guest/vmlinux', 'share/guest/rootfs.img', 'share/defaults/configuration.toml']) {
    assert.ok(existsSync(join(v, f)), `${f} installed`);
  }
  const cfg = readFileSync(join(v, 'share/defaults/configuration.toml'), 'utf8');
  assert.match(cfg, new RegExp(`^kernel = "${v}/share/guest/vmlinux"$`, 'm'), 'the default names the installed guest');
  assert.match(cfg, new RegExp(`^jailer_path = "${v}/libexec/kata-ts-jailer"$`, 'm'), 'and the installed jailer (QEMU runs jailed)');
  assert.match(cfg, /^rootless = true$/m);
  assert.match(cfg, /^# Installed by scripts\/install\.sh: version test-a under /m);
  assert.doesNotMatch(cfg, new RegExp(ROOT.replace(/[/.]/g, '\\$&')), 'and nothing of the checkout');
  // Installing the same version again changes nothing.
  assert.equal((await install('test-a')).code, 0);

  net = createTestNetwork('kata-inst');
  c = await startContainerd({
    cri: { cniConfDir: net.confDir },
    netns: net.ns,
    // Only the install and the system's dirs: no checkout bin/, no /usr/local/bin.
    env: { PATH: `${bindir}:/usr/sbin:/usr/bin:/sbin:/bin` },
    kataConfig: 'system',
  });
  await importImage(c, busyboxImage());
  const k8s = { ctr: (args: string[], o?: { timeoutMs?: number }) => c!.ctr(args, { ...o, namespace: 'k8s.io' }) };
  await importImage(k8s, pauseImage());
  await importImage(k8s, busyboxImage());
  hideBuild();

  const run = await c.ctr(['run', '--rm', '--runtime', KATA, BUSYBOX, 'inst-a', 'sh', '-c', 'echo from-the-install; uname -r'], { timeoutMs: 300_000 });
  assert.equal(run.code, 0, `${run.stderr}\n${c.logTail(40)}`);
  assert.match(run.stdout, /^from-the-install\n/);
  const env = await sh(join(bindir, 'kata-ts-runtime'), ['env', '--json']);
  assert.equal(env.code, 0, env.err);
  const e = JSON.parse(env.out) as { meta: { version: string; config: string }; paths: { shim: string } };
  assert.deepEqual([e.meta.version, e.meta.config], ['test-a', join(v, 'share/defaults/configuration.toml')]);
});

test('containerd-config adds the kata handler to the private containerd\'s config (backup kept); a CRI pod runs through it', { timeout: 600_000 }, async () => {
  assert.ok(c && net);
  const before = readFileSync(c.configPath, 'utf8');
  const r = await sh(join(bindir, 'kata-ts-runtime'), ['containerd-config', '--file', c.configPath, '--runtime-config', join(prefix, 'current/share/defaults/configuration.toml')]);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /added the kata runtime/);
  const backups = readdirSync(join(c.configPath, '..')).filter((f) => f.startsWith('config.toml.bak-'));
  assert.equal(backups.length, 1);
  assert.equal(readFileSync(join(c.configPath, '..', backups[0]!), 'utf8'), before);
  // Idempotent.
  const again = await sh(join(bindir, 'kata-ts-runtime'), ['containerd-config', '--file', c.configPath, '--runtime-config', join(prefix, 'current/share/defaults/configuration.toml')]);
  assert.match(again.out, /unchanged \(the kata runtime is already there\)/);
  await c.restart();

  const crictl = (args: string[]) => sh(join(bindir, 'kata-crictl'), ['-r', `unix://${c!.address}`, ...args], {}, 300_000);
  await waitFor(async () => (await crictl(['info'])).out.includes('"NetworkReady"'), { timeoutMs: 30_000, what: 'CRI up' });
  const podFile = join(c.dir, 'pod.json');
  writeFileSync(podFile, JSON.stringify({ metadata: { name: 'inst', namespace: 'default', uid: 'uid-inst', attempt: 0 }, linux: { cgroup_parent: `/${c.namespace}` }, log_directory: join(c.dir, 'logs') }));
  const p = await crictl(['runp', '--runtime', 'kata', podFile]);
  assert.equal(p.code, 0, `${p.err}\n${c.logTail(40)}`);
  const pod = p.out.trim();
  assert.ok(shimCmdlines().some((l) => l.includes(join(prefix, 'versions/test-a/lib/containerd-shim-kata-v2.mjs'))), 'the CRI pod\'s shim is the installed one');
  assert.equal((await crictl(['stopp', pod])).code, 0);
  assert.equal((await crictl(['rmp', pod])).code, 0);
});

test('upgrade: a pod on A keeps running and is deleted cleanly after B is installed; new pods run on B', { timeout: 900_000 }, async () => {
  assert.ok(c);
  const d = await c.ctr(['run', '-d', '--runtime', KATA, BUSYBOX, 'up-a', 'sleep', '600'], { timeoutMs: 300_000 });
  assert.equal(d.code, 0, d.stderr);
  restoreBuild();
  const r = await install('test-b');
  hideBuild();
  assert.equal(r.code, 0, r.err);
  assert.equal(readlinkSync(join(prefix, 'current')), 'versions/test-b');
  assert.ok(existsSync(join(prefix, 'versions/test-a')), 'A stays beside B');
  // The A pod: still its A shim, still execs.
  assert.ok(shimCmdlines().some((l) => l.includes('/versions/test-a/')), 'the running pod keeps the version that started it');
  const ex = await c.ctr(['task', 'exec', '--exec-id', 'after-upgrade', 'up-a', 'echo', 'still-here'], { timeoutMs: 120_000 });
  assert.equal(ex.code, 0, ex.stderr);
  assert.equal(ex.stdout.trim(), 'still-here');
  // Deleted cleanly (containerd runs B's `delete` on PATH if needed): nothing of it left.
  const qemus = qemuPids(c);
  assert.equal((await c.ctr(['task', 'kill', '-s', 'KILL', 'up-a'])).code, 0);
  await waitFor(async () => /STOPPED/.test((await c!.ctr(['task', 'ls'])).stdout), { timeoutMs: 60_000, what: 'up-a stopped' });
  assert.equal((await c.ctr(['task', 'rm', 'up-a'], { timeoutMs: 60_000 })).code, 0);
  assert.equal((await c.ctr(['containers', 'rm', 'up-a'])).code, 0);
  await waitFor(() => qemuPids(c!).length === qemus.length - 1 && !shimCmdlines().some((l) => l.includes('/versions/test-a/')), { timeoutMs: 60_000, what: 'the A pod gone' });
  assert.deepEqual(readdirSync(c.kataRunRoot).filter((x) => x.includes('up-a')), [], 'no pod dir left');
  // A new pod runs on B.
  const n = await c.ctr(['run', '-d', '--runtime', KATA, BUSYBOX, 'up-b', 'sleep', '600'], { timeoutMs: 300_000 });
  assert.equal(n.code, 0, n.stderr);
  assert.ok(shimCmdlines().some((l) => l.includes('/versions/test-b/')), 'the new pod runs on B');
});

test('--uninstall refuses while a pod runs, naming it; then removes all it made and nothing else', { timeout: 300_000 }, async () => {
  assert.ok(c);
  const refused = await uninstall();
  assert.equal(refused.code, 1);
  assert.match(refused.err, /pods still run from .* \(pid, pod, version\):\n\d+ up-b test-b\n/);
  assert.match(refused.err, /refusing to uninstall/);
  assert.ok(existsSync(join(prefix, 'current')));
  await c.ctr(['task', 'kill', '-s', 'KILL', 'up-b']);
  await waitFor(async () => /STOPPED/.test((await c!.ctr(['task', 'ls'])).stdout), { timeoutMs: 60_000, what: 'up-b stopped' });
  await c.ctr(['task', 'rm', 'up-b'], { timeoutMs: 60_000 });
  await c.ctr(['containers', 'rm', 'up-b']);
  await waitFor(() => !shimCmdlines().some((l) => l.includes(prefix)), { timeoutMs: 60_000, what: 'no shim of the install' });
  // Something of the operator's beside the links stays.
  writeFileSync(join(bindir, 'operator-tool'), '#!/bin/sh\n');
  const u = await uninstall();
  assert.equal(u.code, 0, u.err);
  assert.ok(!existsSync(prefix), 'the prefix is gone');
  assert.deepEqual(readdirSync(bindir), ['operator-tool'], 'only the links it made were removed');
  assert.deepEqual(allPids().filter((p) => procCmdline(p).some((a) => a.includes(prefix))), [], 'no process of the install left');
});
