// VM template keys (src/factory/template-key.ts): templateIdentity stats the
// QEMU binary, kernel, initrd and root image; templateKey hashes the identity.
// The key is stable for unchanged files and settings, and changes when any
// file is rewritten (even with the same bytes) or any spec field changes;
// a missing file is FAILED_PRECONDITION naming it. Temp files only.
import assert from 'node:assert/strict';
import { mkdtempSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Code, StatusError } from '../../src/errors/index.js';
import { templateIdentity, templateKey, type TemplateSpec } from '../../src/factory/template-key.js';

const dir = mkdtempSync(join(tmpdir(), 'tpl-key-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const files = { qemuBinary: join(dir, 'qemu'), kernel: join(dir, 'vmlinux'), initrd: join(dir, 'initrd.img'), rootfs: join(dir, 'rootfs.img') };
for (const [what, path] of Object.entries(files)) writeFileSync(path, `${what} contents\n`);

const SPEC: TemplateSpec = {
  ...files,
  machine: 'microvm',
  accel: 'tcg',
  vcpus: 1,
  memoryMiB: 256,
  kernelParams: ['quiet', 'agent.log=debug'],
  tscKhz: 1_996_249,
  nic: false,
  sharedFsTag: 'kataShared',
};

const keyOf = async (spec: TemplateSpec): Promise<string> => templateKey(await templateIdentity(spec));

/** Old kernels stamp files with a coarse (jiffy) clock: let it tick before a rewrite. */
const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 25));

test('identity: every file named by dev, inode, size, mtime and ctime (ns), in a fixed order', async () => {
  const id = await templateIdentity(SPEC);
  assert.equal(id.spec, SPEC);
  assert.deepEqual(id.files.map((f) => f.path), [files.qemuBinary, files.kernel, files.initrd, files.rootfs]);
  const st = statSync(files.kernel, { bigint: true });
  assert.deepEqual(id.files[1], {
    path: files.kernel, dev: String(st.dev), ino: String(st.ino), size: String(st.size), mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs),
  });
  // No initrd: three files.
  const { initrd: _initrd, ...noInitrd } = SPEC;
  assert.deepEqual((await templateIdentity(noInitrd)).files.map((f) => f.path), [files.qemuBinary, files.kernel, files.rootfs]);
});

test('key: 24 hex digits, the same for the same files and settings', async () => {
  const k1 = await keyOf(SPEC);
  assert.match(k1, /^[0-9a-f]{24}$/);
  assert.equal(await keyOf(SPEC), k1);
  // A copy of the spec (another object, keys in another order) keys the same.
  const reordered = Object.fromEntries(Object.entries(SPEC).reverse()) as unknown as TemplateSpec;
  assert.equal(await keyOf({ ...reordered, kernelParams: [...SPEC.kernelParams] }), k1);
  // An undefined optional field is the same as an absent one.
  const { tscKhz: _t, ...noTsc } = SPEC;
  assert.equal(await keyOf({ ...noTsc, tscKhz: undefined }), await keyOf(noTsc));
});

test('key: each spec field is part of it', async () => {
  const k = await keyOf(SPEC);
  const variants: Array<[string, TemplateSpec]> = [
    ['vcpus', { ...SPEC, vcpus: 2 }],
    ['memoryMiB', { ...SPEC, memoryMiB: 512 }],
    ['kernelParams (one more)', { ...SPEC, kernelParams: [...SPEC.kernelParams, 'debug'] }],
    ['kernelParams (order)', { ...SPEC, kernelParams: [...SPEC.kernelParams].reverse() }],
    ['nic', { ...SPEC, nic: true }],
    ['tscKhz', { ...SPEC, tscKhz: 1_996_250 }],
    ['tscKhz absent', { ...SPEC, tscKhz: undefined }],
    ['machine', { ...SPEC, machine: 'q35' }],
    ['accel', { ...SPEC, accel: 'kvm' }],
    ['sharedFsTag', { ...SPEC, sharedFsTag: 'other' }],
    ['initrd absent', { ...SPEC, initrd: undefined }],
  ];
  const seen = new Map<string, string>([[k, 'base']]);
  for (const [what, spec] of variants) {
    const k2 = await keyOf(spec);
    assert.ok(!seen.has(k2), `${what}: same key as ${seen.get(k2)}`);
    seen.set(k2, what);
  }
});

test('key: a file rewritten, even with the same bytes, gives another key', async () => {
  for (const which of ['qemuBinary', 'kernel', 'initrd', 'rootfs'] as const) {
    const before = await keyOf(SPEC);
    const path = files[which];
    const content = `${which} contents\n`;
    await tick();
    writeFileSync(path, content);
    const after = await keyOf(SPEC);
    assert.notEqual(after, before, `${which} rewritten in place`);
    assert.equal(await keyOf(SPEC), after, 'and stable again after');
  }
});

test('key: the same name pointing at another file (replaced by rename) gives another key', async () => {
  const before = await keyOf(SPEC);
  const tmp = join(dir, 'rootfs.new');
  writeFileSync(tmp, 'rootfs contents\n');
  renameSync(tmp, files.rootfs);
  assert.notEqual(await keyOf(SPEC), before);
});

test('a missing file is FAILED_PRECONDITION naming it', async () => {
  for (const [field, what] of [['qemuBinary', 'qemu'], ['kernel', 'kernel'], ['initrd', 'initrd'], ['rootfs', 'image']] as const) {
    const missing = join(dir, `no-such-${field}`);
    await assert.rejects(templateIdentity({ ...SPEC, [field]: missing }), (err: unknown) => {
      assert.ok(err instanceof StatusError, String(err));
      assert.equal(Code[err.code], Code[Code.FAILED_PRECONDITION]);
      assert.ok(err.message.includes(missing), err.message);
      assert.ok(err.message.startsWith(`template ${what}: `), err.message);
      assert.match(err.message, /ENOENT/);
      return true;
    });
  }
});
