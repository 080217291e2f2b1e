#!/usr/bin/env node
// Generates static protobufjs code (ES module + .d.ts) from proto/ into
// src/proto/gen/ (not committed). Run by `npm run build`, so every clone
// regenerates it from the .proto files; `--check` only reports whether the
// files in src/proto/gen are current.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const outDir = join(root, 'src/proto/gen');
const bin = (name) => join(root, 'node_modules/.bin', name);

/** One generated module per bundle; each lists the .proto files it holds. */
export const bundles = JSON.parse(readFileSync(join(root, 'proto/bundles.json'), 'utf8'));

function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8' });
  if (r.status !== 0) {
    process.stderr.write(r.stdout + r.stderr);
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}`);
  }
}

/** protobufjs' ESM wrapper imports "protobufjs/minimal", which Node's ESM resolver cannot find. */
function fixImports(js) {
  return js.replace(/from\s+["']protobufjs\/minimal["'];/, 'from "protobufjs/minimal.js";');
}

function generate(bundle, dir) {
  const js = join(dir, `${bundle.name}.js`);
  const files = bundle.files.map((f) => join('proto', f));
  // Each bundle gets its own protobufjs root: bundles that both hold, say,
  // google.protobuf.Any must not overwrite each other's namespaces.
  run(bin('pbjs'), ['-t', 'static-module', '-w', 'esm', '--es6', '--no-verify', '-r', bundle.name,
    '-p', 'proto', '-o', js, ...files]);
  writeFileSync(js, fixImports(readFileSync(js, 'utf8')));
  run(bin('pbts'), ['--no-comments', '-o', join(dir, `${bundle.name}.d.ts`), js]);
  return [js, join(dir, `${bundle.name}.d.ts`)];
}

const check = process.argv.includes('--check');
const target = check ? mkdtempSync(join(tmpdir(), 'gen-proto-')) : outDir;
mkdirSync(target, { recursive: true });
let stale = [];
try {
  for (const bundle of bundles.filter((b) => b.files.length > 0)) {
    for (const file of generate(bundle, target)) {
      if (!check) continue;
      const committed = join(outDir, file.slice(target.length + 1));
      if (!existsSync(committed) || readFileSync(committed, 'utf8') !== readFileSync(file, 'utf8')) stale.push(committed);
    }
  }
} finally {
  if (check) rmSync(target, { recursive: true, force: true });
}
if (stale.length) {
  console.error(`generated code is stale, run npm run gen:\n  ${stale.join('\n  ')}`);
  process.exit(1);
}
