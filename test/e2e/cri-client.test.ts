/**
 * kata-crictl (the shipped wrapper bin/kata-crictl, and its run() in-process
 * for the many read-only checks) against the real CRI
 * plugin of a private containerd 1.6.20 with its default "runc" handler: one
 * containerd for the whole file, pause and busybox images imported into the
 * "k8s.io" namespace (the CRI plugin's), pods on the host network (the
 * harness's CNI conf dir is empty) and under a cgroup parent named after the
 * harness's unique namespace, so its teardown removes those cgroups too.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { BUSYBOX_IMAGE, PAUSE_IMAGE, busyboxImage, importImage, pauseImage } from '../harness/busybox.js';
import { mountsUnder, startContainerd, waitFor, type Containerd } from '../harness/containerd.js';
import { crictlRunner, expectOk, outputJson, outputLines, writeJsonFile, type CrictlResult } from '../harness/crictl.js';

const ID = /^[0-9a-f]{64}$/;
const CRI_LOG_LINE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d) (stdout|stderr) [FP] /;

let c: Containerd;
let work: string;
let endpoint: string;
const t0 = Date.now();

type Result = CrictlResult;

const crictl = crictlRunner(() => endpoint, 60_000);

const ok = (r: Result, what: string): Result => expectOk(r, what, () => c.logTail(30));
const lines = outputLines;
const json = outputJson;
const writeJson = (name: string, v: unknown): string => writeJsonFile(work, name, v);

/** A pod config in crictl's snake_case format, on the host network (NODE = 2). */
function podConfig(name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    metadata: { name, namespace: 'default', uid: `uid-${name}`, attempt: 0 },
    log_directory: join(work, 'logs', name),
    labels: { 'io.kubernetes.pod.name': name, test_label: 'kata_crictl' },
    linux: { cgroup_parent: `/${c.namespace}`, security_context: { namespace_options: { network: 2 } } },
    ...extra,
  };
}

before(async () => {
  c = await startContainerd({ cri: true });
  endpoint = `unix://${c.address}`;
  work = join(c.dir, 'crictl');
  mkdirSync(work, { recursive: true });
  // The CRI plugin only sees images of its own namespace.
  const k8s = { ctr: (args: string[], o?: { timeoutMs?: number }) => c.ctr(args, { ...o, namespace: 'k8s.io' }) };
  await importImage(k8s, pauseImage());
  await importImage(k8s, busyboxImage());
}, { timeout: 120_000 });

after(async () => {
  await c?.stop();
  process.stderr.write(`cri-client e2e: ${Date.now() - t0} ms for the whole file\n`);
});

// state shared by the tests below, in order
let pod = '';
let podFile = '';
let c1 = '';

test('version, info and images', async (t) => {
  // independent read-only calls run side by side (each is a node start-up)
  const [v0, vj0, ve0, info0, imgs0, ids0] = await Promise.all([
    crictl(['version'], { spawn: true }),
    crictl(['version', '-o', 'json']),
    // the endpoint from the environment
    crictl(['version', '-o', 'json'], { raw: true, spawn: true, env: { CONTAINER_RUNTIME_ENDPOINT: endpoint } }),
    crictl(['info']),
    crictl(['images']),
    crictl(['img', '-q']),
  ]);
  const v = ok(v0, 'version');
  assert.match(v.stdout, /^Version: {2}0\.1\.0\nRuntimeName: {2}containerd\nRuntimeVersion: {2}1\.6\.\S+\nRuntimeApiVersion: {2}v1\n$/);
  const vj = json(ok(vj0, 'version -o json'));
  assert.equal(vj.runtimeName, 'containerd');
  assert.equal(vj.runtimeApiVersion, 'v1');
  const ve = ok(ve0, 'version via env');
  assert.equal(json(ve).runtimeName, 'containerd');
  t.diagnostic(`kata-crictl version: ${v.ms} ms (node start + connect + Version)`);

  const info = json(ok(info0, 'info'));
  const cond = Object.fromEntries(info.status.conditions.map((x: { type: string; status: boolean }) => [x.type, x.status]));
  assert.equal(cond.RuntimeReady, true);
  assert.ok(info.config, 'info carries the CRI plugin config');

  const imgs = ok(imgs0, 'images');
  assert.match(imgs.stdout, /^IMAGE {2,}TAG {2,}IMAGE ID {2,}SIZE\n/);
  assert.match(imgs.stdout, /\ndocker\.io\/library\/busybox {3,}latest {3,}[0-9a-f]{13} {3,}\d[\d.]*[kM]B\n/);
  assert.match(imgs.stdout, /\nregistry\.k8s\.io\/pause {3,}3\.6 /);
  const ids = lines(ok(ids0, 'img -q').stdout);
  assert.ok(ids.length === 2 && ids.every((i) => /^sha256:[0-9a-f]{64}$/.test(i)), ids.join(' '));
});

