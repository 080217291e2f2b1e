// The VM template store (src/factory/template-store.ts) on fake templates in
// temp dirs: commitTemplate + readTemplate, every refusal of readTemplate
// (FAILED_PRECONDITION naming the cause, NOT_FOUND when there is none), the
// cross-process build lock (waiting, stale owner taken over, timeout naming
// the owner), listTemplates (ready / invalid / building / last failure) and
// destroyTemplates (only the store's names; root only when empty); a template
// whose RAM a holder keeps in a sealed memfd (the real kata-ts-jailer).
import assert from 'node:assert/strict';
import { closeSync, existsSync, fstatSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { expectCode } from '../harness/status.js';
import { Code } from '../../src/errors/index.js';
import { templateIdentity, templateKey, type TemplateIdentity, type TemplateSpec } from '../../src/factory/template-key.js';
import {
  acquireBuildLock, buildingDir, commitTemplate, destroyTemplates, failureFile, listTemplates, lockDir, readTemplate, recordFailure,
  templateDir, TEMPLATE_FILES, type TemplateMeta,
} from '../../src/factory/template-store.js';
import { identify } from '../../src/vm/proc.js';
import { holdMemory } from '../../src/factory/memory-holder.js';
import { shippedJailerPath } from '../../src/config/index.js';

const MiB = 1024 * 1024;
const MEMORY_MIB = 64;

const top = mkdtempSync(join(tmpdir(), 'tpl-store-'));
after(() => rmSync(top, { recursive: true, force: true }));

// The files a template is made from (their identity is in the key).
const images = join(top, 'images');
mkdirSync(images);
for (const f of ['qemu', 'vmlinux', 'rootfs.img']) writeFileSync(join(images, f), f);

function spec(over: Partial<TemplateSpec> = {}): TemplateSpec {
  return {
    qemuBinary: join(images, 'qemu'), kernel: join(images, 'vmlinux'), rootfs: join(images, 'rootfs.img'),
    machine: 'microvm', accel: 'tcg', vcpus: 1, memoryMiB: MEMORY_MIB, kernelParams: ['quiet'], nic: false, sharedFsTag: 'kataShared',
    ...over,
  };
}

let seq = 0;
/** A fresh, empty root per test. */
function newRoot(): string {
  return join(top, `root-${++seq}`);
}

const STATE_BYTES = Buffer.from('QEVM\x00\x00\x00\x03 device state of a template\n', 'binary');

/** What the factory's build leaves: <key>.building/{memory (sparse, full size), state}. */
async function build(root: string, over: Partial<TemplateSpec> = {}): Promise<{ key: string; identity: TemplateIdentity }> {
  const identity = await templateIdentity(spec(over));
  const key = templateKey(identity);
  const b = buildingDir(root, key);
  mkdirSync(b, { recursive: true });
  writeFileSync(join(b, TEMPLATE_FILES.memory), '');
  truncateSync(join(b, TEMPLATE_FILES.memory), identity.spec.memoryMiB * MiB);
  writeFileSync(join(b, TEMPLATE_FILES.state), STATE_BYTES);
  return { key, identity };
}

const metaOf = (key: string, identity: TemplateIdentity) =>
  ({ version: 1 as const, key, identity, qemuVersion: '7.2.11', createdAt: new Date().toISOString(), bootMs: 1234, saveMs: 56 });

async function ready(root: string, over: Partial<TemplateSpec> = {}): Promise<{ key: string; identity: TemplateIdentity; dir: string }> {
  const { key, identity } = await build(root, over);
  await commitTemplate(root, key, metaOf(key, identity));
  return { key, identity, dir: templateDir(root, key) };
}

const rejectsWith = expectCode;

/** Old kernels stamp files with a coarse (jiffy) clock: let it tick before a rewrite. */
const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 25));

// -----------------------------------------------------------------------------
// commit and read

