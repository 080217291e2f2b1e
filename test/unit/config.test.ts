/**
 * src/config: lookup order, validation errors (each names the file, the key
 * and what is allowed), the project default file, and pod annotation
 * overrides allowed and refused (a security boundary).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ANNOTATION_PREFIX, applyAnnotations, ConfigError, DEFAULT_CONFIG, DEFAULT_CONFIG_MARKER, findConfig, kernelModules, renderDefaultConfig, templateConfigPath, loadConfig, parseConfig, type KataConfig,
} from '../../src/config/index.js';
import { Code } from '../../src/errors/index.js';
import { hostCapacity, hotplugRoom, podVmSettings } from '../../src/shim/pod-vm.js';

const MIN = `
[hypervisor.qemu]
kernel = "/guest/vmlinux"
initrd = "/guest/initrd.img"
image = "/guest/rootfs.img"
`;

function withDir(fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'kata-config-'));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function bad(text: string, ...needles: string[]): void {
  assert.throws(() => parseConfig(text, '/x/conf.toml'), (err: unknown) => {
    assert.ok(err instanceof ConfigError, String(err));
    assert.equal(err.code, Code.INVALID_ARGUMENT);
    assert.match(err.message, /\/x\/conf\.toml/);
    for (const n of needles) assert.ok(err.message.includes(n), `${JSON.stringify(err.message)} lacks ${JSON.stringify(n)}`);
    return true;
  });
}

test('lookup order: explicit, KATA_CONF_FILE, /etc, the installed default', () => {
  withDir((dir) => {
    const [a, b, etc, def] = ['a.toml', 'b.toml', 'etc.toml', 'def.toml'].map((f) => join(dir, f)) as [string, string, string, string];
    for (const f of [a, b, etc, def]) writeFileSync(f, MIN);
    const env = { KATA_CONF_FILE: b };
    assert.deepEqual(findConfig({ explicit: a, env, etcPath: etc, defaultPath: def }), { file: a, source: 'explicit' });
    assert.deepEqual(findConfig({ env, etcPath: etc, defaultPath: def }), { file: b, source: 'KATA_CONF_FILE' });
    assert.deepEqual(findConfig({ env: {}, etcPath: etc, defaultPath: def }), { file: etc, source: 'etc' });
    rmSync(etc);
    assert.deepEqual(findConfig({ env: {}, etcPath: etc, defaultPath: def }), { file: def, source: 'default' });
    // A named file that is missing is an error, never a silent fallback.
    assert.throws(() => findConfig({ explicit: join(dir, 'nope.toml'), env, etcPath: etc, defaultPath: def }), /nope\.toml.*ConfigPath.*no such file/);
    assert.throws(() => findConfig({ env: { KATA_CONF_FILE: join(dir, 'gone.toml') }, etcPath: etc, defaultPath: def }), /gone\.toml.*KATA_CONF_FILE/);
    rmSync(def);
    assert.throws(() => findConfig({ env: {}, etcPath: etc, defaultPath: def }), /no configuration: none of ConfigPath, KATA_CONF_FILE, .*etc\.toml, .*def\.toml is set or exists/);
    // Kata's place for the packaged default.
    assert.equal(DEFAULT_CONFIG, '/usr/share/defaults/kata-containers/configuration.toml');
    const cfg = loadConfig({ explicit: a });
    assert.equal(cfg.file, a);
    assert.equal(cfg.source, 'explicit');
  });
});

test('defaults and the project default file', () => {
  const c = parseConfig(MIN, '/x/conf.toml');
  assert.equal(c.hypervisor.qemu.machine_type, 'q35');
  assert.equal(c.hypervisor.qemu.machine_accelerators, 'auto');
  assert.equal(c.hypervisor.qemu.default_vcpus, 1);
  assert.equal(c.hypervisor.qemu.default_memory, 256);
  assert.equal(c.hypervisor.qemu.shared_fs, 'virtio-fs');
  assert.equal(c.hypervisor.qemu.virtio_fs_cache, 'auto');
  assert.equal(c.runtime.internetworking_model, 'tcfilter');
  assert.equal(c.agent.kata.guest_runtime, '/usr/bin/crun');
  assert.deepEqual(c.hypervisor.qemu.enable_annotations, []);

  const d = loadConfig({ explicit: templateConfigPath() });
  const root = join(templateConfigPath(), '../..');
  assert.equal(d.hypervisor.qemu.kernel, join(root, 'build/guest/vmlinux'));
  assert.equal(d.hypervisor.qemu.initrd, join(root, 'build/guest/initrd.img'));
  assert.equal(d.hypervisor.qemu.image, join(root, 'build/guest/rootfs.img'));
  assert.equal(d.hypervisor.qemu.virtio_fs_daemon, '/usr/lib/qemu/virtiofsd');
  assert.equal(d.hypervisor.qemu.default_memory, 256);
  assert.equal(d.factory.enable_template, false);
});

test('the installed default: the template with absolute guest paths, installed only over our own file', () => {
  const template = templateConfigPath();
  const text = renderDefaultConfig(readFileSync(template, 'utf8'), template);
  assert.ok(text.startsWith(`${DEFAULT_CONFIG_MARKER}\n`));
  assert.match(text, new RegExp(`^kernel = "${join(template, '../../build/guest/vmlinux').replace(/[.\/]/g, '\\$&')}"$`, 'm'));
  assert.doesNotMatch(text, /"\.\.\//, 'no relative path left');
  // Same settings wherever the rendered file is read from (a relative path would move with it).
  const a = parseConfig(text, '/usr/share/defaults/kata-containers/configuration.toml', 'default');
  const b = loadConfig({ explicit: template });
  assert.deepEqual({ ...a, file: '', source: '' }, { ...b, file: '', source: '' });
  // The comments of the template are kept (the file is what an operator reads).
  assert.match(text, /^# the read-only erofs root image/m);
  // A relative path the rewrite cannot see would move with the file: refused, not installed wrong.
  assert.throws(() => renderDefaultConfig('[hypervisor.qemu]\nkernel = "g/vmlinux"\ninitrd = "/i"\nimage = "/r"\n', '/x/conf.toml'), /relative path .* cannot be made absolute/);
  assert.match(renderDefaultConfig('[hypervisor.qemu]\nkernel = "./g/vmlinux"\ninitrd = "/i"\nimage = "/r"\n', '/x/conf.toml'), /^kernel = "\/x\/g\/vmlinux"$/m);
  // A template that does not validate is never rendered.
  assert.throws(() => renderDefaultConfig('[hypervisor.qemu]\nbogus = 1\n', '/x/conf.toml'), /unknown key \[hypervisor\.qemu\] bogus/);
  // An install's copy (scripts/install.sh): the guest image and the jailer relocated, its own origin line.
  const installed = renderDefaultConfig(readFileSync(template, 'utf8'), template, {
    relocate: [{ from: '../build/guest', to: '/opt/kt/versions/v1/share/guest' }, { from: '../build/host', to: '/opt/kt/versions/v1/libexec' }],
    origin: 'Installed by scripts/install.sh: version v1 under /opt/kt.',
  });
  assert.match(installed, /^kernel = "\/opt\/kt\/versions\/v1\/share\/guest\/vmlinux"$/m);
  assert.match(installed, /^jailer_path = "\/opt\/kt\/versions\/v1\/libexec\/kata-ts-jailer"$/m);
  assert.equal(installed.split('\n')[1], '# Installed by scripts/install.sh: version v1 under /opt/kt.');
  assert.ok(installed.startsWith(`${DEFAULT_CONFIG_MARKER}\n`));
  assert.throws(() => renderDefaultConfig(readFileSync(template, 'utf8'), template, { relocate: [{ from: 'build/guest', to: '/x' }] }), /relocate build\/guest -> \/x/);

  withDir((dir) => {
    const target = join(dir, 'share/defaults/kata-containers/configuration.toml');
    const install = (): { status: number | null; stderr: string } => {
      const r = spawnSync(process.execPath, [join(template, '../../scripts/install-config.mjs'), target], { encoding: 'utf8', timeout: 30_000 });
      return { status: r.status, stderr: r.stderr };
    };
    let r = install();
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /installed .*configuration\.toml/);
    assert.equal(readFileSync(target, 'utf8'), text);
    // Twice: nothing to do.
    r = install();
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, '');
    // Someone else's file there (a real Kata's): left alone.
    writeFileSync(target, '# kata-containers 3.x\n[hypervisor.qemu]\n');
    r = install();
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /not replacing/);
    assert.equal(readFileSync(target, 'utf8'), '# kata-containers 3.x\n[hypervisor.qemu]\n');
  });
});

test('relative paths resolve against the file', () => {
  const c = parseConfig(`[hypervisor.qemu]\nkernel = "g/vmlinux"\ninitrd = "/i"\nimage = "../r"\n`, '/etc/k/conf.toml');
  assert.equal(c.hypervisor.qemu.kernel, '/etc/k/g/vmlinux');
  assert.equal(c.hypervisor.qemu.image, '/etc/r');
});

test('validation: bad TOML, unknown table, unknown key', () => {
  bad('[hypervisor.qemu\n', 'not valid TOML');
  bad(`${MIN}\n[hypervisor.firecracker]\npath = "/x"\n`, '[hypervisor.firecracker]', 'allowed: [hypervisor.qemu]');
  bad(`${MIN}\n[agent.other]\n`, '[agent.other]', '[agent.kata]');
  bad(`${MIN}\n[netmon]\nenable = true\n`, '[netmon]', 'allowed tables');
  bad(`top = 1\n${MIN}`, 'unknown key top');
  bad(`${MIN}default_maxfoo = 4\n`, '[hypervisor.qemu] default_maxfoo', 'allowed:', 'default_maxvcpus');
  bad(`${MIN}\n[runtime]\nenable_tracing = true\n`, '[runtime] enable_tracing', 'internetworking_model');
});

test('kernel_modules: "name [param=value ...]" entries, as Kata\'s', () => {
  const c = parseConfig(`${MIN}\n[agent.kata]\nkernel_modules = ["vsock", "e1000e InterruptThrottleRate=3000,3000 EEE=1", "dummy numdummies"]\n`, '/x/conf.toml');
  assert.deepEqual(kernelModules(c), [
    { name: 'vsock', parameters: [] },
    { name: 'e1000e', parameters: ['InterruptThrottleRate=3000,3000', 'EEE=1'] },
    { name: 'dummy', parameters: ['numdummies'] },
  ]);
  bad(`${MIN}\n[agent.kata]\nkernel_modules = [""]\n`, '[agent.kata] kernel_modules', '""', 'name [param=value ...]');
  bad(`${MIN}\n[agent.kata]\nkernel_modules = ["../evil"]\n`, '[agent.kata] kernel_modules', '../evil');
  bad(`${MIN}\n[agent.kata]\nkernel_modules = ["m x=$(reboot)"]\n`, '[agent.kata] kernel_modules', 'x=$(reboot)');
  bad(`${MIN}\n[agent.kata]\nkernel_modules = "vsock"\n`, '[agent.kata] kernel_modules', 'array of strings');
});

test('validation: wrong types', () => {
  bad(`${MIN}default_vcpus = "2"\n`, '[hypervisor.qemu] default_vcpus', 'expected an integer', 'string');
  bad(`${MIN}default_memory = 256.5\n`, '[hypervisor.qemu] default_memory', 'expected an integer', 'float');
  bad(`${MIN}enable_debug = "yes"\n`, '[hypervisor.qemu] enable_debug', 'boolean');
  bad(`${MIN}kernel_params = ["a"]\n`, '[hypervisor.qemu] kernel_params', 'string', 'array');
  bad(`${MIN}enable_annotations = "default_memory"\n`, 'enable_annotations', 'array of strings');
  bad(`${MIN}valid_hypervisor_paths = [1]\n`, 'valid_hypervisor_paths', 'array of path strings');
  bad(`${MIN}\n[agent.kata]\ndial_timeout = true\n`, '[agent.kata] dial_timeout', 'integer');
  bad(`${MIN}\n[agent.kata]\nkernel_modules = "x"\n`, '[agent.kata] kernel_modules', 'array of strings');
  bad(`${MIN}\n[runtime]\nsandbox_cgroup_only = 1\n`, '[runtime] sandbox_cgroup_only', 'boolean');
  bad(`${MIN}default_vcpus = 0\n`, 'default_vcpus', 'out of range', '1..64');
  bad(`${MIN}default_memory = 16\n`, 'default_memory', 'out of range');
  bad('[hypervisor]\nqemu = 1\n', '[hypervisor.qemu]');
});

test('validation: bad enum values name the allowed ones', () => {
  bad(`${MIN}machine_type = "pc"\n`, '[hypervisor.qemu] machine_type', '"pc"', 'microvm, q35');
  bad(`${MIN}machine_accelerators = "hvf"\n`, 'machine_accelerators', 'auto, kvm, tcg');
  bad(`${MIN}shared_fs = "nfs"\n`, 'shared_fs', 'virtio-fs, virtio-9p, none');
  bad(`${MIN}virtio_fs_cache = "never"\n`, 'virtio_fs_cache', 'auto, always, none');
  bad(`${MIN}\n[runtime]\ninternetworking_model = "macvtap"\n`, '[runtime] internetworking_model', 'tcfilter, none');
  bad(`${MIN}\n[agent.kata]\nguest_runtime = "/usr/bin/runc"\n`, '[agent.kata] guest_runtime', '/usr/bin/crun');
  bad(`${MIN}enable_annotations = ["valid_hypervisor_paths"]\n`, 'enable_annotations', 'not an overridable key');
  bad(`${MIN}enable_annotations = ["nope"]\n`, 'enable_annotations', '"nope"');
});

test('validation: paths not in valid_*_paths, required paths', () => {
  bad(`${MIN}path = "/opt/qemu"\nvalid_hypervisor_paths = ["/usr/bin/qemu-system-x86_64"]\n`,
    '[hypervisor.qemu] path', '/opt/qemu', 'valid_hypervisor_paths', 'allowed: /usr/bin/qemu-system-x86_64');
  bad(`${MIN}virtio_fs_daemon = "/tmp/vfsd"\nvalid_virtio_fs_daemon_paths = ["/usr/lib/qemu/virtiofsd"]\n`,
    'virtio_fs_daemon', '/tmp/vfsd', 'valid_virtio_fs_daemon_paths');
  bad(`${MIN}valid_kernel_paths = ["/other/vmlinux"]\n`, '[hypervisor.qemu] kernel', '/guest/vmlinux', 'valid_kernel_paths');
  bad('[hypervisor.qemu]\ninitrd = "/i"\nimage = "/r"\n', '[hypervisor.qemu] kernel', 'required');
  // In the list: fine.
  parseConfig(`${MIN}path = "/opt/qemu"\nvalid_hypervisor_paths = ["/opt/qemu"]\n`, '/x/conf.toml');
});

function annotated(extra: string): KataConfig {
  return parseConfig(`${MIN}${extra}`, '/x/conf.toml');
}
const A = (k: string): string => `${ANNOTATION_PREFIX}${k}`;

function refused(cfg: KataConfig, ann: Record<string, string>, ...needles: string[]): void {
  assert.throws(() => applyAnnotations(cfg, ann), (err: unknown) => {
    assert.ok(err instanceof ConfigError, String(err));
    assert.equal(err.code, Code.INVALID_ARGUMENT);
    for (const n of needles) assert.ok(err.message.includes(n), `${JSON.stringify(err.message)} lacks ${JSON.stringify(n)}`);
    return true;
  });
}

test('annotations: allowed keys override, others are ignored or refused', () => {
  const cfg = annotated('kernel_params = "quiet"\nenable_annotations = ["default_memory", "default_vcpus", "kernel_params", "machine_accelerators"]\n');
  const c = applyAnnotations(cfg, {
    [A('default_memory')]: '512', [A('default_vcpus')]: '2', [A('kernel_params')]: 'guest.debug',
    [A('machine_accelerators')]: 'tcg', 'io.kubernetes.cri.sandbox-id': 'x',
  });
  assert.equal(c.hypervisor.qemu.default_memory, 512);
  assert.equal(c.hypervisor.qemu.default_vcpus, 2);
  assert.equal(c.hypervisor.qemu.kernel_params, 'quiet guest.debug');
  assert.equal(c.hypervisor.qemu.machine_accelerators, 'tcg');
  // The input is not changed.
  assert.equal(cfg.hypervisor.qemu.default_memory, 256);
  assert.equal(applyAnnotations(cfg, undefined), cfg);
  assert.deepEqual(applyAnnotations(cfg, { other: '1' }).hypervisor, cfg.hypervisor);

  refused(cfg, { [A('machine_type')]: 'q35' }, A('machine_type'), 'not allowed', 'enable_annotations', '/x/conf.toml');
  refused(annotated(''), { [A('default_memory')]: '512' }, 'not allowed', 'enable_annotations = []');
  refused(cfg, { [A('default_memory')]: 'lots' }, 'not an integer');
  refused(cfg, { [A('default_vcpus')]: '1000' }, 'out of range');
  refused(cfg, { [A('machine_accelerators')]: 'hvf' }, 'auto, kvm, tcg');
  refused(cfg, { [A('no_such_key')]: '1' }, 'unknown or non-overridable');
  refused(cfg, { [A('enable_annotations')]: '["path"]' }, 'non-overridable');
  refused(cfg, { [A('valid_hypervisor_paths')]: '/tmp/evil' }, 'non-overridable');
  // QEMU's confinement is never a pod's to loosen.
  for (const k of ['rootless', 'rootless_uids', 'jailer_path', 'seccompsandbox']) refused(cfg, { [A(k)]: 'false' }, 'non-overridable');
  assert.throws(() => parseConfig('[hypervisor.qemu]\nkernel = "/k"\ninitrd = "/i"\nimage = "/r"\nenable_annotations = ["rootless"]\n', '/e/c.toml', 'etc'), /"rootless" is not an overridable key/);
});

test('annotations: a path must be in its valid list (security boundary)', () => {
  const cfg = annotated('valid_hypervisor_paths = ["/usr/bin/qemu-system-x86_64", "/opt/qemu/bin/qemu"]\n'
    + 'enable_annotations = ["path", "virtio_fs_daemon", "kernel"]\n');
  assert.equal(applyAnnotations(cfg, { [A('path')]: '/opt/qemu/bin/qemu' }).hypervisor.qemu.path, '/opt/qemu/bin/qemu');
  refused(cfg, { [A('path')]: '/tmp/evil-qemu' }, '/tmp/evil-qemu', 'valid_hypervisor_paths', 'allowed: /usr/bin/qemu-system-x86_64, /opt/qemu/bin/qemu');
  refused(cfg, { [A('path')]: 'qemu' }, 'not an absolute path');
  // Empty valid list: no path at all may come from an annotation.
  refused(cfg, { [A('virtio_fs_daemon')]: '/usr/lib/qemu/virtiofsd' }, 'valid_virtio_fs_daemon_paths', 'allowed: none');
  refused(cfg, { [A('kernel')]: '/tmp/vmlinux' }, 'valid_kernel_paths', 'allowed: none');
  // Not enabled at all: refused whatever the valid list says.
  refused(annotated('valid_hypervisor_paths = ["/usr/bin/qemu-system-x86_64", "/opt/q"]\n'), { [A('path')]: '/opt/q' }, 'not allowed');
});

test('the shim maps the config to the pod VM (podVmSettings)', () => {
  const unsupportedLater: Array<[string, RegExp]> = [];
  const root = join(templateConfigPath(), '../..');
  const guest = join(root, 'build/guest');
  // The installed default (rendered from the template): the image the builder produced.
  const d = parseConfig(renderDefaultConfig(readFileSync(templateConfigPath(), 'utf8'), templateConfigPath()), DEFAULT_CONFIG, 'default');
  const s = podVmSettings(d);
  assert.equal(s.image.dir, guest);
  assert.equal(s.image.vmlinux, join(guest, 'vmlinux'));
  // q35 by default: the room to grow (the host's CPUs and memory, 10 slots).
  const room = hotplugRoom(d.hypervisor.qemu, hostCapacity());
  assert.deepEqual(room, { maxVcpus: Math.max(1, hostCapacity().cpus), maxMemoryMiB: hostCapacity().memoryMiB, memorySlots: 10 });
  // Jailed by default: the checkout's jailer, the default uids, leases beside the pod dirs; Kata's seccomp sandbox.
  const jail = { jailer: join(root, 'build/host/kata-ts-jailer'), uids: { first: 1879048192, last: 1879113727 }, leaseDir: '/run/kata-ts/.uids' };
  const seccompSandbox = 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny';
  assert.deepEqual(s.vm, { resources: { vcpus: 1, memoryMiB: 256 }, hotplug: room, machine: 'q35', accel: 'auto', kernelParams: [], readyTimeoutMs: 90_000, sharedFs: 'virtio-fs', jail, seccompSandbox });
  assert.equal(s.network, true);
  // An operator file: its paths, vCPUs, memory, accel, params, network model.
  const c = applyAnnotations(parseConfig(`[hypervisor.qemu]
kernel = "${guest}/vmlinux"
initrd = "${guest}/initrd.img"
image = "${guest}/rootfs.img"
machine_accelerators = "tcg"
kernel_params = "guest.debug"
enable_annotations = ["default_memory"]
[agent.kata]
dial_timeout = 30
[runtime]
internetworking_model = "none"
`, '/etc/kata-containers/configuration.toml', 'etc'), { [A('default_memory')]: '512' });
  const o = podVmSettings(c);
  // A file without jailer_path gets the jailer this runtime ships.
  assert.deepEqual(o.vm, { resources: { vcpus: 1, memoryMiB: 512 }, hotplug: hotplugRoom(c.hypervisor.qemu, hostCapacity()), machine: 'q35', accel: 'tcg', kernelParams: ['guest.debug'], readyTimeoutMs: 30_000, sharedFs: 'virtio-fs', jail, seccompSandbox });
  // rootless = false and seccompsandbox = "": neither.
  const bare = podVmSettings(parseConfig(`[hypervisor.qemu]\nkernel = "${guest}/vmlinux"\ninitrd = "${guest}/initrd.img"\nimage = "${guest}/rootfs.img"\nrootless = false\nseccompsandbox = ""\n`, '/e/c.toml', 'etc'));
  assert.equal(bare.vm.jail, undefined);
  assert.equal(bare.vm.seccompSandbox, undefined);
  // A jailer that is not there, or a bad uid range, refuses the pod naming the key.
  unsupportedLater.push(['jailer_path = "/nonexistent/jailer"\n', /\[hypervisor\.qemu\] jailer_path = "\/nonexistent\/jailer": no such file/]);
  unsupportedLater.push(['rootless_uids = "5-3"\n', /\[hypervisor\.qemu\] rootless_uids: must lie within/]);
  assert.equal(o.image.vmlinux, join(guest, 'vmlinux'));
  assert.equal(o.image.rootfs, join(guest, 'rootfs.img'));
  assert.equal(o.image.bareInitrd, join(guest, 'bare-initrd.img'));
  assert.equal(o.network, false);
  // What SandboxVm cannot honour yet refuses the pod, naming file and key.
  const unsupported = (extra: string, needle: RegExp, image = `${guest}/rootfs.img`): void => {
    const x = parseConfig(`[hypervisor.qemu]\nkernel = "${guest}/vmlinux"\ninitrd = "${guest}/initrd.img"\nimage = "${image}"\n${extra}`, '/e/c.toml', 'etc');
    assert.throws(() => podVmSettings(x), (err: unknown) => {
      assert.equal((err as { code: number }).code, Code.FAILED_PRECONDITION);
      assert.match((err as Error).message, needle);
      return true;
    });
  };
  for (const [extra, needle] of unsupportedLater) unsupported(extra, needle);
  unsupported('shared_fs = "none"\n', /\/e\/c\.toml: \[hypervisor\.qemu\] shared_fs = "none" is not supported yet \(supported: virtio-fs, virtio-9p\)/);
  // virtio-9p (VM templates): no virtiofsd needed, the msize reaches the agent.
  const p9 = podVmSettings(parseConfig(`[hypervisor.qemu]\nkernel = "${guest}/vmlinux"\ninitrd = "${guest}/initrd.img"\nimage = "${guest}/rootfs.img"\n`
    + 'shared_fs = "virtio-9p"\nmsize_9p = 65536\nvirtio_fs_daemon = "/opt/none"\nvalid_virtio_fs_daemon_paths = ["/opt/none"]\n', '/e/c.toml', 'etc'));
  assert.equal(p9.vm.sharedFs, 'virtio-9p');
  assert.equal(p9.vm.msize9p, 65536);
  unsupported('virtio_fs_cache = "always"\n', /virtio_fs_cache/);
  unsupported('path = "/opt/qemu"\n', /\/e\/c\.toml: \[hypervisor\.qemu\] path = "\/opt\/qemu": no such file/);
  unsupported('virtio_fs_daemon = "/opt/vfsd"\nvalid_virtio_fs_daemon_paths = ["/opt/vfsd"]\n', /virtio_fs_daemon = "\/opt\/vfsd": no such file/);
  unsupported('', /\[hypervisor\.qemu\] image = "\/nope\/rootfs\.img": no such file/, '/nope/rootfs.img');
  // The debug switches: the kernel's messages and the init's timings, the agent's --debug, the console into the log.
  const dbg = podVmSettings(parseConfig(`[hypervisor.qemu]\nkernel = "${guest}/vmlinux"\ninitrd = "${guest}/initrd.img"\nimage = "${guest}/rootfs.img"\n`
    + 'kernel_params = "x=1"\nenable_debug = true\n[agent.kata]\nenable_debug = true\n', '/e/c.toml', 'etc'));
  assert.deepEqual(dbg.vm.kernelParams, ['debug', 'guest.debug', 'x=1']);
  assert.deepEqual(dbg.vm.agentArgs, ['--debug']);
  assert.equal(dbg.consoleToLog, true);
  assert.equal(s.consoleToLog, false);
  assert.equal(s.vm.agentArgs, undefined);
  // Another QEMU that exists is used, for the VM and for the KVM probe.
  const other = parseConfig(`[hypervisor.qemu]\nkernel = "${guest}/vmlinux"\ninitrd = "${guest}/initrd.img"\nimage = "${guest}/rootfs.img"\npath = "/bin/true"\n`, '/e/c.toml', 'etc');
  assert.equal(podVmSettings(other).vm.qemuBinary, '/bin/true');
});

test('[factory] enable_template needs virtio-9p, or the key is named; microvm and q35 both clone', () => {
  const base = '[hypervisor.qemu]\nkernel = "/k"\ninitrd = "/i"\nimage = "/r"\n';
  assert.throws(() => parseConfig(`${base}[factory]\nenable_template = true\n`, '/e/c.toml', 'etc'),
    /\/e\/c\.toml: \[factory\] enable_template = true needs \[hypervisor\.qemu\] shared_fs = "virtio-9p" \(got "virtio-fs"/);
  // q35 templates: clones that grow by hot-plug.
  assert.equal(parseConfig(`${base}shared_fs = "virtio-9p"\nmachine_type = "q35"\n[factory]\nenable_template = true\n`, '/e/c.toml', 'etc').factory.enable_template, true);
  const ok = parseConfig(`${base}shared_fs = "virtio-9p"\n[factory]\nenable_template = true\ntemplate_path = "/var/tpl"\n`, '/e/c.toml', 'etc');
  assert.equal(ok.factory.enable_template, true);
  assert.equal(ok.factory.template_path, '/var/tpl');
  assert.throws(() => parseConfig(`${base}msize_9p = 100\n`, '/e/c.toml', 'etc'), /msize_9p/);
});

test('hot-plug room: default_maxvcpus / default_maxmemory / memory_slots (0: the host\'s, never below the defaults), q35 only', () => {
  const host = { cpus: 16, memoryMiB: 32_000 };
  const q = (extra: string) => parseConfig(`${MIN}${extra}`, '/e/c.toml', 'etc').hypervisor.qemu;
  // Kata's defaults: 0 means the host's CPUs and memory; 10 slots.
  assert.deepEqual(hotplugRoom(q(''), host), { maxVcpus: 16, maxMemoryMiB: 32_000, memorySlots: 10 });
  assert.deepEqual(hotplugRoom(q('default_maxvcpus = 4\ndefault_maxmemory = 4096\nmemory_slots = 6\n'), host), { maxVcpus: 4, maxMemoryMiB: 4096, memorySlots: 6 });
  // A bound below the boot size is raised to it (the VM never has less room than it boots with).
  assert.deepEqual(hotplugRoom(q('default_vcpus = 4\ndefault_memory = 2048\ndefault_maxvcpus = 2\ndefault_maxmemory = 1024\n'), host), { maxVcpus: 4, maxMemoryMiB: 2048, memorySlots: 10 });
  assert.deepEqual(hotplugRoom(q('default_vcpus = 32\ndefault_memory = 65536\n'), host), { maxVcpus: 32, maxMemoryMiB: 65_536, memorySlots: 10 });
  assert.throws(() => q('memory_slots = 0\n'), /memory_slots/);
  assert.throws(() => q('memory_slots = 257\n'), /memory_slots/);

  // podVmSettings: q35 gets the room, microvm (no hot-plug) none.
  const guest = join(templateConfigPath(), '../../build/guest');
  const files = `[hypervisor.qemu]\nkernel = "${guest}/bzImage"\ninitrd = "${guest}/initrd.img"\nimage = "${guest}/rootfs.img"\n`;
  const q35 = podVmSettings(parseConfig(`${files}machine_type = "q35"\ndefault_vcpus = 2\ndefault_memory = 512\ndefault_maxvcpus = 6\ndefault_maxmemory = 3072\nmemory_slots = 4\n`, '/e/c.toml', 'etc'));
  assert.equal(q35.vm.machine, 'q35');
  assert.deepEqual(q35.vm.resources, { vcpus: 2, memoryMiB: 512 });
  assert.deepEqual(q35.vm.hotplug, { maxVcpus: 6, maxMemoryMiB: 3072, memorySlots: 4 });
  assert.equal(q35.image.bzImage, `${guest}/bzImage`);
  // Unbounded keys: the host's CPUs and memory (read when the settings are made).
  const hostNow = hostCapacity();
  const q35Host = podVmSettings(parseConfig(`${files}machine_type = "q35"\n`, '/e/c.toml', 'etc'));
  assert.deepEqual(q35Host.vm.hotplug, { maxVcpus: Math.max(hostNow.cpus, 1), maxMemoryMiB: Math.max(hostNow.memoryMiB, 256), memorySlots: 10 });
  const micro = podVmSettings(parseConfig(`${files}machine_type = "microvm"\ndefault_maxvcpus = 6\ndefault_maxmemory = 3072\n`, '/e/c.toml', 'etc'));
  assert.equal(micro.vm.machine, 'microvm');
  assert.equal(micro.vm.hotplug, undefined);
  assert.equal('hotplug' in micro.vm, false);
});