test('runp --runtime runc: the pod is Ready in pods, pods -q, -o json and inspectp', async (t) => {
  podFile = writeJson('pod.json', podConfig('p1'));
  const r = ok(await crictl(['runp', '--runtime', 'runc', podFile], { spawn: true }), 'runp');
  pod = r.stdout.trim();
  assert.match(pod, ID);
  t.diagnostic(`runp (runc): ${r.ms} ms`);

  const [pods0, q0, nt0, nm0, lb0, js0, ins0, tbl0] = await Promise.all([
    crictl(['pods']),
    crictl(['pods', '-q']),
    crictl(['pods', '--no-trunc']),
    crictl(['pods', '-q', '--name', '^nomatch$']),
    crictl(['pods', '-q', '--label', 'test_label=kata_crictl', '--state', 'ready']),
    crictl(['pods', '-o', 'json']),
    // a truncated id (containerd resolves prefixes)
    crictl(['inspectp', pod.slice(0, 13)]),
    crictl(['inspectp', '-o', 'table', pod]),
  ]);
  const table = ok(pods0, 'pods').stdout.split('\n');
  assert.match(table[0]!, /^POD ID {14}CREATED {2,}STATE {2,}NAME {2,}NAMESPACE {2,}ATTEMPT {2,}RUNTIME$/);
  assert.match(table[1]!, new RegExp(`^${pod.slice(0, 13)} {7}(Less than a second|\\d+ seconds?) ago {3,}Ready {3,}p1 {3,}default {3,}0 {3,}runc$`));
  assert.deepEqual(lines(ok(q0, 'pods -q').stdout), [pod]);
  assert.deepEqual(lines(ok(nt0, 'pods --no-trunc').stdout)[1]?.split(/\s+/)[0], pod);
  assert.deepEqual(lines(ok(nm0, 'pods --name').stdout), []);
  assert.deepEqual(lines(ok(lb0, 'pods --label').stdout), [pod]);
  const items = json(ok(js0, 'pods -o json')).items;
  assert.equal(items.length, 1);
  assert.equal(items[0].state, 'SANDBOX_READY');
  assert.equal(items[0].runtimeHandler, 'runc');
  assert.deepEqual(items[0].metadata, { name: 'p1', uid: 'uid-p1', namespace: 'default', attempt: 0 });
  assert.equal(items[0].labels.test_label, 'kata_crictl');

  const ins = json(ok(ins0, 'inspectp'));
  assert.equal(ins.status.id, pod);
  assert.equal(ins.status.state, 'SANDBOX_READY');
  assert.equal(ins.status.runtimeHandler, 'runc');
  assert.equal(ins.status.linux.namespaces.options.network, 'NODE');
  const spec = ins.info.runtimeSpec;
  assert.equal(spec.annotations['io.kubernetes.cri.container-type'], 'sandbox');
  assert.equal(spec.annotations['io.kubernetes.cri.sandbox-id'], pod);
  assert.equal(spec.annotations['io.kubernetes.cri.sandbox-log-directory'], join(work, 'logs', 'p1'));
  assert.equal(spec.linux.cgroupsPath, `/${c.namespace}/${pod}`);
  assert.equal(ins.info.runtimeType, 'io.containerd.runc.v2');
  t.diagnostic(`sandbox spec annotations: ${JSON.stringify(spec.annotations)}`);
  t.diagnostic(`sandbox process: ${JSON.stringify(spec.process.args)}; info keys: ${Object.keys(ins.info).join(',')}`);

  const tbl = ok(tbl0, 'inspectp -o table').stdout;
  assert.match(tbl, /^ID: +[0-9a-f]{64}\nName: +p1\n/);
  assert.match(tbl, /\nStatus: +SANDBOX_READY\n/);
});

