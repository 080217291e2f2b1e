// QEMU argv from typed configs: table tests, and validation errors that name the field.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Code, StatusError } from '../../src/errors/index.js';
import { buildQemuArgs, kernelCmdline, type QemuConfig } from '../../src/vm/qemu-args.js';
import { parseTscKhz } from '../../src/vm/host.js';
import type { DeviceConfig } from '../../src/vm/devices/index.js';
import { flagValues } from '../harness/argv.js';
import { BASE_QEMU_CONFIG } from '../harness/vm-config.js';

const BASE: QemuConfig = BASE_QEMU_CONFIG;

const values = flagValues;

test('microvm + tcg: the whole argv', () => {
  assert.deepEqual(buildQemuArgs(BASE), [
    '-machine', 'microvm,x-option-roms=off',
    '-accel', 'tcg',
    '-cpu', 'max',
    '-smp', '1',
    '-m', '256M',
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-global', 'virtio-mmio.force-legacy=false',
    '-kernel', '/k/vmlinux',
    '-initrd', '/k/initrd.img',
    '-append', 'console=ttyS0 panic=-1 tsc_early_khz=1996249',
    '-chardev', 'file,id=console,path=/run/kata-ts/s1/console.log',
    '-serial', 'chardev:console',
    '-chardev', 'socket,id=qmp,path=/run/kata-ts/s1/qmp.sock,server=on,wait=off',
    '-mon', 'chardev=qmp,mode=control',
  ]);
});

const AGENT_SERIAL: DeviceConfig = { kind: 'agent-channel', transport: 'virtio-serial', socketPath: '/run/kata-ts/s1/agent.sock' };
const AGENT_VSOCK: DeviceConfig = { kind: 'agent-channel', transport: 'vsock', guestCid: 42 };
const FS: DeviceConfig = { kind: 'shared-fs', socketPath: '/run/kata-ts/s1/virtiofsd.sock', tag: 'kataShared' };
const ROOT: DeviceConfig = { kind: 'block', id: 'root', path: '/img/rootfs.img', serial: 'kata-root' };
const TAP: DeviceConfig = { kind: 'tap-net', id: 'net0', ifname: 'tap0_kata', mac: '52:54:00:AA:bb:01' };

interface Row {
  name: string;
  cfg: Partial<QemuConfig>;
  /** Each pair [flag, value] must appear. */
  has: Array<[string, string]>;
  /** Flags that must be absent. */
  lacks?: string[];
  /** Exact -device values, in order. */
  devices?: string[];
}