test('commitTemplate: the building dir becomes <key> with a meta.json describing its files; readTemplate accepts it', async () => {
  const root = newRoot();
  const { key, identity } = await build(root);
  await recordFailure(root, key, 'an earlier attempt failed');
  assert.ok(existsSync(failureFile(root, key)));
  const t = await commitTemplate(root, key, metaOf(key, identity));
  const dir = templateDir(root, key);
  assert.equal(existsSync(buildingDir(root, key)), false, 'the building dir is gone (renamed)');
  assert.equal(existsSync(failureFile(root, key)), false, 'the failure record is cleared by a commit');
  assert.deepEqual(readdirSync(dir).sort(), ['memory', 'meta.json', 'state']);
  assert.deepEqual({ key: t.key, dir: t.dir, memoryFile: t.memoryFile, stateFile: t.stateFile },
    { key, dir, memoryFile: join(dir, 'memory'), stateFile: join(dir, 'state') });
  const onDisk = JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8')) as TemplateMeta;
  assert.equal(onDisk.key, key);
  assert.deepEqual(onDisk.identity, identity);
  assert.equal(onDisk.stateBytes, STATE_BYTES.length);
  assert.match(onDisk.stateSha256, /^[0-9a-f]{64}$/);
  assert.equal(onDisk.memory.path, join(dir, 'memory'), 'the memory file is recorded at its final path');
  assert.equal(onDisk.memory.size, String(MEMORY_MIB * MiB));
  // Read again, with and without the identity asked for.
  assert.deepEqual((await readTemplate(root, key, identity)).meta, onDisk);
  assert.deepEqual((await readTemplate(root, key)).meta, onDisk);
  // An identity built again from the same spec (another object) is the same identity.
  assert.equal((await readTemplate(root, key, await templateIdentity(spec()))).key, key);
});

test('commitTemplate: an empty state (a full disk) is refused and nothing is committed', async () => {
  const root = newRoot();
  const { key, identity } = await build(root);
  writeFileSync(join(buildingDir(root, key), TEMPLATE_FILES.state), '');
  await rejectsWith(commitTemplate(root, key, metaOf(key, identity)), Code.FAILED_PRECONDITION, /saved state is empty/);
  assert.equal(existsSync(templateDir(root, key)), false);
});

test('commitTemplate replaces an older template of the same key', async () => {
  const root = newRoot();
  const first = await ready(root);
  writeFileSync(join(first.dir, 'leftover'), 'x');
  await build(root);
  const t = await commitTemplate(root, first.key, metaOf(first.key, first.identity));
  assert.deepEqual(readdirSync(t.dir).sort(), ['memory', 'meta.json', 'state']);
});

test('readTemplate: no template dir at all is NOT_FOUND', async () => {
  const root = newRoot();
  await rejectsWith(readTemplate(root, '0123456789abcdef01234567'), Code.NOT_FOUND, /no template 0123456789abcdef01234567 under /);
  mkdirSync(root);
  await rejectsWith(readTemplate(root, '0123456789abcdef01234567'), Code.NOT_FOUND, /no template/);
  // Only a build in progress: still none.
  const { key } = await build(root);
  await rejectsWith(readTemplate(root, key), Code.NOT_FOUND, new RegExp(`no template ${key}`));
});

interface Refusal {
  name: string;
  /** Damages the committed template in `dir`. */
  damage: (dir: string, key: string) => void | Promise<void>;
  /** The identity passed to readTemplate (default: the template's own). */
  identity?: (own: TemplateIdentity) => Promise<TemplateIdentity> | TemplateIdentity;
  match: RegExp;
}

const META = (dir: string) => join(dir, TEMPLATE_FILES.meta);
const editMeta = (dir: string, edit: (m: TemplateMeta) => void) => {
  const m = JSON.parse(readFileSync(META(dir), 'utf8')) as TemplateMeta;
  edit(m);
  writeFileSync(META(dir), JSON.stringify(m));
};