test('create + start a busybox container: ps shows it Running', async (t) => {
  // lowerCamelCase keys this time (protobuf JSON names)
  const ctrFile = writeJson('c1.json', {
    metadata: { name: 'c1' },
    image: { image: BUSYBOX_IMAGE },
    command: ['sh', '-c', 'echo hello-out; echo hello-err >&2; exec sleep 3600'],
    envs: [{ key: 'GREETING', value: 'hi there' }],
    logPath: 'c1.log',
    labels: { role: 'main' },
  });
  const cr = ok(await crictl(['create', pod.slice(0, 13), ctrFile, podFile], { spawn: true }), 'create');
  c1 = cr.stdout.trim();
  assert.match(c1, ID);
  const st = ok(await crictl(['start', c1], { spawn: true }), 'start');
  assert.equal(st.stdout, c1 + '\n');
  t.diagnostic(`create: ${cr.ms} ms, start: ${st.ms} ms (spawned: each with ~0.3 s of node start-up)`);

  const [ps0, q0, n0, nn0, l0, ins0] = await Promise.all([
    crictl(['ps']),
    crictl(['ps', '-q']),
    crictl(['ps', '-q', '--name', '^c1$', '-p', pod]),
    crictl(['ps', '-q', '--name', 'nomatch']),
    crictl(['ps', '-q', '--label', 'role=main']),
    crictl(['inspect', c1]),
  ]);
  const ps = ok(ps0, 'ps').stdout.split('\n');
  assert.match(ps[0]!, /^CONTAINER {11}IMAGE {2,}CREATED {2,}STATE {2,}NAME {2,}ATTEMPT {2,}POD ID {2,}POD$/);
  assert.match(ps[1]!, new RegExp(`^${c1.slice(0, 13)} {7}docker\\.io/library/busybox:latest {3}.* ago {3,}Running {3,}c1 {3,}0 {3,}${pod.slice(0, 13)} {3,}p1$`));
  assert.deepEqual(lines(ok(q0, 'ps -q').stdout), [c1]);
  assert.deepEqual(lines(ok(n0, 'ps --name -p').stdout), [c1]);
  assert.deepEqual(lines(ok(nn0, 'ps --name nomatch').stdout), []);
  assert.deepEqual(lines(ok(l0, 'ps --label').stdout), [c1]);

  const ins = json(ok(ins0, 'inspect'));
  assert.equal(ins.status.state, 'CONTAINER_RUNNING');
  assert.equal(ins.status.logPath, join(work, 'logs', 'p1', 'c1.log'));
  assert.equal(ins.info.sandboxID, pod);
  const ann = ins.info.runtimeSpec.annotations;
  assert.equal(ann['io.kubernetes.cri.container-type'], 'container');
  assert.equal(ann['io.kubernetes.cri.sandbox-id'], pod);
  assert.equal(ann['io.kubernetes.cri.container-name'], 'c1');
  assert.ok(ins.info.runtimeSpec.process.env.includes('GREETING=hi there'));
  t.diagnostic(`container spec annotations: ${JSON.stringify(ann)}`);
  t.diagnostic(
    `container mounts: ${JSON.stringify(ins.info.runtimeSpec.mounts.filter((m: { source: string }) => m.source.startsWith('/')).map((m: { destination: string; source: string }) => `${m.destination} <- ${m.source.replace(c.dir, '<dir>')}`))}`,
  );
  t.diagnostic(`container namespaces: ${JSON.stringify(ins.info.runtimeSpec.linux.namespaces)}`);
});