const TABLE: Row[] = [
  {
    name: 'kvm uses -cpu host',
    cfg: { accel: 'kvm' },
    has: [['-accel', 'kvm'], ['-cpu', 'host']],
  },
  {
    name: 'q35 has PCI devices, no mmio global, no tsc_early_khz',
    cfg: { machine: 'q35', devices: [AGENT_SERIAL, ROOT] },
    has: [['-machine', 'q35'], ['-append', 'console=ttyS0 panic=-1']],
    lacks: ['-global'],
    devices: ['virtio-serial-pci,id=agent-serial', 'virtserialport,chardev=agent,name=agent.0,bus=agent-serial.0', 'virtio-blk-pci,drive=root,serial=kata-root'],
  },
  {
    name: 'virtio-serial agent on microvm',
    cfg: { devices: [AGENT_SERIAL] },
    has: [['-chardev', 'socket,id=agent,path=/run/kata-ts/s1/agent.sock,server=on,wait=off']],
    devices: ['virtio-serial-device,id=agent-serial', 'virtserialport,chardev=agent,name=agent.0,bus=agent-serial.0'],
  },
  {
    name: 'vsock agent on microvm and q35',
    cfg: { devices: [AGENT_VSOCK] },
    has: [],
    devices: ['vhost-vsock-device,id=agent,guest-cid=42'],
  },
  {
    name: 'vsock agent on q35',
    cfg: { machine: 'q35', devices: [AGENT_VSOCK] },
    has: [],
    devices: ['vhost-vsock-pci,id=agent,guest-cid=42'],
  },
  {
    name: 'virtio-fs: shared memfd backend + vhost-user-fs-device',
    cfg: { memoryMiB: 512, devices: [FS] },
    has: [
      ['-machine', 'microvm,x-option-roms=off,memory-backend=mem'],
      ['-object', 'memory-backend-memfd,id=mem,size=512M,share=on'],
      ['-m', '512M'],
      ['-chardev', 'socket,id=fs0,path=/run/kata-ts/s1/virtiofsd.sock'],
      ['-global', 'virtio-mmio.force-legacy=false'],
    ],
    devices: ['vhost-user-fs-device,chardev=fs0,tag=kataShared'],
  },
  {
    name: 'virtio-fs on q35 with queue size',
    cfg: { machine: 'q35', devices: [{ ...FS, queueSize: 1024 } as DeviceConfig] },
    has: [['-machine', 'q35,memory-backend=mem']],
    devices: ['vhost-user-fs-pci,chardev=fs0,tag=kataShared,queue-size=1024'],
  },
  {
    name: 'read-only root image',
    cfg: { devices: [ROOT] },
    has: [['-drive', 'file=/img/rootfs.img,if=none,format=raw,readonly=on,id=root']],
    lacks: ['-object'],
    devices: ['virtio-blk-device,drive=root,serial=kata-root'],
  },
  {
    name: 'writable qcow2 disk',
    cfg: { devices: [{ kind: 'block', id: 'data', path: '/img/d.qcow2', readOnly: false, format: 'qcow2' }] },
    has: [['-drive', 'file=/img/d.qcow2,if=none,format=qcow2,readonly=off,id=data']],
    devices: ['virtio-blk-device,drive=data'],
  },
  {
    name: 'tap NIC',
    cfg: { devices: [TAP] },
    has: [['-netdev', 'tap,id=net0,ifname=tap0_kata,script=no,downscript=no']],
    devices: ['virtio-net-device,netdev=net0,mac=52:54:00:aa:bb:01'],
  },
  {
    name: 'all devices together keep their order',
    cfg: { devices: [AGENT_SERIAL, FS, ROOT, TAP] },
    has: [],
    devices: [
      'virtio-serial-device,id=agent-serial',
      'virtserialport,chardev=agent,name=agent.0,bus=agent-serial.0',
      'vhost-user-fs-device,chardev=fs0,tag=kataShared',
      'virtio-blk-device,drive=root,serial=kata-root',
      'virtio-net-device,netdev=net0,mac=52:54:00:aa:bb:01',
    ],
  },
  {
    name: 'commas in paths are doubled in option values, not in -kernel',
    cfg: { kernel: '/k,1/vmlinux', consoleLog: '/r,x/console.log', devices: [{ kind: 'block', id: 'r', path: '/a,b.img' }] },
    has: [['-kernel', '/k,1/vmlinux'], ['-chardev', 'file,id=console,path=/r,,x/console.log'], ['-drive', 'file=/a,,b.img,if=none,format=raw,readonly=on,id=r']],
  },
  {
    name: 'kernel params, vcpus, name, no initrd',
    cfg: { kernelParams: ['quiet', 'init=/sbin/init'], vcpus: 2, name: 'sandbox-abc', initrd: undefined },
    has: [['-append', 'console=ttyS0 panic=-1 tsc_early_khz=1996249 quiet init=/sbin/init'], ['-smp', '2'], ['-name', 'sandbox-abc,debug-threads=on']],
    lacks: ['-initrd'],
  },
  {
    name: 'microvm without a known TSC rate omits tsc_early_khz',
    cfg: { tscKhz: undefined },
    has: [['-append', 'console=ttyS0 panic=-1']],
  },
  // VM templates: guest RAM in a file, virtio-9p, a NIC with no back-end.
  {
    name: 'template: RAM in a shared file (memory-backend-file, share=on)',
    cfg: { memoryFile: { path: '/var/lib/kata-ts/templates/k/memory', share: true } },
    has: [
      ['-machine', 'microvm,x-option-roms=off,memory-backend=mem'],
      ['-object', 'memory-backend-file,id=mem,size=256M,mem-path=/var/lib/kata-ts/templates/k/memory,share=on'],
      ['-m', '256M'],
    ],
    lacks: ['-incoming'],
  },
  {
    name: 'clone: RAM a private mapping of the template\'s file (share=off), q35',
    cfg: { machine: 'q35', memoryMiB: 512, memoryFile: { path: '/t/k/memory', share: false } },
    has: [['-machine', 'q35,memory-backend=mem'], ['-object', 'memory-backend-file,id=mem,size=512M,mem-path=/t/k/memory,share=off']],
  },
  {
    name: 'virtio-9p shared dir on microvm',
    cfg: { devices: [{ kind: 'shared-9p', path: '/run/kata-ts/s1/shared', tag: 'kataShared' }] },
    has: [['-fsdev', 'local,id=fs9p,path=/run/kata-ts/s1/shared,security_model=none']],
    lacks: ['-object'],
    devices: ['virtio-9p-device,fsdev=fs9p,mount_tag=kataShared'],
  },
  {
    name: 'virtio-9p on q35, own id, a comma in the path doubled',
    cfg: { machine: 'q35', devices: [{ kind: 'shared-9p', path: '/run/a,b/shared', tag: 'tag.1:x-y_z', id: 'share9' }] },
    has: [['-fsdev', 'local,id=share9,path=/run/a,,b/shared,security_model=none']],
    devices: ['virtio-9p-pci,fsdev=share9,mount_tag=tag.1:x-y_z'],
  },
  {
    name: 'NIC without a tap: a hubport netdev (a template\'s stand-in)',
    cfg: { devices: [{ kind: 'tap-net', id: 'net0', mac: '02:00:00:00:7E:01' }] },
    has: [['-netdev', 'hubport,id=net0,hubid=0']],
    devices: ['virtio-net-device,netdev=net0,mac=02:00:00:00:7e:01'],
  },
];

