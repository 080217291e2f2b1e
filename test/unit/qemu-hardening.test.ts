// How hardened a configuration leaves each pod's QEMU (src/shim/qemu-hardening.ts): every weakening one line naming its key.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseConfig, shippedJailerPath, type KataConfig } from '../../src/config/index.js';
import { accountsIn, qemuHardening } from '../../src/shim/qemu-hardening.js';
import { DEFAULT_SECCOMP_SANDBOX } from '../../src/vm/jail.js';

const MIN = `
[hypervisor.qemu]
kernel = "/guest/vmlinux"
initrd = "/guest/initrd.img"
image = "/guest/rootfs.img"
`;

/** A config from MIN plus `qemu` lines in [hypervisor.qemu] and `factory` lines in [factory]. */
function config(qemu = '', factory = ''): KataConfig {
  return parseConfig(`${MIN}${qemu}\n${factory === '' ? '' : `[factory]\n${factory}\n`}`, '/x/conf.toml');
}

const FILE_CAPS = ['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_FSETID'];

test('the default configuration is the hardened one: nothing weakened, no capability', () => {
  const h = qemuHardening(config());
  assert.deepEqual(h, {
    rootless: true,
    uids: '1879048192-1879113727',
    jailer: shippedJailerPath(), // a file without jailer_path: the jailer this runtime ships
    seccompsandbox: DEFAULT_SECCOMP_SANDBOX,
    capabilities: [],
    weakened: [],
  });
});

test('jailer_path and rootless_uids are reported as configured', () => {
  const h = qemuHardening(config('jailer_path = "/usr/libexec/kata-ts/kata-ts-jailer"\nrootless_uids = "5000-5999"'));
  assert.equal(h.jailer, '/usr/libexec/kata-ts/kata-ts-jailer');
  assert.equal(h.uids, '5000-5999');
  assert.deepEqual(h.weakened, []);
});

test('rootless = false: one line naming it; QEMU keeps every capability', () => {
  const h = qemuHardening(config('rootless = false'));
  assert.equal(h.rootless, false);
  assert.equal(h.weakened.length, 1, JSON.stringify(h.weakened));
  assert.ok(h.weakened[0]!.startsWith('[hypervisor.qemu] rootless = false: '), h.weakened[0]);
  assert.match(h.weakened[0]!, /as root/);
  assert.deepEqual(h.capabilities, ['all (root)']);
});

test('seccompsandbox = "": one line naming it; the report says off', () => {
  const h = qemuHardening(config('seccompsandbox = ""'));
  assert.equal(h.seccompsandbox, 'off');
  assert.equal(h.weakened.length, 1, JSON.stringify(h.weakened));
  assert.ok(h.weakened[0]!.startsWith('[hypervisor.qemu] seccompsandbox = "": '), h.weakened[0]);
  assert.match(h.weakened[0]!, /without its seccomp filter/);
  assert.deepEqual(h.capabilities, []);
});

test('seccompsandbox without some of the default denials: one line saying which it lacks', () => {
  const h = qemuHardening(config('seccompsandbox = "on,spawn=deny"'));
  assert.equal(h.seccompsandbox, 'on,spawn=deny');
  assert.deepEqual(h.weakened, ['[hypervisor.qemu] seccompsandbox = "on,spawn=deny": lacks obsolete=deny, elevateprivileges=deny, resourcecontrol=deny']);
  // allow is not deny.
  const allow = qemuHardening(config('seccompsandbox = "on,obsolete=deny,elevateprivileges=deny,spawn=allow,resourcecontrol=deny"'));
  assert.equal(allow.weakened.length, 1);
  assert.match(allow.weakened[0]!, /: lacks spawn=deny$/);
  // Same denials in another order, plus an extra one: nothing lacking.
  const reordered = qemuHardening(config('seccompsandbox = "on,resourcecontrol=deny,spawn=deny,elevateprivileges=deny,obsolete=deny"'));
  assert.deepEqual(reordered.weakened, []);
});