test('exec: exact exit codes, stdout and stderr apart, big output, errors', async (t) => {
  const r = await crictl(['exec', '-s', c1, 'sh', '-c', 'printf out; printf err >&2; exit 7'], { spawn: true });
  assert.equal(r.code, 7, r.stderr);
  assert.equal(r.stdout, 'out');
  assert.equal(r.stderr, 'err');
  t.diagnostic(`exec -s: ${r.ms} ms`);

  // concurrent execs in one container
  const [e0, e1, e255, eSig, env, big, nope] = await Promise.all([
    crictl(['exec', c1, 'true']),
    crictl(['exec', c1, 'false']),
    crictl(['exec', c1, 'sh', '-c', 'exit 255']),
    // killed by a signal: 128 + 15
    crictl(['exec', c1, 'sh', '-c', 'kill -TERM $$'], { spawn: true }),
    // the environment and the command line reach the process as given
    crictl(['exec', c1, 'sh', '-c', 'echo "$GREETING" "$0" "$1"', 'a b', '-c']),
    // more than one HTTP/2 frame and more than grpc-js' default 4 MiB
    crictl(['exec', c1, 'sh', '-c', 'head -c 5000000 /dev/zero | tr "\\0" x'], { spawn: true }),
    crictl(['exec', c1, 'no-such-command'], { spawn: true }),
  ]);
  assert.deepEqual([e0.code, e0.stdout, e0.stderr], [0, '', '']);
  assert.equal(e1.code, 1);
  assert.equal(e255.code, 255);
  assert.equal(eSig.code, 143);
  assert.deepEqual([env.code, env.stdout], [0, 'hi there a b -c\n']);
  assert.equal(big.code, 0, big.stderr);
  assert.equal(big.stdout.length, 5_000_000);
  assert.ok(/^x+$/.test(big.stdout));

  assert.equal(nope.code, 1);
  assert.match(nope.stderr, /^kata-crictl: execing command in container synchronously: rpc error: code = Unknown desc = .*no-such-command.*not found/);

  const t1 = Date.now();
  const slow = await crictl(['exec', '--timeout', '1', c1, 'sleep', '30'], { spawn: true });
  assert.equal(slow.code, 1);
  assert.match(slow.stderr, /rpc error: code = DeadlineExceeded desc = .*timeout 1s exceeded/);
  assert.ok(Date.now() - t1 < 10_000, `exec --timeout 1 took ${Date.now() - t1} ms`);

  const it = await crictl(['exec', '-it', c1, 'sh'], { spawn: true });
  assert.equal(it.code, 1);
  assert.match(it.stderr, /streaming Exec API/);
});

test('logs: what the container printed, from the CRI log file', async (t) => {
  const logFile = join(work, 'logs', 'p1', 'c1.log');
  await waitFor(() => existsSync(logFile) && lines(readFileSync(logFile, 'utf8')).length >= 2, { what: 'both lines in the log file' });
  const raw = lines(readFileSync(logFile, 'utf8'));
  for (const l of raw) assert.match(l, CRI_LOG_LINE);
  t.diagnostic(`log file <dir>/${logFile.slice(c.dir.length + 1)}: ${JSON.stringify(raw)}`);

  const r = ok(await crictl(['logs', c1], { spawn: true }), 'logs');
  assert.equal(r.stdout, 'hello-out\n');
  assert.equal(r.stderr, 'hello-err\n');
  const tail = ok(await crictl(['logs', '--tail', '1', c1]), 'logs --tail 1');
  assert.equal(tail.stdout + tail.stderr, raw[1]!.endsWith('hello-err') ? 'hello-err\n' : 'hello-out\n');
  const ts = ok(await crictl(['logs', '-t', c1]), 'logs -t');
  assert.match(ts.stdout, /^\d{4}-\d\d-\d\dT\S+Z hello-out\n$/);
});

test('a container that exits: exact exit code, Exited in ps -a, logs after exit', async () => {
  const f = writeJson('c2.json', {
    metadata: { name: 'c2' },
    image: { image: BUSYBOX_IMAGE },
    command: ['sh', '-c', 'echo bye; printf no-newline; exit 3'],
    log_path: 'c2.log',
  });
  const c2 = ok(await crictl(['create', '--no-pull', pod, f, podFile]), 'create c2').stdout.trim();
  ok(await crictl(['start', c2]), 'start c2');
  const st = await waitFor(
    async () => {
      const s = json(ok(await crictl(['inspect', c2]), 'inspect c2')).status;
      return s.state === 'CONTAINER_EXITED' ? s : undefined;
    },
    { timeoutMs: 20_000, what: 'c2 exited' },
  );
  assert.equal(st.exitCode, 3);
  assert.equal(st.reason, 'Error');
  assert.notEqual(st.finishedAt, '0');
  // exit 0 is "Completed"
  const f0 = writeJson('c0.json', { metadata: { name: 'c0' }, image: { image: BUSYBOX_IMAGE }, command: ['true'] });
  const c0 = ok(await crictl(['create', '--no-pull', pod, f0, podFile]), 'create c0').stdout.trim();
  ok(await crictl(['start', c0]), 'start c0');
  const st0 = await waitFor(
    async () => {
      const s = json(ok(await crictl(['inspect', c0]), 'inspect c0')).status;
      return s.state === 'CONTAINER_EXITED' ? s : undefined;
    },
    { timeoutMs: 20_000, what: 'c0 exited' },
  );
  assert.deepEqual([st0.exitCode, st0.reason], [0, 'Completed']);
  ok(await crictl(['rm', c0]), 'rm c0');
  assert.deepEqual(lines(ok(await crictl(['ps', '-q']), 'ps -q').stdout), [c1], 'ps without -a shows running containers only');
  assert.deepEqual(lines(ok(await crictl(['ps', '-a', '-q']), 'ps -a -q').stdout).sort(), [c1, c2].sort());
  assert.deepEqual(lines(ok(await crictl(['ps', '-q', '--state', 'exited']), 'ps --state exited').stdout), [c2]);
  assert.match(ok(await crictl(['ps', '-a', '--name', 'c2']), 'ps -a').stdout, /\n[0-9a-f]{13} .* Exited {3,}c2 /);
  // the last, unterminated line is written as a "P" entry at exit
  const logs = ok(await crictl(['logs', c2]), 'logs c2');
  assert.equal(logs.stdout, 'bye\nno-newline');
  // --follow ends by itself once the container is not running
  assert.equal(ok(await crictl(['logs', '-f', c2], { timeoutMs: 10_000 }), 'logs -f c2').stdout, 'bye\nno-newline');
  const tbl = ok(await crictl(['inspect', '-o', 'table', c2]), 'inspect -o table').stdout;
  assert.match(tbl, /\nState: +CONTAINER_EXITED\n/);
  assert.match(tbl, /\nExit Code: +3\n/);
});

