// One ES module (or, with format 'cjs', one CommonJS file) for Node 20 from a
// compiled entry point: how the agent (scripts/bundle-agent.mjs) and the shim
// (scripts/bundle-shim.mjs) are bundled.
import { mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';

/** Bundles `entry` into `outfile`; returns its size in KiB. */
export async function bundleNodeModule({ entry, outfile, minify = false, format = 'esm' }) {
  mkdirSync(dirname(outfile), { recursive: true });
  const { build } = await import('esbuild');
  await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    format,
    target: 'node20',
    minify,
    sourcemap: false,
    legalComments: 'none',
    logLevel: 'warning',
    ...(format === 'esm'
      ? {
          // CommonJS dependencies (pino, protobufjs) call require() for Node
          // built-ins: give the ES module a real require.
          banner: {
            js: "import { createRequire as __bundleCreateRequire } from 'node:module'; const require = __bundleCreateRequire(import.meta.url);",
          },
        }
      : {
          // CommonJS (for a V8 code cache through vm.Script): import.meta.url is the file's own URL.
          banner: { js: "const __bundleImportMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
          define: { 'import.meta.url': '__bundleImportMetaUrl' },
        }),
  });
  return Math.round(statSync(outfile).size / 1024);
}
