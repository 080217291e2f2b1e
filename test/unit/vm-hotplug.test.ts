// VM hot-plug planning (src/vm/hotplug.ts) and the room it reserves in QEMU's argv (src/vm/qemu-args.ts).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  cpuPlugCommands, GUEST_MEMORY_BLOCK_MIB, hotplugKernelParams, MAX_MEMORY_SLOTS, memoryArg, memoryStepMiB, smpArg,
  validateHotplugRoom, type HotplugRoom, type HotpluggableCpu,
} from '../../src/vm/hotplug.js';
import { buildQemuArgs, kernelCmdline, MAX_MEMORY_MIB, MAX_VCPUS, type QemuConfig } from '../../src/vm/qemu-args.js';
import { flagValues } from '../harness/argv.js';
import { throwsNaming } from '../harness/vm-config.js';

const ROOM: HotplugRoom = { maxVcpus: 4, maxMemoryMiB: 2048, memorySlots: 8 };
const Q35_BOOT = { vcpus: 1, memoryMiB: 256, machine: 'q35' };

test('validateHotplugRoom: a room at or above the boot size on q35 passes; bounds are inclusive', () => {
  validateHotplugRoom(ROOM, Q35_BOOT, MAX_VCPUS, MAX_MEMORY_MIB);
  // No growth at all is still a valid room (max == boot), and the top bounds are reachable.
  validateHotplugRoom({ maxVcpus: 1, maxMemoryMiB: 256, memorySlots: 1 }, Q35_BOOT, MAX_VCPUS, MAX_MEMORY_MIB);
  validateHotplugRoom({ maxVcpus: MAX_VCPUS, maxMemoryMiB: MAX_MEMORY_MIB, memorySlots: MAX_MEMORY_SLOTS }, Q35_BOOT, MAX_VCPUS, MAX_MEMORY_MIB);
});

test('validateHotplugRoom: each bad field is named', () => {
  const v = (room: unknown, boot = Q35_BOOT) => () => validateHotplugRoom(room as HotplugRoom, boot, MAX_VCPUS, MAX_MEMORY_MIB);
  throwsNaming(v(null), 'hotplug');
  throwsNaming(v('4'), 'hotplug');
  throwsNaming(v(ROOM, { ...Q35_BOOT, machine: 'microvm' }), 'hotplug');
  throwsNaming(v({ ...ROOM, maxVcpus: 0 }), 'hotplug.maxVcpus');
  throwsNaming(v({ ...ROOM, maxVcpus: 1 }, { ...Q35_BOOT, vcpus: 2 }), 'hotplug.maxVcpus');
  throwsNaming(v({ ...ROOM, maxVcpus: MAX_VCPUS + 1 }), 'hotplug.maxVcpus');
  throwsNaming(v({ ...ROOM, maxVcpus: 2.5 }), 'hotplug.maxVcpus');
  throwsNaming(v({ ...ROOM, maxVcpus: '4' }), 'hotplug.maxVcpus');
  throwsNaming(v({ ...ROOM, maxMemoryMiB: 255 }), 'hotplug.maxMemoryMiB');
  throwsNaming(v({ ...ROOM, maxMemoryMiB: MAX_MEMORY_MIB + 1 }), 'hotplug.maxMemoryMiB');
  throwsNaming(v({ ...ROOM, maxMemoryMiB: undefined }), 'hotplug.maxMemoryMiB');
  throwsNaming(v({ ...ROOM, memorySlots: 0 }), 'hotplug.memorySlots');
  throwsNaming(v({ ...ROOM, memorySlots: MAX_MEMORY_SLOTS + 1 }), 'hotplug.memorySlots');
  throwsNaming(v({ ...ROOM, memorySlots: 1.5 }), 'hotplug.memorySlots');
});

test('smpArg / memoryArg: the room only when it is above the boot size', () => {
  assert.equal(smpArg(2, undefined), '2');
  assert.equal(smpArg(2, { ...ROOM, maxVcpus: 2 }), '2');
  assert.equal(smpArg(2, ROOM), '2,maxcpus=4');
  assert.equal(memoryArg(512, undefined), '512M');
  assert.equal(memoryArg(512, { ...ROOM, maxMemoryMiB: 512 }), '512M');
  assert.equal(memoryArg(512, ROOM), '512M,slots=8,maxmem=2048M');
  assert.equal(memoryArg(512, { ...ROOM, memorySlots: 3 }), '512M,slots=3,maxmem=2048M');
});

