/**
 * QEMU with least privilege (issue 20), through a real private containerd and
 * the default configuration (rootless = true, Kata's seccompsandbox):
 *
 * - each pod's QEMU runs as a uid of its own (two pods: two uids, neither 0),
 *   with no capabilities in any set, no_new_privs and a seccomp filter
 *   (/proc/<qemu>/status: Uid, CapEff/CapPrm/CapBnd/CapAmb, NoNewPrivs 1,
 *   Seccomp 2);
 * - it sees only what it was given: its mount namespace holds /usr, the
 *   guest image, its own qemu/ dir and a few device nodes. A file of the
 *   host that anybody may read (0644), /etc/passwd, containerd's root and
 *   the other pod's dir do not exist for it (opened as QEMU, in QEMU's mount
 *   namespace), while its own dir does;
 * - the pod works (exec), and ending it gives everything back: QEMU gone,
 *   the uid leases released, nothing left (the leak check);
 * - VM templates: each clone's QEMU is jailed with its own uid too, keeping
 *   only the four file capabilities QEMU's 9p server needs; the template's
 *   RAM lives in a sealed memfd (src/factory/memory-holder.ts) that clones
 *   map and that nobody can write; removing the template ends its holder;
 * - `rootless = false` and `seccompsandbox = ""` run QEMU as root without a
 *   filter, and the shim's log says so at start, naming both keys.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, ftruncateSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { busyboxImage, importImage, projectRoot } from '../harness/busybox.js';
import { startContainerd, waitFor, type Containerd } from '../harness/containerd.js';
import { forceRemove, ok, qemuPids, waitStatus } from '../harness/ctr.js';
import { defaultConfigText, GUEST_DIR, templateConfigEdit } from '../harness/guest.js';
import { assertPodGone, podBaseline, type PodBaseline } from '../harness/pod-leaks.js';

const KATA = 'io.containerd.kata.v2';

interface ProcStatus {
  uid: number[];
  gid: number[];
  groups: string;
  caps: Record<string, string>;
  noNewPrivs: string;
  seccomp: string;
}

function procStatus(pid: number): ProcStatus {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): string => {
    const m = new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(text);
    assert.ok(m, `/proc/${pid}/status has no ${name}`);
    return m[1]!.trim();
  };
  return {
    uid: field('Uid').split(/\s+/).map(Number),
    gid: field('Gid').split(/\s+/).map(Number),
    groups: field('Groups'),
    caps: Object.fromEntries(['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb'].map((c) => [c, field(c)])),
    noNewPrivs: field('NoNewPrivs'),
    seccomp: field('Seccomp'),
  };
}

/** `argv` run as QEMU would: in its mount namespace, with its uid and gid and no groups. */
function asQemu(pid: number, uid: number, argv: string[]): { code: number | null; out: string } {
  const r = spawnSync('nsenter', ['-t', String(pid), '-m', '--', '/usr/bin/setpriv', '--reuid', String(uid), '--regid', String(uid), '--clear-groups', '--', ...argv], { encoding: 'utf8', timeout: 10_000 });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

/** The pod dir (run root entry) whose vm.json names this QEMU pid. */
function podDirOf(c: Containerd, pid: number): string {
  for (const e of readdirSync(c.kataRunRoot)) {
    const f = join(c.kataRunRoot, e, 'vm.json');
    if (existsSync(f) && (JSON.parse(readFileSync(f, 'utf8')) as { qemu?: { pid: number } }).qemu?.pid === pid) return join(c.kataRunRoot, e);
  }
  assert.fail(`no pod dir under ${c.kataRunRoot} records qemu pid ${pid}`);
}

describe('QEMU with least privilege (default configuration)', { timeout: 900_000 }, () => {
  let c: Containerd;
  let base: PodBaseline;
  let secret: string;
  const pods = ['jail-a', 'jail-b'];
  const qemu = new Map<string, { pid: number; uid: number; dir: string }>();

  before(async () => {
    c = await startContainerd({ extraPath: [join(projectRoot(), 'bin')] });
    await importImage(c, busyboxImage());
    // A host file anybody may read: only a jail keeps QEMU from it.
    secret = join(c.dir, 'host-file-anyone-may-read');
    writeFileSync(secret, 'not for QEMU\n', { mode: 0o644 });
    base = podBaseline(c);
  });
  after(async () => {
    for (const id of pods) await forceRemove(c, id).catch(() => {});
    await c?.stop();
  });

  it('each pod\'s QEMU: its own uid (not 0), no capabilities, no_new_privs, seccomp filter', async () => {
    for (const id of pods) {
      const before = new Set(qemuPids(c));
      ok(await c.ctr(['run', '-d', '--runtime', KATA, busyboxImage().name, id, 'sleep', '600'], { timeoutMs: 300_000 }), `run ${id}`);
      await waitStatus(c, id, 'RUNNING');
      const pids = qemuPids(c).filter((p) => !before.has(p));
      assert.equal(pids.length, 1, `one new QEMU for ${id} (${pids.join(', ')})`);
      const pid = pids[0]!;
      const s = procStatus(pid);
      assert.ok(s.uid.every((u) => u === s.uid[0]) && s.uid[0] !== 0, `real, effective, saved and fs uid: one uid, not root (${s.uid.join(' ')})`);
      assert.ok(s.gid.every((g) => g === s.gid[0]) && s.gid[0] !== 0, `gids: not root (${s.gid.join(' ')})`);
      assert.equal(s.groups, '', 'no supplementary groups');
      for (const [k, v] of Object.entries(s.caps)) assert.equal(v, '0000000000000000', `${k} of QEMU pid ${pid}`);
      assert.equal(s.noNewPrivs, '1', 'NoNewPrivs');
      assert.equal(s.seccomp, '2', 'Seccomp: filter mode');
      qemu.set(id, { pid, uid: s.uid[0]!, dir: podDirOf(c, pid) });
    }
    const [a, b] = pods.map((id) => qemu.get(id)!);
    assert.notEqual(a!.uid, b!.uid, 'two pods, two uids');
    // The uids are leased (files naming their pods) and no account has them.
    const leases = readdirSync(join(c.kataRunRoot, '.uids')).map(Number).sort();
    assert.deepEqual(leases, [a!.uid, b!.uid].sort());
    const passwd = readFileSync('/etc/passwd', 'utf8');
    for (const u of [a!.uid, b!.uid]) assert.doesNotMatch(passwd, new RegExp(`^[^:]*:[^:]*:${u}:`, 'm'), `uid ${u} belongs to an account`);
    assert.match(c.logTail(400), /"msg":"qemu jailed: own uid, no capabilities"/);
  });

  it('QEMU sees only /usr, the guest image and its own dir: other host paths do not exist for it', () => {
    const a = qemu.get('jail-a');
    const b = qemu.get('jail-b');
    assert.ok(a && b, 'the first case started both pods');
    // Every mount QEMU has, by mount point.
    const points = readFileSync(`/proc/${a.pid}/mountinfo`, 'utf8').trim().split('\n').map((l) => l.split(' ')[4]!);
    const allowed = new Set(['/', '/usr', '/dev', join(a.dir, 'qemu'), ...['vmlinux', 'initrd.img', 'rootfs.img', 'bzImage'].map((f) => join(GUEST_DIR, f))]);
    for (const p of points) assert.ok(allowed.has(p), `QEMU has ${p} mounted; it should have only ${[...allowed].join(', ')}`);
    assert.ok(points.includes(join(a.dir, 'qemu')) && points.includes('/usr'), `its own dir and /usr are there (${points.join(', ')})`);
    // Controls: the host reads the file; QEMU's uid reads its own dir.
    assert.equal(readFileSync(secret, 'utf8'), 'not for QEMU\n');
    const own = asQemu(a.pid, a.uid, ['/usr/bin/ls', join(a.dir, 'qemu')]);
    assert.equal(own.code, 0, own.out);
    assert.match(own.out, /qmp\.sock/);
    for (const path of [secret, '/etc/passwd', '/etc/shadow', c.root, join(b.dir, 'qemu', 'qmp.sock'), join(a.dir, 'vm.json'), `/proc/${a.pid}/status`]) {
      const r = asQemu(a.pid, a.uid, ['/usr/bin/cat', path]);
      assert.notEqual(r.code, 0, `QEMU's uid in QEMU's namespace read ${path}`);
      assert.match(r.out, /No such file or directory/, `${path}: ${r.out}`);
    }
    // What it was given read-only stays read-only, even where the mode would let its uid write.
    const w = asQemu(a.pid, a.uid, ['/usr/bin/touch', join(GUEST_DIR, 'probe')]);
    assert.notEqual(w.code, 0, w.out);
  });

  it('the pods work under the jail: exec', async () => {
    const r = await c.ctr(['task', 'exec', '--exec-id', 'e1', 'jail-a', 'sh', '-c', 'echo exec ok; cat /proc/1/comm'], { timeoutMs: 120_000 });
    ok(r, 'exec');
    assert.equal(r.stdout.trim(), 'exec ok\nsleep');
  });

  it('ending the pods: QEMU gone, the uids given back, nothing left', async () => {
    for (const id of pods) await forceRemove(c, id);
    await assertPodGone(c, base, 'jailed pods ended');
    assert.equal(existsSync(join(c.kataRunRoot, '.uids')), false, 'no uid lease left');
  });

  it('VM templates: the clone\'s QEMU is jailed too (only the 9p file capabilities), its RAM a sealed memfd no one can write', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kata-jail-tpl-'));
    const templates = join(dir, 'templates');
    try {
      const cfg = join(dir, 'configuration.toml');
      writeFileSync(cfg, templateConfigEdit(templates)(defaultConfigText()));
      const run = async (id: string): Promise<number> => {
        const before = new Set(qemuPids(c));
        ok(await c.ctr(['run', '-d', '--runtime', KATA, '--runtime-config-path', cfg, busyboxImage().name, id, 'sh', '-c', 'mkdir -p /www && echo up > /www/i && sleep 600'], { timeoutMs: 300_000 }), `run ${id}`);
        await waitStatus(c, id, 'RUNNING');
        const pid = qemuPids(c).filter((p) => !before.has(p))[0];
        assert.ok(pid, `the QEMU of ${id}`);
        return pid;
      };
      // The first pod makes the template, then is its clone, as is the second.
      const pids = [await run('tpl-a'), await run('tpl-b')];
      try {
        assert.equal((c.logTail(2000).match(/"msg":"VM cloned from a template"/g) ?? []).length >= 2, true, 'both pods are clones');
        const [key] = readdirSync(templates).filter((n) => /^[0-9a-f]{24}$/.test(n));
        assert.ok(key, `a template under ${templates}`);
        const meta = JSON.parse(readFileSync(join(templates, key, 'meta.json'), 'utf8')) as { memoryHolder?: { pid: number } };
        const holder = meta.memoryHolder?.pid;
        assert.ok(holder, 'the template names its memory holder');
        assert.equal(existsSync(join(templates, key, 'memory')), false, 'no memory file: the RAM is in the memfd only');
        const held = `/proc/${holder}/fd/3`;
        assert.equal(readlinkSync(held), '/memfd:kata-ts-template-memory (deleted)');
        // Sealed: not even root can write it, or punch a hole.
        const fd = openSync(held, 'r+');
        try {
          assert.throws(() => writeSync(fd, 'x', 0), /EPERM/);
          assert.throws(() => ftruncateSync(fd, 0), /EPERM/);
        } finally {
          closeSync(fd);
        }
        const uids = new Set<number>();
        for (const pid of pids) {
          const st = procStatus(pid);
          assert.ok(st.uid[0] !== 0, `clone QEMU ${pid} is not root`);
          uids.add(st.uid[0]!);
          // CAP_CHOWN, DAC_OVERRIDE, FOWNER, FSETID (bits 0, 1, 3, 4): QEMU serves the pod's 9p share.
          assert.equal(st.caps['CapEff'], '000000000000001b', `clone QEMU ${pid}: the 9p file capabilities only`);
          assert.equal(st.caps['CapBnd'], '000000000000001b');
          assert.equal(st.noNewPrivs, '1');
          assert.equal(st.seccomp, '2');
          assert.match(readFileSync(`/proc/${pid}/maps`, 'utf8'), /memfd:kata-ts-template-memory/, `clone QEMU ${pid} maps the sealed template RAM`);
        }
        assert.equal(uids.size, 2, 'two clones, two uids');
        // The container wrote through 9p as root in the guest (mkdir at its rootfs' top).
        const r = await c.ctr(['task', 'exec', '--exec-id', 'cat', 'tpl-b', 'cat', '/www/i'], { timeoutMs: 60_000 });
        ok(r, 'exec cat');
        assert.equal(r.stdout, 'up\n');
      } finally {
        for (const id of ['tpl-a', 'tpl-b']) await forceRemove(c, id).catch(() => {});
      }
      await assertPodGone(c, base, 'the clones ended');
      const holder = (JSON.parse(readFileSync(join(templates, readdirSync(templates).find((n) => /^[0-9a-f]{24}$/.test(n))!, 'meta.json'), 'utf8')) as { memoryHolder: { pid: number } }).memoryHolder.pid;
      // The template outlives its pods; removing it ends the holder (it watches its dir).
      rmSync(templates, { recursive: true, force: true });
      await waitFor(() => !existsSync(`/proc/${holder}`), { timeoutMs: 10_000, what: 'the memory holder ends with its template' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rootless = false, seccompsandbox = "": QEMU as root without a filter, and the shim warns naming both keys', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kata-jail-off-'));
    try {
      const cfg = join(dir, 'configuration.toml');
      const text = defaultConfigText().replace(/^rootless = true$/m, 'rootless = false').replace(/^seccompsandbox = ".*"$/m, 'seccompsandbox = ""');
      assert.match(text, /^rootless = false$/m);
      assert.match(text, /^seccompsandbox = ""$/m);
      writeFileSync(cfg, text);
      const before = new Set(qemuPids(c));
      ok(await c.ctr(['run', '-d', '--runtime', KATA, '--runtime-config-path', cfg, busyboxImage().name, 'jail-off', 'sleep', '600'], { timeoutMs: 300_000 }), 'run jail-off');
      try {
        await waitStatus(c, 'jail-off', 'RUNNING');
        const pid = qemuPids(c).filter((p) => !before.has(p))[0];
        assert.ok(pid, 'its QEMU');
        const s = procStatus(pid);
        assert.equal(s.uid[0], 0, 'root');
        assert.equal(s.seccomp, '0', 'no seccomp filter');
        const log = c.logTail(600);
        assert.match(log, /QEMU hardening weakened: \[hypervisor\.qemu\] rootless = false/);
        assert.match(log, /QEMU hardening weakened: \[hypervisor\.qemu\] seccompsandbox = \\"\\": QEMU runs without its seccomp filter/);
      } finally {
        await forceRemove(c, 'jail-off');
      }
      await assertPodGone(c, base, 'the unjailed pod ended');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
