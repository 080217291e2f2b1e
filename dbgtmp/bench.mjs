import { ProcessIo } from '../dist/src/io/index.js';
import { silentLogger } from '../dist/src/log/index.js';
import fs from 'node:fs'; import { execFileSync, spawn } from 'node:child_process';
const dir = fs.mkdtempSync('/tmp/dbg/b-'); const out = dir + '/out'; execFileSync('mkfifo', [out]);
const cat = spawn('sh', ['-c', `cat ${out} | wc -c`], { stdio: ['ignore', 'inherit', 'inherit'] });
const io = await ProcessIo.open({ stdin: '', stdout: out, stderr: '', terminal: false }, { containerId: 'c', namespace: 'n', logger: silentLogger(), readChunk: Number(process.argv[2] ?? 65536) });
const total = 256 * 1024 * 1024; let sent = 0; const chunk = Buffer.alloc(1 << 20, 97);
const t0 = performance.now();
io.start({
  readStdout: async (max) => { if (sent >= total) return { data: Buffer.alloc(0), eof: true }; const n = Math.min(max, total - sent); sent += n; return { data: chunk.subarray(0, n), eof: false }; },
  readStderr: async () => ({ data: Buffer.alloc(0), eof: true }), writeStdin: async () => 0, closeStdin: async () => {} });
await io.drained;
await new Promise(r => cat.on('exit', r));
const s = (performance.now() - t0) / 1000;
console.log(`${(total / 1e6 / s).toFixed(0)} MB/s`);
await io.close();
