/**
 * kata-crictl without a runtime: argument parsing, CRI log lines, JSON input
 * files in crictl's format, crictl-style tables, error texts, and the
 * hand-written CRI proto checked against the descriptor compiled into
 * Debian's containerd 1.6.20 (skipped where /usr/bin/containerd is absent).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { constants as zc, inflateRawSync } from 'node:zlib';
import { parseArgs, parseDuration, UsageError } from '../../src/cri-client/args.js';
import { COMMANDS, GLOBAL_FLAGS, describeError, resolveEndpoints, run, toJson, type Io } from '../../src/cri-client/cli.js';
import { ConnectError, CriError, grpcTarget, v1 } from '../../src/cri-client/client.js';
import {
  createdAgo,
  formatTable,
  humanDuration,
  humanSize,
  nsToRfc3339,
  splitRepoTag,
  truncateId,
} from '../../src/cri-client/format.js';
import { decodeMessage, InputError, normaliseKeys, parseJson } from '../../src/cri-client/input.js';
import { parseCriLogLine, renderCriLog, splitLines, tailLines } from '../../src/cri-client/logs.js';
import { Code } from '../../src/errors/index.js';

const parse = (argv: string[]) => parseArgs(argv, GLOBAL_FLAGS, COMMANDS);

// ---------------------------------------------------------------------------
// arguments

test('args: global flags, command, command flags before and after positionals', () => {
  const p = parse(['-r', 'unix:///x.sock', '--timeout=5s', 'stop', 'abc', '-t', '7', 'def']);
  assert.equal(p.command, 'stop');
  assert.equal(p.global['runtime-endpoint'], 'unix:///x.sock');
  assert.equal(p.global.timeout, 5000);
  assert.equal(p.flags.timeout, 7, "stop's own -t (seconds) wins over the global -t");
  assert.deepEqual(p.args, ['abc', 'def']);

  const ps = parse(['ps', '-aq', '--name', '^c[0-9]$', '-p', 'pod1', '--label', 'a=b', '--label=c=d', '-o', 'json']);
  assert.equal(ps.flags.all, true);
  assert.equal(ps.flags.quiet, true);
  assert.equal(ps.flags.name, '^c[0-9]$');
  assert.equal(ps.flags.pod, 'pod1');
  assert.deepEqual(ps.flags.label, ['a=b', 'c=d']);
  assert.equal(ps.flags.output, 'json');
  assert.equal(ps.flags['no-trunc'], false);

  // a global flag after the command, when the command has no flag of that name
  const v = parse(['version', '-r', '/run/x.sock', '-o', 'json']);
  assert.equal(v.global['runtime-endpoint'], '/run/x.sock');
  assert.equal(v.flags.output, 'json');
  // but runp's -r is its runtime handler, as in crictl
  const r = parse(['-r', 'unix:///a.sock', 'runp', '-r', 'kata', 'pod.json']);
  assert.equal(r.global['runtime-endpoint'], 'unix:///a.sock');
  assert.equal(r.flags.runtime, 'kata');
  assert.deepEqual(r.args, ['pod.json']);
  assert.equal(parse(['runp', '--runtime=runc', 'p.json']).flags.runtime, 'runc');
});

test('args: exec stops at the container id; everything after is the command', () => {
  const p = parse(['exec', '-s', '--timeout', '3', 'cid', 'sh', '-c', 'echo -n x; exit 3', '--', '-t']);
  assert.equal(p.command, 'exec');
  assert.equal(p.flags.sync, true);
  assert.equal(p.flags.timeout, 3);
  assert.deepEqual(p.args, ['cid', 'sh', '-c', 'echo -n x; exit 3', '--', '-t']);
  assert.deepEqual(parse(['exec', '--sync', 'cid', 'ls', '-l']).args, ['cid', 'ls', '-l']);
  // `--` ends flags for any command
  assert.deepEqual(parse(['rm', '--', '-weird-id']).args, ['-weird-id']);
});

test('args: aliases, defaults, help, errors', () => {
  assert.equal(parse(['img']).command, 'images');
  assert.equal(parse(['image', '-q']).flags.quiet, true);
  const logs = parse(['logs', 'cid']);
  assert.equal(logs.flags.tail, -1);
  assert.equal(logs.flags.follow, false);
  assert.equal(parse(['logs', '--tail', '2', 'cid']).flags.tail, 2);
  assert.equal(parse(['stop', 'x']).flags.timeout, 0);
  assert.equal(parse(['inspect', 'x']).flags.output, 'json');
  assert.equal(parse(['pods']).flags.output, 'table');
  assert.equal(parse(['help', 'exec']).help, true);
  assert.equal(parse(['help', 'exec']).command, 'exec');
  assert.equal(parse(['ps', '--help']).help, true);
  assert.equal(parse([]).command, undefined);

  assert.throws(() => parse(['nosuch']), (e: Error) => e instanceof UsageError && /unknown command "nosuch"/.test(e.message));
  assert.throws(() => parse(['ps', '--bogus']), /unknown flag --bogus for "ps"/);
  assert.throws(() => parse(['--bogus', 'ps']), /unknown global flag --bogus/);
  assert.throws(() => parse(['create', 'pod', 'c.json']), /"create" needs POD-ID CONTAINER-CONFIG.json POD-CONFIG.json/);
  assert.throws(() => parse(['runp']), /"runp" needs POD-CONFIG.json/);
  assert.throws(() => parse(['runp', 'a.json', 'b.json']), /at most 1 argument/);
  assert.throws(() => parse(['stop', '-t', 'x', 'id']), /invalid value "x" for --timeout: an integer/);
  assert.throws(() => parse(['logs', '--tail']), /flag needs an argument: --tail/);
  assert.throws(() => parse(['--timeout', 'soon', 'ps']), /invalid duration "soon"/);
});

test('args: durations', () => {
  assert.equal(parseDuration('10s'), 10_000);
  assert.equal(parseDuration('500ms'), 500);
  assert.equal(parseDuration('1m30s'), 90_000);
  assert.equal(parseDuration('2h'), 7_200_000);
  assert.equal(parseDuration('1.5s'), 1500);
  assert.equal(parseDuration('3'), 3000, 'a bare number is seconds');
  assert.throws(() => parseDuration('10x'));
  assert.throws(() => parseDuration('s'));
  assert.throws(() => parseDuration(''));
});

test('endpoints: flag, then $CONTAINER_RUNTIME_ENDPOINT, then the default; grpc targets', () => {
  assert.deepEqual(resolveEndpoints({}, {}), {
    endpoint: 'unix:///run/containerd/containerd.sock',
    imageEndpoint: 'unix:///run/containerd/containerd.sock',
  });
  assert.equal(resolveEndpoints({}, { CONTAINER_RUNTIME_ENDPOINT: 'unix:///e.sock' }).endpoint, 'unix:///e.sock');
  assert.equal(resolveEndpoints({ 'runtime-endpoint': '/f.sock' }, { CONTAINER_RUNTIME_ENDPOINT: 'unix:///e.sock' }).endpoint, '/f.sock');
  assert.equal(resolveEndpoints({}, { IMAGE_SERVICE_ENDPOINT: 'unix:///i.sock' }).imageEndpoint, 'unix:///i.sock');

  assert.equal(grpcTarget('unix:///run/containerd/containerd.sock'), 'unix:///run/containerd/containerd.sock');
  assert.equal(grpcTarget('unix:/run/c.sock'), 'unix:///run/c.sock');
  assert.equal(grpcTarget('/run/c.sock'), 'unix:///run/c.sock');
  assert.equal(grpcTarget('tcp://127.0.0.1:1234'), '127.0.0.1:1234');
  assert.equal(grpcTarget('localhost:1234'), 'localhost:1234');
  assert.throws(() => grpcTarget('unix://relative.sock'), /must be absolute/);
  assert.throws(() => grpcTarget('http://x:1'), /unsupported scheme/);
  assert.throws(() => grpcTarget(' '), /empty/);
});

// ---------------------------------------------------------------------------
// log lines

test('logs: CRI log lines are parsed; P entries continue, F entries end a line', () => {
  assert.deepEqual(parseCriLogLine('2024-01-02T03:04:05.123456789Z stdout F hello world'), {
    time: '2024-01-02T03:04:05.123456789Z',
    stream: 'stdout',
    partial: false,
    msg: 'hello world',
  });
  assert.deepEqual(parseCriLogLine('2024-01-02T03:04:05.1Z stderr P  two  spaces '), {
    time: '2024-01-02T03:04:05.1Z',
    stream: 'stderr',
    partial: true,
    msg: ' two  spaces ',
  });
  // an empty line is "… F " (containerd) or "… F"
  assert.equal(parseCriLogLine('2024-01-02T03:04:05Z stdout F ')?.msg, '');
  assert.equal(parseCriLogLine('2024-01-02T03:04:05+02:00 stdout F')?.msg, '');
  for (const bad of ['', 'hello', '2024-01-02T03:04:05Z stdin F x', 'yesterday stdout F x', '2024-01-02T03:04:05Z stdout X x', '2024-01-02T03:04:05Z stdout']) {
    assert.equal(parseCriLogLine(bad), undefined, bad);
  }

  const file = [
    '2024-01-02T03:04:05.000000001Z stdout F out1',
    '2024-01-02T03:04:05.000000002Z stderr F err1',
    '2024-01-02T03:04:05.000000003Z stdout P par',
    '2024-01-02T03:04:05.000000004Z stdout P ti',
    '2024-01-02T03:04:05.000000005Z stdout F al',
    'not a cri line',
  ].join('\n') + '\n';
  const { lines, rest } = splitLines(file);
  assert.equal(rest, '');
  assert.deepEqual(renderCriLog(lines), [
    { stream: 'stdout', text: 'out1\n' },
    { stream: 'stderr', text: 'err1\n' },
    { stream: 'stdout', text: 'par' },
    { stream: 'stdout', text: 'ti' },
    { stream: 'stdout', text: 'al\n' },
    { stream: 'stdout', text: 'not a cri line\n' },
  ]);
  // timestamps go in front of each output line, not in front of continuations
  assert.equal(
    renderCriLog(lines.slice(2, 5), { timestamps: true }).map((o) => o.text).join(''),
    '2024-01-02T03:04:05.000000003Z partial\n',
  );
  assert.deepEqual(splitLines('a\nb\nunfinished'), { lines: ['a', 'b'], rest: 'unfinished' });
  assert.deepEqual(tailLines(['a', 'b', 'c'], 2), ['b', 'c']);
  assert.deepEqual(tailLines(['a', 'b', 'c'], -1), ['a', 'b', 'c']);
  assert.deepEqual(tailLines(['a', 'b', 'c'], 0), []);
  assert.deepEqual(tailLines(['a'], 5), ['a']);
});

// ---------------------------------------------------------------------------
// JSON input

test('input: crictl pod config with snake_case keys (numbers for enums)', () => {
  const doc = {
    metadata: { name: 'p1', namespace: 'default', uid: 'u1', attempt: 1 },
    hostname: 'h',
    log_directory: '/tmp/logs',
    dns_config: { servers: ['10.0.0.1'], searches: ['x.local'] },
    port_mappings: [{ protocol: 1, container_port: 80, host_port: 8080 }],
    labels: { 'io.kubernetes.pod.name': 'p1', snake_case_key: 'kept', CamelKey: 'kept' },
    annotations: { 'io.katacontainers.config.hypervisor.default_vcpus': '1' },
    linux: {
      cgroup_parent: '/kata',
      sysctls: { 'net.ipv4.ip_forward': '1' },
      security_context: { namespace_options: { network: 2, pid: 1 }, run_as_user: { value: 0 }, supplemental_groups: [1, 2] },
    },
  };
  const { message: m, unknownFields } = decodeMessage(v1.PodSandboxConfig, doc, 'pod.json');
  assert.deepEqual(unknownFields, []);
  assert.equal(m.metadata?.name, 'p1');
  assert.equal(m.metadata?.attempt, 1);
  assert.equal(m.logDirectory, '/tmp/logs');
  assert.deepEqual(m.dnsConfig?.servers, ['10.0.0.1']);
  assert.equal(m.portMappings[0]?.protocol, v1.Protocol.UDP);
  assert.equal(m.portMappings[0]?.hostPort, 8080);
  // map keys are data: never rewritten
  assert.deepEqual(m.labels, { 'io.kubernetes.pod.name': 'p1', snake_case_key: 'kept', CamelKey: 'kept' });
  assert.deepEqual(m.annotations, { 'io.katacontainers.config.hypervisor.default_vcpus': '1' });
  assert.deepEqual(m.linux?.sysctls, { 'net.ipv4.ip_forward': '1' });
  assert.equal(m.linux?.cgroupParent, '/kata');
  assert.equal(m.linux?.securityContext?.namespaceOptions?.network, v1.NamespaceMode.NODE);
  assert.equal(m.linux?.securityContext?.namespaceOptions?.pid, v1.NamespaceMode.CONTAINER);
  assert.equal(Number(m.linux?.securityContext?.runAsUser?.value), 0);
  assert.deepEqual((m.linux?.securityContext?.supplementalGroups ?? []).map(Number), [1, 2]);
  // it survives the wire
  const back = v1.PodSandboxConfig.decode(v1.PodSandboxConfig.encode(m).finish());
  assert.equal(back.linux?.securityContext?.namespaceOptions?.network, 2);
  assert.equal(back.labels.snake_case_key, 'kept');
});

test('input: lowerCamelCase, other cases, enum names; unknown keys reported', () => {
  const camel = decodeMessage(
    v1.ContainerConfig,
    {
      metadata: { name: 'c1' },
      image: { image: 'busybox' },
      command: ['sh'],
      args: ['-c', 'true'],
      workingDir: '/tmp',
      envs: [{ key: 'A', value: '1' }],
      mounts: [{ containerPath: '/data', host_path: '/srv', readonly: true, propagation: 'PROPAGATION_HOST_TO_CONTAINER' }],
      logPath: 'c1.log',
      Linux: { Resources: { Memory_Limit_In_Bytes: 1048576 }, security_context: { capabilities: { add_capabilities: ['NET_ADMIN'] } } },
      labels: { logPath: 'not a field, a label' },
    },
    'c.json',
  );
  const m = camel.message;
  assert.deepEqual(camel.unknownFields, []);
  assert.equal(m.workingDir, '/tmp');
  assert.equal(m.envs[0]?.key, 'A');
  assert.equal(m.mounts[0]?.containerPath, '/data');
  assert.equal(m.mounts[0]?.hostPath, '/srv');
  assert.equal(m.mounts[0]?.propagation, v1.MountPropagation.PROPAGATION_HOST_TO_CONTAINER);
  assert.equal(m.logPath, 'c1.log');
  assert.equal(Number(m.linux?.resources?.memoryLimitInBytes), 1048576, 'keys match case-insensitively, like Go');
  assert.deepEqual(m.linux?.securityContext?.capabilities?.addCapabilities, ['NET_ADMIN']);
  assert.deepEqual(m.labels, { logPath: 'not a field, a label' });

  const unk = decodeMessage(v1.PodSandboxConfig, { metadata: { name: 'x', nmae: 'typo' }, windows: {}, linux: { foo: 1 }, port_mappings: [{ bar: 1 }] }, 'p.json');
  assert.deepEqual(unk.unknownFields.sort(), ['linux.foo', 'metadata.nmae', 'portMappings[0].bar', 'windows']);
  assert.equal(unk.message.metadata?.name, 'x');

  // no metadata is not the client's business: containerd answers it
  assert.equal(decodeMessage(v1.PodSandboxConfig, { log_directory: '/x' }, 'p.json').message.metadata, null);
  assert.deepEqual(normaliseKeys({ a_b: { c_d: [{ e_f: 1 }] }, labels: { g_h: 'i' } }), { aB: { cD: [{ eF: 1 }] }, labels: { g_h: 'i' } });
});

test('input: errors name the file', () => {
  assert.throws(() => parseJson('{"metadata": ', 'pod.json'), (e: Error) => e instanceof InputError && /^pod\.json: invalid JSON/.test(e.message));
  assert.throws(() => decodeMessage(v1.PodSandboxConfig, [1], 'pod.json'), /pod\.json: a JSON object is required/);
  assert.throws(() => decodeMessage(v1.PodSandboxConfig, { metadata: 'p1' }, 'pod.json'), /pod\.json: .*metadata: object expected/);
});

// ---------------------------------------------------------------------------
// output

test('format: tables are aligned like crictl (tabwriter minwidth 20, padding 3)', () => {
  const out = formatTable([
    ['POD ID', 'CREATED', 'STATE', 'NAME'],
    ['0123456789abc', '2 minutes ago', 'Ready', 'p1'],
    ['x', 'About a minute ago', 'NotReady', 'a-much-longer-name'],
  ]);
  const lines = out.split('\n');
  assert.equal(lines.length, 4);
  assert.equal(lines[3], '');
  assert.equal(lines[0], 'POD ID'.padEnd(20) + 'CREATED'.padEnd(21) + 'STATE'.padEnd(20) + 'NAME');
  assert.equal(lines[1], '0123456789abc'.padEnd(20) + '2 minutes ago'.padEnd(21) + 'Ready'.padEnd(20) + 'p1');
  assert.equal(lines[2], 'x'.padEnd(20) + 'About a minute ago'.padEnd(21) + 'NotReady'.padEnd(20) + 'a-much-longer-name');
  assert.equal(formatTable([]), '');
});

test('format: ids, durations, sizes, timestamps, image names', () => {
  const id = 'bb855893dc9903982707debdf6eb073b5d11606c7581b88288cab1d21ba7932f';
  assert.equal(truncateId(id), 'bb855893dc990');
  assert.equal(truncateId('sha256:' + id, 'sha256:'), 'bb855893dc990');
  assert.equal(truncateId('short'), 'short');

  assert.equal(humanDuration(500), 'Less than a second');
  assert.equal(humanDuration(1000), '1 second');
  assert.equal(humanDuration(59_999), '59 seconds');
  assert.equal(humanDuration(60_000), 'About a minute');
  assert.equal(humanDuration(5 * 60_000), '5 minutes');
  assert.equal(humanDuration(60 * 60_000), 'About an hour');
  assert.equal(humanDuration(3 * 3_600_000), '3 hours');
  assert.equal(humanDuration(3 * 86_400_000), '3 days');
  assert.equal(humanDuration(21 * 86_400_000), '3 weeks');
  assert.equal(humanDuration(90 * 86_400_000), '3 months');
  assert.equal(humanDuration(3 * 365 * 86_400_000), '3 years');
  const now = 1_700_000_000_000;
  assert.equal(createdAgo(BigInt(now - 120_000) * 1_000_000n, now), '2 minutes ago');

  assert.equal(humanSize(0), '0B');
  assert.equal(humanSize(999), '999B');
  assert.equal(humanSize(1_058_000), '1.06MB');
  assert.equal(humanSize(1_500), '1.5kB');
  assert.equal(humanSize(123_456_789), '123MB');
  assert.equal(humanSize(2_000_000_000), '2GB');

  assert.equal(nsToRfc3339(1_700_000_000_123_456_789n), '2023-11-14T22:13:20.123456789Z');
  assert.equal(nsToRfc3339(0n), '');

  assert.deepEqual(splitRepoTag('docker.io/library/busybox:latest'), ['docker.io/library/busybox', 'latest']);
  assert.deepEqual(splitRepoTag('localhost:5000/x'), ['localhost:5000/x', '<none>']);
  assert.deepEqual(splitRepoTag('x@sha256:abc'), ['x', '<none>']);
});

test('format: JSON output follows the protobuf JSON mapping (camelCase, int64 as strings, enum names, defaults)', () => {
  const p = v1.PodSandbox.create({ id: 'abc', metadata: { name: 'p', namespace: 'n', uid: 'u' }, state: 1, createdAt: 1_700_000_000_123_456_789 });
  const j = toJson(v1.PodSandbox, p);
  assert.equal(j.id, 'abc');
  assert.equal(j.state, 'SANDBOX_NOTREADY');
  assert.equal(typeof j.createdAt, 'string');
  assert.equal(j.runtimeHandler, '');
  assert.deepEqual(j.labels, {});
  assert.deepEqual(j.metadata, { name: 'p', uid: 'u', namespace: 'n', attempt: 0 });
});

test('errors: crictl-style texts', () => {
  const e = new CriError('RunPodSandbox', Code.UNKNOWN, 'failed to get sandbox runtime: no runtime for "x" is configured');
  assert.equal(describeError('run pod sandbox', e), 'run pod sandbox: rpc error: code = Unknown desc = failed to get sandbox runtime: no runtime for "x" is configured');
  assert.equal(describeError('create container', new CriError('CreateContainer', Code.NOT_FOUND, 'nope')), 'create container: rpc error: code = NotFound desc = nope');
  const c = new ConnectError('unix:///x.sock', 'connect ENOENT /x.sock');
  assert.equal(c.message, 'cannot connect to the runtime at unix:///x.sock: connect ENOENT /x.sock');
  assert.equal(describeError('anything', c), c.message);
});

// ---------------------------------------------------------------------------
// the whole program, without a runtime

function fakeIo(env: NodeJS.ProcessEnv = {}): Io & { stdout: string; stderr: string } {
  const io = {
    env,
    stdout: '',
    stderr: '',
    out(d: string | Uint8Array) {
      io.stdout += typeof d === 'string' ? d : Buffer.from(d).toString();
    },
    err(d: string | Uint8Array) {
      io.stderr += typeof d === 'string' ? d : Buffer.from(d).toString();
    },
  };
  return io;
}

test('run: usage errors and help exit 1 / 0 without touching the runtime', async () => {
  let io = fakeIo();
  assert.equal(await run(['frobnicate'], io), 1);
  assert.match(io.stderr, /^kata-crictl: unknown command "frobnicate"/);
  io = fakeIo();
  assert.equal(await run([], io), 1);
  assert.match(io.stderr, /Usage: kata-crictl \[global flags\] COMMAND/);
  io = fakeIo();
  assert.equal(await run(['help'], io), 0);
  assert.match(io.stdout, /runp +Run a new pod sandbox/);
  io = fakeIo();
  assert.equal(await run(['exec', '--help'], io), 0);
  assert.match(io.stdout, /Usage: kata-crictl exec \[flags\] CONTAINER-ID COMMAND/);
  io = fakeIo();
  assert.equal(await run(['--version'], io), 0);
  assert.match(io.stdout, /^kata-crictl version \d+\.\d+\.\d+\n$/);
  io = fakeIo();
  assert.equal(await run(['runp', '/nonexistent/pod.json'], io), 1);
  assert.match(io.stderr, /kata-crictl: cannot read \/nonexistent\/pod\.json: ENOENT/);
});

test('run: an unreachable endpoint is a clear error, quickly', async () => {
  const io = fakeIo({ CONTAINER_RUNTIME_ENDPOINT: 'unix:///nonexistent/kata-crictl-test.sock' });
  const t0 = Date.now();
  assert.equal(await run(['version'], io), 1);
  assert.equal(io.stderr, 'kata-crictl: cannot connect to the runtime at unix:///nonexistent/kata-crictl-test.sock: connect ENOENT /nonexistent/kata-crictl-test.sock\n');
  assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
});

// ---------------------------------------------------------------------------
// the proto against containerd's own descriptor

const require = createRequire(import.meta.url);

/** The gzipped FileDescriptorProto of package `pkg` that Go's protobuf registration put into `binary`. */
function embeddedDescriptor(binary: string, pkg: string): Uint8Array | undefined {
  const b = readFileSync(binary);
  const magic = Buffer.from([0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0]);
  const marker = Buffer.concat([Buffer.from([0x12, pkg.length]), Buffer.from(pkg)]); // field 2 (package)
  for (let i = b.indexOf(magic); i >= 0; i = b.indexOf(magic, i + 1)) {
    let head: Buffer;
    try {
      head = inflateRawSync(b.subarray(i + 10, i + 10 + 512), { finishFlush: zc.Z_SYNC_FLUSH });
    } catch {
      continue;
    }
    if (!head.includes(marker)) continue;
    return inflateRawSync(b.subarray(i + 10, i + 10 + (4 << 20)), { finishFlush: zc.Z_SYNC_FLUSH });
  }
  return undefined;
}

