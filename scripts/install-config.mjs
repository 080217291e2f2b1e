#!/usr/bin/env node
// Installs the default configuration.toml where Kata's lookup ends
// (/usr/share/defaults/kata-containers/configuration.toml, or the path given
// as the first argument), rendered from this checkout's commented
// config/configuration.toml with the guest image's paths made absolute
// (src/config renderDefaultConfig). A file there that this project did not
// install (no marker line: a real Kata's, say) is left alone. Idempotent:
// rewrites only when the text changes, atomically (temp file + rename).
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { DEFAULT_CONFIG, DEFAULT_CONFIG_MARKER, renderDefaultConfig, templateConfigPath } from '../dist/src/config/index.js';

//
// Usage: install-config.mjs [TARGET] [--relocate FROM=TO]... [--origin TEXT]
//   --relocate  a template-relative dir placed elsewhere (scripts/install.sh:
//               ../build/guest=<version>/share/guest)
//   --origin    the header's line saying where the file came from
const args = process.argv.slice(2);
let target = DEFAULT_CONFIG;
const relocate = [];
let origin;
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--relocate' || a === '--origin') {
    const v = args[++i];
    if (v === undefined) throw new Error(`install-config: ${a} needs a value`);
    if (a === '--origin') origin = v;
    else {
      const eq = v.indexOf('=');
      if (eq < 1) throw new Error(`install-config: --relocate wants FROM=TO, got ${v}`);
      relocate.push({ from: v.slice(0, eq), to: v.slice(eq + 1) });
    }
  } else target = a;
}
const template = templateConfigPath();
const text = renderDefaultConfig(readFileSync(template, 'utf8'), template, { relocate, ...(origin !== undefined ? { origin } : {}) });
if (existsSync(target)) {
  const old = readFileSync(target, 'utf8');
  if (!old.startsWith(DEFAULT_CONFIG_MARKER)) {
    process.stderr.write(`[setup] not replacing ${target} (not installed by this project): unless it is a configuration this runtime accepts, give the shim one through /etc/kata-containers/configuration.toml, KATA_CONF_FILE or containerd's ConfigPath (check: bin/kata-ts-runtime check)\n`);
    process.exit(0);
  }
  if (old === text) process.exit(0);
}
mkdirSync(dirname(target), { recursive: true, mode: 0o755 });
const tmp = `${target}.${process.pid}.tmp`;
writeFileSync(tmp, text, { mode: 0o644 });
renameSync(tmp, target);
process.stderr.write(`[install-config] installed ${target} (from ${template})\n`);
