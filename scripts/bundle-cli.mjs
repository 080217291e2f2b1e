#!/usr/bin/env node
// Bundles the operator CLIs, kata-ts-runtime (src/runtime-cli) and
// kata-crictl (src/cri-client), each into one ES module under build/cli/,
// from the compiled dist/ (run `npm run build` first): what scripts/install.sh
// installs, so that an installed version needs neither dist/ nor node_modules.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleNodeModule } from './esbuild-node.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
for (const [entry, name] of [['dist/src/runtime-cli/main.js', 'kata-ts-runtime'], ['dist/src/cri-client/main.js', 'kata-crictl']]) {
  const from = join(root, entry);
  if (!existsSync(from)) {
    console.error(`bundle-cli: ${from} is missing: run npm run build first`);
    process.exit(1);
  }
  const outfile = join(root, 'build/cli', `${name}.mjs`);
  const kib = await bundleNodeModule({ entry: from, outfile, minify: true });
  console.log(`bundle-cli: ${outfile} (${kib} KiB)`);
}