const REFUSALS: Refusal[] = [
  { name: 'meta.json missing', damage: (dir) => rmSync(META(dir)), match: /meta\.json is missing/ },
  { name: 'meta.json not JSON', damage: (dir) => writeFileSync(META(dir), '{"version": 1, "key": '), match: /meta\.json is not JSON/ },
  { name: 'meta.json of another version', damage: (dir) => editMeta(dir, (m) => { (m as { version: number }).version = 2; }), match: /meta\.json: version 2, want 1/ },
  {
    name: 'meta made for another key (foreign)',
    damage: (dir) => editMeta(dir, (m) => { m.key = 'ffffffffffffffffffffffff'; }),
    match: /made for key "ffffffffffffffffffffffff", not [0-9a-f]{24} \(a foreign template\)/,
  },
  {
    name: 'identity asked for differs (other settings)',
    damage: () => {},
    identity: (own) => ({ ...own, spec: { ...own.spec, vcpus: 2 } }),
    match: /made from other files or settings \(a foreign template\)/,
  },
  {
    name: 'identity asked for differs (the kernel rewritten since)',
    damage: async () => {
      await tick();
      writeFileSync(join(images, 'vmlinux'), 'vmlinux');
    },
    identity: () => templateIdentity(spec()),
    match: /made from other files or settings/,
  },
  { name: 'memory missing', damage: (dir) => rmSync(join(dir, 'memory')), match: /memory is missing/ },
  {
    name: 'memory truncated',
    damage: (dir) => truncateSync(join(dir, 'memory'), MEMORY_MIB * MiB - 4096),
    match: new RegExp(`memory has ${MEMORY_MIB * MiB - 4096} bytes, want ${MEMORY_MIB * MiB} \\(truncated\\?\\)`),
  },
  {
    name: 'memory replaced (removed, made again with the same size)',
    damage: async (dir) => {
      await tick();
      rmSync(join(dir, 'memory'));
      writeFileSync(join(dir, 'memory'), '');
      truncateSync(join(dir, 'memory'), MEMORY_MIB * MiB);
    },
    match: /memory was changed or replaced after the template was made/,
  },
  {
    name: 'memory written in place (same size)',
    damage: async (dir) => {
      await tick();
      writeFileSync(join(dir, 'memory'), 'guest pages', { flag: 'r+' });
    },
    match: /memory was changed or replaced/,
  },
  { name: 'state missing', damage: (dir) => rmSync(join(dir, 'state')), match: /state is missing/ },
  {
    name: 'state truncated',
    damage: (dir) => truncateSync(join(dir, 'state'), 10),
    match: new RegExp(`state has 10 bytes, want ${STATE_BYTES.length} \\(truncated\\?\\)`),
  },
  {
    name: 'state with other bytes of the same size',
    damage: (dir) => {
      const b = Buffer.from(STATE_BYTES);
      b[b.length - 2] ^= 0xff;
      writeFileSync(join(dir, 'state'), b);
    },
    match: /state does not match its recorded SHA-256/,
  },
];

for (const r of REFUSALS) {
  test(`readTemplate refuses: ${r.name}`, async () => {
    const root = newRoot();
    const { key, identity, dir } = await ready(root);
    // Intact first: the refusal is the damage's doing.
    await readTemplate(root, key, identity);
    await r.damage(dir, key);
    const asked = r.identity ? await r.identity(identity) : identity;
    const err = await rejectsWith(readTemplate(root, key, asked), Code.FAILED_PRECONDITION, r.match);
    assert.ok(err.message.startsWith(`template ${dir}: `), `names the template dir: ${err.message}`);
  });
}

test('readTemplate: a template made for other settings is not checked against them when no identity is asked for', async () => {
  const root = newRoot();
  const { key, identity } = await ready(root);
  const other = { ...identity, spec: { ...identity.spec, memoryMiB: 128 } };
  await rejectsWith(readTemplate(root, key, other), Code.FAILED_PRECONDITION, /foreign/);
  assert.equal((await readTemplate(root, key)).key, key);
});

// -----------------------------------------------------------------------------
// the build lock

