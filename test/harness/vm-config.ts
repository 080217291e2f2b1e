// What the vm layer's unit tests share: a minimal valid QEMU config, and the
// check that a bad one is refused naming its field.

import assert from 'node:assert/strict';
import { Code, StatusError } from '../../src/errors/index.js';
import type { QemuConfig } from '../../src/vm/qemu-args.js';

/** A microvm with nothing but its console and QMP socket. */
export const BASE_QEMU_CONFIG: QemuConfig = {
  machine: 'microvm',
  accel: 'tcg',
  vcpus: 1,
  memoryMiB: 256,
  kernel: '/k/vmlinux',
  initrd: '/k/initrd.img',
  tscKhz: 1_996_249,
  consoleLog: '/run/kata-ts/s1/console.log',
  qmpSocket: '/run/kata-ts/s1/qmp.sock',
  devices: [],
};

/** Asserts `fn` throws INVALID_ARGUMENT whose message starts with `${field}: ` (and matches each of `res`). */
export function throwsNaming(fn: () => unknown, field: string, ...res: RegExp[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof StatusError, String(err));
    assert.equal(Code[err.code], Code[Code.INVALID_ARGUMENT]);
    assert.ok(err.message.startsWith(`${field}: `), `message ${JSON.stringify(err.message)} does not name ${field}`);
    for (const re of res) assert.match(err.message, re);
    return true;
  });
}