test('shared_fs = "virtio-9p": one line naming it and CAP_DAC_OVERRIDE; QEMU keeps the four file capabilities', () => {
  const h = qemuHardening(config('shared_fs = "virtio-9p"'));
  assert.equal(h.weakened.length, 1, JSON.stringify(h.weakened));
  assert.ok(h.weakened[0]!.startsWith('[hypervisor.qemu] shared_fs = "virtio-9p": '), h.weakened[0]);
  assert.ok(h.weakened[0]!.includes('CAP_DAC_OVERRIDE'), h.weakened[0]);
  assert.ok(!h.weakened[0]!.includes('enable_template'), 'no template involved');
  assert.deepEqual(h.capabilities, FILE_CAPS);
});

test('enable_template = true: one 9p line saying the template needs it; the template memory is sealed, not a weakening', () => {
  const h = qemuHardening(config('shared_fs = "virtio-9p"', 'enable_template = true'));
  assert.equal(h.weakened.length, 1, JSON.stringify(h.weakened));
  const nine = h.weakened[0]!;
  assert.ok(nine.startsWith('[hypervisor.qemu] shared_fs = "virtio-9p" ([factory] enable_template needs it): '), nine);
  assert.ok(nine.includes('CAP_DAC_OVERRIDE'), nine);
  assert.ok(!h.weakened.some((l) => /memory/.test(l)), 'the clones map a sealed memfd (src/factory/memory-holder.ts)');
  assert.deepEqual(h.capabilities, FILE_CAPS);
});

test('rootless = false outweighs the rest: with templates only the rootless line, plus any seccomp line', () => {
  const h = qemuHardening(config('rootless = false\nshared_fs = "virtio-9p"\nseccompsandbox = ""', 'enable_template = true'));
  assert.equal(h.weakened.length, 2, JSON.stringify(h.weakened));
  assert.ok(h.weakened[0]!.startsWith('[hypervisor.qemu] rootless = false: '));
  assert.ok(h.weakened[1]!.startsWith('[hypervisor.qemu] seccompsandbox = "": '));
  assert.deepEqual(h.capabilities, ['all (root)']);
});

test('every weakening at once: one line per key, each naming it', () => {
  const h = qemuHardening(config('shared_fs = "virtio-9p"\nseccompsandbox = "on"', 'enable_template = true'));
  assert.deepEqual(h.weakened.map((l) => l.slice(0, l.indexOf(' = '))), ['[hypervisor.qemu] shared_fs', '[hypervisor.qemu] seccompsandbox']);
  assert.match(h.weakened[1]!, /lacks obsolete=deny, elevateprivileges=deny, spawn=deny, resourcecontrol=deny$/);
});

test('seccompsandbox: QEMU takes the last value of a feature, so a trailing allow is a weakening', () => {
  const h = qemuHardening(config(`seccompsandbox = "${DEFAULT_SECCOMP_SANDBOX},spawn=allow"`));
  assert.equal(h.weakened.length, 1, JSON.stringify(h.weakened));
  assert.match(h.weakened[0]!, /lacks spawn=deny$/);
});

test('accountsIn: users and groups of the host whose id lies in rootless_uids, named', () => {
  const dir = mkdtempSync(join(tmpdir(), 'accounts-'));
  try {
    writeFileSync(join(dir, 'passwd'), 'root:x:0:0::/root:/bin/sh\nodd:x:1879048200:100::/:/bin/false\n');
    writeFileSync(join(dir, 'group'), 'root:x:0:\nclash:x:1879048300:\n');
    assert.deepEqual(accountsIn('1879048192-1879113727', { passwd: join(dir, 'passwd'), group: join(dir, 'group') }), ['user odd (1879048200)', 'group clash (1879048300)']);
    assert.deepEqual(accountsIn('5000-6000', { passwd: join(dir, 'passwd'), group: join(dir, 'group') }), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
