/**
 * Kubernetes-style pods in VMs (issue 6, "What it must show"): the REAL CRI
 * plugin of a private containerd 1.6 with runtime handler `kata`
 * (io.containerd.kata.v2, our shim), driven by kata-crictl.
 *
 * All traffic stays in network namespaces this test makes:
 *
 *   netns kata-cri-<tag> (the test's "host"; containerd runs in it through
 *   `nsenter --net`, so CNI's bridge and the pods' veths are made in it)
 *     lo up
 *     bridge kcni-<tag> 10.99.R.1/24 (CNI bridge, isGateway, no masquerade)
 *       └─ veth ──▶ pod netns cni-… (CRI/CNI's): eth0 10.99.R.x/24
 *                      └─ tc mirred ⇄ tap0_kata ── QEMU ── guest eth0
 *     the client (busybox wget) runs here, fetching from the pod IP
 *
 * The suite's configuration has [runtime] sandbox_cgroup_only = true (as
 * on a kubelet node): the shim, QEMU and virtiofsd are checked to be in the
 * sandbox's cgroup (cgroup_parent/<pod id>), removed at rmp.
 *
 * Two pod VMs in all (a boot costs ~10 s under TCG here):
 * - the main pod carries every positive case: runp → Ready, one new shim and
 *   one QEMU (in CRI's pod netns, with the tap and the tc filters); a logging
 *   container (guest kernel in /proc/version, pod hostname, CRI's
 *   hostname/resolv.conf, logs); busybox httpd joining the same pod and VM
 *   (still one shim, one QEMU; the pod's pid namespace and /dev/shm shared)
 *   fetched from the pod IP by a client in the test's namespace; exec exit
 *   codes and streams; a container exiting 3 (exit code, reason, logs,
 *   timestamps on the host's clock); bad configs (missing metadata, unknown
 *   handler, bad image: no VM, nothing leaked; a missing command: StartContainer
 *   fails, EXITED 128, the pod lives on); StopContainer → 143; stopp + rmp → no
 *   shim, QEMU, virtiofsd, tap, ingress qdisc, tc filter, veth, mount,
 *   run-root entry, lease or cached CNI result (the pod netns is held by a
 *   second reference of the test's, so what the shim would leave stays visible
 *   after CRI removes its own name);
 * - a second pod whose QEMU is SIGKILLed: its container ends 255 (Kata's code for a lost VM), the pod
 *   goes NotReady, the shim cleans up and ends by itself; stopp + rmp leave
 *   nothing either.
 *
 *   node --test dist/test/e2e/cri-kata.test.js
 *   CRI_KATA_DEBUG=1 …   # containerd (and the shims) at debug level; its whole log copied to $TMPDIR/cri-kata-containerd.log
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { crictlRunner, expectOk, outputJson, outputLines, writeJsonFile, type CrictlResult } from '../harness/crictl.js';
import { BUSYBOX_IMAGE, importImage, pauseImage, busyboxImage, projectRoot } from '../harness/busybox.js';
import { createTestNetwork, type TestNetwork } from '../harness/cni.js';
import { mountsUnder, pidAlive, procCmdline, startContainerd, waitFor, type Containerd } from '../harness/containerd.js';
import { entries, qemuPids, virtiofsdPids } from '../harness/ctr.js';
import { defaultConfigText, guestKernelRelease, templatesOn } from '../harness/guest.js';
import { skipUnlessCi } from '../harness/skip.js';

const ID = /^[0-9a-f]{64}$/;
/** runp/create/start/stopp/rmp under TCG: generous. */
const SLOW = ['--timeout', '120s'];
const DEBUG = process.env.CRI_KATA_DEBUG === '1';

const has = (cmd: string, args: string[]) => spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;
const canRun = process.getuid?.() === 0 && existsSync('/usr/lib/qemu/virtiofsd') && existsSync('/dev/net/tun') &&
  existsSync('/usr/lib/cni/bridge') && existsSync('/usr/lib/cni/host-local') && existsSync('/usr/lib/cni/loopback') &&
  has('qemu-system-x86_64', ['--version']) && has('containerd', ['--version']) && has('ip', ['-V']) && has('tc', ['-V']) && has('nsenter', ['--version']);
const skip = skipUnlessCi(canRun, 'needs root, containerd, qemu-system-x86_64, virtiofsd, /dev/net/tun, iproute2, nsenter and containernetworking-plugins');

// ---------------------------------------------------------------------------
// helpers

function sh(cmd: string, args: string[], timeoutMs = 20_000): { status: number | null; out: string; stdout: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL' });
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}`, stdout: r.stdout ?? '' };
}

function must(cmd: string, ...args: string[]): string {
  const r = sh(cmd, args);
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.out}`);
  return r.stdout;
}

// ---------------------------------------------------------------------------
// kata-crictl

let c: Containerd;
let net: TestNetwork;
let work: string;
let endpoint: string;
/** Second references to the pods' netns, taken before stopp, so that what the shim leaves in them stays visible after CRI removes its own. */
const held: string[] = [];

function holdNetns(path: string): string {
  const name = `${net.ns}-h${held.length}`;
  held.push(name);
  must('touch', `/var/run/netns/${name}`);
  must('mount', '--bind', path, `/var/run/netns/${name}`);
  return name;
}