test('hotplugKernelParams: memhp_default_state=online and swiotlb=noforce only with memory room', () => {
  assert.deepEqual(hotplugKernelParams(256, ROOM), ['memhp_default_state=online', 'swiotlb=noforce']);
  assert.deepEqual(hotplugKernelParams(256, undefined), []);
  assert.deepEqual(hotplugKernelParams(256, { ...ROOM, maxMemoryMiB: 256 }), [], 'CPU room alone needs no memory params');
  assert.deepEqual(hotplugKernelParams(2048, ROOM), []);
});

test('memoryStepMiB: the missing amount rounded up to whole guest memory blocks', () => {
  assert.equal(GUEST_MEMORY_BLOCK_MIB, 128);
  assert.equal(memoryStepMiB(256, 256), 0);
  assert.equal(memoryStepMiB(512, 256), 0, 'never a negative step (memory is not unplugged)');
  assert.equal(memoryStepMiB(256, 257), 128);
  assert.equal(memoryStepMiB(256, 384), 128);
  assert.equal(memoryStepMiB(256, 385), 256);
  assert.equal(memoryStepMiB(256, 768), 512);
  assert.equal(memoryStepMiB(300, 1000), 768, 'rounded from the difference, not from absolute block boundaries');
  // A target cut to maxmem that is not a whole block away: rounded down, never past maxmem.
  assert.equal(memoryStepMiB(256, 2000, 2000), 1664);
  assert.equal(memoryStepMiB(256, 2000, 2048), 1792, 'rounded up while that fits');
  assert.equal(memoryStepMiB(1990, 2000, 2000), 0, 'less than a block of room: nothing');
});

const cpu = (socket: number, occupied = false, extra: Partial<HotpluggableCpu> = {}): HotpluggableCpu => ({
  type: 'max-x86_64-cpu',
  'vcpus-count': 1,
  props: { 'socket-id': socket, 'core-id': 0, 'thread-id': 0 },
  ...(occupied ? { 'qom-path': `/machine/unattached/device[${socket}]` } : {}),
  ...extra,
});

test('cpuPlugCommands: the lowest free slots first, occupied and multi-vCPU slots skipped', () => {
  // QEMU lists the slots highest first; socket 0 is the boot CPU.
  const slots = [cpu(3), cpu(2), cpu(1), cpu(0, true)];
  assert.deepEqual(cpuPlugCommands(slots, 2), [
    { driver: 'max-x86_64-cpu', id: 'cpu-1-0-0-0', 'socket-id': 1, 'core-id': 0, 'thread-id': 0 },
    { driver: 'max-x86_64-cpu', id: 'cpu-2-0-0-0', 'socket-id': 2, 'core-id': 0, 'thread-id': 0 },
  ]);
  assert.deepEqual(cpuPlugCommands(slots, 0), []);
  // A slot now occupied (plugged earlier) is not offered again; the id prefix is the caller's.
  const later = cpuPlugCommands([cpu(3), cpu(2, true), cpu(1, true), cpu(0, true)], 1, 'hp');
  assert.deepEqual(later, [{ driver: 'max-x86_64-cpu', id: 'hp-3-0-0-0', 'socket-id': 3, 'core-id': 0, 'thread-id': 0 }]);
  // Ordered by socket, then core, then thread.
  const cores = [
    { type: 't', 'vcpus-count': 1, props: { 'socket-id': 1, 'core-id': 0, 'thread-id': 1 } },
    { type: 't', 'vcpus-count': 1, props: { 'socket-id': 0, 'core-id': 1, 'thread-id': 0 } },
    { type: 't', 'vcpus-count': 1, props: { 'socket-id': 1, 'core-id': 0, 'thread-id': 0 } },
  ];
  assert.deepEqual(cpuPlugCommands(cores, 3).map((c) => c['id']), ['cpu-0-0-1-0', 'cpu-1-0-0-0', 'cpu-1-0-0-1']);
  // A slot of 2 vCPUs is not one a single device_add fills.
  assert.deepEqual(cpuPlugCommands([cpu(1, false, { 'vcpus-count': 2 }), cpu(2)], 1).map((c) => c['id']), ['cpu-2-0-0-0']);
});

test('cpuPlugCommands: more vCPUs than free slots is a RangeError naming both counts', () => {
  assert.throws(() => cpuPlugCommands([cpu(0, true), cpu(1)], 2), (err: unknown) => {
    assert.ok(err instanceof RangeError, String(err));
    assert.match(err.message, /2 more vCPUs asked for, 1 free slots/);
    return true;
  });
  assert.throws(() => cpuPlugCommands([], 1), RangeError);
});

