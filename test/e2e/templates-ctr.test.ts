/**
 * VM templates through a real private containerd and the operator's CLI:
 *
 * - three `ctr run -d` at once with no template yet: three shims (three
 *   processes), ONE template build between them (the build lock), three clones;
 * - `kata-ts-runtime factory status` (the shim's configuration, KATA_CONF_FILE)
 *   shows that template as current and ready; `factory destroy` removes it
 *   while the pods run, and they go on running (their memory mapping keeps
 *   the file); `factory init` makes both shapes (with and without a NIC);
 * - every pod removed: the leak check finds nothing of them.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { busyboxImage, importImage, projectRoot } from '../harness/busybox.js';
import { startContainerd, waitFor, type Containerd } from '../harness/containerd.js';
import { assertPodGone, podBaseline, type PodBaseline } from '../harness/pod-leaks.js';
import { templatesOn } from '../harness/guest.js';

const KATA = 'io.containerd.kata.v2';
const CLI = join(projectRoot(), 'bin/kata-ts-runtime');

function cli(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 180_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(CLI, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('VM templates through containerd and kata-ts-runtime factory', { timeout: 900_000 }, () => {
  let c: Containerd;
  let base: PodBaseline;
  let env: NodeJS.ProcessEnv;
  let templates: string;
  const ids = ['tpl-1', 'tpl-2', 'tpl-3'];
  const previous = process.env.KATA_TS_TEST_TEMPLATES;

  before(async () => {
    process.env.KATA_TS_TEST_TEMPLATES = '1';
    assert.ok(templatesOn());
    c = await startContainerd({ extraPath: [join(projectRoot(), 'bin')], runtimes: { kata: { runtimeType: KATA } } });
    await importImage(c, busyboxImage());
    templates = join(c.dir, 'templates');
    env = { ...process.env, KATA_CONF_FILE: join(c.dir, 'configuration.toml') };
    base = podBaseline(c);
  });
  after(async () => {
    for (const id of ids) {
      await c?.ctr(['task', 'kill', '-s', 'KILL', id]).catch(() => {});
      await c?.ctr(['task', 'delete', id]).catch(() => {});
      await c?.ctr(['containers', 'rm', id]).catch(() => {});
    }
    await c?.stop();
    if (previous === undefined) delete process.env.KATA_TS_TEST_TEMPLATES;
    else process.env.KATA_TS_TEST_TEMPLATES = previous;
  });

  it('three pods at once, three shims: one template build, three clones', async () => {
    assert.equal(existsSync(templates), false, 'no template yet');
    const runs = await Promise.all(ids.map((id) =>
      c.ctr(['run', '-d', '--runtime', KATA, busyboxImage().name, id, 'sleep', '600'], { timeoutMs: 240_000 })));
    for (const r of runs) assert.equal(r.code, 0, `${r.stderr}\n${c.logTail(60)}`);
    const log = c.logTail(3000);
    assert.equal(log.match(/"msg":"making a VM template"/g)?.length, 1, 'one build between three shims');
    for (const id of ids) assert.match(log, new RegExp(`"pod":"${id}"[^\\n]*"msg":"pod VM cloned from a template"`), `${id} is a clone`);
    assert.equal(new Set(c.shimPids()).size, 3, 'three shims');
    const st = await cli(['factory', 'status', '--json'], env);
    assert.equal(st.code, 0, st.stderr);
    const status = JSON.parse(st.stdout) as { enabled: boolean; templates: Array<{ state: string; current: boolean; serves?: string }> };
    assert.equal(status.enabled, true);
    const ready = status.templates.filter((t) => t.state === 'ready');
    assert.equal(ready.length, 1, st.stdout);
    assert.equal(ready[0]!.current, true);
    assert.equal(ready[0]!.serves, 'pods without a network');
    // The text form names the absent shape for pods with a network.
    const text = await cli(['factory', 'status'], env);
    assert.match(text.stdout, /ready +\(current, pods without a network\)/);
    assert.match(text.stdout, /absent +\(current, pods with a network\)/);
  });

  it('factory destroy while the clones run: they go on; factory init makes both shapes', async () => {
    const d = await cli(['factory', 'destroy'], env);
    assert.equal(d.code, 0, d.stderr);
    assert.match(d.stdout, /removed /);
    assert.equal(existsSync(templates), false);
    for (const id of ids) {
      const r = await c.ctr(['task', 'exec', '--exec-id', 'e1', id, 'sh', '-c', 'echo alive'], { timeoutMs: 60_000 });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'alive\n');
    }
    const init = await cli(['factory', 'init'], env, 300_000);
    assert.equal(init.code, 0, init.stderr);
    assert.match(init.stdout, /pods without a network\): ready/);
    assert.match(init.stdout, /pods with a network\): ready/);
    assert.equal(readdirSync(templates).filter((n) => /^[0-9a-f]{24}$/.test(n)).length, 2);
  });

  it('every pod removed: nothing of them is left', async () => {
    for (const id of ids) {
      assert.equal((await c.ctr(['task', 'kill', '-s', 'KILL', id])).code, 0);
      await waitFor(async () => (await c.ctr(['task', 'delete', id])).code === 0, { timeoutMs: 60_000, what: `task delete ${id}` });
      assert.equal((await c.ctr(['containers', 'rm', id])).code, 0);
    }
    await assertPodGone(c, base, 'three cloned pods');
  });
});
