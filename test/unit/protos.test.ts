/**
 * The hand-written containerd 1.6 protos: service shape and wire bytes.
 *
 * Expected bytes below are worked out by hand from the field numbers in
 * proto/containerd/** (tag = field << 3 | wire type; 0 = varint,
 * 2 = length-delimited), so a wrong field number or type in a .proto file
 * shows up here as a byte mismatch.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { containerd, google, runtimeoptions } from '../../src/proto/gen/containerd.js';
import { ttrpc } from '../../src/proto/gen/ttrpc.js';

const task = containerd.task.v2;
const events = containerd.events;
const Status = containerd.v1.types.Status;

/** Hex of some bytes, for readable assertion failures. */
function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

/** Expected bytes written as spaced hex and/or ASCII strings. */
function bytes(...parts: Array<string | number[]>): string {
  return parts
    .map((p) => (typeof p === 'string' ? Buffer.from(p, 'ascii').toString('hex') : Buffer.from(p).toString('hex')))
    .join('');
}

/** An int64 as protobufjs hands it back: a number or a Long. */
function int64(v: number | { toNumber(): number } | null | undefined): number {
  if (v == null) return 0;
  return typeof v === 'number' ? v : v.toNumber();
}

/** Reference varint encoder (BigInt, two's complement for negatives). */
function varint(n: bigint): number[] {
  let u = BigInt.asUintN(64, n);
  const out: number[] = [];
  do {
    let b = Number(u & 0x7fn);
    u >>= 7n;
    if (u !== 0n) b |= 0x80;
    out.push(b);
  } while (u !== 0n);
  return out;
}

interface RpcMethod {
  readonly name: string;
  readonly path: string;
  readonly requestType: string;
  readonly responseType: string;
}

/** The rpc methods pbjs put on a generated service class, by property name. */
function rpcMethods(proto: object): Map<string, RpcMethod> {
  const out = new Map<string, RpcMethod>();
  for (const key of Object.getOwnPropertyNames(proto)) {
    if (key === 'constructor') continue;
    const v = (proto as Record<string, unknown>)[key];
    if (typeof v === 'function' && typeof (v as Partial<RpcMethod>).path === 'string') out.set(key, v as unknown as RpcMethod);
  }
  return out;
}

test('Task service has exactly the 17 shim v2 methods, with containerd 1.6 names and types', () => {
  const expected: Array<[string, string, string]> = [
    ['State', 'StateRequest', 'StateResponse'],
    ['Create', 'CreateTaskRequest', 'CreateTaskResponse'],
    ['Start', 'StartRequest', 'StartResponse'],
    ['Delete', 'DeleteRequest', 'DeleteResponse'],
    ['Pids', 'PidsRequest', 'PidsResponse'],
    ['Pause', 'PauseRequest', 'google.protobuf.Empty'],
    ['Resume', 'ResumeRequest', 'google.protobuf.Empty'],
    ['Checkpoint', 'CheckpointTaskRequest', 'google.protobuf.Empty'],
    ['Kill', 'KillRequest', 'google.protobuf.Empty'],
    ['Exec', 'ExecProcessRequest', 'google.protobuf.Empty'],
    ['ResizePty', 'ResizePtyRequest', 'google.protobuf.Empty'],
    ['CloseIO', 'CloseIORequest', 'google.protobuf.Empty'],
    ['Update', 'UpdateTaskRequest', 'google.protobuf.Empty'],
    ['Wait', 'WaitRequest', 'WaitResponse'],
    ['Stats', 'StatsRequest', 'StatsResponse'],
    ['Connect', 'ConnectRequest', 'ConnectResponse'],
    ['Shutdown', 'ShutdownRequest', 'google.protobuf.Empty'],
  ];
  const methods = rpcMethods(task.Task.prototype);
  assert.equal(methods.size, 17);
  const byName = new Map([...methods.values()].map((m) => [m.name, m]));
  assert.deepEqual([...byName.keys()].sort(), expected.map(([n]) => n).sort());
  for (const [name, req, res] of expected) {
    const m = byName.get(name)!;
    // ttrpc addresses a method as service "containerd.task.v2.Task" + method name.
    assert.equal(m.path, `/containerd.task.v2.Task/${name}`);
    assert.equal(m.requestType, req, name);
    assert.equal(m.responseType, res, name);
  }
  // pbjs lower-cases the first letter of the property: closeIO, resizePty, ...
  assert.ok(methods.has('closeIO') && methods.has('resizePty') && methods.has('delete'));
});

