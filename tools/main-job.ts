/**
 * The main job, end to end: a private containerd (its own root, state and
 * sockets in a temp dir) with runtime io.containerd.kata.v2 on its PATH, a
 * locally built busybox image imported into it, and one container run in its
 * own VM through `ctr run --rm --runtime io.containerd.kata.v2`. Prints the
 * container's output, which names the guest kernel, not the host's. Removes
 * everything it started.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { busyboxImage, importImage, projectRoot } from '../test/harness/busybox.js';
import { startContainerd } from '../test/harness/containerd.js';
import { findConfig } from '../src/config/index.js';

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
    if (r.code === 0 && r.stdout.includes('hello from a container in a VM') && !r.stdout.includes(host)) code = 0;
    else process.stderr.write(`[main] FAILED\n${c.logTail(60)}\n`);
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
