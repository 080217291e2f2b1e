/**
 * Faults and leaks (issue 8), end to end on one private containerd 1.6 with
 * io.containerd.kata.v2: each case breaks something the way Kata's users met
 * it and then runs the leak check (test/harness/pod-leaks.ts: shims, QEMU,
 * virtiofsd, mounts, containerd's task state dir, the run root and its
 * sockets, containerd's fds and the fds of shims that outlive the case).
 *
 *   1. the shim killed — while the VM boots (Create in flight), while a
 *      two-container pod runs, and in the middle of its own shutdown: QEMU and
 *      virtiofsd die with it (PR_SET_PDEATHSIG), containerd's `shim delete`
 *      cleans the rest from the state on disk; nothing is left.
 *   2. QEMU killed: both containers of the pod end with 255 (Wait through a
 *      foreground `ctr run`, and /tasks/exit), `ctr task delete` and
 *      `ctr containers delete` work, nothing is left.
 *   3. the guest hung (QEMU SIGSTOPped): the agent health check ends the
 *      pod's containers with 255 and kills QEMU; before that, a paused
 *      container is killed (137).
 *   4. start failures at each step — QEMU binary missing, kernel missing,
 *      QEMU exiting at once, the agent not answering in time, the command not
 *      found, and for a later container of a live pod a rootfs mount that
 *      fails, a command missing from its rootfs and empty args: an error
 *      naming the cause, nothing of the attempt left, the id reusable at once.
 *   5. exits never held back: an exec whose child still holds its stdout has
 *      its exit delivered before that output ends (and the output still
 *      arrives); three containers exiting at the same instant each get their
 *      exact code. (An exit while containerd is down: shim.test.ts.)
 *
 * VMs under TCG boot in ~8-12 s here; the file boots six, and one pod carries
 * the cases of 3-5 that need a live VM.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { containerd as pb } from '../../src/proto/gen/containerd.js';
import { Code } from '../../src/errors/index.js';
import { TtrpcClient } from '../../src/ttrpc/index.js';
import { BUSYBOX_IMAGE, importImage, projectRoot } from '../harness/busybox.js';
import { mountsUnder, pidAlive, startContainerd, waitFor, withLogOnFailure, type Containerd, type CtrResult } from '../harness/containerd.js';
import {
  bundleDir, CtrEvents, exitEventParts, ok, podAnnotations, qemuPids, removeIfPresent, shimSocket, show, tasks, waitStatus,
} from '../harness/ctr.js';
import { defaultConfigText } from '../harness/guest.js';
import { assertPodGone, podBaseline } from '../harness/pod-leaks.js';
import { expectCode } from '../harness/status.js';

const KATA = 'io.containerd.kata.v2';
const IMG = BUSYBOX_IMAGE;
const TASK = 'containerd.task.v2.Task';
const T = pb.task.v2;
const CTR_MS = 180_000;

describe('faults and leaks (issue 8)', { timeout: 40 * 60_000 }, () => {
  let c: Containerd;
  let cfgDir: string;
  /** The project's default configuration with absolute guest paths, and `edit` applied. */
  const config = (name: string, edit: (text: string) => string): string => {
    const base = defaultConfigText(join(cfgDir, 'templates'));
    const text = edit(base);
    assert.notEqual(text, base, `config ${name}: the edit changed nothing`);
    const path = join(cfgDir, `${name}.toml`);
    writeFileSync(path, text);
    return path;
  };
  /** Another QEMU binary: `path`, and allowed by valid_hypervisor_paths. */
  const qemuPath = (t: string, path: string) => t
    .replace(/^path = "\/usr\/bin\/qemu-system-x86_64"$/m, `path = "${path}"`)
    .replace(/^valid_hypervisor_paths = \[(.*)\]$/m, `valid_hypervisor_paths = [$1, "${path}"]`);
  const run = (args: string[], timeoutMs = CTR_MS) => c.ctr(['run', '--runtime', KATA, ...args], { timeoutMs });
  const newQemus = (had: number[]) => qemuPids(c).filter((p) => !had.includes(p));

  before(async () => {
    c = await startContainerd({ extraPath: [join(projectRoot(), 'bin')], runtimes: { kata: { runtimeType: KATA } } });
    cfgDir = join(c.dir, 'configs');
    mkdirSync(cfgDir);
    await importImage(c);
  });
  after(async () => {
    await c?.stop();
  });

  // ------------------------------------------------------------------ 4. start failures

  describe('start failures leave nothing and the id is reusable at once', () => {
    const cases: Array<{ name: string; edit: (t: string) => string; cause: RegExp }> = [
      {
        name: 'QEMU binary missing',
        edit: (t) => qemuPath(t, '/nonexistent/qemu-system-x86_64'),
        cause: /\[hypervisor\.qemu\] path = "\/nonexistent\/qemu-system-x86_64": no such file/,
      },
      {
        name: 'kernel missing',
        edit: (t) => t.replace(/^kernel = ".*"$/m, 'kernel = "/nonexistent/vmlinux"'),
        cause: /\[hypervisor\.qemu\] kernel = "\/nonexistent\/vmlinux": no such file/,
      },
      {
        name: 'QEMU exits at once',
        edit: (t) => qemuPath(t, join(cfgDir, 'qemu-exits')).replace(/^machine_accelerators = "auto"$/m, 'machine_accelerators = "tcg"'),
        cause: /fake qemu: refusing to start/,
      },
      {
        name: 'the agent does not answer in time',
        edit: (t) => t.replace(/^dial_timeout = 90$/m, 'dial_timeout = 2'),
        cause: /not ready within 2000 ms/,
      },
    ];
    before(() => {
      const fake = join(cfgDir, 'qemu-exits');
      writeFileSync(fake, '#!/bin/sh\necho "fake qemu: refusing to start" >&2\nexit 3\n');
      chmodSync(fake, 0o755);
    });

    for (const k of cases) {
      it(`${k.name}: the error names the cause; nothing of the attempt survives; the same id fails the same way again`, { timeout: 300_000 }, async () => {
        await withLogOnFailure(c, async () => {
          const cfg = config(k.name.replace(/\W+/g, '-'), k.edit);
          const id = `sf-${k.name.replace(/\W+/g, '-').toLowerCase()}`.slice(0, 60);
          for (const attempt of [1, 2]) {
            const b = podBaseline(c);
            const r = await run(['--rm', '--runtime-config-path', cfg, IMG, id, 'true']);
            assert.notEqual(r.code, 0, `attempt ${attempt}: ${show(r)}`);
            assert.match(r.stderr, k.cause, `attempt ${attempt}: the error names the cause: ${r.stderr}`);
            assert.doesNotMatch(r.stderr, /already exists/, 'the id was free again');
            await assertPodGone(c, b, `${k.name}, attempt ${attempt}`);
          }
        });
      });
    }

    it('command not found: ctr run fails naming it, the VM booted for it is stopped, nothing left; the id runs at once', { timeout: 300_000 }, async () => {
      await withLogOnFailure(c, async () => {
        const b = podBaseline(c);
        const r = await run(['--rm', IMG, 'sf-nocmd', '/nonexistent-cmd']);
        assert.notEqual(r.code, 0, show(r));
        assert.match(r.stderr, /\/nonexistent-cmd/, r.stderr);
        assert.match(r.stderr, /no such file|not found/i, r.stderr);
        await assertPodGone(c, b, 'command not found');
        const again = await run(['--rm', IMG, 'sf-nocmd', 'echo', 'reused']);
        ok(again, 'the same id, at once');
        assert.equal(again.stdout, 'reused\n');
        await assertPodGone(c, b, 'after the reuse');
      });
    });
  });

  // ------------------------------------------------------------------ 1. the shim killed

  it('the shim killed while the VM boots (Create in flight): containerd\'s shim delete stops QEMU from vm.json; nothing left', { timeout: 300_000 }, async () => {
    await withLogOnFailure(c, async () => {
      const b = podBaseline(c);
      const id = 'k9-boot';
      const fg = run(['-d', IMG, id, 'sleep', '1000']);
      try {
        const qemu = await waitFor(() => newQemus(b.qemus)[0], { timeoutMs: 60_000, intervalMs: 20, what: 'QEMU started for the pod' });
        await new Promise((r) => setTimeout(r, 300)); // past the state file's write, right after the spawn
        const shims = c.shimPids().filter((p) => !b.shims.includes(p));
        assert.equal(shims.length, 1, 'one shim');
        process.kill(shims[0]!, 'SIGKILL');
        const r = await fg;
        assert.notEqual(r.code, 0, `ctr run fails when its shim dies: ${show(r)}`);
        await waitFor(() => !pidAlive(qemu), { timeoutMs: 60_000, what: `QEMU ${qemu} stopped by shim delete` });
        await c.ctr(['containers', 'delete', id]);
        await assertPodGone(c, b, 'shim killed during start');
      } finally {
        await fg.catch(() => undefined);
        await removeIfPresent(c, [id]);
      }
    });
  });

  it('the shim killed under a two-container pod: both tasks go, the VM is stopped, nothing left', { timeout: 300_000 }, async () => {
    const P = 'k9-pod';
    const X = 'k9-podx';
    const b = podBaseline(c);
    try {
      await withLogOnFailure(c, async () => {
        ok(await run(['-d', ...podAnnotations(P, P), IMG, P, 'sleep', '100000']), 'run sandbox');
        ok(await run(['-d', ...podAnnotations(P, X), IMG, X, 'sleep', '100000']), 'run container');
        const sock = shimSocket(c, P);
        const shims = c.shimPids().filter((p) => !b.shims.includes(p));
        assert.equal(shims.length, 1, 'one shim for the pod');
        const qemus = newQemus(b.qemus);
        assert.equal(qemus.length, 1, 'one QEMU for the pod');
        process.kill(shims[0]!, 'SIGKILL');
        await waitFor(async () => { const t = await tasks(c); return !t.has(P) && !t.has(X); },
          { timeoutMs: 60_000, intervalMs: 200, what: 'both tasks gone after the shim died' });
        await waitFor(() => !pidAlive(qemus[0]!), { timeoutMs: 60_000, what: 'QEMU stopped' });
        ok(await c.ctr(['containers', 'delete', X, P]), 'containers delete');
        await assertPodGone(c, b, 'shim killed under a running pod', { socket: sock });
      });
    } finally {
      await removeIfPresent(c, [X, P]);
    }
  });

  it('the shim killed during its own shutdown (SIGTERM, then SIGKILL 100 ms later): QEMU dies with it, containerd\'s delete cleans the rest', { timeout: 300_000 }, async () => {
    const id = 'k9-shutdown';
    const b = podBaseline(c);
    try {
      await withLogOnFailure(c, async () => {
        ok(await run(['-d', IMG, id, 'sleep', '100000']), 'run -d');
        const sock = shimSocket(c, id);
        const shims = c.shimPids().filter((p) => !b.shims.includes(p));
        assert.equal(shims.length, 1, 'one shim');
        const qemus = newQemus(b.qemus);
        assert.equal(qemus.length, 1, 'one QEMU');
        process.kill(shims[0]!, 'SIGTERM'); // the shim starts stopping the VM …
        await new Promise((r) => setTimeout(r, 100));
        // Proof that the SIGKILL lands mid-shutdown, not after a clean stop: the shim and its QEMU still run.
        assert.ok(pidAlive(shims[0]!), 'the shim is still shutting down 100 ms after SIGTERM');
        assert.ok(pidAlive(qemus[0]!), 'its VM is not stopped yet');
        process.kill(shims[0]!, 'SIGKILL'); // … and dies in the middle
        await waitFor(() => !pidAlive(qemus[0]!), { timeoutMs: 30_000, what: 'QEMU gone with its shim' });
        await waitFor(async () => !(await tasks(c)).has(id), { timeoutMs: 60_000, intervalMs: 200, what: 'task gone after the shim died' });
        ok(await c.ctr(['containers', 'delete', id]), 'containers delete');
        await assertPodGone(c, b, 'shim killed during shutdown', { socket: sock });
      });
    } finally {
      await removeIfPresent(c, [id]);
    }
  });

  // ------------------------------------------------------------------ 2. QEMU killed

  it('QEMU killed: both containers end 255 (Wait and /tasks/exit); task and container delete work; nothing left', { timeout: 300_000 }, async () => {
    const P = 'qk-pod';
    const X = 'qk-podx';
    const b = podBaseline(c);
    const ev = new CtrEvents(c);
    let fg: Promise<CtrResult> | undefined;
    try {
      await withLogOnFailure(c, async () => {
        ok(await run(['-d', ...podAnnotations(P, P), IMG, P, 'sleep', '100000']), 'run sandbox');
        // X in the foreground: ctr waits on the task (Wait) and exits with its code.
        fg = run([...podAnnotations(P, X), IMG, X, 'sleep', '100000']);
        await waitStatus(c, X, 'RUNNING', CTR_MS);
        const qemus = newQemus(b.qemus);
        assert.equal(qemus.length, 1, 'one QEMU');
        process.kill(qemus[0]!, 'SIGKILL');
        const r = await fg;
        assert.equal(r.code, 255, `the foreground ctr run ends with the lost VM's 255: ${show(r)}`);
        await ev.waitLine(exitEventParts(c, P, 255), `exit 255 of ${P}`, 60_000);
        await ev.waitLine(exitEventParts(c, X, 255), `exit 255 of ${X}`, 60_000);
        await ev.stop();
        // X's task was deleted by its foreground ctr run; P's is deleted here.
        const d = await c.ctr(['task', 'delete', P], { timeoutMs: 60_000 });
        ok(d, `task delete ${P}`);
        assert.match(d.stderr, new RegExp(`task ${P} exit with non-zero exit code 255`), d.stderr);
        ok(await c.ctr(['containers', 'delete', X, P]), 'containers delete');
        await assertPodGone(c, b, 'QEMU killed');
      });
    } finally {
      await ev.stop();
      await fg?.catch(() => undefined);
      await removeIfPresent(c, [X, P]);
    }
  });

  // ------------------------------------------------------------------ 3 and 5, on one pod

  describe('one live pod: a later container\'s failed Create, exits not held back, simultaneous exits, kill when paused, then the guest hangs', () => {
    const P = 'live-pod';
    const syncDir = () => join(c.dir, 'sync');
    let podBase: ReturnType<typeof podBaseline>;
    let before0: ReturnType<typeof podBaseline>;
    let sock: string;
    let ev: CtrEvents;

    before(async () => {
      before0 = podBaseline(c);
      mkdirSync(syncDir(), { recursive: true });
      // ctr events first: once it shows P's start it is connected, and its connection is in the baseline.
      ev = new CtrEvents(c);
      ok(await run(['-d', ...podAnnotations(P, P), IMG, P, 'sleep', '100000']), 'run sandbox');
      await ev.waitLine([` ${c.namespace} /tasks/start `, `"container_id":"${P}"`], `start of ${P}`, 60_000);
      sock = shimSocket(c, P);
      podBase = podBaseline(c);
    });
    after(async () => {
      await ev?.stop();
      await removeIfPresent(c, [P, 'live-a', 'live-b', 'live-c', 'live-paused']);
    });

    it('a later container whose rootfs mount fails, whose command is not in its rootfs, or whose args are empty: a clear error, nothing left, the pod serves on', { timeout: 300_000 }, async () => {
      await withLogOnFailure(c, async () => {
        const client = await TtrpcClient.connect(sock, { timeoutMs: 10_000 });
        try {
          const spec = JSON.parse(readFileSync(join(bundleDir(c, P), 'config.json'), 'utf8')) as { process: Record<string, unknown>; annotations?: Record<string, string> };
          const bundle = (name: string, edit: (s: typeof spec) => void) => {
            const dir = join(c.dir, 'bundles', name);
            mkdirSync(join(dir, 'rootfs'), { recursive: true });
            const s = structuredClone(spec);
            edit(s);
            writeFileSync(join(dir, 'config.json'), JSON.stringify(s));
            return dir;
          };
          const opts = { timeoutMs: 120_000 };
          // A rootfs mount that cannot be made.
          await expectCode(client.request(TASK, 'Create', T.CreateTaskRequest, T.CreateTaskResponse, {
            id: 'bad-rootfs', bundle: bundle('bad-rootfs', () => {}),
            rootfs: [{ type: 'overlay', source: 'overlay', options: ['lowerdir=/nonexistent-lower', `upperdir=${c.dir}/nu`, `workdir=${c.dir}/nw`] }],
          }, opts), Code.INTERNAL, /rootfs|mount|overlay/i);
          // A command that is not in its rootfs (an empty dir here): refused at Create, as runc does.
          await expectCode(client.request(TASK, 'Create', T.CreateTaskRequest, T.CreateTaskResponse, {
            id: 'bad-cmd', bundle: bundle('bad-cmd', (s) => { s.process['args'] = ['/bin/sh']; }),
          }, opts), Code.INVALID_ARGUMENT, /process\.args\[0\]: exec: "\/bin\/sh": stat \/bin\/sh: no such file or directory/);
          // Malformed: no process args.
          await expectCode(client.request(TASK, 'Create', T.CreateTaskRequest, T.CreateTaskResponse, {
            id: 'bad-args', bundle: bundle('bad-args', (s) => { s.process['args'] = []; }),
          }, opts), Code.INVALID_ARGUMENT, /args/i);
          // The pod serves on.
          const r = await c.ctr(['task', 'exec', '--exec-id', 'after-bad', P, 'echo', 'alive'], { timeoutMs: CTR_MS });
          ok(r, 'exec after the failed creates');
          assert.equal(r.stdout, 'alive\n');
          await expectCode(client.request(TASK, 'State', T.StateRequest, T.StateResponse, { id: 'bad-rootfs' }, opts), Code.NOT_FOUND);
        } finally {
          client.close();
        }
        const shared = readdirSync(join(c.kataRunRoot)).map((d) => join(c.kataRunRoot, d, 'shared'));
        for (const s of shared) {
          for (const bad of ['bad-rootfs', 'bad-cmd', 'bad-args']) assert.equal(existsSync(join(s, bad)), false, `${bad}'s dir in ${s} removed`);
        }
        assert.deepEqual(mountsUnder(c.dir).filter((m) => /bad-/.test(m)), [], 'no mount of the failed containers');
        await assertPodGone(c, podBase, 'failed creates in a live pod');
      });
    });

    it('an exec whose child holds its stdout: the exit is delivered before that output ends, and the output still arrives', { timeout: 300_000 }, async () => {
      await withLogOnFailure(c, async () => {
        const args = ['--address', c.address, '--namespace', c.namespace, 'task', 'exec', '--fifo-dir', join(c.dir, 'fifo'), '--exec-id', 'hold', P,
          'sh', '-c', '(sleep 8; echo child-done) & echo started; exit 5'];
        const p = spawn('ctr', args, { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        let err = '';
        let outAtExitEvent: string | undefined;
        p.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
        p.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
        const done = new Promise<number | null>((r) => p.once('close', (code) => r(code)));
        const timer = setTimeout(() => p.kill('SIGKILL'), CTR_MS);
        try {
          await ev.waitLine(exitEventParts(c, P, 5, 'hold'), 'exit 5 of exec hold', 60_000);
          outAtExitEvent = out;
          const code = await done;
          assert.equal(code, 5, `ctr task exec: ${code}\nstdout: ${out}\nstderr: ${err}`);
          assert.equal(out, 'started\nchild-done\n', 'all of the output arrived');
          assert.doesNotMatch(outAtExitEvent, /child-done/, `the exit came before the child's output ended (stdout then: ${JSON.stringify(outAtExitEvent)})`);
        } finally {
          clearTimeout(timer);
          p.kill('SIGKILL');
        }
      });
    });

    it('three containers exiting at the same instant each get their exact code', { timeout: 300_000 }, async () => {
      await withLogOnFailure(c, async () => {
        const go = join(syncDir(), 'go');
        const ids = { 'live-a': 11, 'live-b': 12, 'live-c': 13 } as const;
        for (const [id, code] of Object.entries(ids)) {
          ok(await run(['-d', ...podAnnotations(P, id), '--mount', `type=bind,src=${syncDir()},dst=/sync,options=rbind:ro`, IMG, id,
            'sh', '-c', `while [ ! -e /sync/go ]; do sleep 0.05; done; exit ${code}`]), `run ${id}`);
        }
        writeFileSync(go, '');
        for (const [id, code] of Object.entries(ids)) await ev.waitLine(exitEventParts(c, id, code), `exit ${code} of ${id}`, 60_000);
        for (const [id, code] of Object.entries(ids)) {
          const d = await c.ctr(['task', 'delete', id], { timeoutMs: 60_000 });
          ok(d, `task delete ${id}`);
          assert.match(d.stderr, new RegExp(`task ${id} exit with non-zero exit code ${code}`), d.stderr);
          ok(await c.ctr(['containers', 'delete', id]), `containers delete ${id}`);
        }
        await assertPodGone(c, podBase, 'three containers after their exits');
      });
    });

    it('a paused container is killed (137)', { timeout: 300_000 }, async () => {
      await withLogOnFailure(c, async () => {
        const id = 'live-paused';
        ok(await run(['-d', ...podAnnotations(P, id), IMG, id, 'sleep', '100000']), 'run');
        ok(await c.ctr(['task', 'pause', id]), 'pause');
        await waitStatus(c, id, 'PAUSED', 30_000);
        ok(await c.ctr(['task', 'kill', '-s', 'KILL', id]), 'kill while paused');
        await ev.waitLine(exitEventParts(c, id, 137), `exit 137 of ${id}`, 60_000);
        const d = await c.ctr(['task', 'delete', id], { timeoutMs: 60_000 });
        ok(d, 'task delete');
        assert.match(d.stderr, /exit code 137/, d.stderr);
        ok(await c.ctr(['containers', 'delete', id]), 'containers delete');
        await assertPodGone(c, podBase, 'the killed paused container');
      });
    });

    it('the guest hangs (QEMU SIGSTOPped): the health check ends the pod with 255 and kills QEMU; nothing left', { timeout: 300_000 }, async () => {
      await withLogOnFailure(c, async () => {
        const qemus = newQemus(before0.qemus);
        assert.equal(qemus.length, 1, 'the pod\'s QEMU');
        process.kill(qemus[0]!, 'SIGSTOP');
        try {
          await ev.waitLine(exitEventParts(c, P, 255), `exit 255 of ${P} after the health check`, 120_000);
          await waitFor(() => !pidAlive(qemus[0]!), { timeoutMs: 30_000, what: 'the hung QEMU killed' });
        } finally {
          if (pidAlive(qemus[0]!)) process.kill(qemus[0]!, 'SIGCONT');
        }
        const d = await c.ctr(['task', 'delete', P], { timeoutMs: 60_000 });
        ok(d, 'task delete');
        assert.match(d.stderr, /exit code 255/, d.stderr);
        ok(await c.ctr(['containers', 'delete', P]), 'containers delete');
        await ev.stop();
        await assertPodGone(c, before0, 'the hung pod', { socket: sock });
      });
    });
  });
});
