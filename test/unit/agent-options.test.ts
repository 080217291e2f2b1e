/**
 * Pure parts of the agent: command line, initramfs detection, cgroup
 * discovery from /proc files, input validation.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAgentArgs, rootIsInitramfs, UsageError } from '../../src/agent/options.js';
import { Cgroup, kv, parseCgroupMounts, parseProcCgroup } from '../../src/agent/cgroup.js';
import { checkContainerId, checkExecId, checkOciSpec, parseJsonObject } from '../../src/agent/validate.js';
import { Code, StatusError } from '../../src/errors/index.js';

test('command line', () => {
  const d = parseAgentArgs([]);
  assert.deepEqual(d.transport, { kind: 'serial', portName: 'agent.0' });
  assert.equal(d.runtime, '/usr/bin/crun');
  assert.equal(d.stateDir, '/run/agent');
  assert.equal(d.noPivot, 'auto');
  assert.deepEqual(parseAgentArgs(['--listen', 'unix:/tmp/a.sock']).transport, { kind: 'unix', path: '/tmp/a.sock' });
  assert.deepEqual(parseAgentArgs(['--vsock-port', '1024']).transport, { kind: 'vsock', port: 1024 });
  const o = parseAgentArgs(['--serial-port', 'agent.1', '--runtime', '/bin/runc', '--state-dir', '/s', '--no-pivot', 'always', '--debug']);
  assert.deepEqual(o.transport, { kind: 'serial', portName: 'agent.1' });
  assert.equal(o.runtime, '/bin/runc');
  assert.equal(o.noPivot, 'always');
  assert.equal(o.debug, true);
  for (const bad of [['--listen', 'tcp:1'], ['--listen', 'unix:/a', '--vsock-port', '3'], ['--vsock-port', 'x'], ['--no-pivot', 'maybe'],
    ['--state-dir', 'rel'], ['--what'], ['--serial-port', 'a/b']]) {
    assert.throws(() => parseAgentArgs(bad), UsageError, bad.join(' '));
  }
});

test('initramfs root detection', () => {
  const initramfs = '1 1 0:2 / / rw - rootfs rootfs rw\n20 1 0:19 / /proc rw - proc proc rw\n';
  const disk = '1 0 254:1 / / rw,relatime - ext4 /dev/vda1 rw\n';
  const switched = '1 1 0:2 / / rw - rootfs rootfs rw\n30 1 0:40 / / rw - tmpfs tmpfs rw\n';
  assert.equal(rootIsInitramfs(initramfs), true);
  assert.equal(rootIsInitramfs(disk), false);
  assert.equal(rootIsInitramfs(switched), false);
});

test('cgroup discovery: v2 (the guest) and v1 (the test hosts)', () => {
  const v2mounts = parseCgroupMounts('35 24 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n');
  const v2 = Cgroup.resolve(parseProcCgroup('0::/kata-agent/c1\n'), v2mounts)!;
  assert.equal(v2.version, 2);
  assert.equal(v2.dir('memory'), '/sys/fs/cgroup/kata-agent/c1');
  assert.equal(v2.oomEventsFile(), '/sys/fs/cgroup/kata-agent/c1/memory.events');

  const v1mounts = parseCgroupMounts([
    '32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu',
    '35 31 0:32 /outer /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
    '39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids',
    '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
  ].join('\n'));
  const v1 = Cgroup.resolve(parseProcCgroup('8:pids:/p/c1\n4:memory:/outer/p/c1\n1:cpu:/p/c1\n0::/\n'), v1mounts)!;
  assert.equal(v1.version, 1);
  assert.equal(v1.dir('memory'), '/sys/fs/cgroup/memory/p/c1');
  assert.equal(v1.dir('pids'), '/sys/fs/cgroup/pids/p/c1');
  assert.equal(v1.oomEventsFile(), undefined);
  assert.deepEqual(kv('oom_kill_disable 0\nunder_oom 0\noom_kill 3\n'), { oom_kill_disable: 0, under_oom: 0, oom_kill: 3 });
});

test('input validation names the field', () => {
  const code = (fn: () => unknown) => {
    try {
      fn();
    } catch (e) {
      return [(e as StatusError).code, (e as Error).message] as const;
    }
    return [Code.OK, ''] as const;
  };
  assert.equal(checkContainerId('c1.a_b-2'), 'c1.a_b-2');
  assert.equal(code(() => checkContainerId('-x'))[0], Code.INVALID_ARGUMENT);
  assert.equal(code(() => checkContainerId('a'.repeat(129)))[0], Code.INVALID_ARGUMENT);
  assert.equal(code(() => checkContainerId('../etc'))[0], Code.INVALID_ARGUMENT);
  assert.equal(checkExecId(''), '');
  const [c1, m1] = code(() => parseJsonObject(Buffer.from('{"a":'), 'spec_json'));
  assert.equal(c1, Code.INVALID_ARGUMENT);
  assert.match(m1, /^spec_json: malformed JSON/);
  assert.match(code(() => parseJsonObject(Buffer.from('[1]'), 'spec_json'))[1], /must be a JSON object/);
  assert.match(code(() => checkOciSpec({ process: { args: ['sh'], cwd: 'rel' } }, 'spec_json'))[1], /spec_json.process.cwd/);
  assert.match(code(() => checkOciSpec({ process: { args: [1] } }, 'spec_json'))[1], /spec_json.process.args/);
  assert.match(code(() => checkOciSpec({}, 'spec_json'))[1], /spec_json.process/);
});
