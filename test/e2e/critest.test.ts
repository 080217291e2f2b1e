/**
 * CRI conformance: critest (cri-tools v1.26.1, the Kubernetes CRI validation
 * suite) with the kata handler, through the team's offline kit
 * (../shared/critest: builds critest and a real crictl from vendored source,
 * stand-in images, a private containerd 1.6 of its own under CRITEST_WORK).
 *
 * The kata pass must fail exactly the specs listed in EXPECTED_FAILURES, each
 * with the reason docs/limits.md gives: a new failure fails this test, and so
 * does an expected failure that passes (the list would then be stale).
 *
 * Then the design card's line with the real crictl the kit builds:
 * `crictl runp --runtime kata` on a private containerd of this harness, the
 * pod Ready in its VM, stopp + rmp leaving no shim or QEMU.
 *
 * The kit's binaries (Go build, about 1.5-3 min) are cached in
 * build/critest; each run gets its own CRITEST_WORK temp dir (containerd
 * state, results), removed afterwards.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { importImage, pauseImage, projectRoot } from '../harness/busybox.js';
import { createTestNetwork, type TestNetwork } from '../harness/cni.js';
import { pidsMentioning, startContainerd, waitFor, type Containerd } from '../harness/containerd.js';
import { qemuPids } from '../harness/ctr.js';
import { runCommand } from '../harness/run.js';
import { defaultConfigText } from '../harness/guest.js';
import { skipUnlessCi } from '../harness/skip.js';

const KIT = resolve(projectRoot(), '..', 'shared', 'critest');
const CACHE = join(projectRoot(), 'build', 'critest');
const skip = skipUnlessCi(existsSync(join(KIT, 'run.sh')), `needs the critest kit at ${KIT}`);

/**
 * The specs the kata handler fails, each with what its failure message must
 * say (the documented reason: docs/limits.md). The first two fail with runc
 * as well and are not about the runtime (the kit's README).
 */
const EXPECTED_FAILURES: ReadonlyArray<{ spec: RegExp; reason: RegExp; why: string }> = [
  {
    spec: /should support port mapping with host port and container port/,
    reason: /./,
    why: 'fails with runc too: no portmap CNI plugin in the kit\'s network config',
  },
  {
    spec: /should support MaskedPaths$/,
    reason: /./,
    why: 'fails with runc too: Debian\'s busybox runs `ls` as a builtin, so masking /bin/ls changes nothing',
  },
  {
    spec: /HostNetwork is true/,
    reason: /no network namespace, i\.e\. the host network/,
    why: 'host network refused (docs/limits.md)',
  },
  {
    spec: /HostIpc is true/,
    reason: /no ipc namespace, i\.e\. the host IPC/,
    why: 'host IPC refused (docs/limits.md)',
  },
  {
    spec: /runtime should support HostPID$/,
    reason: /no pid namespace, i\.e\. the host PID/,
    why: 'host PID refused (docs/limits.md)',
  },
  {
    spec: /mount with 'rshared' should support propagation from host to container and vice versa/,
    // (The kit cuts messages at 400 characters: the mount's long temp path comes first.)
    reason: /code = Unimplemented desc = .*failed to create shim task: mounts\[\d+\] \(/,
    why: 'container → host propagation refused (docs/limits.md)',
  },
  {
    spec: /should support portforward(?! in host network)/,
    reason: /connection refused|error forwarding port/,
    why: 'port-forward dials the pod netns on the host, the server is in the guest (docs/limits.md)',
  },
  {
    spec: /should support portforward in host network/,
    reason: /no network namespace, i\.e\. the host network/,
    why: 'host network refused (docs/limits.md)',
  },
];

/** Process groups of the kit's runs: ended with this process (a test runner's timeout must not leave critest running). */
const groups = new Set<number>();
const endGroups = (): void => {
  for (const g of groups) {
    try { process.kill(-g, 'SIGTERM'); } catch { /* gone */ }
  }
};
process.once('exit', endGroups);
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => { endGroups(); process.exit(1); });

/** The kit's scripts in their own process group (ended with the test: `groups`); stdout and stderr together. */
const run = async (cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number | null; out: string }> => {
  const r = await runCommand(cmd, args, { env, timeoutMs, groups });
  return { code: r.code, out: r.all };
};

let work = '';

before(async () => {
  if (skip) return;
  // The kit's binaries, built once into the cache (it installs golang-go when missing).
  if (!existsSync(join(CACHE, 'bin', 'critest')) || !existsSync(join(CACHE, 'bin', 'crictl'))) {
    mkdirSync(CACHE, { recursive: true });
    const b = await run('bash', [join(KIT, 'build.sh')], { CRITEST_WORK: CACHE }, 900_000);
    assert.equal(b.code, 0, `building critest: ${b.out.slice(-3000)}`);
  }
  work = mkdtempSync(join(tmpdir(), 'critest-'));
  symlinkSync(join(CACHE, 'bin'), join(work, 'bin'));
}, { timeout: 960_000 });

after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

interface SpecResult { name: string; state: string; message: string }