// ---------------------------------------------------------------- QEMU argv

const Q35: QemuConfig = {
  machine: 'q35',
  accel: 'tcg',
  vcpus: 1,
  memoryMiB: 256,
  kernel: '/k/bzImage',
  initrd: '/k/initrd.img',
  consoleLog: '/run/kata-ts/s1/console.log',
  qmpSocket: '/run/kata-ts/s1/qmp.sock',
  devices: [],
};

const values = flagValues;

test('q35 with a hotplug room: -smp maxcpus, -m slots/maxmem, memory hot-plug kernel params before the operator\'s', () => {
  const args = buildQemuArgs({ ...Q35, kernelParams: ['quiet'], hotplug: ROOM });
  assert.deepEqual(values(args, '-smp'), ['1,maxcpus=4']);
  assert.deepEqual(values(args, '-m'), ['256M,slots=8,maxmem=2048M']);
  assert.deepEqual(values(args, '-append'), ['console=ttyS0 panic=-1 memhp_default_state=online swiotlb=noforce quiet']);
  // The rest of the argv is that of the same VM without room.
  const plain = buildQemuArgs({ ...Q35, kernelParams: ['quiet'] });
  assert.deepEqual(values(plain, '-smp'), ['1']);
  assert.deepEqual(values(plain, '-m'), ['256M']);
  assert.deepEqual(values(plain, '-append'), ['console=ttyS0 panic=-1 quiet']);
  const strip = (a: string[]) => a.filter((x, i) => !['-smp', '-m', '-append'].includes(a[i - 1] ?? ''));
  assert.deepEqual(strip(args), strip(plain));
});

test('q35 with CPU room only: no memory options, no memory kernel params', () => {
  const args = buildQemuArgs({ ...Q35, vcpus: 2, hotplug: { maxVcpus: 8, maxMemoryMiB: 256, memorySlots: 10 } });
  assert.deepEqual(values(args, '-smp'), ['2,maxcpus=8']);
  assert.deepEqual(values(args, '-m'), ['256M']);
  assert.deepEqual(values(args, '-append'), ['console=ttyS0 panic=-1']);
  assert.equal(kernelCmdline({ machine: 'q35', memoryMiB: 256, hotplug: { maxVcpus: 8, maxMemoryMiB: 256, memorySlots: 10 } }), 'console=ttyS0 panic=-1');
  assert.equal(kernelCmdline({ machine: 'q35', memoryMiB: 256, hotplug: ROOM }), 'console=ttyS0 panic=-1 memhp_default_state=online swiotlb=noforce');
});

test('q35 clone with a hotplug room: the file-backed boot RAM keeps the boot size', () => {
  const args = buildQemuArgs({ ...Q35, memoryFile: { path: '/t/k/memory', share: false }, hotplug: ROOM });
  assert.deepEqual(values(args, '-object'), ['memory-backend-file,id=mem,size=256M,mem-path=/t/k/memory,share=off']);
  assert.deepEqual(values(args, '-m'), ['256M,slots=8,maxmem=2048M']);
});

test('hotplug on microvm, or a bad room on q35: INVALID_ARGUMENT naming the field, no argv', () => {
  throwsNaming(() => buildQemuArgs({ ...Q35, machine: 'microvm', hotplug: ROOM }), 'hotplug');
  throwsNaming(() => buildQemuArgs({ ...Q35, vcpus: 2, hotplug: { ...ROOM, maxVcpus: 1 } }), 'hotplug.maxVcpus');
  throwsNaming(() => buildQemuArgs({ ...Q35, hotplug: { ...ROOM, maxVcpus: MAX_VCPUS + 1 } }), 'hotplug.maxVcpus');
  throwsNaming(() => buildQemuArgs({ ...Q35, memoryMiB: 512, hotplug: { ...ROOM, maxMemoryMiB: 511 } }), 'hotplug.maxMemoryMiB');
  throwsNaming(() => buildQemuArgs({ ...Q35, hotplug: { ...ROOM, memorySlots: 0 } }), 'hotplug.memorySlots');
  throwsNaming(() => buildQemuArgs({ ...Q35, hotplug: { ...ROOM, memorySlots: MAX_MEMORY_SLOTS + 1 } }), 'hotplug.memorySlots');
  throwsNaming(() => buildQemuArgs({ ...Q35, hotplug: null as unknown as HotplugRoom }), 'hotplug');
});
