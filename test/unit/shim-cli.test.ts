import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseShimArgs, serveArgs, UsageError } from '../../src/shim/flags.js';
import { podIdOf, podPaths, runRoot, DEFAULT_RUN_ROOT } from '../../src/shim/pod-paths.js';
import { configPathFromOptions } from '../../src/shim/start.js';
import { containerd, google, runtimeoptions } from '../../src/proto/gen/containerd.js';

describe('shim flags (containerd 1.6 argv)', () => {
  it('parses start as containerd writes it', () => {
    const f = parseShimArgs(['-namespace', 'default', '-address', '/run/c.sock', '-publish-binary', '/usr/bin/containerd', '-id', 't1', '-debug', 'start']);
    assert.deepEqual(f, { namespace: 'default', address: '/run/c.sock', publishBinary: '/usr/bin/containerd', id: 't1', bundle: '', debug: true, version: false, action: 'start' });
  });
  it('parses delete with -bundle and the = form; no action serves', () => {
    const d = parseShimArgs(['--namespace=ns', '-address=/a', '-id', 'x', '-bundle', '/b', 'delete']);
    assert.equal(d.action, 'delete');
    assert.equal(d.bundle, '/b');
    assert.equal(d.debug, false);
    const s = parseShimArgs(['-namespace', 'ns', '-id', 'x', '-debug=false']);
    assert.equal(s.action, 'serve');
    assert.equal(s.debug, false);
  });
  it('refuses what Go flag refuses, naming the flag', () => {
    assert.throws(() => parseShimArgs(['-namespace', 'ns', '-bogus', 'start']), (e: unknown) => e instanceof UsageError && /-bogus/.test(e.message));
    assert.throws(() => parseShimArgs(['-namespace']), /needs an argument: -namespace/);
    assert.throws(() => parseShimArgs(['-id', 'x', 'start']), /namespace cannot be empty/);
    assert.throws(() => parseShimArgs(['-namespace', 'n', 'start']), /id cannot be empty/);
    assert.throws(() => parseShimArgs(['-namespace', 'n', '-id', 'x', 'launch']), /unknown action "launch"/);
    assert.throws(() => parseShimArgs(['-namespace', 'n', '-id', 'x', '-debug=maybe']), /invalid boolean/);
  });
  it('the serving shim gets the same identity flags', () => {
    const f = parseShimArgs(['-namespace', 'n', '-address', '/a', '-publish-binary', '/p', '-id', 'pod', '-debug', 'start']);
    assert.deepEqual(serveArgs(f), ['-namespace', 'n', '-address', '/a', '-publish-binary', '/p', '-id', 'pod', '-debug']);
    assert.equal(parseShimArgs(serveArgs(f)).action, 'serve');
  });
});

describe('pod paths', () => {
  it('groups containers by the CRI sandbox id', () => {
    assert.equal(podIdOf('c1', { 'io.kubernetes.cri.sandbox-id': 'sb', 'io.kubernetes.cri.container-type': 'container' }), 'sb');
    assert.equal(podIdOf('c1', {}), 'c1');
    assert.equal(podIdOf('c1', { 'io.kubernetes.cri.sandbox-id': '' }), 'c1');
  });
  it('one dir per (containerd, namespace, pod), short enough for socket paths', () => {
    const a = podPaths('/run/kata-ts', '/run/containerd/containerd.sock', 'default', 'p');
    const b = podPaths('/run/kata-ts', '/tmp/other/containerd.sock', 'default', 'p');
    const c = podPaths('/run/kata-ts', '/run/containerd/containerd.sock', 'k8s.io', 'p');
    assert.notEqual(a.dir, b.dir);
    assert.notEqual(a.dir, c.dir);
    assert.equal(a.socket, `${a.dir}/shim.sock`);
    assert.equal(a.address, `unix://${a.socket}`);
    assert.ok(a.socket.length < 80, a.socket);
    assert.deepEqual(podPaths('/run/kata-ts', '/run/containerd/containerd.sock', 'default', 'p'), a);
  });
  it('KATA_TS_RUN_ROOT moves the run root; relative values are ignored', () => {
    assert.equal(runRoot({}), DEFAULT_RUN_ROOT);
    assert.equal(runRoot({ KATA_TS_RUN_ROOT: '/tmp/x' }), '/tmp/x');
    assert.equal(runRoot({ KATA_TS_RUN_ROOT: 'rel' }), DEFAULT_RUN_ROOT);
  });
});

describe('runtime options on start\'s stdin', () => {
  const anyOf = (typeUrl: string, value: Uint8Array) => google.protobuf.Any.encode({ type_url: typeUrl, value }).finish();
  it('CRI\'s runtimeoptions.v1.Options gives the ConfigPath', () => {
    const v = runtimeoptions.v1.Options.encode({ typeUrl: '', configPath: '/etc/k/c.toml' }).finish();
    assert.equal(configPathFromOptions(anyOf('runtimeoptions.v1.Options', v)), '/etc/k/c.toml');
    assert.equal(configPathFromOptions(anyOf('type.googleapis.com/runtimeoptions.v1.Options', v)), '/etc/k/c.toml');
  });
  it('nothing, other options or garbage give none', () => {
    assert.equal(configPathFromOptions(new Uint8Array()), undefined);
    const runc = containerd.runc.v1.Options.encode({ binaryName: 'runc' }).finish();
    assert.equal(configPathFromOptions(anyOf('containerd.runc.v1.Options', runc)), undefined);
    assert.equal(configPathFromOptions(Buffer.from([0xff, 0xff, 0xff])), undefined);
  });
});
