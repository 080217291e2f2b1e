// Pod networking without a VM: the host side (src/network: iproute2 JSON →
// the discovered model, the guest config derived from it, the ip/tc argv of
// the tcfilter model, attach/detach against a fake runner with the state a
// crash cleanup needs), the VM layer's netns launch and NIC arguments, and
// the agent side (src/agent/network.ts: input checks naming the field,
// busybox output parsing, the ip commands run against a fake sysfs).
// The real thing runs in test/e2e/network-vm.test.ts.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Code, StatusError } from '../../src/errors/index.js';
import { silentLogger } from '../../src/log/index.js';
import {
  attachTap, detach, discover, guestInterface, guestRoutes, inNetns, parseIpAddrJson, parseIpRouteJson, parseQdiscJson, parseTapState,
  selectInterface, stepArgs, undoArgs, type CommandRunner, type PodNetwork, type TapState,
} from '../../src/network/index.js';
import { buildQemuArgs, qemuLaunchCommand, QemuVm, type QemuConfig } from '../../src/vm/index.js';
import {
  addrArgs, checkInterface, checkRoutes, commandError, Network, parseAddrLines, parseRouteLines, routeArgs, routeOrder,
  type InterfaceRequest, type NetCommandRunner,
} from '../../src/agent/network.js';
import { isNetwork, parseCidr } from '../../src/agent/ip.js';

function codeOf(fn: () => unknown): { code: Code | undefined; message: string } {
  try {
    fn();
  } catch (err) {
    return { code: err instanceof StatusError ? err.code : undefined, message: (err as Error).message };
  }
  return { code: Code.OK, message: '' };
}

async function rejectsWith(p: Promise<unknown>, code: Code, match?: RegExp): Promise<StatusError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof StatusError, `not a StatusError: ${String(err)}`);
    assert.equal(Code[err.code], Code[code], err.message);
    if (match) assert.match(err.message, match);
    return err;
  }
  assert.fail(`expected ${Code[code]}`);
}

// -----------------------------------------------------------------------------
// captured iproute2 6.1 output (a CNI-like netns: eth0 veth, plus our tap)

const ADDR_JSON = JSON.stringify([
  { ifindex: 1, ifname: 'lo', flags: ['LOOPBACK', 'UP', 'LOWER_UP'], mtu: 65536, link_type: 'loopback', address: '00:00:00:00:00:00',
    addr_info: [{ family: 'inet', local: '127.0.0.1', prefixlen: 8, scope: 'host' }, { family: 'inet6', local: '::1', prefixlen: 128, scope: 'host' }] },
  { ifindex: 2, link_index: 2, ifname: 'eth0', flags: ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'], mtu: 1450, link_type: 'ether',
    address: '7A:5C:BD:27:8A:6F', linkinfo: { info_kind: 'veth' },
    addr_info: [
      { family: 'inet', local: '10.88.77.2', prefixlen: 24, scope: 'global', label: 'eth0' },
      { family: 'inet6', local: 'fd00:77::2', prefixlen: 64, scope: 'global' },
      { family: 'inet6', local: 'fe80::785c:bdff:fe27:8a6f', prefixlen: 64, scope: 'link' },
    ] },
  { ifindex: 3, ifname: 'tap0_kata', flags: ['NO-CARRIER', 'BROADCAST', 'MULTICAST', 'UP'], mtu: 1450, link_type: 'ether',
    address: '9e:47:7e:be:76:4f', linkinfo: { info_kind: 'tun' }, addr_info: [] },
]);
const ROUTE4_JSON = '[{"dst":"default","gateway":"10.88.77.1","dev":"eth0","flags":[]},' +
  '{"dst":"10.88.77.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"10.88.77.2","flags":[]},' +
  '{"dst":"10.96.0.10","gateway":"10.88.77.1","dev":"eth0","metric":5,"flags":[]},' +
  '{"type":"blackhole","dst":"10.99.0.0/16","flags":[]},' +
  '{"dst":"192.168.5.0/24","dev":"other0","flags":[]}]';
const ROUTE6_JSON = '[{"dst":"fd00:77::/64","dev":"eth0","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},' +
  '{"dst":"fe80::/64","dev":"eth0","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},' +
  '{"dst":"default","gateway":"fd00:77::1","dev":"eth0","metric":1024,"flags":[],"pref":"medium"}]';

test('iproute2 JSON: links with addresses, routes, qdiscs', () => {
  const links = parseIpAddrJson(ADDR_JSON);
  assert.deepEqual(links.map((l) => [l.name, l.kind, l.mac, l.mtu, l.up]), [
    ['lo', '', '00:00:00:00:00:00', 65536, true],
    ['eth0', 'veth', '7a:5c:bd:27:8a:6f', 1450, true],
    ['tap0_kata', 'tun', '9e:47:7e:be:76:4f', 1450, true],
  ]);
  assert.deepEqual(links[1]!.addresses, [
    { family: 4, cidr: '10.88.77.2/24', scope: 'global' },
    { family: 6, cidr: 'fd00:77::2/64', scope: 'global' },
    { family: 6, cidr: 'fe80::785c:bdff:fe27:8a6f/64', scope: 'link' },
  ]);
  assert.deepEqual(parseIpRouteJson(ROUTE4_JSON, 4), [
    { family: 4, dest: 'default', gateway: '10.88.77.1', device: 'eth0' },
    { family: 4, dest: '10.88.77.0/24', device: 'eth0', source: '10.88.77.2', scope: 'link', protocol: 'kernel' },
    { family: 4, dest: '10.96.0.10/32', gateway: '10.88.77.1', device: 'eth0', metric: 5 },
    { family: 4, dest: '192.168.5.0/24', device: 'other0' },
  ]);
  assert.equal(parseIpRouteJson('', 6).length, 0, 'no IPv6: empty output');
  assert.deepEqual(parseQdiscJson('[{"kind":"ingress","handle":"ffff:","parent":"ffff:fff1","options":{}}]'),
    [{ kind: 'ingress', handle: 'ffff:', parent: 'ffff:fff1' }]);
  assert.equal(codeOf(() => parseIpAddrJson('Error: garbage')).code, Code.INTERNAL);
  assert.equal(codeOf(() => parseIpRouteJson('{"a":1}', 4)).code, Code.INTERNAL);
});