test('stop, rm, stopp, rmp: nothing is left', async (t) => {
  // rm -f of a running container (containerd 1.6 would also stop it by itself in RemoveContainer)
  const f = writeJson('c3.json', { metadata: { name: 'c3' }, image: { image: BUSYBOX_IMAGE }, command: ['sleep', '3600'] });
  const c3 = ok(await crictl(['create', pod, f, podFile]), 'create c3').stdout.trim();
  ok(await crictl(['start', c3]), 'start c3');
  assert.equal(ok(await crictl(['rm', '-f', c3]), 'rm -f').stdout, c3 + '\n');
  assert.deepEqual(lines(ok(await crictl(['ps', '-a', '-q', '--name', 'c3']), 'ps c3').stdout), []);

  const s = ok(await crictl(['stop', '-t', '2', c1], { spawn: true }), 'stop');
  assert.equal(s.stdout, c1 + '\n');
  t.diagnostic(`stop -t 2: ${s.ms} ms`);
  const st = json(ok(await crictl(['inspect', c1]), 'inspect c1')).status;
  assert.equal(st.state, 'CONTAINER_EXITED');
  // the container joined the pod's PID namespace (CRI's default), so `sleep` is not PID 1 and SIGTERM kills it
  assert.equal(st.exitCode, 143);
  assert.deepEqual(lines(ok(await crictl(['ps', '-q']), 'ps -q').stdout), []);

  const rm = ok(await crictl(['rm', '-a']), 'rm -a');
  assert.equal(lines(rm.stdout).length, 2);
  assert.deepEqual(lines(ok(await crictl(['ps', '-a', '-q']), 'ps -a -q').stdout), []);
  // RemoveContainer is idempotent (CRI): removing again succeeds
  assert.equal(ok(await crictl(['rm', c1]), 'rm again').stdout, c1 + '\n');

  const sp = ok(await crictl(['stopp', pod], { spawn: true }), 'stopp');
  assert.equal(sp.stdout, `Stopped sandbox ${pod}\n`);
  assert.match(ok(await crictl(['pods']), 'pods').stdout, / NotReady /);
  const rp = ok(await crictl(['rmp', pod], { spawn: true }), 'rmp');
  assert.equal(rp.stdout, `Removed sandbox ${pod}\n`);
  t.diagnostic(`stopp: ${sp.ms} ms, rmp: ${rp.ms} ms`);
  assert.deepEqual(lines(ok(await crictl(['pods', '-q']), 'pods -q').stdout), []);
  assert.deepEqual(lines(ok(await crictl(['ps', '-a', '-q']), 'ps -a -q').stdout), []);
  await waitFor(() => c.shimPids().length === 0, { timeoutMs: 10_000, what: 'no shim left' });
  assert.deepEqual(mountsUnder(join(c.state, 'io.containerd.grpc.v1.cri')), []);
});