test('acquireBuildLock: a second acquirer waits until the first releases', async () => {
  const root = newRoot();
  const key = 'aaaaaaaaaaaaaaaaaaaaaaaa';
  const events: string[] = [];
  const release1 = await acquireBuildLock(root, key, { timeoutMs: 10_000 });
  events.push('1 acquired');
  const owner = JSON.parse(readFileSync(join(lockDir(root, key), 'owner'), 'utf8'));
  assert.deepEqual(owner, identify(process.pid), 'the lock names its owner process');
  const second = acquireBuildLock(root, key, { timeoutMs: 10_000 }).then((rel) => {
    events.push('2 acquired');
    return rel;
  });
  // Let the second one try (and find the lock held) a few times.
  await new Promise((r) => setTimeout(r, 350));
  events.push('1 releasing');
  await release1();
  const release2 = await second;
  assert.deepEqual(events, ['1 acquired', '1 releasing', '2 acquired']);
  assert.ok(existsSync(lockDir(root, key)), 'held by the second');
  await release2();
  assert.equal(existsSync(lockDir(root, key)), false, 'released');
});

test('acquireBuildLock: a lock whose owner is dead (or a recycled pid) is taken over', async () => {
  const root = newRoot();
  const key = 'bbbbbbbbbbbbbbbbbbbbbbbb';
  const me = identify(process.pid)!;
  for (const dead of [{ pid: 999_999, startTime: 1 }, { pid: process.pid, startTime: me.startTime + 1 }]) {
    mkdirSync(lockDir(root, key), { recursive: true });
    writeFileSync(join(lockDir(root, key), 'owner'), JSON.stringify(dead));
    const t0 = Date.now();
    const release = await acquireBuildLock(root, key, { timeoutMs: 5_000 });
    assert.ok(Date.now() - t0 < 5_000);
    assert.deepEqual(JSON.parse(readFileSync(join(lockDir(root, key), 'owner'), 'utf8')), me, `${JSON.stringify(dead)}: now ours`);
    await release();
  }
});

test('acquireBuildLock: a live owner past the timeout is FAILED_PRECONDITION naming its pid; the lock stays its', async () => {
  const root = newRoot();
  const key = 'cccccccccccccccccccccccc';
  const live = identify(process.pid)!;
  mkdirSync(lockDir(root, key), { recursive: true });
  writeFileSync(join(lockDir(root, key), 'owner'), JSON.stringify(live));
  await rejectsWith(acquireBuildLock(root, key, { timeoutMs: 250 }), Code.FAILED_PRECONDITION,
    new RegExp(`template ${key}: another process \\(pid ${process.pid}\\) has been building it for over 250 ms`));
  assert.deepEqual(JSON.parse(readFileSync(join(lockDir(root, key), 'owner'), 'utf8')), live, 'not taken over');
});

test('acquireBuildLock: an abort while waiting ends the wait', async () => {
  const root = newRoot();
  const key = 'dddddddddddddddddddddddd';
  const release = await acquireBuildLock(root, key, { timeoutMs: 10_000 });
  try {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 150);
    const t0 = Date.now();
    await assert.rejects(acquireBuildLock(root, key, { timeoutMs: 10_000, signal: ac.signal }));
    assert.ok(Date.now() - t0 < 5_000, 'did not wait for the timeout');
  } finally {
    await release();
  }
});

// -----------------------------------------------------------------------------
// status and destroy