test('selectInterface: eth0 first, then a veth; the loopback, the tap and address-less links never', () => {
  const links = parseIpAddrJson(ADDR_JSON);
  assert.deepEqual(selectInterface(links), {
    name: 'eth0', index: 2, mac: '7a:5c:bd:27:8a:6f', mtu: 1450, kind: 'veth', addresses: ['10.88.77.2/24', 'fd00:77::2/64'],
  });
  // Another veth with an address, not called eth0: taken when eth0 is excluded.
  const renamed = links.map((l) => (l.name === 'eth0' ? { ...l, name: 'net1' } : l));
  assert.equal(selectInterface(renamed).name, 'net1');
  assert.equal(codeOf(() => selectInterface(links, { exclude: ['eth0'] })).code, Code.FAILED_PRECONDITION);
  const r = codeOf(() => selectInterface(links.filter((l) => l.name !== 'eth0')));
  assert.equal(r.code, Code.FAILED_PRECONDITION);
  assert.match(r.message, /no interface with an IP address.*has CNI run/);
  assert.equal(codeOf(() => selectInterface(links, { iface: 'eth9' })).code, Code.NOT_FOUND);
  assert.equal(selectInterface(links, { iface: 'eth0' }).name, 'eth0');
});

test('guest config: the veth\'s MAC, addresses and MTU; routes without the kernel\'s, on the guest NIC', () => {
  const links = parseIpAddrJson(ADDR_JSON);
  const iface = selectInterface(links);
  const net: PodNetwork = {
    netnsPath: '/var/run/netns/x',
    iface,
    routes: [...parseIpRouteJson(ROUTE4_JSON, 4), ...parseIpRouteJson(ROUTE6_JSON, 6)].filter((r) => r.device === 'eth0'),
  };
  assert.deepEqual(guestInterface(net), { name: 'eth0', hwAddr: '7a:5c:bd:27:8a:6f', addresses: ['10.88.77.2/24', 'fd00:77::2/64'], mtu: 1450, up: true });
  assert.deepEqual(guestRoutes(net), [
    { dest: 'default', gateway: '10.88.77.1', device: 'eth0' },
    { dest: '10.96.0.10/32', gateway: '10.88.77.1', device: 'eth0', metric: 5 },
    { dest: 'default', gateway: 'fd00:77::1', device: 'eth0' },
  ]);
  assert.equal(guestRoutes(net, 'ens3')[0]!.device, 'ens3');
});

// -----------------------------------------------------------------------------
// the tcfilter model's commands

const ST = { veth: 'eth0', tap: 'tap0_kata', filterPref: 49 };

test('tcfilter argv: tap, ingress qdiscs, mirred redirect both ways, and their undo', () => {
  const line = (x: ['ip' | 'tc', string[]]) => `${x[0]} ${x[1].join(' ')}`;
  assert.deepEqual((['tap', 'veth-qdisc', 'tap-qdisc', 'veth-filter', 'tap-filter'] as const).map((s) => line(stepArgs(s, ST))), [
    'ip tuntap add dev tap0_kata mode tap',
    'tc qdisc add dev eth0 handle ffff: ingress',
    'tc qdisc add dev tap0_kata handle ffff: ingress',
    'tc filter add dev eth0 parent ffff: pref 49 protocol all u32 match u8 0 0 action mirred egress redirect dev tap0_kata',
    'tc filter add dev tap0_kata parent ffff: pref 49 protocol all u32 match u8 0 0 action mirred egress redirect dev eth0',
  ]);
  assert.deepEqual((['tap', 'veth-qdisc', 'tap-qdisc', 'veth-filter', 'tap-filter'] as const).map((s) => line(undoArgs(s, ST))), [
    'ip link del dev tap0_kata',
    'tc qdisc del dev eth0 ingress',
    'tc qdisc del dev tap0_kata ingress',
    'tc filter del dev eth0 parent ffff: pref 49',
    'tc filter del dev tap0_kata parent ffff: pref 49',
  ]);
  assert.deepEqual(inNetns('/var/run/netns/cni-1', 'tc', ['qdisc', 'show']),
    { cmd: 'nsenter', args: ['--net=/var/run/netns/cni-1', '--', 'tc', 'qdisc', 'show'] });
});

