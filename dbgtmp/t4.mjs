import fs from 'node:fs'; import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
const n = () => fs.readdirSync('/proc/self/fd').length;
const before = n();
for (let i = 0; i < 5; i++) {
  const c = spawn('/nonexistent', [], { stdio: ['ignore','ignore','ignore','pipe','pipe','pipe'] });
  c.on('error', (e) => console.log('error', e.code, c.pid, c.stdio.map(s => s && s.constructor.name)));
  await sleep(50);
  for (const s of c.stdio) s?.destroy();
}
await sleep(100);
console.log('fds', before, n());
