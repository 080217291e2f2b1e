/**
 * VM templates at the sandbox layer (src/factory + SandboxVm, real QEMU,
 * real guest, no containerd): one TemplateFactory whose template_path is
 * under a temp dir.
 *
 * - First use by two pods at once makes ONE template; both pods are clones.
 * - Clones are not twins: /dev/urandom, the wall clock (the host's within a
 *   second), hostname, MAC and machine id are each pod's own.
 * - Failures cost speed, never a pod: a state file that is not the
 *   template's, a truncated memory file, a template_path on a full file
 *   system → the pod boots cold, one warning names the cause, and the
 *   failure is recorded for `factory status`.
 * - destroyTemplates (`factory destroy`) removes everything; nothing of any
 *   VM is left (processes, mounts, taps).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AgentClient } from '../../src/agent-client/index.js';
import { destroyTemplates, listTemplates, TemplateFactory, type VmOrigin } from '../../src/factory/index.js';
import { createLogger } from '../../src/log/index.js';
import { podMachineId, SandboxVm, warmUpGuest, type SandboxVmOptions } from '../../src/sandbox/index.js';
import { mountsUnder } from '../../src/vm/index.js';
import { readAll } from '../harness/agent.js';
import { runtimeSpec, writeBusyboxRootfs } from '../harness/busybox.js';
import { pidsMentioning } from '../harness/containerd.js';
import { guestImage } from '../harness/guest.js';
import { skipUnlessCi } from '../harness/skip.js';

const canRun = process.getuid?.() === 0 && existsSync('/dev/net/tun') &&
  spawnSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' }).status === 0;
const skip = skipUnlessCi(canRun, 'needs root, /dev/net/tun and qemu-system-x86_64');

function sh(cmd: string, ...args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 20_000, killSignal: 'SIGKILL' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** Log lines of the factory and the sandboxes, as JSON objects. */
class LogLines extends Writable {
  readonly lines: Array<Record<string, unknown>> = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    for (const l of chunk.toString().split('\n')) if (l.trim()) this.lines.push(JSON.parse(l) as Record<string, unknown>);
    cb();
  }
  count(msg: RegExp): number {
    return this.lines.filter((l) => msg.test(String(l['msg']))).length;
  }
}