/** A fake netns: answers the listing commands, records the rest, fails what `fail` matches. */
function fakeNetns(opts: { fail?: RegExp; gone?: RegExp; tapExists?: boolean; qdisc?: string } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'net-unit-'));
  const path = join(dir, 'netns');
  writeFileSync(path, '');
  const calls: string[] = [];
  const links = parseIpAddrJson(ADDR_JSON).filter((l) => opts.tapExists || l.name !== 'tap0_kata');
  const addrJson = JSON.stringify(JSON.parse(ADDR_JSON).filter((l: { ifname: string }) => links.some((k) => k.name === l.ifname)));
  const runner: CommandRunner = async (cmd, args) => {
    assert.equal(cmd, 'nsenter');
    assert.equal(args[0], `--net=${path}`);
    assert.equal(args[1], '--');
    const line = args.slice(2).join(' ');
    if (line === 'ip -d -j addr show') return { stdout: addrJson, stderr: '' };
    if (line === 'ip -4 -j route show') return { stdout: ROUTE4_JSON, stderr: '' };
    if (line === 'ip -6 -j route show') return { stdout: ROUTE6_JSON, stderr: '' };
    if (line.startsWith('tc -j qdisc show')) return { stdout: opts.qdisc ?? '[{"kind":"noqueue","handle":"0:","root":true}]', stderr: '' };
    calls.push(line);
    const fail = (stderr: string) => Object.assign(new Error(`Command failed: ${line}`), { stderr });
    if (opts.gone?.test(line)) throw fail('Cannot find device "tap0_kata"');
    if (opts.fail?.test(line)) throw fail('Error: Exclusivity flag on, cannot modify.\nWe have an error talking to the kernel');
    return { stdout: '', stderr: '' };
  };
  return { path, calls, runner, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

test('discover through nsenter: the pod interface and its routes', async () => {
  const f = fakeNetns({ tapExists: true });
  try {
    const net = await discover(f.path, { runner: f.runner });
    assert.equal(net.iface.name, 'eth0');
    assert.equal(net.routes.length, 6, 'routes through eth0 only, both families');
    assert.ok(net.routes.every((r) => r.device === 'eth0'));
    await rejectsWith(discover(join(f.path, 'nope'), { runner: f.runner }), Code.NOT_FOUND, /does not exist/);
    await rejectsWith(discover('relative/path', { runner: f.runner }), Code.INVALID_ARGUMENT, /^netns:/);
  } finally {
    f.cleanup();
  }
});

test('attachTap: the steps in order, each recorded before it runs; detach undoes them last-first, twice', async () => {
  const f = fakeNetns();
  try {
    const iface = { name: 'eth0', mtu: 1450, mac: '7a:5c:bd:27:8a:6f' };
    const progress: string[] = [];
    const st = await attachTap(f.path, iface, 'tap0_kata', { runner: f.runner, onProgress: (s) => progress.push(s.created.join(',')) });
    assert.deepEqual(f.calls, [
      'ip tuntap add dev tap0_kata mode tap',
      'ip link set dev tap0_kata mtu 1450 up',
      'tc qdisc add dev eth0 handle ffff: ingress',
      'tc qdisc add dev tap0_kata handle ffff: ingress',
      'tc filter add dev eth0 parent ffff: pref 49 protocol all u32 match u8 0 0 action mirred egress redirect dev tap0_kata',
      'tc filter add dev tap0_kata parent ffff: pref 49 protocol all u32 match u8 0 0 action mirred egress redirect dev eth0',
    ]);
    assert.deepEqual(progress, ['tap', 'tap,veth-qdisc', 'tap,veth-qdisc,tap-qdisc', 'tap,veth-qdisc,tap-qdisc,veth-filter',
      'tap,veth-qdisc,tap-qdisc,veth-filter,tap-filter', 'tap,veth-qdisc,tap-qdisc,veth-filter,tap-filter']);
    assert.deepEqual(st, {
      version: 1, netnsPath: f.path, veth: 'eth0', tap: 'tap0_kata', mtu: 1450, mac: '7a:5c:bd:27:8a:6f', filterPref: 49,
      created: ['tap', 'veth-qdisc', 'tap-qdisc', 'veth-filter', 'tap-filter'],
    });
    // The record survives JSON (what the caller persists).
    const back = parseTapState(JSON.parse(JSON.stringify(st)));
    f.calls.length = 0;
    const r1 = await detach(back, { runner: f.runner });
    assert.deepEqual(f.calls, [
      'tc filter del dev tap0_kata parent ffff: pref 49',
      'tc filter del dev eth0 parent ffff: pref 49',
      'tc qdisc del dev tap0_kata ingress',
      'tc qdisc del dev eth0 ingress',
      'ip link del dev tap0_kata',
    ]);
    assert.deepEqual(r1, { removed: ['tap-filter', 'veth-filter', 'tap-qdisc', 'veth-qdisc', 'tap'], alreadyGone: [], netnsGone: false });
  } finally {
    f.cleanup();
  }
});

test('detach is idempotent: objects already gone, or the whole namespace gone, are no error', async () => {
  const f = fakeNetns({ gone: /del/ });
  const st: TapState = { version: 1, netnsPath: f.path, veth: 'eth0', tap: 'tap0_kata', mtu: 1500, mac: '', filterPref: 49, created: ['tap', 'veth-qdisc'] };
  try {
    assert.deepEqual(await detach(st, { runner: f.runner }), { removed: [], alreadyGone: ['veth-qdisc', 'tap'], netnsGone: false });
    // nsenter cannot enter any more (the file is no namespace now).
    const gone: CommandRunner = async () => {
      throw Object.assign(new Error('x'), { stderr: "nsenter: reassociate to namespace 'ns/net' failed: Invalid argument" });
    };
    assert.deepEqual(await detach(st, { runner: gone }), { removed: [], alreadyGone: [], netnsGone: true });
  } finally {
    f.cleanup();
  }
  assert.deepEqual(await detach(st, { runner: f.runner }), { removed: [], alreadyGone: [], netnsGone: true }, 'namespace file removed');
  // Any other failure is reported (after trying every step).
  const f2 = fakeNetns({ fail: /del dev eth0/ });
  try {
    await rejectsWith(detach({ ...st, netnsPath: f2.path }, { runner: f2.runner }), Code.FAILED_PRECONDITION, /tc qdisc del dev eth0 ingress: Error: Exclusivity/);
    assert.deepEqual(f2.calls, ['tc qdisc del dev eth0 ingress', 'ip link del dev tap0_kata']);
  } finally {
    f2.cleanup();
  }
});

test('attachTap: a failing step undoes the steps before it; preconditions are checked first', async () => {
  const f = fakeNetns({ fail: /filter add dev tap0_kata/ });
  try {
    const progress: string[] = [];
    await rejectsWith(attachTap(f.path, { name: 'eth0', mtu: 1500, mac: 'aa:bb:cc:dd:ee:ff' }, 'tap0_kata',
      { runner: f.runner, onProgress: (s) => progress.push(s.created.join(',')) }),
    Code.FAILED_PRECONDITION, /attach tap0_kata to eth0 in .*: tc filter add dev tap0_kata .*Exclusivity flag on/);
    assert.equal(f.calls.length, 10);
    assert.deepEqual(f.calls.slice(6), [
      // undo, last first, without the failed step
      'tc filter del dev eth0 parent ffff: pref 49',
      'tc qdisc del dev tap0_kata ingress',
      'tc qdisc del dev eth0 ingress',
      'ip link del dev tap0_kata',
    ]);
    assert.equal(progress.at(-1), '', 'the final record holds nothing to undo');
  } finally {
    f.cleanup();
  }
  const f2 = fakeNetns({ tapExists: true });
  try {
    await rejectsWith(attachTap(f2.path, { name: 'eth0', mtu: 1500, mac: '' }, 'tap0_kata', { runner: f2.runner }), Code.FAILED_PRECONDITION, /already exists/);
    assert.deepEqual(f2.calls, []);
  } finally {
    f2.cleanup();
  }
  const f3 = fakeNetns({ qdisc: '[{"kind":"clsact","handle":"ffff:","parent":"ffff:fff1"}]' });
  try {
    await rejectsWith(attachTap(f3.path, { name: 'eth0', mtu: 1500, mac: '' }, 'tap0_kata', { runner: f3.runner }), Code.FAILED_PRECONDITION, /clsact/);
    await rejectsWith(attachTap(f3.path, { name: 'eth9', mtu: 1500, mac: '' }, 'tap0_kata', { runner: f3.runner }), Code.FAILED_PRECONDITION, /no interface eth9/);
    await rejectsWith(attachTap(f3.path, { name: 'eth0', mtu: 1500, mac: '' }, 'a-tap-name-too-long', { runner: f3.runner }), Code.INVALID_ARGUMENT, /^tapName:/);
    await rejectsWith(attachTap(f3.path, { name: 'eth0', mtu: 20, mac: '' }, 'tap0', { runner: f3.runner }), Code.INVALID_ARGUMENT, /^mtu:/);
    assert.deepEqual(f3.calls, []);
  } finally {
    f3.cleanup();
  }
});

test('parseTapState refuses a record that could make detach delete at random', () => {
  const ok: TapState = { version: 1, netnsPath: '/run/netns/x', veth: 'eth0', tap: 'tap0_kata', mtu: 1500, mac: '', filterPref: 49, created: ['tap'] };
  assert.deepEqual(parseTapState(ok), ok);
  for (const [field, bad] of [
    ['version', { ...ok, version: 2 }], ['netnsPath', { ...ok, netnsPath: 'x' }], ['veth', { ...ok, veth: 'a b' }],
    ['tap', { ...ok, tap: 'eth0' }], ['created', { ...ok, created: ['rm -rf'] }], ['filterPref', { ...ok, filterPref: 0 }],
  ] as const) {
    const r = codeOf(() => parseTapState(bad));
    assert.equal(r.code, Code.INVALID_ARGUMENT, field);
    assert.match(r.message, new RegExp(field), field);
  }
});

// -----------------------------------------------------------------------------
// the VM layer

test('QEMU in a network namespace: nsenter --net=… -- qemu …; the NIC with its MAC and MTU', () => {
  assert.deepEqual(qemuLaunchCommand('qemu-system-x86_64', ['-m', '256M']), { command: 'qemu-system-x86_64', args: ['-m', '256M'] });
  assert.deepEqual(qemuLaunchCommand('qemu-system-x86_64', ['-m', '256M'], '/var/run/netns/cni-1'),
    { command: 'nsenter', args: ['--net=/var/run/netns/cni-1', '--', 'qemu-system-x86_64', '-m', '256M'] });
  const cfg: QemuConfig = {
    machine: 'q35', accel: 'tcg', vcpus: 1, memoryMiB: 256, kernel: '/k', consoleLog: '/d/c.log', qmpSocket: '/d/q.sock',
    devices: [{ kind: 'tap-net', id: 'net0', ifname: 'tap0_kata', mac: '7A:5C:BD:27:8A:6F', mtu: 1450 }],
  };
  const args = buildQemuArgs(cfg);
  const i = args.indexOf('-netdev');
  assert.deepEqual(args.slice(i, i + 4), ['-netdev', 'tap,id=net0,ifname=tap0_kata,script=no,downscript=no',
    '-device', 'virtio-net-pci,netdev=net0,mac=7a:5c:bd:27:8a:6f,host_mtu=1450']);
  const bad = codeOf(() => buildQemuArgs({ ...cfg, devices: [{ kind: 'tap-net', id: 'net0', ifname: 'tap0', mtu: 10 }] }));
  assert.equal(bad.code, Code.INVALID_ARGUMENT);
  assert.match(bad.message, /^devices\[0\]\.mtu:/);
  const base = { sandboxId: 's1', dir: '/tmp/x', accel: 'tcg' as const, vcpus: 1, memoryMiB: 256, kernel: '/k', logger: silentLogger() };
  const r = codeOf(() => new QemuVm({ ...base, netns: 'netns/relative' }));
  assert.equal(r.code, Code.INVALID_ARGUMENT);
  assert.match(r.message, /^netns:/);
  const vm = new QemuVm({ ...base, netns: '/var/run/netns/cni-1' });
  assert.equal(vm.state().netns, '/var/run/netns/cni-1', 'recorded in vm.json');
});

// -----------------------------------------------------------------------------
// the agent side

test('agent: CIDR parsing and normalization', () => {
  assert.deepEqual([parseCidr('10.88.0.2/24', 'f')].map((c) => [c.family, c.address, c.prefix]), [[4, '10.88.0.2', 24]]);
  assert.equal(parseCidr('FD00:0:0:0:0:0:0:2/64', 'f').address, 'fd00::2');
  assert.equal(parseCidr('2001:db8:0:0:1:0:0:1/128', 'f').address, '2001:db8::1:0:0:1');
  assert.equal(parseCidr('::ffff:10.0.0.1/128', 'f').address, '::ffff:a00:1');
  assert.equal(parseCidr('10.0.0.7', 'f', { bareIsHost: true }).prefix, 32);
  assert.ok(isNetwork(parseCidr('10.96.0.0/12', 'f')));
  assert.ok(!isNetwork(parseCidr('10.96.0.1/12', 'f')));
  for (const bad of ['10.88.0.2', '10.88.0.256/24', '10.88.0.2/33', 'fd00::2/129', '10.88.0.2/', 'x/24', 'fe80::1%eth0/64', '10.88.0.2/024x']) {
    assert.equal(codeOf(() => parseCidr(bad, 'addresses[0]')).code, Code.INVALID_ARGUMENT, bad);
  }
});

test('agent: UpdateInterface input checked, the field named', () => {
  const ok: InterfaceRequest = { name: 'eth0', hwAddr: '7A:5C:BD:27:8A:6F', addresses: ['10.88.77.2/24', 'FD00:77::2/64'], mtu: 1450, up: true };
  assert.deepEqual(checkInterface(ok).addresses.map((c) => `${c.address}/${c.prefix}`), ['10.88.77.2/24', 'fd00:77::2/64']);
  assert.equal(checkInterface(ok).hwAddr, '7a:5c:bd:27:8a:6f');
  const cases: Array<[string, InterfaceRequest]> = [
    ['hw_addr', { ...ok, name: '', hwAddr: '' }],
    ['hw_addr', { ...ok, hwAddr: '7a:5c:bd:27:8a' }],
    ['name', { ...ok, name: 'a-name-longer-than-15' }],
    ['name', { ...ok, name: 'lo' }],
    ['mtu', { ...ok, mtu: 67 }],
    ['addresses[1]', { ...ok, addresses: ['10.88.77.2/24', '10.88.77.300/24'] }],
    ['addresses[0]', { ...ok, addresses: ['10.88.77.2'] }],
    ['addresses[0]', { ...ok, addresses: ['127.0.0.1/8'] }],
    ['addresses[0]', { ...ok, addresses: ['10.0.0.1/0'] }],
    ['addresses[1]', { ...ok, addresses: ['10.0.0.1/24', '10.0.0.1/24'] }],
  ];
  for (const [field, req] of cases) {
    const r = codeOf(() => checkInterface(req));
    assert.equal(r.code, Code.INVALID_ARGUMENT, `${field}: ${JSON.stringify(req)}`);
    assert.ok(r.message.startsWith(`${field}:`), r.message);
  }
});

test('agent: UpdateRoutes input checked, the field named; argv; link routes first', () => {
  const routes = checkRoutes([
    { dest: 'default', gateway: '10.88.77.1', device: 'eth0', source: '', scope: '', metric: 0 },
    { dest: '10.88.77.0/24', gateway: '', device: 'eth0', source: '10.88.77.2', scope: 'link', metric: 0 },
    { dest: '::/0', gateway: 'fd00:77::1', device: '', source: '', scope: '', metric: 0 },
    { dest: '10.96.0.10', gateway: '10.88.77.1', device: 'eth0', source: '', scope: '', metric: 5 },
  ]);
  assert.deepEqual(routes.map((r) => routeArgs('replace', r).join(' ')), [
    '-4 route replace default via 10.88.77.1 dev eth0',
    '-4 route replace 10.88.77.0/24 dev eth0 src 10.88.77.2 scope link',
    '-6 route replace default via fd00:77::1',
    '-4 route replace 10.96.0.10/32 via 10.88.77.1 dev eth0 metric 5',
  ]);
  assert.deepEqual(routeArgs('del', routes[3]!), ['-4', 'route', 'del', '10.96.0.10/32', 'dev', 'eth0', 'metric', '5']);
  assert.deepEqual(routeOrder(routes).map((r) => r.gateway ?? '-'), ['-', '10.88.77.1', 'fd00:77::1', '10.88.77.1']);
  assert.deepEqual(addrArgs('add', parseCidr('10.0.0.2/24', 'a'), 'eth0'), ['addr', 'add', '10.0.0.2/24', 'brd', '+', 'dev', 'eth0']);
  assert.deepEqual(addrArgs('add', parseCidr('fd00::2/64', 'a'), 'eth0'), ['addr', 'add', 'fd00::2/64', 'dev', 'eth0']);
  const r0 = { dest: '', gateway: '', device: 'eth0', source: '', scope: '', metric: 0 };
  for (const [field, list] of [
    ['routes[0].dest', [{ ...r0, dest: '10.96.0.1/12' }]],
    ['routes[0].dest', [{ ...r0, dest: '10.96.0.0/40' }]],
    ['routes[0].dest', [{ ...r0, dest: 'fe80::/64' }]],
    ['routes[0].gateway', [{ ...r0, dest: '10.0.0.0/8', gateway: 'fd00::1' }]],
    ['routes[0].gateway', [{ ...r0, gateway: 'not-an-ip' }]],
    ['routes[0].source', [{ ...r0, dest: '10.0.0.0/8', source: 'fd00::1' }]],
    ['routes[0].scope', [{ ...r0, scope: 'nowhere' }]],
    ['routes[0].device', [{ ...r0, device: 'x y' }]],
    ['routes[0]', [{ ...r0, device: '' }]],
    ['routes[1]', [{ ...r0, dest: '10.0.0.0/8' }, { ...r0, dest: '10.0.0.0/8', gateway: '10.1.1.1' }]],
  ] as const) {
    const r = codeOf(() => checkRoutes(list));
    assert.equal(r.code, Code.INVALID_ARGUMENT, `${field} ${JSON.stringify(list)}`);
    assert.ok(r.message.startsWith(`${field}:`) || r.message.startsWith(`${field}.`) || r.message.startsWith(field), r.message);
  }
});

// busybox 1.35's `ip` output, captured in a network namespace.
const BB_ADDR = `1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
1: lo    inet6 ::1/128 scope host \\       valid_lft forever preferred_lft forever
3: eth0    inet 10.1.2.3/24 brd 10.1.2.255 scope global eth0\\       valid_lft forever preferred_lft forever
3: eth0    inet6 fd00::3/64 scope global \\       valid_lft forever preferred_lft forever
3: eth0    inet6 fe80::11:22ff:fe33:4455/64 scope link \\       valid_lft forever preferred_lft forever
`;
const BB_ROUTE4 = `default via 10.1.2.1 dev eth0 
10.1.2.0/24 dev eth0 scope link  src 10.1.2.3 
10.6.0.0/16 via 10.1.2.1 dev eth0  src 10.1.2.3  metric 7 
10.7.0.9 via 10.1.2.1 dev eth0 
10.8.0.0/16 via 10.9.9.9 dev eth0 onlink 
`;
const BB_ROUTE6 = `fd00::/64 dev eth0  metric 256 
fe80::/64 dev eth0  metric 256 
default via fd00::1 dev eth0  metric 1024 
multicast ff00::/8 dev eth0  metric 256 
`;

test('agent: busybox ip output parsed', () => {
  assert.deepEqual(parseAddrLines(BB_ADDR).filter((a) => a.ifname === 'eth0'), [
    { ifname: 'eth0', family: 4, cidr: '10.1.2.3/24', scope: 'global' },
    { ifname: 'eth0', family: 6, cidr: 'fd00::3/64', scope: 'global' },
    { ifname: 'eth0', family: 6, cidr: 'fe80::11:22ff:fe33:4455/64', scope: 'link' },
  ]);
  assert.deepEqual(parseRouteLines(BB_ROUTE4, 4), [
    { dest: 'default', gateway: '10.1.2.1', device: 'eth0', source: '', scope: '', metric: 0 },
    { dest: '10.1.2.0/24', gateway: '', device: 'eth0', source: '10.1.2.3', scope: 'link', metric: 0 },
    { dest: '10.6.0.0/16', gateway: '10.1.2.1', device: 'eth0', source: '10.1.2.3', scope: '', metric: 7 },
    { dest: '10.7.0.9/32', gateway: '10.1.2.1', device: 'eth0', source: '', scope: '', metric: 0 },
    { dest: '10.8.0.0/16', gateway: '10.9.9.9', device: 'eth0', source: '', scope: '', metric: 0 },
  ]);
  assert.deepEqual(parseRouteLines(BB_ROUTE6, 6).map((r) => `${r.dest} ${r.gateway} ${r.metric}`),
    ['fd00::/64  256', 'fe80::/64  256', 'default fd00::1 1024']);
});

test('agent: command failures become statuses with the context', () => {
  const fail = (stderr: string) => Object.assign(new Error('Command failed'), { stderr });
  const cases: Array<[string, Code]> = [
    ["ip: can't find device 'eth9'", Code.NOT_FOUND],
    ['ip: RTNETLINK answers: Network is unreachable', Code.FAILED_PRECONDITION],
    ['ip: SIOCSIFNAME: File exists', Code.ALREADY_EXISTS],
    ['ip: something else', Code.INTERNAL],
  ];
  for (const [stderr, code] of cases) {
    const e = commandError(fail(stderr), 'routes[2] (default via 10.9.9.9)', 'ip -4 route replace default via 10.9.9.9', 1000);
    assert.equal(Code[e.code], Code[code], stderr);
    assert.match(e.message, /^routes\[2\] \(default via 10\.9\.9\.9\): ip -4 route replace/);
  }
  assert.equal(commandError(Object.assign(new Error('x'), { killed: true }), 'w', 'ip', 5).code, Code.DEADLINE_EXCEEDED);
});

/** A fake guest: /sys/class/net in a temp dir, `ip` answered from a tiny model. */
function fakeGuest() {
  const sys = mkdtempSync(join(tmpdir(), 'sysnet-'));
  const nic = (name: string, mac: string, flags = '0x1002') => {
    mkdirSync(join(sys, name), { recursive: true });
    writeFileSync(join(sys, name, 'address'), `${mac}\n`);
    writeFileSync(join(sys, name, 'mtu'), '1500\n');
    writeFileSync(join(sys, name, 'flags'), `${flags}\n`);
  };
  nic('lo', '00:00:00:00:00:00', '0x9');
  nic('eth0', '52:54:00:12:34:56');
  const addrs: Record<string, string[]> = { eth0: ['10.9.9.9/8'] };
  const calls: string[] = [];
  const run: NetCommandRunner = async (cmd, args) => {
    assert.equal(cmd, 'ip');
    const line = args.join(' ');
    if (line.startsWith('-o addr show')) {
      const out = Object.entries(addrs).flatMap(([n, list]) => list.map((a) => `3: ${n}    ${a.includes(':') ? 'inet6' : 'inet'} ${a} scope global ${n}\\  valid_lft forever`));
      return { stdout: out.join('\n') + '\n', stderr: '' };
    }
    if (line === '-4 route show') return { stdout: BB_ROUTE4, stderr: '' };
    if (line === '-6 route show') return { stdout: '', stderr: '' };
    calls.push(line);
    const m = /^link set dev (\S+) name (\S+)$/.exec(line);
    if (m) {
      rmSync(join(sys, m[2]!), { recursive: true, force: true });
      nic(m[2]!, '52:54:00:12:34:56');
      rmSync(join(sys, m[1]!), { recursive: true });
      addrs[m[2]!] = addrs[m[1]!] ?? [];
      delete addrs[m[1]!];
    }
    const mtu = /^link set dev (\S+) mtu (\d+)$/.exec(line);
    if (mtu) writeFileSync(join(sys, mtu[1]!, 'mtu'), `${mtu[2]}\n`);
    const up = /^link set dev (\S+) (up|down)$/.exec(line);
    if (up) writeFileSync(join(sys, up[1]!, 'flags'), up[2] === 'up' ? '0x1003\n' : '0x1002\n');
    const add = /^addr add (\S+) .*dev (\S+)$/.exec(line);
    if (add) (addrs[add[2]!] ??= []).push(add[1]!);
    const del = /^addr del (\S+) dev (\S+)$/.exec(line);
    if (del) addrs[del[2]!] = (addrs[del[2]!] ?? []).filter((a) => a !== del[1]);
    if (/via 10\.200\./.test(line)) throw Object.assign(new Error('failed'), { stderr: 'ip: RTNETLINK answers: Network is unreachable' });
    return { stdout: '', stderr: '' };
  };
  const net = new Network({ logger: silentLogger(), run, sysClassNet: sys });
  return { net, calls, sys, cleanup: () => rmSync(sys, { recursive: true, force: true }) };
}

test('agent: UpdateInterface finds the NIC by MAC, renames it, sets MTU and exactly the addresses, up', async () => {
  const g = fakeGuest();
  try {
    const info = await g.net.updateInterface(checkInterface({ name: 'pod0', hwAddr: '52:54:00:12:34:56', addresses: ['10.88.1.2/24', 'fd00::2/64'], mtu: 1450, up: true }));
    assert.deepEqual(g.calls, [
      'link set dev eth0 down',
      'link set dev eth0 name pod0',
      'link set dev pod0 mtu 1450',
      'addr del 10.9.9.9/8 dev pod0',
      'addr add 10.88.1.2/24 brd + dev pod0',
      'addr add fd00::2/64 dev pod0',
      'link set dev pod0 up',
    ]);
    assert.deepEqual(info, { name: 'pod0', hwAddr: '52:54:00:12:34:56', addresses: ['10.88.1.2/24', 'fd00::2/64'], mtu: 1450, up: true });
    // Again: nothing to change but the link state.
    g.calls.length = 0;
    await g.net.updateInterface(checkInterface({ name: 'pod0', hwAddr: '52:54:00:12:34:56', addresses: ['10.88.1.2/24', 'fd00::2/64'], mtu: 0, up: true }));
    assert.deepEqual(g.calls, [], 'already so: no command at all');
    // Down, and lo down too (a fresh guest has it up: the init does that).
    writeFileSync(join(g.sys, 'lo', 'flags'), '0x8\n');
    await g.net.updateInterface(checkInterface({ name: 'pod0', hwAddr: '', addresses: ['10.88.1.2/24', 'fd00::2/64'], mtu: 1450, up: false }));
    assert.deepEqual(g.calls, ['link set dev lo up', 'link set dev pod0 down']);
    g.calls.length = 0;
    await g.net.updateInterface(checkInterface({ name: 'pod0', hwAddr: '', addresses: ['10.88.1.2/24', 'fd00::2/64'], mtu: 1450, up: true }));
    await rejectsWith(g.net.updateInterface(checkInterface({ name: '', hwAddr: '02:00:00:00:00:99', addresses: [], mtu: 0, up: true })),
      Code.NOT_FOUND, /^hw_addr: no interface has MAC 02:00:00:00:00:99/);
    await rejectsWith(g.net.updateInterface(checkInterface({ name: 'eth5', hwAddr: '', addresses: [], mtu: 0, up: true })), Code.NOT_FOUND, /^name:/);
    assert.deepEqual((await g.net.listInterfaces()).map((i) => i.name), ['pod0']);
  } finally {
    g.cleanup();
  }
});

test('agent: UpdateRoutes replaces, then deletes what an earlier call added and this one does not list', async () => {
  const g = fakeGuest();
  try {
    const r = (dest: string, gateway: string, metric = 0) => ({ dest, gateway, device: 'eth0', source: '', scope: '', metric });
    const routes = await g.net.updateRoutes(checkRoutes([r('default', '10.1.2.1'), r('10.5.0.0/16', ''), r('10.6.0.0/16', '10.1.2.1', 7)]));
    assert.deepEqual(g.calls, [
      '-4 route replace 10.5.0.0/16 dev eth0',
      '-4 route replace default via 10.1.2.1 dev eth0',
      '-4 route replace 10.6.0.0/16 via 10.1.2.1 dev eth0 metric 7',
    ]);
    assert.equal(routes.length, 5, 'answers with the table as listed');
    g.calls.length = 0;
    await g.net.updateRoutes(checkRoutes([r('default', '10.1.2.254')]));
    assert.deepEqual(g.calls, [
      '-4 route replace default via 10.1.2.254 dev eth0',
      '-4 route del 10.5.0.0/16 dev eth0',
      '-4 route del 10.6.0.0/16 dev eth0 metric 7',
    ]);
    g.calls.length = 0;
    await rejectsWith(g.net.updateRoutes(checkRoutes([r('10.7.0.0/16', '10.200.0.1')])), Code.FAILED_PRECONDITION,
      /^routes\[0\] \(10\.7\.0\.0\/16 via 10\.200\.0\.1 dev eth0\): ip -4 route replace .*Network is unreachable/);
    assert.deepEqual(g.calls, ['-4 route replace 10.7.0.0/16 via 10.200.0.1 dev eth0'], 'a failure deletes nothing');
  } finally {
    g.cleanup();
  }
});

/**
 * A guest restored from a VM template: its NIC is a device-backed eth0 with
 * the template's MAC (02:00:00:00:7e:01), not the pod's; `veth0` is a virtual
 * link (no `device` in sysfs). `ip` updates the fake sysfs as it goes.
 */
function fakeClone() {
  const sys = mkdtempSync(join(tmpdir(), 'sysnet-clone-'));
  const nic = (name: string, mac: string, flags: string, device: boolean) => {
    mkdirSync(join(sys, name), { recursive: true });
    if (device) mkdirSync(join(sys, name, 'device'));
    writeFileSync(join(sys, name, 'address'), `${mac}\n`);
    writeFileSync(join(sys, name, 'mtu'), '1500\n');
    writeFileSync(join(sys, name, 'flags'), `${flags}\n`);
  };
  nic('lo', '00:00:00:00:00:00', '0x9', false);
  nic('eth0', '02:00:00:00:7e:01', '0x1003', true);
  nic('veth0', '02:00:00:00:7e:02', '0x1002', false);
  const addrs: Record<string, string[]> = {};
  const calls: string[] = [];
  const run: NetCommandRunner = async (cmd, args) => {
    assert.equal(cmd, 'ip');
    const line = args.join(' ');
    if (line.startsWith('-o addr show')) {
      const out = Object.entries(addrs).flatMap(([n, list]) => list.map((a) => `3: ${n}    inet ${a} scope global ${n}\\  valid_lft forever`));
      return { stdout: out.join('\n') + '\n', stderr: '' };
    }
    calls.push(line);
    const mac = /^link set dev (\S+) address (\S+)$/.exec(line);
    if (mac) writeFileSync(join(sys, mac[1]!, 'address'), `${mac[2]}\n`);
    const mtu = /^link set dev (\S+) mtu (\d+)$/.exec(line);
    if (mtu) writeFileSync(join(sys, mtu[1]!, 'mtu'), `${mtu[2]}\n`);
    const up = /^link set dev (\S+) (up|down)$/.exec(line);
    if (up) writeFileSync(join(sys, up[1]!, 'flags'), up[2] === 'up' ? '0x1003\n' : '0x1002\n');
    const add = /^addr add (\S+) .*dev (\S+)$/.exec(line);
    if (add) (addrs[add[2]!] ??= []).push(add[1]!);
    return { stdout: '', stderr: '' };
  };
  const net = new Network({ logger: silentLogger(), run, sysClassNet: sys });
  return { net, calls, sys, cleanup: () => rmSync(sys, { recursive: true, force: true }) };
}

test('agent: UpdateInterface on a clone: no NIC has the MAC, the device-backed NIC of that name gets it', async () => {
  const g = fakeClone();
  try {
    const info = await g.net.updateInterface(checkInterface({ name: 'eth0', hwAddr: '7A:5C:BD:27:8A:6F', addresses: ['10.88.77.2/24'], mtu: 1450, up: true }));
    assert.deepEqual(g.calls, [
      'link set dev eth0 down',
      'link set dev eth0 address 7a:5c:bd:27:8a:6f',
      'link set dev eth0 mtu 1450',
      'addr add 10.88.77.2/24 brd + dev eth0',
      'link set dev eth0 up',
    ]);
    assert.deepEqual(info, { name: 'eth0', hwAddr: '7a:5c:bd:27:8a:6f', addresses: ['10.88.77.2/24'], mtu: 1450, up: true });
    // Now found by its MAC: nothing left to do.
    g.calls.length = 0;
    await g.net.updateInterface(checkInterface({ name: 'eth0', hwAddr: '7a:5c:bd:27:8a:6f', addresses: ['10.88.77.2/24'], mtu: 1450, up: true }));
    assert.deepEqual(g.calls, []);
  } finally {
    g.cleanup();
  }
});

test('agent: UpdateInterface on a clone: neither the MAC nor a device-backed NIC of that name is NOT_FOUND naming both', async () => {
  const g = fakeClone();
  try {
    const req = (name: string) => checkInterface({ name, hwAddr: '7a:5c:bd:27:8a:6f', addresses: [], mtu: 0, up: true });
    await rejectsWith(g.net.updateInterface(req('pod0')), Code.NOT_FOUND, /^hw_addr: no interface has MAC 7a:5c:bd:27:8a:6f and no NIC is named pod0/);
    // veth0 exists but is virtual (no device): not taken for the pod's NIC.
    await rejectsWith(g.net.updateInterface(req('veth0')), Code.NOT_FOUND, /^hw_addr: no interface has MAC 7a:5c:bd:27:8a:6f and no NIC is named veth0/);
    // No name asked for: only the MAC is named.
    await rejectsWith(g.net.updateInterface(req('')), Code.NOT_FOUND, /^hw_addr: no interface has MAC 7a:5c:bd:27:8a:6f$/);
    assert.deepEqual(g.calls, [], 'nothing changed');
  } finally {
    g.cleanup();
  }
});
