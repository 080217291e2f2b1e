/** followFile: lines as the file grows, a partial line held until its newline (or stop), long lines cut, nothing after stop. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { followFile } from '../../src/vm/index.js';

async function until(cond: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 5_000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

test('followFile delivers each line once, in order, as the file grows', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'follow-'));
  try {
    const f = join(dir, 'console.log');
    const lines: string[] = [];
    // Started before the file exists (QEMU creates it).
    const fol = followFile(f, (l) => lines.push(l), { intervalMs: 10, maxLineBytes: 32 });
    t.after(() => fol.stop());
    await sleep(30);
    writeFileSync(f, 'Linux version 6.1\r\nsecond');
    await until(() => lines.length === 1, 'the first line');
    assert.deepEqual(lines, ['Linux version 6.1'], 'CR stripped; the partial line held back');
    appendFileSync(f, ' half\n' + 'x'.repeat(40) + '\n\nlast-no-newline');
    await until(() => lines.length >= 5, 'the rest');
    assert.deepEqual(lines.slice(1), ['second half', 'x'.repeat(32), 'x'.repeat(8), '']);
    await fol.stop();
    assert.equal(lines.at(-1), 'last-no-newline', 'stop delivers the partial line');
    const n = lines.length;
    appendFileSync(f, 'after stop\n');
    await sleep(50);
    assert.equal(lines.length, n, 'nothing after stop');
    await fol.stop();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a throwing callback does not stop the follower', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'follow-'));
  try {
    const f = join(dir, 'c.log');
    writeFileSync(f, 'a\nb\n');
    const seen: string[] = [];
    const fol = followFile(f, (l) => { seen.push(l); throw new Error('boom'); }, { intervalMs: 10 });
    t.after(() => fol.stop());
    await until(() => seen.length === 2, 'both lines');
    await fol.stop();
    assert.deepEqual(seen, ['a', 'b']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