test('VM templates: one build on first use, clones that are not twins, failures boot cold, destroy leaves nothing', { skip, timeout: 900_000 }, async (t) => {
  const image = guestImage();
  const root = mkdtempSync(join(tmpdir(), 'templates-vm-'));
  const templates = join(root, 'templates');
  const tag = randomBytes(3).toString('hex');
  const taps = [`kt${tag}a`, `kt${tag}b`];
  const running: SandboxVm[] = [];
  const fullFs = join(root, 'full');
  t.after(async () => {
    for (const s of running) await s.stop().catch(() => {});
    for (const tap of taps) spawnSync('ip', ['link', 'del', tap], { stdio: 'ignore' });
    if (existsSync(fullFs)) spawnSync('umount', [fullFs], { stdio: 'ignore' });
    if (mountsUnder(root).length === 0) rmSync(root, { recursive: true, force: true });
  });
  for (const tap of taps) sh('ip', 'tuntap', 'add', 'dev', tap, 'mode', 'tap');

  const log = new LogLines();
  const logger = createLogger({ name: 'templates-vm-test', destination: log });
  let warmUps = 0;
  const factory = new TemplateFactory({ root: templates, logger, warmUp: (...a) => { warmUps++; return warmUpGuest(...a); } });
  const origins = new Map<string, VmOrigin>();

  const start = (id: string, extra: Partial<SandboxVmOptions> = {}, f = factory): Promise<SandboxVm> =>
    SandboxVm.start({
      sandboxId: id, dir: join(root, id), image, logger, accel: 'tcg', sharedFs: 'virtio-9p', readyTimeoutMs: 120_000,
      vmSource: (boot) => f.provider(boot, (o) => origins.set(id, o)),
      ...extra,
    }).then((s) => {
      running.push(s);
      return s;
    });
  const stop = async (s: SandboxVm): Promise<void> => {
    await s.stop();
    running.splice(running.indexOf(s), 1);
  };

  /** Runs `args` in a container that shares the guest's UTS and network namespaces and sees its machine id. */
  const inGuest = async (s: SandboxVm, id: string, args: string[], shareGuestPids = false): Promise<string> => {
    const c: AgentClient = s.agent;
    await writeBusyboxRootfs(s.rootfsHostPath(id));
    const spec = runtimeSpec({ args });
    spec.linux!.namespaces = spec.linux!.namespaces!.filter((n: { type: string }) =>
      n.type !== 'uts' && n.type !== 'network' && !(shareGuestPids && n.type === 'pid'));
    delete spec.hostname; // the guest's own: no UTS namespace of the container's
    spec.mounts!.push({ destination: '/guest-machine-id', type: 'bind', source: '/etc/machine-id', options: ['rbind', 'ro'] });
    await c.createContainer({ containerId: id, spec, rootfsPath: s.rootfsGuestPath(id) });
    await c.startContainer({ containerId: id });
    const out = (await readAll(c, { containerId: id }, 'stdout', 60_000)).toString();
    const status = (await c.waitProcess({ containerId: id }, { timeoutMs: 60_000 })).exitStatus;
    assert.equal(status, 0, `${args.join(' ')} in ${id}: ${out}`);
    await c.removeContainer({ containerId: id });
    return out;
  };

  const macs = ['02:42:0a:58:00:0a', '02:42:0a:58:00:0b'];
  let pods: SandboxVm[] = [];

  await t.test('first use by two pods at once: one template is made, both pods are its clones', async () => {
    pods = await Promise.all(['pod-a', 'pod-b'].map((id, i) =>
      start(id, { hostname: `host-${id}`, network: { tapName: taps[i]!, mac: macs[i]! } })));
    assert.equal(log.count(/^making a VM template$/), 1, 'one build for two pods');
    assert.equal(log.count(/^VM template made$/), 1);
    assert.equal(log.count(/warming the template up failed/), 0, 'the template was warmed up (a container ran in it) before it was saved');
    assert.equal(warmUps, 1, 'one warm-up, in the one template');
    for (const id of ['pod-a', 'pod-b']) assert.equal(origins.get(id)?.kind, 'clone', `${id}: ${JSON.stringify(origins.get(id))}`);
    const st = await listTemplates(templates);
    assert.equal(st.length, 1);
    assert.equal(st[0]!.state, 'ready');
    assert.equal(st[0]!.meta?.identity.spec.nic, true, 'a template with a NIC for pods with a network');
    assert.equal(pods[0]!.vm.restoredFrom, join(st[0]!.dir, 'state'));
    for (const p of pods) await stop(p);
    pods = [];
  });

  await t.test('clones are not twins: entropy, clock, hostname, MAC and machine id are the pod\'s', async (t) => {
    // Clones made well after the template was saved: a clone's clock resumes at the template's
    // moment, so without SetGuestDateTime it would lag by at least this much.
    const [tpl] = await listTemplates(templates);
    const age = Date.now() - Date.parse(tpl!.meta!.createdAt);
    if (age < 4000) await sleep(4000 - age);
    pods = await Promise.all(['pod-a', 'pod-b'].map((id, i) =>
      start(id, { hostname: `host-${id}`, network: { tapName: taps[i]!, mac: macs[i]! } })));
    t.after(async () => {
      for (const p of pods) await stop(p).catch(() => {});
      pods = [];
    });
    // The reseed RPC runs the helper's RNDADDENTROPY + RNDRESEEDCRNG in the real guest (it fails if an ioctl does).
    await pods[0]!.agent.reseedRandomDev(randomBytes(32));
    await assert.rejects(pods[0]!.agent.reseedRandomDev(randomBytes(8)), /data: 8 bytes, must be 16-512/);
    // The guest NIC still has the template's MAC until the agent is told the pod's (as pod-vm does).
    for (const [i, s] of pods.entries()) {
      await s.agent.updateInterface({ name: 'eth0', hwAddr: macs[i]!, addresses: [`10.88.${i + 1}.2/24`], mtu: 1500, up: true });
    }
    const script = 'head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n"; echo; date +%s; hostname; cat /sys/class/net/eth0/address; cat /guest-machine-id';
    const seen = [];
    for (const [i, s] of pods.entries()) {
      const before = Date.now() / 1000;
      const out = (await inGuest(s, `probe-${i}`, ['sh', '-c', script])).trim().split('\n');
      const after = Date.now() / 1000;
      const [random = '', date = '', hostname = '', mac = '', machineId = ''] = out;
      assert.match(random, /^[0-9a-f]{64}$/, out.join('\n'));
      assert.ok(Number(date) >= Math.floor(before) - 1 && Number(date) <= Math.ceil(after) + 1,
        `guest clock ${date} vs host ${before.toFixed(1)}..${after.toFixed(1)}: within a second`);
      assert.equal(hostname, `host-${['pod-a', 'pod-b'][i]}`);
      assert.equal(mac, macs[i]);
      assert.equal(machineId, podMachineId(['pod-a', 'pod-b'][i]!));
      seen.push({ random, machineId });
    }
    assert.notEqual(seen[0]!.random, seen[1]!.random, 'the two clones read different bytes from /dev/urandom');
    assert.notEqual(seen[0]!.machineId, seen[1]!.machineId);
    // The agent is never the guest OOM killer's choice; this container's own processes are at 0.
    const adj = (await inGuest(pods[0]!, 'probe-oom', ['sh', '-c',
      'for p in /proc/[0-9]*; do if tr "\\0" " " < $p/cmdline 2>/dev/null | grep -q "node .*/agent/"; then echo "agent $(cat $p/oom_score_adj)"; fi; done; echo "self $(cat /proc/self/oom_score_adj)"'], true)).trim();
    assert.match(adj, /^agent -1000$/m, adj);
    assert.match(adj, /^self 0$/m, adj);
  });

  await t.test('a state file that is not the template\'s: the pod boots cold, the cause is named and recorded', async () => {
    const [tpl] = await listTemplates(templates);
    const state = join(tpl!.dir, 'state');
    const good = readFileSync(state);
    const bad = Buffer.from(good);
    bad[bad.length >> 1] = bad[bad.length >> 1]! ^ 0xff;
    writeFileSync(state, bad);
    try {
      const warned = log.count(/VM template not usable/);
      const s = await start('pod-c', { network: { tapName: taps[0]!, mac: macs[0]! } });
      assert.equal(origins.get('pod-c')?.kind, 'cold');
      assert.match((origins.get('pod-c') as { reason: string }).reason, /state does not match its recorded SHA-256/);
      assert.equal(log.count(/VM template not usable/), warned + 1, 'one warning');
      assert.equal(s.vm.restoredFrom, undefined);
      assert.equal((await s.agent.check()).sandboxId, 'pod-c', 'the cold pod works');
      await stop(s);
      const [st] = await listTemplates(templates);
      assert.equal(st!.state, 'invalid');
      assert.match(st!.lastFailure?.reason ?? '', /SHA-256/);
    } finally {
      writeFileSync(state, good);
    }
  });

  await t.test('a truncated memory file: the pod boots cold, naming it', async () => {
    const [tpl] = await listTemplates(templates);
    truncateSync(join(tpl!.dir, 'memory'), 64 * 1024 * 1024);
    const s = await start('pod-d', { network: { tapName: taps[1]!, mac: macs[1]! } });
    assert.equal(origins.get('pod-d')?.kind, 'cold');
    assert.match((origins.get('pod-d') as { reason: string }).reason, /memory has 67108864 bytes, want 268435456 \(truncated\?\)/);
    await stop(s);
  });

  await t.test('template_path on a full file system: the build fails, the pod boots cold, nothing is left', async () => {
    mkdirSync(fullFs);
    sh('mount', '-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', fullFs);
    const full = new TemplateFactory({ root: join(fullFs, 'templates'), logger });
    const s = await start('pod-e', {}, full);
    assert.equal(origins.get('pod-e')?.kind, 'cold');
    assert.match((origins.get('pod-e') as { reason: string }).reason, /making template/);
    assert.equal((await s.agent.check()).sandboxId, 'pod-e');
    await stop(s);
    const entries = readdirSync(join(fullFs, 'templates'));
    assert.deepEqual(entries.filter((e) => !e.endsWith('.failure.json')), [], 'no partial template, build dir or lock left');
    sh('umount', fullFs);
  });

  await t.test('factory destroy removes every template and record; no VM process, mount or tap is left', async () => {
    const removed = await destroyTemplates(templates);
    assert.ok(removed.length >= 1, `removed ${removed.join(', ')}`);
    assert.equal(existsSync(templates), false);
    assert.deepEqual(pidsMentioning(root), [], 'no QEMU of this test left');
    assert.deepEqual(mountsUnder(root), []);
  });
});