test('Events (ttrpc) service has Forward only', () => {
  const methods = [...rpcMethods(containerd.services.events.ttrpc.v1.Events.prototype).values()];
  assert.deepEqual(
    methods.map((m) => [m.path, m.requestType, m.responseType]),
    [['/containerd.services.events.ttrpc.v1.Events/Forward', 'ForwardRequest', 'google.protobuf.Empty']],
  );
});

test('CreateTaskRequest wire bytes', () => {
  const msg = task.CreateTaskRequest.create({
    id: 'a',
    bundle: '/b',
    rootfs: [{ type: 'bind', source: '/s', target: '', options: ['rbind'] }],
    stdin: 'x',
  });
  const mount = bytes([0x0a, 4], 'bind', [0x12, 2], '/s', /* target "" omitted */ [0x22, 5], 'rbind');
  assert.equal(mount.length / 2, 17);
  const want = bytes([0x0a, 1], 'a', [0x12, 2], '/b', [0x1a, 17]) + mount + bytes([0x2a, 1], 'x');
  const got = task.CreateTaskRequest.encode(msg).finish();
  assert.equal(hex(got), want);

  const back = task.CreateTaskRequest.decode(got);
  assert.deepEqual(back.rootfs.map((m) => m.options), [['rbind']]);
  assert.equal(back.stdin, 'x');
  assert.equal(back.options, null);
});

test('CreateTaskRequest options Any (runc Options) and terminal/stdout/stderr fields', () => {
  const opts = containerd.runc.v1.Options.encode({ binaryName: 'crun', systemdCgroup: true }).finish();
  // binary_name = 6 (0x32), systemd_cgroup = 9 varint (0x48)
  assert.equal(hex(opts), bytes([0x32, 4], 'crun', [0x48, 1]));
  const got = task.CreateTaskRequest.encode({
    terminal: true,
    stdout: 'o',
    stderr: 'e',
    options: { type_url: 'containerd.runc.v1.Options', value: opts },
  }).finish();
  const any = bytes([0x0a, 26], 'containerd.runc.v1.Options', [0x12, opts.length]) + hex(opts);
  assert.equal(hex(got), bytes([0x20, 1, 0x32, 1], 'o', [0x3a, 1], 'e', [0x52, any.length / 2]) + any);
});

test('runtimeoptions.v1.Options wire bytes', () => {
  const got = runtimeoptions.v1.Options.encode({ configPath: '/etc/kata.toml' }).finish();
  assert.equal(hex(got), bytes([0x12, 14], '/etc/kata.toml'));
});

test('TaskExit carries exited_at as a Timestamp at field 5', () => {
  const got = events.TaskExit.encode({
    containerId: 'c',
    id: 'c',
    pid: 42,
    exitStatus: 137,
    exitedAt: { seconds: 1700000000, nanos: 5 },
  }).finish();
  // 1700000000 = 0x6553F100 -> varint 80 e2 cf aa 06; 137 -> 89 01
  const ts = [0x08, 0x80, 0xe2, 0xcf, 0xaa, 0x06, 0x10, 0x05];
  const want = bytes([0x0a, 1], 'c', [0x12, 1], 'c', [0x18, 42, 0x20, 0x89, 0x01, 0x2a, ts.length, ...ts]);
  assert.equal(hex(got), want);
  const back = events.TaskExit.decode(got);
  assert.equal(back.exitStatus, 137);
  assert.equal(int64(back.exitedAt!.seconds), 1700000000);
  assert.equal(back.exitedAt!.nanos, 5);
});

