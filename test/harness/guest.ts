/** The project's guest image for VM tests, built first when it is missing. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderDefaultConfig } from '../../src/config/index.js';
import { loadGuestImage, type GuestImage } from '../../src/sandbox/index.js';
import { projectRoot } from './busybox.js';

export const GUEST_DIR = join(projectRoot(), 'build', 'guest');

/** Kernel release of the guest image (build/guest/manifest.json, or $KATA_TS_GUEST_DIR's). */
export function guestKernelRelease(): string {
  const dir = process.env.KATA_TS_GUEST_DIR || GUEST_DIR;
  return (JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as { kernel: { release: string } }).kernel.release;
}

/**
 * The project's default configuration.toml with its guest paths made
 * absolute (for a file of a test's own). With `templateDir` and
 * KATA_TS_TEST_TEMPLATES=1, VM templates are on, under that dir.
 */
export function defaultConfigText(templateDir?: string): string {
  const template = join(projectRoot(), 'config', 'configuration.toml');
  const text = renderDefaultConfig(readFileSync(template, 'utf8'), template);
  return templateDir !== undefined && templatesOn() ? templateConfigEdit(templateDir)(text) : text;
}

export function guestImage(): GuestImage {
  const need = ['vmlinux', 'initrd.img', 'rootfs.img', 'bare-initrd.img', 'cmdline', 'manifest.json'];
  if (need.some((f) => !existsSync(join(GUEST_DIR, f)))) {
    const root = projectRoot();
    for (const [cmd, args] of [
      [process.execPath, [join(root, 'scripts/bundle-agent.mjs')]],
      ['bash', [join(root, 'scripts/build-guest.sh')]],
    ] as const) {
      const r = spawnSync(cmd, [...args], { cwd: root, encoding: 'utf8', timeout: 600_000, killSignal: 'SIGKILL' });
      assert.equal(r.status, 0, `${args[0]} failed (${r.status ?? r.signal}): ${r.stdout}${r.stderr}`);
    }
  }
  return loadGuestImage(GUEST_DIR);
}

/**
 * True when this test process runs the e2e suites with VM templates on
 * (KATA_TS_TEST_TEMPLATES=1, set by the *-templates.test.ts wrappers): every
 * hermetic containerd's configuration then has templateConfigEdit applied.
 */
export function templatesOn(): boolean {
  return process.env.KATA_TS_TEST_TEMPLATES === '1';
}

/** A configuration text with VM templates on: virtio-9p, enable_template, template_path = `dir`. */
export function templateConfigEdit(dir: string): (text: string) => string {
  return (text) => {
    const out = text
      .replace(/^shared_fs = "virtio-fs"$/m, 'shared_fs = "virtio-9p"')
      .replace(/^enable_template = false$/m, 'enable_template = true')
      .replace(/^template_path = ".*"$/m, `template_path = "${dir}"`);
    assert.match(out, /^enable_template = true$/m, 'template config edit');
    return out;
  };
}
