/**
 * Pod networking into the VM (issue #6, item 4), entirely inside network
 * namespaces this test makes (never the machine's own network):
 *
 *   client netns  veth-c 10.88.R.1/24 ──veth── eth0 10.88.R.2/24  pod netns   (what CNI would make)
 *                                                │ tc ingress + mirred both ways
 *                                            tap0_kata ── QEMU (nsenter --net=pod) ── guest eth0 10.88.R.2/24
 *
 * discover → attachTap → SandboxVm.start({ netns, network }) → the agent
 * configures the guest NIC and routes → ping and an HTTP fetch from the
 * client namespace reach the guest (and the guest reaches the client) →
 * bad input → stop, detach: no VM, tap, qdisc or filter left, namespaces gone.
 * ONE VM (a boot costs ~9 s under TCG here).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Code } from '../../src/errors/index.js';
import { createLogger, silentLogger } from '../../src/log/index.js';
import { attachTap, detach, discover, guestInterface, guestRoutes, parseTapState, type TapState } from '../../src/network/index.js';
import { SandboxVm } from '../../src/sandbox/index.js';
import { cleanupFromState, isAlive, mountsUnder, type VmState } from '../../src/vm/index.js';
import { readAll } from '../harness/agent.js';
import { runtimeSpec, writeBusyboxRootfs } from '../harness/busybox.js';
import { expectCode } from '../harness/status.js';
import { guestImage } from '../harness/guest.js';
import { skipUnlessCi } from '../harness/skip.js';
import { pidsMentioning } from '../harness/containerd.js';

const has = (cmd: string, args: string[]) => spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;
const canRun = process.getuid?.() === 0 && existsSync('/usr/lib/qemu/virtiofsd') && existsSync('/dev/net/tun') &&
  has('qemu-system-x86_64', ['--version']) && has('ip', ['-V']) && has('tc', ['-V']) && has('nsenter', ['--version']);
const skip = skipUnlessCi(canRun, 'needs root, /dev/net/tun, qemu-system-x86_64, virtiofsd, iproute2 and nsenter');


/** Runs a command (bounded: SIGKILL after `timeoutMs`); its status and output. */
function sh(cmd: string, args: string[], timeoutMs = 20_000): { status: number | null; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL' });
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

function must(cmd: string, ...args: string[]): string {
  const r = sh(cmd, args);
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.out}`);
  return r.out;
}

test('pod networking: tap + tc mirred in the pod netns, QEMU inside it, the guest NIC configured by the agent, traffic both ways, nothing left', { skip, timeout: 600_000 }, async (t) => {
  const image = guestImage();
  const tag = randomBytes(3).toString('hex');
  const podNs = `kata-t-${tag}`;
  const clientNs = `kata-t-${tag}-c`;
  const podPath = `/var/run/netns/${podNs}`;
  const R = randomInt(1, 255);
  const podIp = `10.88.${R}.2`;
  const clientIp = `10.88.${R}.1`;
  const root = mkdtempSync(join(tmpdir(), 'network-vm-'));
  let sb: SandboxVm | undefined;
  let recorded: VmState | undefined;
  let tapState: TapState | undefined;
  const stateFile = join(root, 'network.json');

  // Last-resort cleanup, in order: console tail on failure, the VM, its
  // recorded pids, the tap (from the persisted record), the namespaces, the dir.
  t.after(async () => {
    if (sb) {
      if (process.exitCode && existsSync(sb.vm.consoleLogPath)) {
        process.stderr.write(`guest console tail:\n${readFileSync(sb.vm.consoleLogPath, 'utf8').slice(-6000)}\n`);
      }
      await sb.stop().catch((err: unknown) => process.stderr.write(`sandbox stop: ${String(err)}\n`));
    }
    if (recorded) await cleanupFromState(recorded, { logger: silentLogger() }).catch(() => {});
    if (existsSync(stateFile)) await detach(parseTapState(JSON.parse(readFileSync(stateFile, 'utf8')))).catch(() => {});
    for (const ns of [podNs, clientNs]) sh('ip', ['netns', 'del', ns]);
    if (mountsUnder(root).length === 0) rmSync(root, { recursive: true, force: true });
  });

  // What CNI would make: the pod's namespace with eth0 (a veth), its address and default route.
  must('ip', 'netns', 'add', podNs);
  must('ip', 'netns', 'add', clientNs);
  must('ip', '-n', podNs, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'veth-c', 'netns', clientNs);
  must('ip', '-n', podNs, 'addr', 'add', `${podIp}/24`, 'dev', 'eth0');
  must('ip', '-n', podNs, 'link', 'set', 'eth0', 'up');
  must('ip', '-n', podNs, 'link', 'set', 'lo', 'up');
  must('ip', '-n', podNs, 'route', 'add', 'default', 'via', clientIp);
  must('ip', '-n', clientNs, 'addr', 'add', `${clientIp}/24`, 'dev', 'veth-c');
  must('ip', '-n', clientNs, 'link', 'set', 'veth-c', 'up');
  must('ip', '-n', clientNs, 'link', 'set', 'lo', 'up');

  const debug = process.env.NETWORK_VM_TEST_DEBUG === '1';
  const logger = debug ? createLogger({ name: 'network-vm-test' }) : silentLogger();
  const timings: Record<string, number> = {};
  const timed = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const t0 = Date.now();
    try {
      return await fn();
    } finally {
      timings[name] = Date.now() - t0;
    }
  };

  const net = await timed('discover', () => discover(podPath));
  await t.test('discover finds the veth, its MAC, MTU, address and routes', () => {
    assert.equal(net.iface.name, 'eth0');
    assert.equal(net.iface.kind, 'veth');
    assert.equal(net.iface.mtu, 1500);
    assert.deepEqual(net.iface.addresses, [`${podIp}/24`]);
    const link = JSON.parse(must('ip', '-n', podNs, '-j', 'link', 'show', 'eth0')) as Array<{ address: string }>;
    assert.equal(net.iface.mac, link[0]!.address);
    assert.deepEqual(guestRoutes(net), [{ dest: 'default', gateway: clientIp, device: 'eth0' }], 'the kernel\'s subnet route is left to the guest kernel');
  });

  tapState = await timed('attachTap', () => attachTap(podPath, net.iface, 'tap0_kata', {
    logger,
    onProgress: (s) => writeFileSync(stateFile, JSON.stringify(s)),
  }));
  await t.test('attachTap: the tap and the redirect filters both ways, recorded', () => {
    assert.deepEqual(tapState!.created, ['tap', 'veth-qdisc', 'tap-qdisc', 'veth-filter', 'tap-filter']);
    assert.deepEqual(JSON.parse(readFileSync(stateFile, 'utf8')), tapState, 'the persisted record is the final one');
    assert.match(must('ip', '-n', podNs, '-d', 'link', 'show', 'tap0_kata'), /tun type tap/);
    assert.match(must('ip', '-n', podNs, 'link', 'show', 'tap0_kata'), /mtu 1500/);
    assert.match(must('tc', '-n', podNs, 'filter', 'show', 'dev', 'eth0', 'ingress'), /mirred \(Egress Redirect to device tap0_kata\)/);
    assert.match(must('tc', '-n', podNs, 'filter', 'show', 'dev', 'tap0_kata', 'ingress'), /mirred \(Egress Redirect to device eth0\)/);
  });

  const t0 = Date.now();
  sb = await SandboxVm.start({
    sandboxId: 'net-e2e', dir: join(root, 'sb'), image, logger, readyTimeoutMs: 120_000,
    netns: podPath, network: { tapName: 'tap0_kata', mac: net.iface.mac, mtu: net.iface.mtu },
  });
  timings['boot'] = Date.now() - t0;
  recorded = sb.vm.state();
  const c = sb.agent;

  await t.test('QEMU runs in the pod\'s network namespace (nsenter exec\'d it: same pid)', () => {
    const pid = sb!.vm.pid!;
    assert.ok(isAlive(recorded!.qemu!));
    assert.equal(readlinkSync(`/proc/${pid}/ns/net`), `net:[${statSync(podPath).ino}]`);
    assert.match(readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0]!, /qemu-system-x86_64$/);
    assert.equal(recorded!.netns, podPath);
    // The agent's unix socket (not netns-bound) works: the agent answered already.
    assert.match(must('ip', '-n', podNs, 'link', 'show', 'tap0_kata'), /state UP/, 'QEMU holds the tap: carrier up');
  });

  await t.test('the agent configures the guest NIC (found by the veth\'s MAC) and the routes', async () => {
    const before = await c.listInterfaces();
    assert.equal(before.length, 1, JSON.stringify(before));
    assert.equal(before[0]!.hwAddr, net.iface.mac, 'QEMU gave the guest NIC the veth\'s MAC');
    const iface = await timed('updateInterface', () => c.updateInterface(guestInterface(net)));
    assert.deepEqual(iface, { name: 'eth0', hwAddr: net.iface.mac, addresses: [`${podIp}/24`], mtu: 1500, up: true });
    const routes = await timed('updateRoutes', () => c.updateRoutes(guestRoutes(net)));
    assert.ok(routes.some((r) => r.dest === 'default' && r.gateway === clientIp && r.device === 'eth0'), JSON.stringify(routes));
    assert.ok(routes.some((r) => r.dest === `10.88.${R}.0/24` && r.device === 'eth0'), JSON.stringify(routes));
    assert.deepEqual(await c.listRoutes(), routes);
  });

  let rtt = '';
  await t.test('ping from the client namespace reaches the guest', () => {
    const r = sh('ip', ['netns', 'exec', clientNs, 'busybox', 'ping', '-c', '3', '-W', '2', podIp], 30_000);
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /3 packets transmitted, 3 packets received/);
    rtt = /round-trip min\/avg\/max = ([\d./]+) ms/.exec(r.out)?.[1] ?? '';
    // Who answered: the guest (its MAC is the veth's), not the pod namespace's stack.
    assert.match(must('ip', '-n', clientNs, 'neigh', 'show', podIp), new RegExp(net.iface.mac));
  });

  await t.test('HTTP: busybox httpd in a guest container, fetched from the client namespace; the guest pings the client', async () => {
    const id = 'httpd';
    const rootfs = sb!.rootfsHostPath(id);
    await writeBusyboxRootfs(rootfs);
    const token = `hello-from-the-guest-${randomBytes(6).toString('hex')}`;
    mkdirSync(join(rootfs, 'www'), { recursive: true });
    writeFileSync(join(rootfs, 'www', 'index.html'), `${token}\n`);
    const spec = runtimeSpec({ args: ['httpd', '-f', '-p', '8080', '-h', '/www'] });
    // The container shares the guest's network (as the shim's guest spec does).
    spec['linux'].namespaces = spec['linux'].namespaces.filter((n: { type: string }) => n.type !== 'network');
    await c.createContainer({ containerId: id, spec, rootfsPath: sb!.rootfsGuestPath(id) });
    await c.startContainer({ containerId: id });
    let got = '';
    const deadline = Date.now() + 30_000;
    let tries = 0;
    while (Date.now() < deadline) {
      tries++;
      // busybox 1.35's wget -T segfaults: each try is bounded by timeout(1).
      const r = sh('timeout', ['-s', 'KILL', '10', 'ip', 'netns', 'exec', clientNs, 'busybox', 'wget', '-q', '-O', '-', `http://${podIp}:8080/`], 15_000);
      if (r.status === 0) {
        got = r.out;
        break;
      }
      await sleep(200);
    }
    assert.equal(got, `${token}\n`, `after ${tries} tries`);

    // The other way: a container pings the client through the guest's route.
    const pid = 'pinger';
    await writeBusyboxRootfs(sb!.rootfsHostPath(pid));
    const ps = runtimeSpec({ args: ['ping', '-c', '2', '-W', '3', clientIp] });
    ps['linux'].namespaces = ps['linux'].namespaces.filter((n: { type: string }) => n.type !== 'network');
    for (const set of ['bounding', 'effective', 'permitted']) ps['process'].capabilities[set].push('CAP_NET_RAW');
    await c.createContainer({ containerId: pid, spec: ps, rootfsPath: sb!.rootfsGuestPath(pid) });
    await c.startContainer({ containerId: pid });
    const [out, exit] = await Promise.all([
      readAll(c, { containerId: pid }, 'stdout', 30_000),
      c.waitProcess({ containerId: pid }, { timeoutMs: 30_000 }),
    ]);
    assert.equal(exit.exitStatus, 0, out.toString());
    assert.match(out.toString(), /2 packets transmitted, 2 packets received/);
    await c.signalProcess({ containerId: id, signal: 'SIGKILL' });
    await c.waitProcess({ containerId: id }, { timeoutMs: 30_000 });
    for (const x of [id, pid]) await c.removeContainer({ containerId: x });
  });

  await t.test('bad input: unknown MAC → NOT_FOUND, bad CIDR or route → INVALID_ARGUMENT naming the field', async () => {
    await expectCode(c.updateInterface({ hwAddr: '02:00:00:00:00:01', addresses: [] }), Code.NOT_FOUND, /hw_addr: no interface has MAC 02:00:00:00:00:01/);
    await expectCode(c.updateInterface({ hwAddr: net.iface.mac, addresses: [`10.88.${R}.300/24`] }), Code.INVALID_ARGUMENT, /^addresses\[0\]:/);
    await expectCode(c.updateInterface({ hwAddr: net.iface.mac, addresses: [`${podIp}/24`, '10.1.1.1'] }), Code.INVALID_ARGUMENT, /^addresses\[1\]: .*CIDR/);
    await expectCode(c.updateInterface({ hwAddr: 'zz:zz', addresses: [] }), Code.INVALID_ARGUMENT, /^hw_addr:/);
    await expectCode(c.updateRoutes([{ dest: '10.96.0.1/12', device: 'eth0' }]), Code.INVALID_ARGUMENT, /^routes\[0\]\.dest: .*host bits/);
    await expectCode(c.updateRoutes([{ dest: 'default', gateway: 'fd00::1', device: 'eth0' }, { dest: '10.0.0.0/8', gateway: 'fd00::1' }]),
      Code.INVALID_ARGUMENT, /^routes\[1\]\.gateway:/);
    await expectCode(c.updateRoutes([{ dest: '10.77.0.0/16', gateway: '10.200.0.1', device: 'eth0' }]), Code.FAILED_PRECONDITION, /Network is unreachable/);
    // None of it changed the guest: the default route is still there, traffic still flows.
    assert.ok((await c.listRoutes()).some((r) => r.dest === 'default' && r.gateway === clientIp));
    const r = sh('ip', ['netns', 'exec', clientNs, 'busybox', 'ping', '-c', '1', '-W', '2', podIp], 15_000);
    assert.equal(r.status, 0, r.out);
  });

  await t.test('stop: the VM, then detach — no QEMU, tap, qdisc or filter left; the namespaces go', async () => {
    const q = recorded!.qemu!;
    await timed('stop', () => sb!.stop());
    assert.ok(!isAlive(q), 'qemu gone');
    const report = await timed('detach', () => detach(tapState!));
    assert.deepEqual(report.removed, ['tap-filter', 'veth-filter', 'tap-qdisc', 'veth-qdisc', 'tap']);
    writeFileSync(stateFile, JSON.stringify({ ...tapState!, created: [] }));
    assert.doesNotMatch(must('ip', '-n', podNs, 'link', 'show'), /tap0_kata/);
    assert.doesNotMatch(must('tc', '-n', podNs, 'qdisc', 'show', 'dev', 'eth0'), /ingress/);
    assert.equal(must('tc', '-n', podNs, 'filter', 'show', 'dev', 'eth0', 'ingress').trim(), '');
    assert.deepEqual((await detach(tapState!)).removed, [], 'again: nothing to do');
    // The veth is as CNI left it: address and route (CNI DEL removes it).
    assert.match(must('ip', '-n', podNs, 'addr', 'show', 'eth0'), new RegExp(`inet ${podIp.replace(/\./g, '\\.')}/24`));
    for (const ns of [podNs, clientNs]) must('ip', 'netns', 'del', ns);
    assert.doesNotMatch(must('ip', 'netns', 'list'), new RegExp(`kata-t-${tag}`));
    assert.deepEqual(await detach(tapState!), { removed: [], alreadyGone: [], netnsGone: true });
    assert.ok(!existsSync(join(root, 'sb')), 'sandbox dir removed');
    assert.deepEqual(pidsMentioning(root), [], 'no QEMU or virtiofsd of the pod left');
    assert.deepEqual(mountsUnder(root), [], 'no mount left under the test dir');
    sb = undefined;
  });

  await t.test('a pod netns that does not exist: FAILED_PRECONDITION before QEMU starts, nothing left', async () => {
    const dir = join(root, 'sb-missing');
    await expectCode(SandboxVm.start({
      sandboxId: 'net-missing', dir, image, logger, netns: `/var/run/netns/kata-t-${tag}-none`,
      network: { tapName: 'tap0_kata', mac: net.iface.mac },
    }), Code.FAILED_PRECONDITION, /netns: .*no such network namespace/);
    assert.ok(!existsSync(dir), 'sandbox dir removed');
    // Nothing else either: no process naming the dir (QEMU, virtiofsd), no mount under it.
    assert.deepEqual(pidsMentioning(dir), [], 'no QEMU or virtiofsd of the refused sandbox');
    assert.deepEqual(mountsUnder(dir), [], 'no mount under the refused sandbox dir');
  });

  t.diagnostic(`measured: discover ${timings['discover']} ms, attachTap ${timings['attachTap']} ms, boot → agent ready + share ${timings['boot']} ms, ` +
    `updateInterface ${timings['updateInterface']} ms, updateRoutes ${timings['updateRoutes']} ms, ping rtt min/avg/max ${rtt} ms, ` +
    `stop ${timings['stop']} ms, detach ${timings['detach']} ms`);
});