test('StateResponse: status enum at field 4, exit_status 9, exited_at 10, exec_id 11', () => {
  const running = task.StateResponse.encode({ id: 't', pid: 7, status: Status.RUNNING }).finish();
  assert.equal(hex(running), bytes([0x0a, 1], 't', [0x18, 7, 0x20, 2]));

  const stopped = task.StateResponse.encode({
    id: 't',
    status: Status.STOPPED,
    exitStatus: 1,
    exitedAt: { seconds: 1 },
    execId: 'e',
  }).finish();
  assert.equal(hex(stopped), bytes([0x0a, 1], 't', [0x20, 3, 0x48, 1, 0x52, 2, 0x08, 1, 0x5a, 1], 'e'));
  assert.equal(task.StateResponse.decode(stopped).status, Status.STOPPED);
  assert.deepEqual(
    [Status.UNKNOWN, Status.CREATED, Status.RUNNING, Status.STOPPED, Status.PAUSED, Status.PAUSING],
    [0, 1, 2, 3, 4, 5],
  );
});

test('WaitResponse with the zero Go time that containerd writes for non-nullable timestamps', () => {
  // Go's zero time.Time is 0001-01-01T00:00:00Z = -62135596800 Unix seconds,
  // sent as a negative int64 (10-byte varint) inside exited_at (field 2).
  const zero = -62135596800n;
  const ts = [0x08, ...varint(zero)];
  assert.equal(ts.length, 11);
  const wire = Uint8Array.from([0x12, ts.length, ...ts]);
  const back = task.WaitResponse.decode(wire);
  assert.equal(back.exitStatus, 0);
  assert.equal(int64(back.exitedAt!.seconds), Number(zero));
  assert.equal(hex(task.WaitResponse.encode({ exitedAt: { seconds: Number(zero) } }).finish()), hex(wire));
});

test('PidsResponse: ProcessInfo with runc ProcessDetails in info', () => {
  const details = containerd.runc.v1.ProcessDetails.encode({ execId: 'x' }).finish();
  assert.equal(hex(details), bytes([0x0a, 1], 'x'));
  const got = task.PidsResponse.encode({
    processes: [{ pid: 300, info: { type_url: 'containerd.runc.v1.ProcessDetails', value: details } }],
  }).finish();
  const any = bytes([0x0a, 33], 'containerd.runc.v1.ProcessDetails', [0x12, 3]) + hex(details);
  // 300 -> varint ac 02
  const info = bytes([0x08, 0xac, 0x02, 0x12, any.length / 2]) + any;
  assert.equal(hex(got), bytes([0x0a, info.length / 2]) + info);
});

test('UpdateTaskRequest annotations map entries', () => {
  const got = task.UpdateTaskRequest.encode({ id: 'u', annotations: { k: 'v' } }).finish();
  // map entry = nested message {key = 1, value = 2} at field 3
  assert.equal(hex(got), bytes([0x0a, 1], 'u', [0x1a, 6, 0x0a, 1], 'k', [0x12, 1], 'v'));
});

test('ForwardRequest wraps an Envelope with an Any event', () => {
  const oom = events.TaskOOM.encode({ containerId: 'c' }).finish();
  const req = containerd.services.events.ttrpc.v1.ForwardRequest.create({
    envelope: {
      timestamp: { seconds: 1 },
      namespace: 'default',
      topic: '/tasks/oom',
      event: { type_url: 'containerd.events.TaskOOM', value: oom },
    },
  });
  const any = bytes([0x0a, 25], 'containerd.events.TaskOOM', [0x12, 3, 0x0a, 1], 'c');
  const env =
    bytes([0x0a, 2, 0x08, 1, 0x12, 7], 'default', [0x1a, 10], '/tasks/oom', [0x22, any.length / 2]) + any;
  const got = containerd.services.events.ttrpc.v1.ForwardRequest.encode(req).finish();
  assert.equal(hex(got), bytes([0x0a, env.length / 2]) + env);

  // The GRPC-side Envelope is a different message with the same layout.
  const grpcEnv = containerd.services.events.v1.Envelope.encode(req.envelope!).finish();
  assert.equal(hex(grpcEnv), env);
});