for (const row of TABLE) {
  test(`args: ${row.name}`, () => {
    const args = buildQemuArgs({ ...BASE, ...row.cfg } as QemuConfig);
    for (const [flag, value] of row.has) {
      assert.ok(values(args, flag).includes(value), `${flag} ${value} missing in ${JSON.stringify(args)}`);
    }
    for (const flag of row.lacks ?? []) assert.equal(args.includes(flag), false, `${flag} present`);
    if (row.devices) assert.deepEqual(values(args, '-device'), row.devices);
    // fixed hygiene flags always present
    for (const f of ['-nodefaults', '-no-user-config', '-nographic', '-no-reboot']) assert.ok(args.includes(f));
  });
}

interface Bad {
  cfg: Partial<QemuConfig> | Record<string, unknown>;
  field: string;
}

const BAD: Bad[] = [
  { cfg: { machine: 'pc' }, field: 'machine' },
  { cfg: { accel: 'hvf' }, field: 'accel' },
  { cfg: { vcpus: 0 }, field: 'vcpus' },
  { cfg: { vcpus: 1.5 }, field: 'vcpus' },
  { cfg: { memoryMiB: 16 }, field: 'memoryMiB' },
  { cfg: { kernel: 'vmlinux' }, field: 'kernel' },
  { cfg: { kernel: '' }, field: 'kernel' },
  { cfg: { initrd: 'rel/initrd' }, field: 'initrd' },
  { cfg: { kernelParams: ['a b'] }, field: 'kernelParams[0]' },
  { cfg: { consoleLog: 'x.log' }, field: 'consoleLog' },
  { cfg: { qmpSocket: '/' + 'x'.repeat(120) }, field: 'qmpSocket' },
  { cfg: { name: 'bad name' }, field: 'name' },
  { cfg: { devices: [{ kind: 'gpu' }] }, field: 'devices[0].kind' },
  { cfg: { devices: [{ kind: 'agent-channel', transport: 'pipe' }] }, field: 'devices[0].transport' },
  { cfg: { devices: [{ kind: 'agent-channel', transport: 'virtio-serial', socketPath: 'rel.sock' }] }, field: 'devices[0].socketPath' },
  { cfg: { devices: [{ kind: 'agent-channel', transport: 'virtio-serial', socketPath: '/a.sock', portName: 'a b' }] }, field: 'devices[0].portName' },
  { cfg: { devices: [{ kind: 'agent-channel', transport: 'vsock', guestCid: 2 }] }, field: 'devices[0].guestCid' },
  { cfg: { devices: [AGENT_SERIAL, AGENT_VSOCK] }, field: 'devices[1]' },
  { cfg: { devices: [{ kind: 'shared-fs', socketPath: '/a.sock', tag: 'x'.repeat(37) }] }, field: 'devices[0].tag' },
  { cfg: { devices: [{ kind: 'shared-fs', socketPath: '/a.sock', tag: 'a,b' }] }, field: 'devices[0].tag' },
  { cfg: { devices: [{ kind: 'shared-fs', socketPath: '/a.sock', tag: 't', queueSize: 100 }] }, field: 'devices[0].queueSize' },
  { cfg: { devices: [ROOT, { kind: 'block', id: 'd', path: 'rel.img' }] }, field: 'devices[1].path' },
  { cfg: { devices: [{ kind: 'block', id: '1bad', path: '/a.img' }] }, field: 'devices[0].id' },
  { cfg: { devices: [{ kind: 'block', id: 'r', path: '/a.img', serial: 'x'.repeat(21) }] }, field: 'devices[0].serial' },
  { cfg: { devices: [{ kind: 'block', id: 'r', path: '/a.img', format: 'vmdk' }] }, field: 'devices[0].format' },
  { cfg: { devices: [ROOT, { kind: 'block', id: 'root', path: '/b.img' }] }, field: 'devices[1].id' },
  { cfg: { devices: [{ kind: 'tap-net', id: 'n', ifname: 'a-very-long-interface' }] }, field: 'devices[0].ifname' },
  { cfg: { devices: [{ kind: 'tap-net', id: 'n', ifname: 'tap0', mac: 'zz' }] }, field: 'devices[0].mac' },
  { cfg: { devices: [{ kind: 'tap-net', id: 'n', mac: 'zz' }] }, field: 'devices[0].mac' },
  { cfg: { devices: [{ kind: 'tap-net', id: '1n' }] }, field: 'devices[0].id' },
  { cfg: { memoryFile: { path: '/t/k/memory', share: false }, devices: [FS] }, field: 'memoryFile.share' },
  { cfg: { memoryFile: { path: '/t/k/memory', share: 'no' } }, field: 'memoryFile.share' },
  { cfg: { memoryFile: { path: '/t/a,b/memory', share: true } }, field: 'memoryFile.path' },
  { cfg: { memoryFile: { path: '/t/a b/memory', share: true } }, field: 'memoryFile.path' },
  { cfg: { memoryFile: { path: 'memory', share: true } }, field: 'memoryFile.path' },
  { cfg: { incoming: 'defer' }, field: 'incoming' },
  { cfg: { devices: [{ kind: 'shared-9p', path: '/s', tag: 'a b' }] }, field: 'devices[0].tag' },
  { cfg: { devices: [{ kind: 'shared-9p', path: '/s', tag: 'a,b' }] }, field: 'devices[0].tag' },
  { cfg: { devices: [{ kind: 'shared-9p', path: '/s', tag: 'x'.repeat(32) }] }, field: 'devices[0].tag' },
  { cfg: { devices: [{ kind: 'shared-9p', path: '/s', tag: '' }] }, field: 'devices[0].tag' },
  { cfg: { devices: [{ kind: 'shared-9p', path: 'rel/dir', tag: 't' }] }, field: 'devices[0].path' },
  { cfg: { devices: [{ kind: 'shared-9p', path: '/s', tag: 't', id: 'a b' }] }, field: 'devices[0].id' },
  { cfg: { devices: [{ kind: 'block', id: 'fs9p', path: '/a.img' }, { kind: 'shared-9p', path: '/s', tag: 't' }] }, field: 'devices[1].id' },
];