test('listTemplates: ready, invalid with the reason, building, and the last failure recorded', async () => {
  const root = newRoot();
  assert.deepEqual(await listTemplates(root), [], 'no root: nothing');
  const good = await ready(root, { vcpus: 1 });
  const bad = await ready(root, { vcpus: 2 });
  truncateSync(join(bad.dir, 'state'), 3);
  const building = await build(root, { vcpus: 3 });
  const locked = 'eeeeeeeeeeeeeeeeeeeeeeee';
  mkdirSync(lockDir(root, locked));
  const failed = 'ffffffffffffffffffffffff';
  await recordFailure(root, failed, 'making template: QEMU exited with status 1');
  await recordFailure(root, bad.key, 'state has 3 bytes');
  writeFileSync(join(root, 'notes.txt'), 'not a template');
  mkdirSync(join(root, 'not-a-key'));

  const list = await listTemplates(root);
  const byKey = new Map(list.map((s) => [s.key, s]));
  assert.deepEqual([...byKey.keys()], [good.key, bad.key, building.key, locked, failed].sort(), 'one row per key, sorted; other names ignored');

  const g = byKey.get(good.key)!;
  assert.equal(g.state, 'ready');
  assert.equal(g.dir, good.dir);
  assert.equal(g.meta?.key, good.key);
  assert.equal(g.meta?.identity.spec.vcpus, 1);
  assert.equal(typeof g.memoryDiskBytes, 'number');
  assert.ok(g.memoryDiskBytes! < MEMORY_MIB * MiB, 'a sparse memory file uses less than its size');
  assert.equal(g.lastFailure, undefined);
  assert.equal(g.reason, undefined);

  const b = byKey.get(bad.key)!;
  assert.equal(b.state, 'invalid');
  assert.match(b.reason ?? '', /state has 3 bytes, want \d+ \(truncated\?\)/);
  assert.equal(b.lastFailure?.reason, 'state has 3 bytes');
  assert.ok(!Number.isNaN(Date.parse(b.lastFailure!.at)));

  assert.equal(byKey.get(building.key)?.state, 'building');
  assert.equal(byKey.get(locked)?.state, 'building');
  const f = byKey.get(failed)!;
  assert.deepEqual({ state: f.state, reason: f.reason, lastFailure: f.lastFailure?.reason },
    { state: 'invalid', reason: 'never made', lastFailure: 'making template: QEMU exited with status 1' });
});

test('recordFailure: makes the root, keeps only the last reason', async () => {
  const root = newRoot();
  const key = '0123456789abcdef01234567';
  await recordFailure(root, key, 'first');
  await recordFailure(root, key, 'second');
  const rec = JSON.parse(readFileSync(failureFile(root, key), 'utf8'));
  assert.equal(rec.reason, 'second');
  assert.deepEqual((await listTemplates(root)).map((s) => [s.key, s.lastFailure?.reason]), [[key, 'second']]);
});

test('destroyTemplates: removes the store\'s names only; the root only when it is empty after', async () => {
  const root = newRoot();
  const a = await ready(root, { vcpus: 1 });
  const b = await build(root, { vcpus: 2 });
  mkdirSync(lockDir(root, b.key));
  await recordFailure(root, a.key, 'x');
  writeFileSync(join(root, 'keep.txt'), 'mine');
  mkdirSync(join(root, '0123456789abcdef0123456789')); // 26 hex digits: not a key
  const removed = await destroyTemplates(root);
  assert.deepEqual(removed.sort(), [
    templateDir(root, a.key), failureFile(root, a.key), buildingDir(root, b.key), lockDir(root, b.key),
  ].sort());
  assert.deepEqual(readdirSync(root).sort(), ['0123456789abcdef0123456789', 'keep.txt']);
  assert.equal(readFileSync(join(root, 'keep.txt'), 'utf8'), 'mine');
  // Only the store's names left: the root is emptied and removed.
  rmSync(join(root, 'keep.txt'));
  rmSync(join(root, '0123456789abcdef0123456789'), { recursive: true });
  await ready(root);
  assert.equal((await destroyTemplates(root)).length, 1);
  assert.equal(existsSync(root), false, 'the empty root is removed');
  assert.deepEqual(await destroyTemplates(root), [], 'no root: nothing to do');
});

// -----------------------------------------------------------------------------
// Once gaps (found by these tests, fixed in template-store.ts).

