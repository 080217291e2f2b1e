#!/usr/bin/env node
// Bundles the guest agent into one ES module, build/agent/agent.mjs, from the
// compiled dist/src/agent/main.js (run `npm run build` first), and builds the
// tty-helper (src/agent/native/tty-helper.c) next to it with gcc when gcc is
// there: statically if libc.a is installed, else against libc only.
//
// The guest image builder copies build/agent/agent.mjs and
// build/agent/tty-helper into the guest. Usage:
//   node scripts/bundle-agent.mjs [--out DIR] [--no-helper]
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
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

if (!values['no-helper']) {
  const src = join(root, 'src/agent/native/tty-helper.c');
  const bin = join(outDir, 'tty-helper');
  const gcc = process.env.CC || 'gcc';
  const flags = ['-O2', '-Wall', '-Wextra', '-o', bin, src];
  let r = spawnSync(gcc, ['-static', ...flags], { encoding: 'utf8' });
  if (r.error) {
    console.warn(`bundle-agent: ${gcc} not found: no tty-helper (terminal containers will be refused)`);
  } else {
    if (r.status !== 0) {
      // No static libc: link against the shared libc (the guest has it for crun anyway).
      r = spawnSync(gcc, flags, { encoding: 'utf8' });
    }
    if (r.status !== 0) {
      process.stderr.write(r.stderr);
      console.error('bundle-agent: building tty-helper failed');
      process.exit(1);
    }
    if (r.stderr.trim()) process.stderr.write(r.stderr);
    console.log(`bundle-agent: ${bin}`);
  }
}