test('bad configs get clear CRI errors and leak nothing', async () => {
  const r1 = await crictl(['runp', '--runtime', 'nosuch', podFile], { spawn: true });
  assert.equal(r1.code, 1);
  assert.match(r1.stderr, /^kata-crictl: run pod sandbox: rpc error: code = Unknown desc = .*no runtime for "nosuch" is configured\n$/);

  const noMeta = writeJson('nometa.json', { log_directory: join(work, 'logs', 'x') });
  const r2 = await crictl(['runp', noMeta], { spawn: true });
  assert.equal(r2.code, 1);
  assert.match(r2.stderr, /^kata-crictl: run pod sandbox: rpc error: code = Unknown desc = sandbox config must include metadata\n$/);

  const garbage = join(work, 'garbage.json');
  writeFileSync(garbage, '{"metadata": ');
  const r3 = await crictl(['runp', garbage]);
  assert.equal(r3.code, 1);
  assert.match(r3.stderr, /garbage\.json: invalid JSON/);

  // an unknown key is a warning, the pod still runs (crictl ignores such keys)
  const typo = writeJson('typo.json', podConfig('p2', { log_dirctory: '/x' }));
  const r4 = ok(await crictl(['runp', typo]), 'runp typo.json');
  assert.match(r4.stderr, /warning: .*typo\.json: unknown field "logDirctory" ignored/);
  const p2 = r4.stdout.trim();

  const p2File = writeJson('p2.json', podConfig('p2'));
  const badImg = writeJson('badimg.json', { metadata: { name: 'bad' }, image: { image: 'example.invalid/nope:1' } });
  const r5 = await crictl(['create', '--no-pull', p2, badImg, p2File]);
  assert.equal(r5.code, 1);
  assert.match(r5.stderr, /^kata-crictl: create container: rpc error: code = NotFound desc = .*example\.invalid\/nope:1.*not found\n$/);
  const r6 = await crictl(['create', '0000000000000', join(work, 'c1.json'), p2File]);
  assert.equal(r6.code, 1);
  assert.match(r6.stderr, /rpc error: code = NotFound/);
  assert.deepEqual(lines(ok(await crictl(['ps', '-a', '-q']), 'ps -a -q').stdout), []);

  assert.match(ok(await crictl(['rmp', '-f', p2]), 'rmp -f').stdout, /^Removed sandbox [0-9a-f]{64}\n$/);
  assert.deepEqual(lines(ok(await crictl(['pods', '-q']), 'pods -q').stdout), []);
  await waitFor(() => c.shimPids().length === 0, { timeoutMs: 10_000, what: 'no shim left' });
});

test('an unreachable runtime is a clear error with exit 1', async (t) => {
  const missing = 'unix:///nonexistent/kata-crictl/containerd.sock';
  const r1 = await crictl(['pods'], { raw: true, spawn: true, env: { CONTAINER_RUNTIME_ENDPOINT: missing } });
  assert.equal(r1.code, 1);
  assert.equal(r1.stderr, `kata-crictl: cannot connect to the runtime at ${missing}: connect ENOENT /nonexistent/kata-crictl/containerd.sock\n`);
  assert.equal(r1.stdout, '');
  t.diagnostic(`missing socket: ${r1.ms} ms`);

  const notSock = join(work, 'not-a-socket');
  writeFileSync(notSock, '');
  const r2 = await crictl(['-r', notSock, 'version'], { raw: true, spawn: true });
  assert.equal(r2.code, 1);
  assert.match(r2.stderr, /^kata-crictl: cannot connect to the runtime at .*not-a-socket: connect ECONNREFUSED/);

  // a socket that is not a gRPC server (containerd's ttrpc socket): bounded by --timeout
  const r3 = await crictl(['-r', `unix://${c.ttrpcAddress}`, '--timeout', '1s', 'version'], { raw: true, spawn: true });
  assert.equal(r3.code, 1);
  assert.match(r3.stderr, /^kata-crictl: cannot connect to the runtime at unix:\/\/.*\.ttrpc: no answer within 1s/);
  assert.ok(r3.ms < 5000, `took ${r3.ms} ms`);
  t.diagnostic(`not a gRPC server, --timeout 1s: ${r3.ms} ms`);
});

test('pause image name matches the CRI default', () => {
  // Guards the assumption of before(): the harness's sandbox_image default is PAUSE_IMAGE.
  assert.match(readFileSync(c.configPath, 'utf8'), new RegExp(`sandbox_image = "${PAUSE_IMAGE.replace(/[.]/g, '\\.')}"`));
  assert.match(readFileSync(c.configPath, 'utf8'), /restrict_oom_score_adj = true/);
});
