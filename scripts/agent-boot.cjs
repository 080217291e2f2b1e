'use strict';
// The agent's entry in the guest (build/agent/boot.cjs): runs agent.cjs, the
// bundle as CommonJS, with the V8 code cache scripts/bundle-agent.mjs made for
// it (agent.cjs.cache: the same node binary the guest ships, the same flags),
// so the guest skips compiling the bundle, which TCG makes slow. V8 checks the
// cache (its version, the source, the flags) and compiles as usual when it
// rejects it; the rejection is written to stderr (the guest console).
//
//   node --max-semi-space-size=16 boot.cjs AGENT-ARGS...   run the agent
//   node --max-semi-space-size=16 boot.cjs --make-code-cache   write agent.cjs.cache
const { readFileSync, renameSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');
const Module = require('node:module');
const vm = require('node:vm');

const file = join(__dirname, 'agent.cjs');
const cacheFile = `${file}.cache`;
const make = process.argv[2] === '--make-code-cache';
let cachedData;
if (!make) {
  try {
    cachedData = readFileSync(cacheFile);
  } catch {
    /* no cache: compile */
  }
}
const script = new vm.Script(Module.wrap(readFileSync(file, 'utf8')), { filename: file, ...(cachedData ? { cachedData } : {}) });
if (cachedData && script.cachedDataRejected) process.stderr.write(`agent: ${cacheFile} rejected by V8: compiling\n`);
const mod = new Module(file, module);
mod.filename = file;
mod.paths = Module._nodeModulePaths(__dirname);
// Loading only (the bundle's top level, not the agent's main) when making the cache.
if (make) process.env.KATA_AGENT_CODE_CACHE_ONLY = '1';
script.runInThisContext().call(mod.exports, mod.exports, Module.createRequire(file), mod, file, __dirname);
if (make) {
  writeFileSync(`${cacheFile}.tmp`, script.createCachedData());
  renameSync(`${cacheFile}.tmp`, cacheFile);
}