for (const b of BAD) {
  test(`validation: ${b.field} ← ${JSON.stringify(b.cfg).slice(0, 80)}`, () => {
    assert.throws(() => buildQemuArgs({ ...BASE, ...b.cfg } as QemuConfig), (err: unknown) => {
      assert.ok(err instanceof StatusError, String(err));
      assert.equal(err.code, Code.INVALID_ARGUMENT);
      assert.ok(err.message.startsWith(`${b.field}: `), `message ${JSON.stringify(err.message)} does not name ${b.field}`);
      return true;
    });
  });
}

test('kernel cmdline and TSC parsing', () => {
  assert.equal(kernelCmdline({ machine: 'q35', tscKhz: 5, kernelParams: ['quiet'] }), 'console=ttyS0 panic=-1 quiet');
  assert.equal(parseTscKhz('processor\t: 0\nmodel name\t: X\ncpu MHz\t\t: 1996.249\ncache size\t: 1 KB\n'), 1_996_249);
  assert.equal(parseTscKhz('cpu MHz\t\t: 2400\n'), 2_400_000);
  assert.equal(parseTscKhz('processor: 0\n'), undefined);
});

test('-incoming defer comes last, only when asked for; a shared file backend serves vhost-user too', () => {
  const clone: QemuConfig = {
    ...BASE,
    memoryFile: { path: '/t/k/memory', share: false },
    incoming: true,
    devices: [AGENT_SERIAL, { kind: 'shared-9p', path: '/run/kata-ts/s1/shared', tag: 'kataShared' }, ROOT, { kind: 'tap-net', id: 'net0', ifname: 'tap0_kata' }],
  };
  const args = buildQemuArgs(clone);
  assert.deepEqual(args.slice(-2), ['-incoming', 'defer']);
  assert.equal(args.filter((a) => a === '-incoming').length, 1);
  assert.equal(buildQemuArgs({ ...clone, incoming: false }).includes('-incoming'), false);
  assert.equal(buildQemuArgs({ ...clone, incoming: undefined }).includes('-incoming'), false);
  // Template and clone differ only in the RAM mapping, the tap behind the NIC and -incoming (same devices, same order).
  const template = buildQemuArgs({ ...clone, incoming: undefined, memoryFile: { path: '/t/k/memory', share: true },
    devices: clone.devices.map((d) => (d.kind === 'tap-net' ? { kind: 'tap-net', id: 'net0' } : d)) });
  assert.deepEqual(values(template, '-device'), values(args, '-device'));
  // virtio-fs with RAM in a shared file: that file is the one backend (no memfd besides).
  const fs = buildQemuArgs({ ...BASE, memoryFile: { path: '/t/k/memory', share: true }, devices: [FS] });
  assert.deepEqual(values(fs, '-object'), ['memory-backend-file,id=mem,size=256M,mem-path=/t/k/memory,share=on']);
  assert.equal(values(fs, '-machine')[0], 'microvm,x-option-roms=off,memory-backend=mem');
});
