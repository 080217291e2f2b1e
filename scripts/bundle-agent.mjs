#!/usr/bin/env node
// Bundles the guest agent from the compiled dist/src/agent/main.js (run
// `npm run build` first): one ES module, build/agent/agent.mjs, and the same
// as CommonJS, agent.cjs, with its V8 code cache (agent.cjs.cache) and the
// loader that uses it (boot.cjs, from scripts/agent-boot.cjs: the guest's
// entry). Builds the tty-helper (src/agent/native/tty-helper.c) next to them
// with gcc when gcc is there: statically if libc.a is installed, else against
// libc only.
//
// The guest image builder copies every file of build/agent into the guest. Usage:
//   node scripts/bundle-agent.mjs [--out DIR] [--no-helper]
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { bundleNodeModule } from './esbuild-node.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({
  options: { out: { type: 'string', default: join(root, 'build/agent') }, 'no-helper': { type: 'boolean', default: false } },
});
const outDir = resolve(values.out);
const entry = join(root, 'dist/src/agent/main.js');
if (!existsSync(entry)) {
  console.error(`bundle-agent: ${entry} is missing: run npm run build first`);
  process.exit(1);
}
mkdirSync(outDir, { recursive: true });

const outfile = join(outDir, 'agent.mjs');
const kib = await bundleNodeModule({ entry, outfile });
console.log(`bundle-agent: ${outfile} (${kib} KiB)`);

// The guest's entry: the same bundle as CommonJS, run by boot.cjs with a V8
// code cache made here by this node (the binary the guest image copies) with
// the guest's node flags (scripts/build-guest.sh NODE_FLAGS).
const cjs = join(outDir, 'agent.cjs');
await bundleNodeModule({ entry, outfile: cjs, format: 'cjs' });
const boot = join(outDir, 'boot.cjs');
copyFileSync(join(root, 'scripts/agent-boot.cjs'), boot);
const made = spawnSync(process.execPath, ['--max-semi-space-size=16', boot, '--make-code-cache'], { encoding: 'utf8', timeout: 60_000 });
if (made.status !== 0) {
  process.stderr.write(made.stderr);
  console.error('bundle-agent: making the code cache failed');
  process.exit(1);
}
console.log(`bundle-agent: ${boot} + ${cjs} + code cache (${Math.round(statSync(`${cjs}.cache`).size / 1024)} KiB)`);

if (!values['no-helper']) {
  for (const [name, without] of [['tty-helper', 'terminal containers will be refused'], ['sys-helper', 'VM templates cannot reseed or set a clone\'s clock']]) {
    const src = join(root, `src/agent/native/${name}.c`);
    const bin = join(outDir, name);
    const gcc = process.env.CC || 'gcc';
    const flags = ['-O2', '-Wall', '-Wextra', '-o', bin, src];
    let r = spawnSync(gcc, ['-static', ...flags], { encoding: 'utf8' });
    if (r.error) {
      console.warn(`bundle-agent: ${gcc} not found: no ${name} (${without})`);
      continue;
    }
    if (r.status !== 0) {
      // No static libc: link against the shared libc (the guest has it for crun anyway).
      r = spawnSync(gcc, flags, { encoding: 'utf8' });
    }
    if (r.status !== 0) {
      process.stderr.write(r.stderr);
      console.error(`bundle-agent: building ${name} failed`);
      process.exit(1);
    }
    if (r.stderr.trim()) process.stderr.write(r.stderr);
    console.log(`bundle-agent: ${bin}`);
  }
}