function results(dir: string): { passed: string[]; failed: SpecResult[] } {
  const passed = readFileSync(join(dir, 'passed.txt'), 'utf8').split('\n').filter(Boolean);
  const failed = readFileSync(join(dir, 'failed.txt'), 'utf8').split('\n').filter(Boolean).map((l) => {
    const [name = '', state = '', message = ''] = l.split('\t');
    return { name, state, message };
  });
  return { passed, failed };
}

test('critest with the kata handler: only the documented specs fail, each for its documented reason', { skip, timeout: 2_400_000 }, async (t) => {
  // This checkout's shim (first on the kit containerd's PATH) and configuration (the CRI runtime
  // table's ConfigPath), not whatever is installed on the host.
  const config = join(work, 'configuration.toml');
  writeFileSync(config, defaultConfigText());
  const r = await run('bash', [join(KIT, 'run.sh'), 'kata'], {
    CRITEST_WORK: work,
    KATA_CONFIG: config,
    PATH: `${join(projectRoot(), 'bin')}:${process.env.PATH ?? ''}`,
  }, 2_300_000);
  const dir = join(work, 'results', 'kata');
  assert.ok(existsSync(join(dir, 'failed.txt')), `critest produced no results (exit ${r.code}):\n${r.out.slice(-4000)}`);
  const { passed, failed } = results(dir);
  t.diagnostic(`kata: passed ${passed.length}, failed ${failed.length}`);
  for (const f of failed) t.diagnostic(`failed: ${f.name} — ${f.message.slice(0, 200)}`);
  const unexpected = failed.filter((f) => !EXPECTED_FAILURES.some((e) => e.spec.test(f.name)));
  assert.deepEqual(unexpected.map((f) => `${f.name}: ${f.message.slice(0, 300)}`), [], 'specs that fail with kata and are not documented');
  for (const e of EXPECTED_FAILURES) {
    const hits = failed.filter((f) => e.spec.test(f.name));
    assert.equal(hits.length, 1, `expected exactly one failure for ${e.spec} (${e.why}); got ${hits.length} — an expected failure that passes makes the list stale`);
    assert.match(hits[0]!.message, e.reason, `${hits[0]!.name} fails, but not for its documented reason (${e.why})`);
  }
  assert.ok(passed.length >= 60, `the kata pass ran the suite (passed ${passed.length})`);
  // The kit's containerd is down and left no VM behind.
  assert.deepEqual(qemuPidsUnder(work), [], 'no containerd, shim or QEMU of the kit left');
});

/** Processes whose command line names this run's dir (the kit's containerd, shims and QEMUs). */
function qemuPidsUnder(dir: string): number[] {
  return pidsMentioning(dir);
}

let c: Containerd | undefined;
let net: TestNetwork | undefined;

test('the real crictl: `crictl runp --runtime kata` runs a pod in a VM; stopp + rmp leave nothing', { skip, timeout: 300_000 }, async () => {
  net = createTestNetwork('kata-crictl-real');
  try {
    c = await startContainerd({
      cri: { cniConfDir: net.confDir },
      runtimes: { kata: { runtimeType: 'io.containerd.kata.v2' } },
      netns: net.ns,
      extraPath: [join(projectRoot(), 'bin')],
    });
    const k8s = { ctr: (args: string[], o?: { timeoutMs?: number }) => c!.ctr(args, { ...o, namespace: 'k8s.io' }) };
    await importImage(k8s, pauseImage());
    const crictl = (args: string[], timeoutMs = 240_000) => run(join(CACHE, 'bin', 'crictl'), ['--runtime-endpoint', `unix://${c!.address}`, '--timeout', '200s', ...args], {}, timeoutMs);
    await waitFor(async () => /"NetworkReady"[\s\S]*?"status": true/.test((await crictl(['info'])).out), { timeoutMs: 30_000, what: 'CRI NetworkReady' });
    const podFile = join(c.dir, 'pod.json');
    writeFileSync(podFile, JSON.stringify({
      metadata: { name: 'real-crictl', namespace: 'default', uid: 'uid-real-crictl', attempt: 0 },
      log_directory: join(c.dir, 'logs'),
      linux: { cgroup_parent: `/${c.namespace}` },
    }));
    const qemus0 = qemuPids(c);
    const r = await crictl(['runp', '--runtime', 'kata', podFile]);
    assert.equal(r.code, 0, `crictl runp --runtime kata: ${r.out}\n${c.logTail(40)}`);
    const pod = r.out.trim().split('\n').pop()!;
    assert.match(pod, /^[0-9a-f]{64}$/);
    const ins = JSON.parse((await crictl(['inspectp', pod])).out) as { status: { state: string; runtimeHandler: string } };
    assert.deepEqual([ins.status.state, ins.status.runtimeHandler], ['SANDBOX_READY', 'kata']);
    assert.equal(qemuPids(c).length, qemus0.length + 1, 'one QEMU for the pod');
    assert.equal((await crictl(['stopp', pod])).code, 0);
    assert.equal((await crictl(['rmp', pod])).code, 0);
    await waitFor(() => qemuPids(c!).length === qemus0.length && c!.shimPids().length === 0, { timeoutMs: 60_000, what: 'no QEMU or shim left' });
  } finally {
    await c?.stop();
    net.close();
  }
});
