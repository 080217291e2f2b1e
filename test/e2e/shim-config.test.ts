/**
 * The configuration reaches the shim through a real private containerd:
 * `ctr run --runtime-config-path` sends containerd's runtime option
 * ConfigPath (runtimeoptions.v1.Options, on the shim's `start` stdin), the
 * shim boots the VM with that file's kernel_params, and the pod's
 * io.katacontainers.config.hypervisor.* annotations override only what
 * enable_annotations allows; the debug switches, kernel_modules and
 * sandbox_cgroup_only do what they say. Two VMs.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { busyboxImage, importImage, projectRoot } from '../harness/busybox.js';
import { startContainerd, waitFor, type Containerd } from '../harness/containerd.js';
import { bundleDir, logMark, logSince, qemuPids, virtiofsdPids } from '../harness/ctr.js';
import { defaultConfigText, templatesOn } from '../harness/guest.js';
import { assertPodGone, podBaseline } from '../harness/pod-leaks.js';

const KATA = 'io.containerd.kata.v2';

describe('configuration through containerd (ConfigPath, annotations)', () => {
  let c: Containerd;
  let dir: string;
  let cfgPath: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kata-cfg-'));
    // The project's default file, with absolute guest paths and a marker kernel parameter.
    const text = defaultConfigText(join(dir, 'templates'))
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
      busyboxImage().name, 'cfg1', 'sh', '-c', 'cat /proc/cmdline; echo MODULES; cat /proc/modules'], { timeoutMs: 180_000 });
    assert.equal(r.code, 0, `${r.stderr}\n${c.logTail(40)}`);
    const [cmdline = '', modules = ''] = r.stdout.split('MODULES\n');
    assert.match(cmdline, /kata_ts_cfg=configpath/, 'the file named by ConfigPath was used');
    assert.match(cmdline, /kata_ts_ann=1/, 'the enabled annotation was applied');
    assert.doesNotMatch(cmdline, /(^| )debug( |$)/, 'no kernel debug without enable_debug');
    // The baseline for kernel_modules below: the image has vsock, but it is loaded only for a vsock device.
    assert.match(modules, /^virtio_console /m, 'modules listed');
    assert.doesNotMatch(modules, /^vsock /m);
  });

  it('an annotation that enable_annotations does not list refuses the pod, naming it; nothing is left', async () => {
    const base = podBaseline(c);
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
    await assertPodGone(c, base, 'pods refused for their annotations');
  });

  it('enable_debug (shim, guest kernel + console, agent), kernel_modules, sandbox_cgroup_only: each does what it says', async () => {
    const text = defaultConfigText(join(dir, 'templates'))
      .replace(/^enable_debug = false$/gm, 'enable_debug = true')
      .replace(/^kernel_modules = \[\]$/m, 'kernel_modules = ["vsock"]')
      .replace(/^sandbox_cgroup_only = false$/m, 'sandbox_cgroup_only = true');
    assert.equal(text.match(/^enable_debug = true$/gm)?.length, 3, 'the three enable_debug keys');
    assert.match(text, /^kernel_modules = \["vsock"\]$/m);
    assert.match(text, /^sandbox_cgroup_only = true$/m);
    const f = join(dir, 'debug.toml');
    writeFileSync(f, text);
    const from = logMark(c);
    const id = 'dbg1';
    const r = await c.ctr(['run', '-d', '--runtime', KATA, '--runtime-config-path', f, busyboxImage().name, id, 'sleep', '600'], { timeoutMs: 180_000 });
    assert.equal(r.code, 0, `${r.stderr}\n${c.logTail(40)}`);
    try {
      // kernel_modules: loaded by the agent before the pod's containers.
      const mods = await c.ctr(['task', 'exec', '--exec-id', 'm', id, 'cat', '/proc/modules'], { timeoutMs: 60_000 });
      assert.equal(mods.code, 0, mods.stderr);
      assert.match(mods.stdout, /^vsock /m, 'vsock loaded by kernel_modules');

      // sandbox_cgroup_only: the shim, QEMU and virtiofsd in the cgroup the sandbox container names.
      const spec = JSON.parse(readFileSync(join(bundleDir(c, id), 'config.json'), 'utf8')) as { linux?: { cgroupsPath?: string } };
      const cgPath = spec.linux?.cgroupsPath ?? '';
      assert.equal(cgPath, `/${c.namespace}/${id}`, 'ctr names /<namespace>/<id>');
      const [shim] = c.shimPids();
      const [qemu] = qemuPids(c);
      const vfsd = virtiofsdPids(c);
      assert.ok(shim && qemu && (templatesOn() ? vfsd.length === 0 : vfsd.length > 0), `shim ${shim}, qemu ${qemu}, virtiofsd ${vfsd.join(' ')} (none with templates: virtio-9p)`);
      const hierarchies = ['memory', 'cpu', 'pids'].map((h) => join('/sys/fs/cgroup', h)).filter((d) => existsSync(join(d, 'cgroup.procs')));
      const v2 = existsSync('/sys/fs/cgroup/cgroup.controllers');
      const dirs = v2 ? [join('/sys/fs/cgroup', cgPath)] : hierarchies.map((h) => join(h, cgPath));
      assert.ok(dirs.length > 0, 'a cgroup hierarchy to look in');
      for (const d of dirs) {
        const procs = readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
        // virtiofsd runs as two processes (its sandbox forks): both count.
        for (const [what, pid] of [['shim', shim], ['QEMU', qemu], ...vfsd.map((v) => ['virtiofsd', v] as const)] as const) {
          assert.ok(procs.includes(pid), `${what} ${pid} in ${d} (${procs.join(' ')})`);
        }
      }

      // enable_debug: the shim logs at debug, the guest kernel's messages (`debug` on its command line)
      // and the agent's debug lines come through the console into the shim's log (containerd copies it).
      await waitFor(() => /"source":"vm-console"[^\n]*spawning process/.test(logSince(c, from)), { timeoutMs: 20_000, what: 'the agent\'s debug line in the shim log' });
      const log = logSince(c, from);
      assert.match(log, /"level":20,[^\n]*"pod":"dbg1"/, 'the shim logs at debug');
      if (templatesOn()) {
        // A clone did not boot: its kernel's boot messages were the template's. Its command line has `debug`.
        assert.match(log, /"pod":"dbg1"[^\n]*"msg":"pod VM cloned from a template"/);
        const cmdline = await c.ctr(['task', 'exec', '--exec-id', 'cl', id, 'cat', '/proc/cmdline'], { timeoutMs: 60_000 });
        assert.match(cmdline.stdout, /(^| )debug( |$)/, 'the guest kernel got `debug`');
      } else {
        assert.match(log, /"source":"vm-console"[^\n]*"line":"[^"]*Linux version/, 'kernel messages (KERN_INFO: hidden by quiet)');
        assert.match(log, /"source":"vm-console"[^\n]*"line":"[^"]*Command line:[^"]* debug /, 'the guest kernel got `debug`');
      }
    } finally {
      await c.ctr(['task', 'kill', '-s', 'KILL', id]);
      await waitFor(async () => (await c.ctr(['task', 'delete', id])).code === 0, { timeoutMs: 60_000, what: 'task delete' });
      await c.ctr(['containers', 'rm', id]);
    }
    await waitFor(() => c.shimPids().length === 0, { timeoutMs: 30_000, what: 'the shim gone' });
    // The pod cgroup (and the /<namespace> parent the shim made) removed.
    for (const h of ['memory', 'cpu', 'pids']) assert.equal(existsSync(join('/sys/fs/cgroup', h, c.namespace)), false, `${h}/${c.namespace} removed`);
  });

  it('a kernel module the image lacks refuses the pod, naming it; nothing is left', async () => {
    const base = podBaseline(c);
    const f = join(dir, 'nomod.toml');
    writeFileSync(f, defaultConfigText(join(dir, 'templates')).replace(/^kernel_modules = \[\]$/m, 'kernel_modules = ["kata_ts_nosuchmod"]'));
    const r = await c.ctr(['run', '--rm', '--runtime', KATA, '--runtime-config-path', f, busyboxImage().name, 'cfg5', 'true'], { timeoutMs: 180_000 });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /kernel_modules: modprobe kata_ts_nosuchmod: /);
    await c.ctr(['containers', 'rm', 'cfg5']);
    await waitFor(() => c.shimPids().length === 0 && qemuPids(c).length === 0, { timeoutMs: 30_000, what: 'no shim or QEMU left' });
    await assertPodGone(c, base, 'a pod refused for a missing kernel module');
  });

  it('a ConfigPath that does not exist is a clear error', async () => {
    const r = await c.ctr(['run', '--rm', '--runtime', KATA, '--runtime-config-path', join(dir, 'nope.toml'),
      busyboxImage().name, 'cfg4', 'true'], { timeoutMs: 120_000 });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /nope\.toml.*no such file/);
    await c.ctr(['containers', 'rm', 'cfg4']);
  });
});