type Result = CrictlResult;

/** kata-crictl -r <ours> …; `spawn` runs the shipped wrapper (exit codes, streams), else run() in process. */
const crictl = crictlRunner(() => endpoint, 300_000);

const ok = (r: Result, what: string): Result => expectOk(r, what, () => c.logTail(40));
const lines = outputLines;
const json = outputJson;
const writeJson = (name: string, v: unknown): string => writeJsonFile(work, name, v);

/** A pod config in crictl's format, on the pod network (namespace_options.network POD, the default). */
function podConfig(name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    metadata: { name, namespace: 'default', uid: `uid-${name}-${net.ns}`, attempt: 0 },
    hostname: `${name}-host`,
    dns_config: { servers: [net.gateway], searches: ['kata.test'], options: ['ndots:2'] },
    log_directory: join(work, 'logs', name),
    labels: { 'io.kubernetes.pod.name': name },
    linux: { cgroup_parent: `/${c.namespace}` },
    ...extra,
  };
}

function ctrConfig(name: string, command: string[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { metadata: { name }, image: { image: BUSYBOX_IMAGE }, command, log_path: `${name}.log`, ...extra };
}

// ---------------------------------------------------------------------------
// what runs on the host

// ---------------------------------------------------------------------------
// set-up and teardown

let podCgroup = '';

/** The pod cgroup's directories: v2, or the v1 hierarchies the shim joins that are mounted here. */
function podCgroupDirs(): string[] {
  assert.ok(podCgroup.startsWith('/'), 'the pod cgroup is known');
  if (existsSync('/sys/fs/cgroup/cgroup.controllers')) return [join('/sys/fs/cgroup', podCgroup)];
  const dirs = ['memory', 'cpu', 'pids'].map((h) => join('/sys/fs/cgroup', h)).filter((h) => existsSync(join(h, 'cgroup.procs')));
  assert.ok(dirs.length > 0, 'a cgroup hierarchy to look in');
  return dirs.map((h) => join(h, podCgroup));
}

let baseShims: number[] = [];
let baseQemus: number[] = [];

/**
 * The `kata-cfg` handler's own configuration, named only by the CRI runtime
 * table's `options.ConfigPath` (containerd hands it to the shim): 2 vCPUs,
 * 384 MiB, machine_type q35 (with templates too: its clones grow), and
 * bounds of 3 vCPUs and 2 GiB that a later container grows the VM into.
 */
let cfgDir = '';
let cfgPath = '';
const CFG_MAX_VCPUS = 3;
const CFG_MAX_MEMORY_MIB = 2048;

before(async () => {
  if (skip) return;
  net = createTestNetwork('kata-cri');
  cfgDir = mkdtempSync(join(tmpdir(), 'kata-cri-cfg-'));
  cfgPath = join(cfgDir, 'configuration.toml');
  const cfgText = defaultConfigText(join(cfgDir, 'templates'))
    .replace(/^default_vcpus = 1$/m, 'default_vcpus = 2')
    .replace(/^default_memory = 256$/m, 'default_memory = 384')
    .replace(/^default_maxvcpus = 0$/m, `default_maxvcpus = ${CFG_MAX_VCPUS}`)
    .replace(/^default_maxmemory = 0$/m, `default_maxmemory = ${CFG_MAX_MEMORY_MIB}`);
  assert.match(cfgText, /^machine_type = "q35"$/m);
  assert.match(cfgText, /^default_maxvcpus = 3$/m);
  assert.match(cfgText, /^default_maxmemory = 2048$/m);
  assert.match(cfgText, /^default_vcpus = 2$/m);
  assert.match(cfgText, /^default_memory = 384$/m);
  writeFileSync(cfgPath, cfgText);
  c = await startContainerd({
    cri: { cniConfDir: net.confDir },
    runtimes: {
      kata: { runtimeType: 'io.containerd.kata.v2', extra: { pod_annotations: ['io.katacontainers.*'] } },
      'kata-cfg': { runtimeType: 'io.containerd.kata.v2', options: { ConfigPath: cfgPath } },
    },
    extraPath: [join(projectRoot(), 'bin')],
    // The whole VM in the pod's cgroup (CRI's cgroup_parent + the sandbox id), as on a kubelet node.
    kataConfigEdit: (t) => t.replace(/^sandbox_cgroup_only = false$/m, 'sandbox_cgroup_only = true'),
    netns: net.ns,
    ...(DEBUG ? { logLevel: 'debug' } : {}),
  });
  endpoint = `unix://${c.address}`;
  work = join(c.dir, 'cri');
  mkdirSync(work, { recursive: true });
  const k8s = { ctr: (args: string[], o?: { timeoutMs?: number }) => c.ctr(args, { ...o, namespace: 'k8s.io' }) };
  await importImage(k8s, pauseImage());
  await importImage(k8s, busyboxImage());
  // The CRI plugin loads the CNI config asynchronously.
  await waitFor(async () => {
    const r = await crictl(['info']);
    const conds = r.code === 0 ? (json(r).status?.conditions ?? []) as Array<{ type: string; status: boolean }> : [];
    return conds.some((x) => x.type === 'NetworkReady' && x.status);
  }, { timeoutMs: 30_000, what: 'CRI NetworkReady' });
  baseShims = c.shimPids();
  baseQemus = qemuPids(c);
}, { timeout: 180_000 });

after(async () => {
  if (skip) return;
  if (c && DEBUG) copyFileSync(c.logPath, join(tmpdir(), 'cri-kata-containerd.log'));
  if (process.exitCode) {
    if (c) process.stderr.write(`----- containerd log tail -----\n${c.logTail(150)}\n`);
    for (const p of c ? entries(c.kataRunRoot) : []) {
      const con = join(c.kataRunRoot, p, 'console.log');
      if (existsSync(con)) process.stderr.write(`----- ${con} (tail) -----\n${readFileSync(con, 'utf8').slice(-4000)}\n`);
    }
  }
  try {
    await c?.stop();
  } finally {
    for (const h of held) sh('ip', ['netns', 'del', h]);
    net?.close();
    if (cfgDir) rmSync(cfgDir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------
// the pod, in order

let pod = '';
let podFile = '';
let podIp = '';
let podNetns = '';
let logCtr = '';
let httpd = '';
let shimPid = 0;
let qemuPid = 0;
const token = `hello-from-a-kata-pod-${randomBytes(6).toString('hex')}`;

test('runp --runtime kata: the pod is Ready, one new shim and one QEMU, in the pod netns CNI made', { skip, timeout: 300_000 }, async (t) => {
  podFile = writeJson('pod.json', podConfig('kpod'));
  const r = ok(await crictl([...SLOW, 'runp', '--runtime', 'kata', podFile], { spawn: true }), 'runp --runtime kata');
  pod = r.stdout.trim();
  assert.match(pod, ID);
  t.diagnostic(`runp --runtime kata: ${r.ms} ms`);

  const ins = json(ok(await crictl(['inspectp', pod]), 'inspectp'));
  assert.equal(ins.status.state, 'SANDBOX_READY');
  assert.equal(ins.status.runtimeHandler, 'kata');
  assert.equal(ins.info.runtimeType, 'io.containerd.kata.v2');
  podIp = ins.status.network.ip;
  assert.match(podIp, new RegExp(`^${net.addressPattern}$`), `pod IP ${podIp} in ${net.subnet}`);
  podNetns = ins.info.runtimeSpec.linux.namespaces.find((n: { type: string }) => n.type === 'network').path;
  assert.match(podNetns, /^\/var\/run\/netns\/cni-/);

  const shims = c.shimPids().filter((p) => !baseShims.includes(p));
  const qemus = qemuPids(c).filter((p) => !baseQemus.includes(p));
  assert.equal(shims.length, 1, `one new shim: ${shims.map((p) => procCmdline(p).join(' ')).join('; ')}`);
  assert.equal(qemus.length, 1, `one new QEMU: ${qemus.join(' ')}`);
  [shimPid] = shims as [number];
  [qemuPid] = qemus as [number];
  assert.equal(readlinkSync(`/proc/${qemuPid}/ns/net`), `net:[${statSync(podNetns).ino}]`, 'QEMU runs in the pod netns');
  assert.equal(readlinkSync(`/proc/${shimPid}/ns/net`), `net:[${statSync(net.nsPath).ino}]`, 'the shim runs in containerd\'s (the test\'s) netns');
  // sandbox_cgroup_only: the shim, QEMU and virtiofsd in the sandbox's cgroup (cgroup_parent/<pod id>).
  podCgroup = ins.info.runtimeSpec.linux.cgroupsPath;
  assert.equal(podCgroup, `/${c.namespace}/${pod}`);
  // virtiofsd runs as two processes (its sandbox forks): both count.
  const vfsd = virtiofsdPids(c);
  if (templatesOn()) {
    // A clone of a VM template: virtio-9p inside QEMU, no virtiofsd; the VM came from the template.
    assert.equal(vfsd.length, 0, 'no virtiofsd with templates (virtio-9p)');
    assert.match(c.logTail(2000), new RegExp(`"pod":"${pod}".*"msg":"pod VM cloned from a template"`), 'the pod VM is a clone');
  } else {
    assert.ok(vfsd.length >= 1, 'virtiofsd runs');
  }
  for (const d of podCgroupDirs()) {
    const procs = readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
    for (const [what, p] of [['shim', shimPid], ['QEMU', qemuPid], ...vfsd.map((v) => ['virtiofsd', v] as const)] as const) {
      assert.ok(procs.includes(p), `${what} ${p} in ${d}: ${procs.join(' ')}`);
    }
  }
  // The pod netns: CNI's veth, our tap, the redirect filters both ways.
  const ip = must('ip', '-n', basename(podNetns), '-d', 'link', 'show');
  assert.match(ip, /\d+: eth0@if\d+: .* veth/s);
  assert.match(ip, /tap0_kata: .*tun type tap/s);
  assert.match(must('tc', '-n', basename(podNetns), 'filter', 'show', 'dev', 'eth0', 'ingress'), /mirred \(Egress Redirect to device tap0_kata\)/);
  assert.match(must('tc', '-n', basename(podNetns), 'filter', 'show', 'dev', 'tap0_kata', 'ingress'), /mirred \(Egress Redirect to device eth0\)/);
  // The bridge is in the test's namespace, never in the machine's.
  assert.match(net.exec('ip', ['-o', 'addr', 'show', 'dev', net.bridge]).out, new RegExp(`inet ${net.gateway.replace(/\./g, '\\.')}/24`));
  assert.notEqual(sh('ip', ['link', 'show', net.bridge]).status, 0, 'no bridge in the machine\'s own namespace');
});

test('a container runs in the VM: guest kernel, pod hostname, logs', { skip, timeout: 300_000 }, async (t) => {
  assert.ok(pod, 'the pod runs');
  const f = writeJson('log.json', ctrConfig('logger', ['sh', '-c', 'echo hello-log; echo err-log >&2; exec sleep 3600']));
  const cr = ok(await crictl([...SLOW, 'create', pod, f, podFile], { spawn: true }), 'create logger');
  logCtr = cr.stdout.trim();
  assert.match(logCtr, ID);
  const st = ok(await crictl([...SLOW, 'start', logCtr], { spawn: true }), 'start logger');
  t.diagnostic(`create: ${cr.ms} ms, start: ${st.ms} ms`);
  const ins = json(ok(await crictl(['inspect', logCtr]), 'inspect logger'));
  assert.equal(ins.status.state, 'CONTAINER_RUNNING');

  const v = await crictl(['exec', '-s', logCtr, 'cat', '/proc/version'], { spawn: true });
  assert.equal(v.code, 0, v.stderr);
  assert.match(v.stdout, new RegExp(`^Linux version ${guestKernelRelease().replace(/[.+]/g, '\\$&')} `), 'the guest kernel');
  assert.ok(!v.stdout.includes(release()), `not the host kernel (${release()})`);
  const hn = ok(await crictl(['exec', '-s', logCtr, 'hostname']), 'exec hostname');
  assert.equal(hn.stdout, 'kpod-host\n', 'the pod hostname (the sandbox\'s UTS namespace)');
  // CRI's per-pod files reach the guest container through the shared dir.
  const files = ok(await crictl(['exec', '-s', logCtr, 'cat', '/etc/hostname', '/etc/resolv.conf']), 'exec cat').stdout;
  assert.match(files, /^kpod-host\n/);
  assert.match(files, new RegExp(`nameserver ${net.gateway.replace(/\./g, '\\.')}\n`));
  assert.match(files, /search kata\.test\n/);
  assert.match(files, /options ndots:2\n/);

  await waitFor(async () => (await crictl(['logs', logCtr])).stdout === 'hello-log\n', { timeoutMs: 30_000, what: 'logs of the logger' });
  const lg = ok(await crictl(['logs', logCtr], { spawn: true }), 'logs');
  assert.equal(lg.stdout, 'hello-log\n');
  assert.equal(lg.stderr, 'err-log\n');
  const raw = lines(readFileSync(join(work, 'logs', 'kpod', 'logger.log'), 'utf8'));
  for (const l of raw) assert.match(l, /^\d{4}-\d\d-\d\dT\S+ (stdout|stderr) F (hello-log|err-log)$/);
});

test('busybox httpd joins the same pod and VM; a client in the test netns fetches a page from the pod IP', { skip, timeout: 300_000 }, async (t) => {
  assert.ok(logCtr, 'the logger runs');
  const f = writeJson('httpd.json', ctrConfig('httpd', ['sh', '-c', `mkdir -p /www && echo ${token} > /www/index.html && exec httpd -f -p 80 -h /www`]));
  httpd = ok(await crictl([...SLOW, 'create', pod, f, podFile], { spawn: true }), 'create httpd').stdout.trim();
  ok(await crictl([...SLOW, 'start', httpd], { spawn: true }), 'start httpd');
  assert.deepEqual(c.shimPids().filter((p) => !baseShims.includes(p)), [shimPid], 'still one shim');
  assert.deepEqual(qemuPids(c).filter((p) => !baseQemus.includes(p)), [qemuPid], 'still one QEMU');

  // Both containers and the pause process share the pod's pid namespace in the guest.
  const ps = ok(await crictl(['exec', '-s', httpd, 'ps', '-o', 'comm,args']), 'exec ps').stdout;
  assert.match(ps, /httpd -f -p 80/);
  assert.match(ps, /sleep 3600/);
  assert.match(ps, /while :; do sleep 3600/, 'the pause container\'s process');
  // ... and the pod's /dev/shm (CRI's sandbox shm, bound into both containers).
  ok(await crictl(['exec', '-s', logCtr, 'sh', '-c', 'echo shm-shared > /dev/shm/probe']), 'write /dev/shm');
  assert.equal(ok(await crictl(['exec', '-s', httpd, 'cat', '/dev/shm/probe']), 'read /dev/shm').stdout, 'shm-shared\n');

  let got = '';
  let tries = 0;
  const t0 = Date.now();
  while (Date.now() - t0 < 60_000) {
    tries++;
    // busybox 1.35's wget -T segfaults: each try is bounded by timeout(1).
    const r = net.exec('timeout', ['-s', 'KILL', '10', 'busybox', 'wget', '-q', '-O', '-', `http://${podIp}/`], 15_000);
    if (r.status === 0) {
      got = r.stdout;
      break;
    }
    await sleep(500);
  }
  assert.equal(got, `${token}\n`, `GET http://${podIp}/ after ${tries} tries`);
  t.diagnostic(`page fetched from ${podIp} after ${tries} tries, ${Date.now() - t0} ms`);
  // The guest answered (ARP for the pod IP from the bridge side is the veth's MAC, which the guest NIC carries).
  assert.match(net.exec('ip', ['neigh', 'show', podIp]).out, /lladdr [0-9a-f:]{17}/);
});

test('exec: exact exit codes, stdout and stderr apart', { skip, timeout: 300_000 }, async () => {
  assert.ok(httpd, 'httpd runs');
  const r = await crictl(['exec', '-s', httpd, 'sh', '-c', 'printf out; printf err >&2; exit 7'], { spawn: true });
  assert.deepEqual([r.code, r.stdout, r.stderr], [7, 'out', 'err']);
  const [e0, e1, e255, eSig] = await Promise.all([
    crictl(['exec', httpd, 'true']),
    crictl(['exec', logCtr, 'false']),
    crictl(['exec', httpd, 'sh', '-c', 'exit 255']),
    crictl(['exec', httpd, 'sh', '-c', 'kill -TERM $$'], { spawn: true }),
  ]);
  assert.deepEqual([e0.code, e0.stdout, e0.stderr], [0, '', '']);
  assert.equal(e1.code, 1);
  assert.equal(e255.code, 255);
  assert.equal(eSig.code, 143);
  const nope = await crictl(['exec', httpd, 'no-such-command'], { spawn: true });
  assert.equal(nope.code, 1);
  assert.match(nope.stderr, /^kata-crictl: execing command in container synchronously: rpc error: code = Unknown desc = .*no-such-command/);
});

test('a container that exits 3: inspect shows exit code 3, logs what it printed; still one VM', { skip, timeout: 300_000 }, async () => {
  assert.ok(pod, 'the pod runs');
  const f = writeJson('exit3.json', ctrConfig('exit3', ['sh', '-c', 'echo bye; exit 3']));
  const id = ok(await crictl([...SLOW, 'create', pod, f, podFile]), 'create exit3').stdout.trim();
  const beforeStart = BigInt(Date.now()) * 1_000_000n;
  ok(await crictl([...SLOW, 'start', id]), 'start exit3');
  const st = await waitFor(async () => {
    const s = json(ok(await crictl(['inspect', id]), 'inspect exit3')).status;
    return s.state === 'CONTAINER_EXITED' ? s : undefined;
  }, { timeoutMs: 60_000, what: 'exit3 exited' });
  assert.equal(st.exitCode, 3);
  assert.equal(st.reason, 'Error');
  // Timestamps on the host's clock: the exit is not before the start (the guest's clock may lag the host's).
  assert.ok(BigInt(st.finishedAt) >= BigInt(st.startedAt), `finishedAt ${st.finishedAt} < startedAt ${st.startedAt}`);
  assert.ok(BigInt(st.finishedAt) >= beforeStart, `finishedAt ${st.finishedAt} before the start call (${beforeStart})`);
  assert.ok(BigInt(st.finishedAt) <= BigInt(Date.now()) * 1_000_000n, `finishedAt ${st.finishedAt} in the future`);
  assert.equal(ok(await crictl(['logs', id]), 'logs exit3').stdout, 'bye\n');
  ok(await crictl([...SLOW, 'rm', id]), 'rm exit3');
  assert.deepEqual(c.shimPids().filter((p) => !baseShims.includes(p)), [shimPid], 'still one shim');
  assert.deepEqual(qemuPids(c).filter((p) => !baseQemus.includes(p)), [qemuPid], 'still one QEMU');
});

test('bad configs: clear CRI errors, nothing leaked', { skip, timeout: 300_000 }, async () => {
  const shims0 = c.shimPids();
  const qemus0 = qemuPids(c);
  const runRoot0 = entries(c.kataRunRoot);
  const mounts0 = mountsUnder(c.kataRunRoot).sort();

  const noMeta = writeJson('nometa.json', { log_directory: join(work, 'logs', 'x') });
  const r1 = await crictl([...SLOW, 'runp', '--runtime', 'kata', noMeta], { spawn: true });
  assert.equal(r1.code, 1);
  assert.match(r1.stderr, /^kata-crictl: run pod sandbox: rpc error: code = Unknown desc = sandbox config must include metadata\n$/);

  const r2 = await crictl([...SLOW, 'runp', '--runtime', 'nosuch', writeJson('p-nosuch.json', podConfig('nosuch'))], { spawn: true });
  assert.equal(r2.code, 1);
  assert.match(r2.stderr, /^kata-crictl: run pod sandbox: rpc error: code = Unknown desc = .*no runtime for "nosuch" is configured\n$/);

  const badImg = writeJson('badimg.json', { metadata: { name: 'bad' }, image: { image: 'example.invalid/nope:1' } });
  const r3 = await crictl([...SLOW, 'create', '--no-pull', pod, badImg, podFile], { spawn: true });
  assert.equal(r3.code, 1);
  assert.match(r3.stderr, /^kata-crictl: create container: rpc error: code = NotFound desc = .*example\.invalid\/nope:1.*not found\n$/);

  // A container whose command does not exist: created, StartContainer fails, EXITED with 128 (as with runc); the pod lives on.
  const nc = ok(await crictl([...SLOW, 'create', pod, writeJson('nocmd.json', ctrConfig('nocmd', ['no-such-binary'])), podFile]), 'create nocmd').stdout.trim();
  const r4 = await crictl([...SLOW, 'start', nc], { spawn: true });
  assert.equal(r4.code, 1);
  assert.match(r4.stderr, /^kata-crictl: start container "[0-9a-f]{64}": rpc error: code = \w+ desc = .*exec: "no-such-binary": executable file not found in \$PATH/);
  const ns = json(ok(await crictl(['inspect', nc]), 'inspect nocmd')).status;
  assert.deepEqual([ns.state, ns.exitCode], ['CONTAINER_EXITED', 128]);
  ok(await crictl([...SLOW, 'rm', nc]), 'rm nocmd');
  assert.deepEqual(mountsUnder(c.kataRunRoot).filter((m) => m.includes(nc)), [], 'its rootfs and files are unmounted from the shared dir');
  assert.deepEqual(mountsUnder(c.kataRunRoot).sort(), mounts0, 'the pod\'s mounts are as before');
  assert.equal(json(ok(await crictl(['inspectp', pod]), 'inspectp')).status.state, 'SANDBOX_READY');

  // What a VM cannot give is refused at RunPodSandbox, naming the setting (docs/limits.md): the host's
  // network, IPC and PID namespaces. (runc gives them; here the pod would silently get the guest's.)
  for (const [key, what] of [['network', 'host network'], ['ipc', 'host IPC'], ['pid', 'host PID']] as const) {
    const f = writeJson(`host-${key}.json`, podConfig(`host-${key}`, { linux: { cgroup_parent: `/${c.namespace}`, security_context: { namespace_options: { [key]: 2 } } } }));
    const r = await crictl([...SLOW, 'runp', '--runtime', 'kata', f], { spawn: true });
    assert.equal(r.code, 1, `namespace_options.${key} = NODE is refused`);
    assert.match(r.stderr, new RegExp(`code = \\w+ desc = .*linux\\.namespaces: no ${key} namespace, i\\.e\\. the ${what} \\(CRI namespace_options\\.${key} = NODE.*not supported, a pod runs in its own VM`));
  }

  const pods = lines(ok(await crictl(['pods', '-q']), 'pods -q').stdout);
  assert.deepEqual(pods, [pod], 'only the one pod');
  assert.deepEqual(c.shimPids().sort(), shims0.sort(), 'no shim started or left');
  assert.deepEqual(qemuPids(c).sort(), qemus0.sort(), 'no QEMU started or left');
  assert.deepEqual(entries(c.kataRunRoot), runRoot0, 'no pod dir left under the run root');
});

test('stopp + rmp: no shim, QEMU, virtiofsd, tap, tc filter, mount, run-root entry or CNI state left', { skip, timeout: 300_000 }, async (t) => {
  assert.ok(pod, 'the pod runs');
  // Hold the pod's netns under a name of ours: CRI removes its own name at stopp, and
  // with this reference whatever the shim would leave in the namespace stays visible.
  // StopContainer: SIGTERM reaches `sleep` (not PID 1: it shares the pod's pid namespace), exit 143.
  ok(await crictl([...SLOW, 'stop', '-t', '10', logCtr]), 'stop logger');
  const ls = json(ok(await crictl(['inspect', logCtr]), 'inspect logger')).status;
  assert.deepEqual([ls.state, ls.exitCode, ls.reason], ['CONTAINER_EXITED', 143, 'Error']);
  assert.deepEqual(lines(ok(await crictl(['ps', '-q']), 'ps -q').stdout), [httpd], 'httpd still runs');
  const h = holdNetns(podNetns);
  const sp = ok(await crictl([...SLOW, 'stopp', pod], { spawn: true }), 'stopp');
  assert.equal(sp.stdout, `Stopped sandbox ${pod}\n`);
  const rp = ok(await crictl([...SLOW, 'rmp', pod], { spawn: true }), 'rmp');
  assert.equal(rp.stdout, `Removed sandbox ${pod}\n`);
  t.diagnostic(`stopp: ${sp.ms} ms, rmp: ${rp.ms} ms`);
  assert.deepEqual(lines(ok(await crictl(['pods', '-q']), 'pods -q').stdout), []);
  assert.deepEqual(lines(ok(await crictl(['ps', '-a', '-q']), 'ps -a -q').stdout), []);

  await waitFor(() => !pidAlive(shimPid) && c.shimPids().length === 0, { timeoutMs: 60_000, what: 'no shim left' });
  await waitFor(() => qemuPids(c).length === 0 && virtiofsdPids(c).length === 0, { timeoutMs: 60_000, what: 'no QEMU or virtiofsd left' });
  assert.equal(existsSync(podNetns), false, 'CRI removed its netns');
  // In the held namespace: CNI DEL took the veth, the shim took its tap, qdiscs and filters.
  const links = must('ip', '-n', h, '-o', 'link', 'show');
  assert.doesNotMatch(links, /tap0_kata/, 'no tap');
  assert.deepEqual(lines(links).map((l) => l.split(':')[1]!.trim()), ['lo'], `only lo: ${links}`);
  assert.doesNotMatch(must('tc', '-n', h, 'qdisc', 'show'), /ingress/, 'no ingress qdisc');
  assert.equal(must('tc', '-n', h, 'filter', 'show', 'dev', 'lo', 'ingress').trim(), '', 'no tc filter');
  // The bridge has no port left.
  assert.equal(net.exec('ip', ['-o', 'link', 'show', 'master', net.bridge]).out.trim(), '', 'no veth left on the bridge');

  assert.deepEqual(mountsUnder(c.dir).filter((m) => !m.startsWith(join(c.root, ''))), [], 'no mount under the harness dir (but containerd\'s own root)');
  assert.deepEqual(mountsUnder(c.kataRunRoot), [], 'no mount under the kata run root');
  assert.deepEqual(entries(c.kataRunRoot), [], 'nothing under the kata run root');
  assert.deepEqual(net.cniState(), [], 'CNI DEL released the IP and the cached result');
  for (const d of podCgroupDirs()) assert.equal(existsSync(d), false, `the pod cgroup ${d} removed`);
});

test('the pod VM dies (QEMU killed): its containers end with 255, the pod goes NotReady; stopp + rmp leave nothing', { skip, timeout: 300_000 }, async (t) => {
  // The second (and last) pod VM of this file.
  const p2File = writeJson('pod2.json', podConfig('kpod2'));
  const p2 = ok(await crictl([...SLOW, 'runp', '--runtime', 'kata', p2File], { spawn: true }), 'runp pod2').stdout.trim();
  const ins = json(ok(await crictl(['inspectp', p2]), 'inspectp pod2'));
  const netns = ins.info.runtimeSpec.linux.namespaces.find((n: { type: string }) => n.type === 'network').path as string;
  const f = writeJson('victim.json', ctrConfig('victim', ['sleep', '3600']));
  const v = ok(await crictl([...SLOW, 'create', p2, f, p2File]), 'create victim').stdout.trim();
  ok(await crictl([...SLOW, 'start', v]), 'start victim');
  const qemus = qemuPids(c);
  assert.equal(qemus.length, 1, `one QEMU: ${qemus.join(' ')}`);
  const shims = c.shimPids();
  assert.equal(shims.length, 1, 'one shim');
  const h = holdNetns(netns);
  {
    process.kill(qemus[0]!, 'SIGKILL');
    const st = await waitFor(async () => {
      const s = json(ok(await crictl(['inspect', v]), 'inspect victim')).status;
      return s.state === 'CONTAINER_EXITED' ? s : undefined;
    }, { timeoutMs: 60_000, what: 'the victim exited' });
    assert.equal(st.exitCode, 255);
    await waitFor(async () => json(ok(await crictl(['inspectp', p2]), 'inspectp')).status.state === 'SANDBOX_NOTREADY', { timeoutMs: 60_000, what: 'pod2 NotReady' });
    // With every container's task deleted by CRI, the shim cleans up and ends by itself.
    await waitFor(() => c.shimPids().length === 0, { timeoutMs: 60_000, what: 'the shim ends' });
    ok(await crictl([...SLOW, 'stopp', p2], { spawn: true }), 'stopp pod2');
    ok(await crictl([...SLOW, 'rmp', p2], { spawn: true }), 'rmp pod2');
    assert.deepEqual(lines(ok(await crictl(['pods', '-q']), 'pods -q').stdout), []);
    assert.deepEqual(qemuPids(c), []);
    await waitFor(() => virtiofsdPids(c).length === 0, { timeoutMs: 30_000, what: 'no virtiofsd' });
    const links = must('ip', '-n', h, '-o', 'link', 'show');
    assert.deepEqual(lines(links).map((l) => l.split(':')[1]!.trim()), ['lo'], `no tap left: ${links}`);
    assert.doesNotMatch(must('tc', '-n', h, 'qdisc', 'show'), /ingress/, 'no ingress qdisc');
    assert.deepEqual(mountsUnder(c.dir), [], 'no mount under the harness dir');
    assert.deepEqual(entries(c.kataRunRoot), [], 'nothing under the kata run root');
    assert.deepEqual(net.cniState(), [], 'CNI state released');
    t.diagnostic('QEMU SIGKILLed: the victim ended 255, the shim cleaned up and ended, nothing left');
  }
});

test('a handler whose options.ConfigPath alone names its configuration (q35, 2 vCPUs, 384 MiB); a container with limits grows the VM by hot-plug; past default_maxmemory: refused, the pod goes on', { skip, timeout: 400_000 }, async (t) => {
  const f = writeJson('cfgpod.json', podConfig('cfgpod'));
  const p = ok(await crictl([...SLOW, 'runp', '--runtime', 'kata-cfg', f], { spawn: true }), 'runp --runtime kata-cfg').stdout.trim();
  try {
    assert.equal(json(ok(await crictl(['inspectp', p]), 'inspectp')).status.runtimeHandler, 'kata-cfg');
    const cf = writeJson('probe.json', ctrConfig('probe', ['sleep', '3600']));
    const id = ok(await crictl([...SLOW, 'create', p, cf, f], { spawn: true }), 'create probe').stdout.trim();
    ok(await crictl([...SLOW, 'start', id], { spawn: true }), 'start probe');
    const probe = async (): Promise<{ nproc: number; online: string; memKb: number; pci: number }> => {
      const out = ok(await crictl(['exec', '-s', id, 'sh', '-c', 'nproc; cat /sys/devices/system/cpu/online; grep MemTotal /proc/meminfo; ls /sys/bus/pci/devices | wc -l']), 'exec probe').stdout;
      const [nproc = '', online = '', memTotal = '', pci = ''] = out.trim().split('\n');
      return { nproc: Number(nproc), online, memKb: Number(/MemTotal:\s+(\d+) kB/.exec(memTotal)?.[1]), pci: Number(pci) };
    };
    const before = await probe();
    assert.equal(before.nproc, 2, `default_vcpus = 2: ${JSON.stringify(before)}`);
    assert.ok(before.memKb > 300 * 1024 && before.memKb <= 384 * 1024, `default_memory = 384: MemTotal ${before.memKb} kB`);
    assert.ok(before.pci > 0, `machine_type = "q35": PCI devices in the guest (${before.pci})`);
    // Only ConfigPath named that file: the shim logged it as the one in use.
    assert.match(c.logTail(3000), new RegExp(`"config":"${cfgPath.replace(/[.]/g, '\\.')}"`));

    // A workload with limits (what a Kubernetes pod's `resources.limits` become): 1 CPU, 512 MiB.
    // The VM grows to 2 + 1 vCPUs and 384 + 512 MiB by hot-plug, as Kata's does.
    const limited = writeJson('limited.json', ctrConfig('limited', ['sleep', '3600'], {
      linux: { resources: { cpu_period: 100000, cpu_quota: 100000, memory_limit_in_bytes: 512 * 1024 * 1024 } },
    }));
    const lid = ok(await crictl([...SLOW, 'create', p, limited, f], { spawn: true }), 'create limited').stdout.trim();
    ok(await crictl([...SLOW, 'start', lid], { spawn: true }), 'start limited');
    const after = await probe();
    assert.equal(after.nproc, CFG_MAX_VCPUS, `2 + 1 vCPUs after the hot-plug: ${JSON.stringify(after)}`);
    assert.equal(after.online, `0-${CFG_MAX_VCPUS - 1}`);
    // 512 MiB more, less the page structs the guest kernel takes out of it (64 B per 4 KiB page: 8 MiB).
    const grownKb = after.memKb - before.memKb;
    assert.ok(grownKb > 495 * 1024 && grownKb <= 512 * 1024, `384 + 512 MiB after the hot-plug: MemTotal ${before.memKb} → ${after.memKb} kB`);
    // The container's own limits hold in the guest, as under runc.
    const cg = ok(await crictl(['exec', '-s', lid, 'sh', '-c', 'p=$(sed -n "s/^0:://p" /proc/self/cgroup); cd "/sys/fs/cgroup$p" && cat memory.max cpu.max']), 'exec limited').stdout.trim().split('\n');
    assert.deepEqual(cg, [String(512 * 1024 * 1024), '100000 100000']);
    const podLog = c.logTail(5000).split('\n').filter((l) => l.includes(`"pod":"${p}"`));
    assert.ok(podLog.some((l) => l.includes('"msg":"pod VM grown for its containers"')), 'the shim logged the growth');
    // With templates, the q35 VM was a clone (of the template's 2 vCPUs / 384 MiB) that grew.
    if (templatesOn()) assert.ok(podLog.some((l) => l.includes('"msg":"pod VM cloned from a template"')), 'the kata-cfg pod VM is a clone');

    // More memory than default_maxmemory allows: refused when its task is made (CRI's StartContainer:
    // CreateContainer only records the container in containerd), naming the key; the pod goes on.
    const huge = writeJson('huge.json', ctrConfig('huge', ['true'], { linux: { resources: { memory_limit_in_bytes: 4 * 1024 * 1024 * 1024 } } }));
    const hid = ok(await crictl([...SLOW, 'create', p, huge, f], { spawn: true }), 'create huge').stdout.trim();
    const r = await crictl([...SLOW, 'start', hid], { spawn: true });
    assert.notEqual(r.code, 0, 'a container over default_maxmemory is refused');
    assert.match(r.stderr, /ask for 4608 MiB of memory: more than \[hypervisor\.qemu\] default_maxmemory = 2048/);
    ok(await crictl(['rm', hid]), 'rm huge');
    const still = await probe();
    assert.equal(still.nproc, CFG_MAX_VCPUS);
    assert.ok(Math.abs(still.memKb - after.memKb) < 1024, 'the refusal left the VM as it was');
    const listed = json(ok(await crictl(['ps', '-a', '-p', p, '-o', 'json']), 'ps')).containers as Array<{ metadata: { name: string } }>;
    assert.deepEqual(listed.map((x) => x.metadata.name).sort(), ['limited', 'probe']);
    t.diagnostic(`kata-cfg pod: before ${JSON.stringify(before)}; after the limited container ${JSON.stringify(after)}`);
  } finally {
    ok(await crictl([...SLOW, 'stopp', p], { spawn: true }), 'stopp cfgpod');
    ok(await crictl([...SLOW, 'rmp', p], { spawn: true }), 'rmp cfgpod');
  }
  await waitFor(() => qemuPids(c).length === 0 && c.shimPids().length === 0, { timeoutMs: 60_000, what: 'no QEMU or shim left' });
});

