/**
 * The main job, end to end: a private containerd (its own root, state and
 * sockets in a temp dir) with runtime io.containerd.kata.v2 on its PATH, a
 * locally built busybox image imported into it, and one container run in its
 * own VM through `ctr run --rm --runtime io.containerd.kata.v2`. Prints the
 * container's output, which names the guest kernel, not the host's. Then
 * the same pod from a VM template (docs/templates.md): the installed
 * configuration with `[factory] enable_template` on (virtio-9p, a
 * template_path under the temp dir), through `ctr run --runtime-config-path`:
 * a first run makes the template, the next ones are clones. Prints the
 * times side by side. Removes everything it started.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { busyboxImage, importImage, projectRoot } from '../test/harness/busybox.js';
import { startContainerd } from '../test/harness/containerd.js';
import { findConfig } from '../src/config/index.js';
import { destroyTemplates } from '../src/factory/index.js';
import { templateConfigEdit } from '../test/harness/guest.js';

async function main(): Promise<void> {
  const t0 = Date.now();
  const c = await startContainerd({
    runtimes: { kata: { runtimeType: 'io.containerd.kata.v2' } },
    extraPath: [join(projectRoot(), 'bin')],
    // The shim finds its configuration.toml as on any host (the default setup installed).
    kataConfig: 'system',
  });
  let code = 1;
  try {
    process.stderr.write(`[main] private containerd at ${c.address} (state in ${c.dir})\n`);
    const cfg = findConfig();
    process.stderr.write(`[main] the shim's configuration: ${cfg.file} (${cfg.source})\n`);
    await importImage(c, busyboxImage());
    process.stderr.write(`[main] ctr run --rm --runtime io.containerd.kata.v2 ${busyboxImage().name} hello …\n`);
    const t1 = Date.now();
    const r = await c.ctr(['run', '--rm', '--runtime', 'io.containerd.kata.v2', busyboxImage().name, 'hello',
      'sh', '-c', 'echo "hello from a container in a VM"; echo "guest kernel: $(uname -r)"; cat /proc/version'], { timeoutMs: 180_000 });
    process.stdout.write(r.stdout);
    if (r.stderr.trim()) process.stderr.write(r.stderr);
    const host = readFileSync('/proc/version', 'utf8').trim();
    process.stderr.write(`[main] host kernel:  ${host}\n`);
    process.stderr.write(`[main] ctr run exited ${r.code} after ${((Date.now() - t1) / 1000).toFixed(1)} s (VM boot included; TCG here)\n`);
    const coldS = (Date.now() - t1) / 1000;
    if (r.code === 0 && r.stdout.includes('hello from a container in a VM') && !r.stdout.includes(host)) code = 0;
    else process.stderr.write(`[main] FAILED\n${c.logTail(60)}\n`);

    // The same pod from a VM template: the installed configuration with templates on.
    const templates = join(c.dir, 'templates');
    const tplConfig = join(c.dir, 'configuration-templates.toml');
    writeFileSync(tplConfig, templateConfigEdit(templates)(readFileSync(cfg.file, 'utf8')));
    process.stderr.write(`[main] with VM templates: ctr run --runtime-config-path ${tplConfig} (template_path ${templates})\n`);
    const times: string[] = [];
    for (const [i, what] of ['first use: makes the template, then clones it', 'a clone', 'a clone'].entries()) {
      const t = Date.now();
      const rt = await c.ctr(['run', '--rm', '--runtime', 'io.containerd.kata.v2', '--runtime-config-path', tplConfig, busyboxImage().name, `hello-tpl-${i}`,
        'sh', '-c', 'echo "hello from a container in a cloned VM"; uname -r'], { timeoutMs: 180_000 });
      const s = (Date.now() - t) / 1000;
      if (i === 0) process.stdout.write(rt.stdout);
      times.push(`${s.toFixed(1)} s (${what})`);
      if (rt.code !== 0 || !rt.stdout.includes('hello from a container in a cloned VM')) {
        code = 1;
        process.stderr.write(`[main] FAILED (template run ${i}): ${rt.stderr}\n${c.logTail(60)}\n`);
      }
    }
    const cloned = c.logTail(400).split('\n').filter((l) => l.includes('pod VM cloned from a template')).length;
    process.stderr.write(`[main] ctr run: cold ${coldS.toFixed(1)} s; from a template: ${times.join(', ')}; ${cloned} of 3 pods were clones\n`);
    if (cloned < 2) {
      code = 1;
      process.stderr.write('[main] FAILED: the template runs were not clones\n');
    }
    await destroyTemplates(templates);
  } finally {
    await c.stop();
    process.stderr.write(`[main] cleaned up; ${((Date.now() - t0) / 1000).toFixed(1)} s in all\n`);
  }
  process.exitCode = code;
}

main().catch((err: unknown) => {
  process.stderr.write(`[main] ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
