#!/usr/bin/env node
// tsc does not emit the generated protobufjs modules (they are plain .js with a
// .d.ts beside them); copy them next to the compiled code that imports them.
import { cpSync, mkdirSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const from = join(root, 'src/proto/gen');
const to = join(root, 'dist/src/proto/gen');
mkdirSync(to, { recursive: true });
for (const f of readdirSync(from)) if (f.endsWith('.js')) cpSync(join(from, f), join(to, f));