const CONTAINERD = '/usr/bin/containerd';

test('proto: every message, field, enum and rpc of proto/cri/api.proto matches containerd 1.6.20', { skip: !existsSync(CONTAINERD) && `${CONTAINERD} absent` }, () => {
  /* eslint-disable @typescript-eslint/no-explicit-any */
  const protobuf = require('protobufjs');
  const descriptor = require('protobufjs/ext/descriptor');
  const raw = embeddedDescriptor(CONTAINERD, 'runtime.v1');
  assert.ok(raw, 'runtime.v1 descriptor not found in containerd');
  const fd = descriptor.FileDescriptorProto.decode(raw);
  assert.equal(fd.package, 'runtime.v1');

  const protoPath = fileURLToPath(new URL('../../../proto/cri/api.proto', import.meta.url));
  const root = new protobuf.Root();
  root.loadSync(protoPath, { keepCase: true });
  root.resolveAll();
  const ns = root.lookup('runtime.v1');

  const TYPE: Record<number, string> = {
    1: 'double', 2: 'float', 3: 'int64', 4: 'uint64', 5: 'int32', 6: 'fixed64', 7: 'fixed32', 8: 'bool', 9: 'string',
    12: 'bytes', 13: 'uint32', 15: 'sfixed32', 16: 'sfixed64', 17: 'sint32', 18: 'sint64',
  };
  const upstreamMessages = new Map<string, any>();
  const walk = (msgs: any[], prefix: string) => {
    for (const m of msgs) {
      upstreamMessages.set(prefix + m.name, m);
      walk(m.nestedType ?? [], `${prefix}${m.name}.`);
    }
  };
  walk(fd.messageType, '');
  const upstreamEnums = new Map<string, any>();
  for (const e of fd.enumType) upstreamEnums.set(e.name, e);
  for (const [name, m] of upstreamMessages) for (const e of m.enumType ?? []) upstreamEnums.set(`${name}.${e.name}`, e);

  /** Upstream field → "repeated .runtime.v1.Mount" / "map<string,string>" / "int64". */
  const describeUpstream = (owner: any, f: any): string => {
    if (f.typeName) {
      const entry = (owner.nestedType ?? []).find((n: any) => n.options?.mapEntry && f.typeName.endsWith(`.${owner.name}.${n.name}`));
      if (entry) return `map<${TYPE[entry.field[0].type]},${describeType(entry.field[1])}>`;
    }
    return (f.label === 3 ? 'repeated ' : '') + describeType(f);
  };
  const describeType = (f: any): string => (f.typeName ? f.typeName : TYPE[f.type]!);
  const describeOurs = (f: any): string => {
    const t = (x: string, resolved: any) => (resolved ? resolved.fullName : x);
    if (f.map) return `map<${f.keyType},${t(f.type, f.resolvedType)}>`;
    return (f.repeated ? 'repeated ' : '') + t(f.type, f.resolvedType);
  };

  let fields = 0;
  const check = (obj: any, path: string) => {
    for (const nested of obj.nestedArray ?? []) {
      const name = path ? `${path}.${nested.name}` : nested.name;
      if (nested instanceof protobuf.Type) {
        const up = upstreamMessages.get(name);
        assert.ok(up, `message ${name} does not exist upstream`);
        for (const f of nested.fieldsArray) {
          const uf = up.field.find((x: any) => x.name === f.name);
          assert.ok(uf, `${name}.${f.name} does not exist upstream`);
          assert.equal(f.id, uf.number, `${name}.${f.name}: field number`);
          assert.equal(describeOurs(f), describeUpstream(up, uf), `${name}.${f.name}: type`);
          fields++;
        }
        check(nested, name);
      } else if (nested instanceof protobuf.Enum) {
        const up = upstreamEnums.get(name);
        assert.ok(up, `enum ${name} does not exist upstream`);
        assert.deepEqual(
          Object.entries(nested.values).sort(),
          up.value.map((v: any) => [v.name, v.number]).sort(),
          `enum ${name}: values`,
        );
      } else if (nested instanceof protobuf.Service) {
        const up = fd.service.find((s: any) => s.name === nested.name);
        assert.ok(up, `service ${name} does not exist upstream`);
        for (const m of nested.methodsArray) {
          const um = up.method.find((x: any) => x.name === m.name);
          assert.ok(um, `rpc ${name}.${m.name} does not exist upstream`);
          assert.equal(m.resolvedRequestType.fullName, um.inputType, `rpc ${name}.${m.name}: request`);
          assert.equal(m.resolvedResponseType.fullName, um.outputType, `rpc ${name}.${m.name}: response`);
          assert.equal(!!m.responseStream, !!um.serverStreaming);
        }
      }
    }
  };
  check(ns, '');
  assert.ok(fields > 200, `only ${fields} fields checked`);
});