test('ttrpc Request: timeout_nano is field 4, varint', () => {
  const payload = task.StateRequest.encode({ id: 't' }).finish();
  const got = ttrpc.Request.encode({
    service: 'containerd.task.v2.Task',
    method: 'State',
    payload,
    timeoutNano: 1_000_000_000,
    metadata: [{ key: 'k', value: 'v' }],
  }).finish();
  const want =
    bytes([0x0a, 23], 'containerd.task.v2.Task', [0x12, 5], 'State', [0x1a, 3, 0x0a, 1], 't') +
    // 1e9 = 0x3B9ACA00 -> varint 80 94 eb dc 03
    bytes([0x20, 0x80, 0x94, 0xeb, 0xdc, 0x03]) +
    bytes([0x2a, 6, 0x0a, 1], 'k', [0x12, 1], 'v');
  assert.equal(hex(got), want);
  assert.equal(int64(ttrpc.Request.decode(got).timeoutNano), 1e9);
});

test('full names match the names containerd 1.6 registers (bare type URLs)', () => {
  // containerd 1.6 (typeurl v1.0.2 + gogo) uses the bare full name as the
  // Any type_url and cannot resolve "type.googleapis.com/<name>", which is
  // what pbjs' getTypeUrl() returns by default: strip that prefix.
  const bare = (t: { getTypeUrl(prefix?: string): string }) => t.getTypeUrl().replace(/^type\.googleapis\.com\//, '');
  assert.equal(events.TaskExit.getTypeUrl(), 'type.googleapis.com/containerd.events.TaskExit');
  const names: Array<[{ getTypeUrl(prefix?: string): string }, string]> = [
    [events.TaskCreate, 'containerd.events.TaskCreate'],
    [events.TaskStart, 'containerd.events.TaskStart'],
    [events.TaskDelete, 'containerd.events.TaskDelete'],
    [events.TaskIO, 'containerd.events.TaskIO'],
    [events.TaskExit, 'containerd.events.TaskExit'],
    [events.TaskOOM, 'containerd.events.TaskOOM'],
    [events.TaskExecAdded, 'containerd.events.TaskExecAdded'],
    [events.TaskExecStarted, 'containerd.events.TaskExecStarted'],
    [events.TaskPaused, 'containerd.events.TaskPaused'],
    [events.TaskResumed, 'containerd.events.TaskResumed'],
    [events.TaskCheckpointed, 'containerd.events.TaskCheckpointed'],
    [containerd.types.Mount, 'containerd.types.Mount'],
    [containerd.types.Metric, 'containerd.types.Metric'],
    [containerd.v1.types.ProcessInfo, 'containerd.v1.types.ProcessInfo'],
    [containerd.runc.v1.Options, 'containerd.runc.v1.Options'],
    [containerd.runc.v1.CheckpointOptions, 'containerd.runc.v1.CheckpointOptions'],
    [containerd.runc.v1.ProcessDetails, 'containerd.runc.v1.ProcessDetails'],
    [runtimeoptions.v1.Options, 'runtimeoptions.v1.Options'],
    [containerd.services.events.ttrpc.v1.Envelope, 'containerd.services.events.ttrpc.v1.Envelope'],
    [containerd.services.events.v1.Envelope, 'containerd.services.events.v1.Envelope'],
    [google.protobuf.Empty, 'google.protobuf.Empty'],
  ];
  for (const [type, name] of names) assert.equal(bare(type), name);
});
