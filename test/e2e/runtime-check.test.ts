/**
 * `kata-ts-runtime check` and `env` on this host, through bin/kata-ts-runtime:
 * the real probes (KVM boot probe, TCG boot, devices, tc mirred in a scratch
 * netns, virtiofsd start), and a broken config (missing kernel) that must
 * make check fail naming the path; with no config named, the file the shim
 * finds on this machine (the default scripts/setup.sh installed).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const BIN = join(ROOT, 'bin/kata-ts-runtime');
const TEMPLATE_CONFIG = join(ROOT, 'config/configuration.toml');

interface Out { code: number | null; stdout: string; stderr: string }

function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Out> {
  return new Promise((res, rej) => {
    const e = { ...process.env, ...env };
    delete e['KATA_CONF_FILE'];
    Object.assign(e, env);
    const c = spawn(BIN, args, { env: e, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    c.once('error', rej);
    c.once('close', (code) => res({ code, stdout, stderr }));
  });
}

interface Line { name: string; status: string; detail: string }
function line(probes: Line[], name: string): Line {
  const l = probes.find((p) => p.name === name);
  assert.ok(l, `no ${name} line in ${JSON.stringify(probes)}`);
  return l;
}

test('check on this host: a pod can run (TCG at least)', { timeout: 180_000 }, async () => {
  const r = await cli(['check', '--json', '--config', TEMPLATE_CONFIG]);
  const what = `exit ${r.code}\n${r.stdout}\n${r.stderr}`;
  const rep = JSON.parse(r.stdout) as { canRunPods: boolean; accelerator: string; verdict: string; probes: Line[] };
  assert.equal(r.code, 0, what);
  assert.equal(rep.canRunPods, true, what);
  const kvm = line(rep.probes, 'KVM');
  if (rep.accelerator === 'tcg') {
    // This machine: /dev/kvm exists but the probe guest dies; the reason is QEMU's.
    assert.equal(kvm.status, 'warn', what);
    assert.match(kvm.detail, /^unusable: .{10,}/, what);
  } else {
    assert.equal(kvm.status, 'ok', what);
  }
  const tcg = line(rep.probes, 'TCG');
  assert.equal(tcg.status, 'ok', what);
  assert.match(tcg.detail, /reached userspace in \d+ ms/);
  assert.equal(line(rep.probes, '/dev/vhost-vsock').status, existsSync('/dev/vhost-vsock') ? 'ok' : 'warn', what);
  assert.equal(line(rep.probes, '/dev/net/tun').status, 'ok', what);
  assert.equal(line(rep.probes, 'tc mirred').status, 'ok', what);
  assert.equal(line(rep.probes, 'virtiofsd').status, 'ok', what);
  for (const n of ['guest kernel', 'guest initrd', 'guest image', 'QEMU', 'config']) assert.equal(line(rep.probes, n).status, 'ok', `${n}: ${what}`);
  assert.ok(line(rep.probes, 'containerd').detail.length > 0);
  assert.ok(line(rep.probes, 'cgroup v2').detail.length > 0);

  // The screen form says the same.
  const s = await cli(['check', '--config', TEMPLATE_CONFIG]);
  assert.equal(s.code, 0, s.stdout + s.stderr);
  assert.match(s.stdout, /^ {2}ok {4}TCG /m);
  assert.match(s.stdout, /^a pod can run: accelerator (kvm|tcg)/m);
});

test('check with a missing kernel fails naming the path (config from KATA_CONF_FILE)', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kata-check-'));
  try {
    const missing = join(dir, 'no-such-vmlinux');
    const conf = join(dir, 'configuration.toml');
    writeFileSync(conf, readFileSync(TEMPLATE_CONFIG, 'utf8')
      .replace(/^kernel = .*$/m, `kernel = ${JSON.stringify(missing)}`)
      .replace(/^initrd = .*$/m, `initrd = ${JSON.stringify(join(ROOT, 'build/guest/initrd.img'))}`)
      .replace(/^image = .*$/m, `image = ${JSON.stringify(join(ROOT, 'build/guest/rootfs.img'))}`));
    const r = await cli(['check'], { KATA_CONF_FILE: conf });
    assert.notEqual(r.code, 0, r.stdout);
    assert.match(r.stdout, new RegExp(`FAIL +guest kernel +${missing.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: missing`), r.stdout);
    assert.match(r.stdout, /^no pod can run: .*no-such-vmlinux/m, r.stdout);
    assert.match(r.stdout, new RegExp(`config +${conf.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} \\(KATA_CONF_FILE\\)`), r.stdout);

    // An invalid file: check fails at the config line, naming file, key and allowed values.
    writeFileSync(conf, '[hypervisor.qemu]\nkernel = "/k"\ninitrd = "/i"\nimage = "/r"\nmachine_type = "pc"\n');
    const b = await cli(['check', '--json'], { KATA_CONF_FILE: conf });
    assert.equal(b.code, 1, b.stdout);
    const rep = JSON.parse(b.stdout) as { canRunPods: boolean; probes: Line[] };
    assert.equal(rep.canRunPods, false);
    assert.match(line(rep.probes, 'config').detail, /configuration\.toml: \[hypervisor\.qemu\] machine_type: "pc" is not allowed \(allowed: microvm, q35\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('env prints the effective config and versions as TOML and JSON', { timeout: 60_000 }, async () => {
  const j = await cli(['env', '--json', '--config', TEMPLATE_CONFIG]);
  assert.equal(j.code, 0, j.stderr);
  const e = JSON.parse(j.stdout) as {
    meta: { config: string; config_source: string };
    versions: { qemu: string; guest_kernel: string; shim: string };
    hypervisor: { qemu: { default_memory: number; kernel: string } };
  };
  assert.equal(e.meta.config, TEMPLATE_CONFIG);
  assert.equal(e.meta.config_source, 'explicit');
  assert.match(e.versions.qemu, /^\d+\.\d+/);
  const manifest = JSON.parse(readFileSync(join(ROOT, 'build/guest/manifest.json'), 'utf8')) as { kernel: { release: string } };
  assert.equal(e.versions.guest_kernel, manifest.kernel.release);
  assert.equal(e.hypervisor.qemu.default_memory, 256);
  assert.equal(e.hypervisor.qemu.kernel, join(ROOT, 'build/guest/vmlinux'));
  const t = await cli(['env', '--config', TEMPLATE_CONFIG]);
  assert.equal(t.code, 0, t.stderr);
  assert.match(t.stdout, /^\[hypervisor\.qemu\]$/m);
  assert.match(t.stdout, /^default_memory = 256$/m);
  assert.match(t.stdout, /^guest_kernel = "/m);
  // The sizing keys, and what they come to here (docs/sizing.md).
  assert.match(t.stdout, /^default_maxvcpus = 0$/m);
  assert.match(t.stdout, /^default_maxmemory = 0$/m);
  assert.match(t.stdout, /^memory_slots = 10$/m);
  const sz = (JSON.parse(j.stdout) as { sizing: { grows_by_hotplug: boolean; max_vcpus: number; max_memory_mib: number } }).sizing;
  // q35 by default: pods grow, up to the host's CPUs and memory.
  assert.deepEqual([sz.grows_by_hotplug, sz.max_vcpus, sz.max_memory_mib], [true, availableParallelism(), Math.floor(totalmem() / 1024 / 1024)]);
  const other = join(mkdtempSync(join(tmpdir(), 'env-microvm-')), 'configuration.toml');
  const text = readFileSync(TEMPLATE_CONFIG, 'utf8');
  assert.match(text, /^machine_type = "q35"$/m);
  writeFileSync(other, text.replace(/^machine_type = "q35"$/m, 'machine_type = "microvm"').replace(/^default_maxmemory = 0$/m, 'default_maxmemory = 4096'));
  try {
    const q = await cli(['env', '--json', '--config', other]);
    assert.equal(q.code, 0, q.stderr);
    const qs = (JSON.parse(q.stdout) as { sizing: Record<string, unknown> }).sizing;
    assert.deepEqual([qs['grows_by_hotplug'], qs['max_memory_mib'], qs['memory_slots']], [false, 4096, undefined]);
    assert.match(String(qs['note']), /microvm has no hot-plug/);
  } finally {
    rmSync(dirname(other), { recursive: true, force: true });
  }
  const bad = await cli(['env'], { KATA_CONF_FILE: '/nonexistent/kata.toml' });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /\/nonexistent\/kata\.toml \(KATA_CONF_FILE\): no such file/);
});

test('with no config named: the operator file or the default setup installed, naming a guest image that exists', { timeout: 60_000 }, async () => {
  const j = await cli(['env', '--json']);
  assert.equal(j.code, 0, j.stderr);
  const e = JSON.parse(j.stdout) as { meta: { config: string; config_source: string }; hypervisor: { qemu: { kernel: string; initrd: string; image: string } } };
  const etc = '/etc/kata-containers/configuration.toml';
  if (existsSync(etc)) {
    assert.deepEqual([e.meta.config, e.meta.config_source], [etc, 'etc']);
  } else {
    // scripts/setup.sh (run before any test) installed it, rendered from the template.
    assert.deepEqual([e.meta.config, e.meta.config_source], ['/usr/share/defaults/kata-containers/configuration.toml', 'default']);
    const text = readFileSync(e.meta.config, 'utf8');
    assert.match(text, /^# kata-ts default configuration\n# Installed by scripts\/setup\.sh from \/.*\/config\/configuration\.toml;/);
  }
  for (const f of [e.hypervisor.qemu.kernel, e.hypervisor.qemu.initrd, e.hypervisor.qemu.image]) {
    assert.ok(f.startsWith('/') && existsSync(f), `${f} (from ${e.meta.config}) exists`);
  }
});
