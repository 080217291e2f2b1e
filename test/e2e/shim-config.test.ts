/**
 * The configuration reaches the shim through a real private containerd:
 * `ctr run --runtime-config-path` sends containerd's runtime option
 * ConfigPath (runtimeoptions.v1.Options, on the shim's `start` stdin), the
 * shim boots the VM with that file's kernel_params, and the pod's
 * io.katacontainers.config.hypervisor.* annotations override only what
 * enable_annotations allows. One VM.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { busyboxImage, importImage, projectRoot } from '../harness/busybox.js';
import { startContainerd, waitFor, type Containerd } from '../harness/containerd.js';
import { defaultConfigText } from '../harness/guest.js';

const KATA = 'io.containerd.kata.v2';

describe('configuration through containerd (ConfigPath, annotations)', () => {
  let c: Containerd;
  let dir: string;
  let cfgPath: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kata-cfg-'));
    // The project's default file, with absolute guest paths and a marker kernel parameter.
    const text = defaultConfigText()
      .replace(/^kernel_params = ""$/m, 'kernel_params = "kata_ts_cfg=configpath"');
    assert.match(text, /kata_ts_cfg=configpath/);
    cfgPath = join(dir, 'configuration.toml');
    writeFileSync(cfgPath, text);
    c = await startContainerd({ extraPath: [join(projectRoot(), 'bin')] });
    await importImage(c, busyboxImage());
  });
  after(async () => {
    await c?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('ConfigPath shapes the VM; an enabled annotation adds kernel parameters', async () => {
    const r = await c.ctr(['run', '--rm', '--runtime', KATA, '--runtime-config-path', cfgPath,
      '--annotation', 'io.katacontainers.config.hypervisor.kernel_params=kata_ts_ann=1',
      busyboxImage().name, 'cfg1', 'cat', '/proc/cmdline'], { timeoutMs: 180_000 });
    assert.equal(r.code, 0, `${r.stderr}\n${c.logTail(40)}`);
    assert.match(r.stdout, /kata_ts_cfg=configpath/, 'the file named by ConfigPath was used');
    assert.match(r.stdout, /kata_ts_ann=1/, 'the enabled annotation was applied');
  });

  it('an annotation that enable_annotations does not list refuses the pod, naming it; nothing is left', async () => {
    const r = await c.ctr(['run', '--rm', '--runtime', KATA, '--runtime-config-path', cfgPath,
      '--annotation', 'io.katacontainers.config.hypervisor.machine_type=q35',
      busyboxImage().name, 'cfg2', 'true'], { timeoutMs: 120_000 });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /io\.katacontainers\.config\.hypervisor\.machine_type.*not allowed/);
    const p = await c.ctr(['run', '--rm', '--runtime', KATA, '--runtime-config-path', cfgPath,
      '--annotation', 'io.katacontainers.config.hypervisor.path=/bin/false',
      busyboxImage().name, 'cfg3', 'true'], { timeoutMs: 120_000 });
    assert.notEqual(p.code, 0);
    assert.match(p.stderr, /hypervisor\.path/);
    await c.ctr(['containers', 'rm', 'cfg2', 'cfg3']);
    await waitFor(() => c.shimPids().length === 0, { timeoutMs: 15_000, what: 'no shim left after the refused pods' });
  });

  it('a ConfigPath that does not exist is a clear error', async () => {
    const r = await c.ctr(['run', '--rm', '--runtime', KATA, '--runtime-config-path', join(dir, 'nope.toml'),
      busyboxImage().name, 'cfg4', 'true'], { timeoutMs: 120_000 });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /nope\.toml.*no such file/);
    await c.ctr(['containers', 'rm', 'cfg4']);
  });
});
