/**
 * kata-ts-runtime containerd-config's edit (src/install/containerd-config.ts):
 * the runtime table added once, an equal one left alone, a different one, a
 * version 1 file or a file that is not TOML refused with the reason; and the
 * snippet docs/kubernetes.md shows is exactly what the command writes.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse } from 'smol-toml';
import { Code } from '../../src/errors/index.js';
import { addRuntime, runtimeSnippet } from '../../src/install/containerd-config.js';
import { projectRoot } from '../harness/busybox.js';

const E = { handler: 'kata', configPath: '/opt/kata-ts/current/share/defaults/configuration.toml' };
const CRI = 'io.containerd.grpc.v1.cri';
type T = Record<string, any>;
const runtimes = (text: string): T => (parse(text) as T)['plugins'][CRI]['containerd']['runtimes'];

function refused(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: Error & { code?: number }) => e.code === Code.FAILED_PRECONDITION && re.test(e.message));
}

test('a containerd 1.6 config gets the kata runtime once; the rest is kept as written', () => {
  const old = `version = 2\n# the operator's comment\n[plugins."${CRI}".containerd]\n  default_runtime_name = "runc"\n[plugins."${CRI}".containerd.runtimes.runc]\n  runtime_type = "io.containerd.runc.v2"\n`;
  const r = addRuntime(old, E);
  assert.equal(r.changed, true);
  assert.ok(r.text.startsWith(old), 'appended, never rewritten');
  const rt = runtimes(r.text);
  assert.deepEqual(JSON.parse(JSON.stringify(rt['kata'])), { runtime_type: 'io.containerd.kata.v2', pod_annotations: ['io.katacontainers.*'], options: { ConfigPath: E.configPath } });
  assert.equal(rt['runc'].runtime_type, 'io.containerd.runc.v2');
  // Idempotent: the same table is there.
  const again = addRuntime(r.text, E);
  assert.deepEqual([again.changed, again.text], [false, r.text]);
  // Another handler beside it.
  assert.ok(runtimes(addRuntime(r.text, { ...E, handler: 'kata-tpl' }).text)['kata-tpl']);
});

test('no file yet: a version 2 file with the table', () => {
  const r = addRuntime('', E);
  assert.equal(r.changed, true);
  assert.equal((parse(r.text) as T)['version'], 2);
  assert.equal(runtimes(r.text)['kata'].options.ConfigPath, E.configPath);
});

test('refused, naming the reason: a different kata table, a version 1 file, a file that is not TOML', () => {
  const other = addRuntime('', { ...E, configPath: '/etc/other.toml' }).text;
  refused(() => addRuntime(other, E), /a kata runtime is there already, with other options: left as it is/);
  refused(() => addRuntime('[plugins.cri]\n  x = 1\n', E), /version = 1: only containerd's version 2 format is edited/);
  refused(() => addRuntime('version = 2\n[plugins\n', E), /not valid TOML, left as it is/);
  assert.throws(() => runtimeSnippet({ ...E, handler: 'Kata_1' }), /handler: "Kata_1" is not a DNS label/);
  assert.throws(() => runtimeSnippet({ ...E, configPath: 'rel/x.toml' }), /must be an absolute path/);
});

test('docs/kubernetes.md shows exactly the snippet the command writes', () => {
  const doc = readFileSync(join(projectRoot(), 'docs', 'kubernetes.md'), 'utf8');
  const block = /```toml\n([\s\S]*?)```/.exec(doc.slice(doc.indexOf('<!-- containerd-snippet -->')))?.[1];
  assert.equal(block, runtimeSnippet(E));
});