test('readTemplate: the same identity with its spec keys in another order is not foreign (the key ignores the order)', async () => {
  const root = newRoot();
  const { key, identity } = await ready(root);
  const reordered: TemplateIdentity = { files: identity.files, spec: Object.fromEntries(Object.entries(identity.spec).reverse()) as unknown as TemplateSpec };
  assert.equal(templateKey(reordered), key, 'same key');
  assert.equal((await readTemplate(root, key, reordered)).key, key);
});

test('readTemplate: a meta.json without identity or memory record is FAILED_PRECONDITION, not a TypeError', async () => {
  for (const drop of ['identity', 'memory'] as const) {
    const root = newRoot();
    const { key, dir } = await ready(root);
    editMeta(dir, (m) => { delete (m as Partial<TemplateMeta>)[drop]; });
    await rejectsWith(readTemplate(root, key), Code.FAILED_PRECONDITION, /meta\.json/);
  }
});

// -----------------------------------------------------------------------------
// a template whose RAM is held in a sealed memfd (src/factory/memory-holder.ts),
// with the real kata-ts-jailer --hold-memory (scripts/setup.sh builds it)

test('a held template: the RAM is a sealed memfd at /proc/<holder>/fd/3; a dead holder reads as absent; destroy ends the holder', { skip: process.getuid?.() !== 0 ? 'needs root (the holder is started as the shim starts it)' : false }, async () => {
  const jailer = shippedJailerPath();
  assert.ok(existsSync(jailer), `${jailer}: built by scripts/setup.sh`);
  const root = newRoot();
  const { key, identity } = await build(root);
  const b = buildingDir(root, key);
  // Some data in the sparse file, so that the copy is checked (holes stay holes).
  const fd = openSync(join(b, TEMPLATE_FILES.memory), 'r+');
  writeSync(fd, 'template RAM', 5 * MiB);
  closeSync(fd);
  const holder = await holdMemory(jailer, join(b, TEMPLATE_FILES.memory));
  try {
    rmSync(join(b, TEMPLATE_FILES.memory));
    const t = await commitTemplate(root, key, { ...metaOf(key, identity), memoryHolder: holder });
    assert.equal(t.memoryFile, `/proc/${holder.pid}/fd/3`);
    assert.deepEqual(readdirSync(t.dir).sort(), ['meta.json', 'state'], 'no memory file left to pay for twice');
    assert.equal(readlinkSync(t.memoryFile), '/memfd:kata-ts-template-memory (deleted)');
    const m = openSync(t.memoryFile, 'r+');
    try {
      assert.equal(fstatSync(m).size, MEMORY_MIB * MiB);
      const got = Buffer.alloc(12);
      readSync(m, got, 0, 12, 5 * MiB);
      assert.equal(got.toString(), 'template RAM');
      assert.throws(() => writeSync(m, 'x', 0), /EPERM/, 'sealed against writes, root included');
      assert.throws(() => ftruncateSync(m, 0), /EPERM/, 'and against shrinking');
    } finally {
      closeSync(m);
    }
    assert.equal((await readTemplate(root, key, identity)).memoryFile, t.memoryFile);
    // destroy ends the holder (and the memory with it).
    await destroyTemplates(root);
    assert.equal(existsSync(`/proc/${holder.pid}`) && identify(holder.pid)?.startTime === holder.startTime, false, 'the holder is gone');
    // A dead holder: the template is absent (made again), not invalid forever.
    const again = await build(root);
    const h2 = await holdMemory(jailer, join(buildingDir(root, again.key), TEMPLATE_FILES.memory));
    rmSync(join(buildingDir(root, again.key), TEMPLATE_FILES.memory));
    await commitTemplate(root, again.key, { ...metaOf(again.key, again.identity), memoryHolder: h2 });
    process.kill(h2.pid, 'SIGKILL');
    for (let i = 0; i < 100 && identify(h2.pid); i++) await tick();
    await rejectsWith(readTemplate(root, again.key), Code.NOT_FOUND, new RegExp(`memory holder \\(pid ${h2.pid}\\) is gone`));
  } finally {
    if (identify(holder.pid)?.startTime === holder.startTime) process.kill(holder.pid, 'SIGKILL');
  }
});
