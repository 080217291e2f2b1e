/**
 * The agent inside the real VM (issue #4): SandboxVm boots the guest image
 * (build/guest: kernel, stage-1 initramfs, read-only root image with node,
 * crun and the agent) under TCG, waits for the agent over virtio-serial, and
 * the agent mounts the pod's shared dir (virtio-fs). Then, through
 * AgentClient, as the shim will: exit codes and output, exec, signals, stdin,
 * a resized terminal, ps, stats, pause/resume, the guest kernel, isolation of
 * host files, bad requests, DestroySandbox, and a stop that leaves nothing.
 *
 * ONE VM serves every case (a boot costs ~8 s under TCG here). Container
 * rootfs dirs are written by the host into <sandbox dir>/shared/<cid>/rootfs
 * and handed to the agent as <guest mount point>/<cid>/rootfs.
 *
 * If the guest image is missing, the setup builds it
 * (scripts/bundle-agent.mjs, then scripts/build-guest.sh).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AgentClient } from '../../src/agent-client/index.js';
import { Code } from '../../src/errors/index.js';
import { createLogger, silentLogger } from '../../src/log/index.js';
import { GUEST_SHARED_DIR, SandboxVm } from '../../src/sandbox/index.js';
import { cleanupFromState, isAlive, mountsUnder, virtiofsdLockFile, type VmState } from '../../src/vm/index.js';
import { runtimeSpec, writeBusyboxRootfs, type OciSpec } from '../harness/busybox.js';
import { drainStdout, readAll, type ProcessRef } from '../harness/agent.js';
import { expectCode } from '../harness/status.js';
import { guestImage } from '../harness/guest.js';
import { skipUnlessCi } from '../harness/skip.js';

const canRun = process.getuid?.() === 0 && existsSync('/usr/lib/qemu/virtiofsd') &&
  spawnSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' }).status === 0;
const skip = skipUnlessCi(canRun, 'needs root, qemu-system-x86_64 and /usr/lib/qemu/virtiofsd');


/** A process's whole stdout or stderr as text, each read bounded. */
async function readText(c: AgentClient, ref: ProcessRef, which: 'stdout' | 'stderr' = 'stdout'): Promise<string> {
  return (await readAll(c, ref, which, 60_000)).toString();
}

/** Waits (bounded) for a process's exit status. */
function exitOf(c: AgentClient, containerId: string, execId?: string): Promise<number> {
  return c.waitProcess({ containerId, ...(execId ? { execId } : {}) }, { timeoutMs: 60_000 }).then((e) => e.exitStatus);
}

test('agent in the VM: containers through virtio-serial, shared dir over virtio-fs, isolation, clean stop', { skip, timeout: 600_000 }, async (t) => {
  const image = guestImage();
  const root = mkdtempSync(join(tmpdir(), 'sandbox-vm-'));
  const sandboxDir = join(root, 'sb');
  let started: SandboxVm | undefined;
  let recorded: VmState | undefined;
  // One hook, in this order (node:test runs t.after hooks in registration
  // order): the console tail on failure, stop, a safety net that kills only
  // the recorded pids (pid + start time), then the temp dir — never through a mount.
  t.after(async () => {
    if (started) {
      if (process.exitCode && existsSync(started.vm.consoleLogPath)) {
        process.stderr.write(`guest console tail:\n${readFileSync(started.vm.consoleLogPath, 'utf8').slice(-6000)}\n`);
      }
      await started.stop().catch((err: unknown) => process.stderr.write(`sandbox stop: ${String(err)}\n`));
    }
    if (recorded) await cleanupFromState(recorded, { logger: silentLogger() }).catch(() => {});
    if (mountsUnder(root).length === 0) rmSync(root, { recursive: true, force: true });
  });
  // A host file outside the shared dir: the guest must not reach it.
  const secret = `SECRET-${randomBytes(12).toString('hex')}`;
  const secretPath = join(root, 'secret.txt');
  writeFileSync(secretPath, `${secret}\n`);

  const debug = process.env.SANDBOX_VM_TEST_DEBUG === '1';
  const logger = debug ? createLogger({ name: 'sandbox-vm-test' }) : silentLogger();
  const t0 = Date.now();
  const sb = await SandboxVm.start({ sandboxId: 'sb-vm-e2e', dir: sandboxDir, image, logger, readyTimeoutMs: 120_000 });
  started = sb;
  const bootMs = Date.now() - t0;
  recorded = sb.vm.state();
  const c = sb.agent;
  t.diagnostic(`boot → agent ready ${sb.timings.readyMs} ms, share mounted ${sb.timings.sandboxMs} ms (start() ${bootMs} ms)`);

  let seq = 0;
  /** A busybox rootfs in the shared dir for a new container; its id. */
  const newContainer = async (prefix: string): Promise<string> => {
    const id = `${prefix}-${++seq}`;
    await writeBusyboxRootfs(sb.rootfsHostPath(id));
    return id;
  };
  const spec = (args: string[], terminal = false, mutate?: (s: OciSpec) => void): OciSpec => {
    const s = runtimeSpec({ args, terminal });
    mutate?.(s);
    return s;
  };
  const run = async (id: string, s: OciSpec, opts: { terminal?: boolean; stdin?: boolean; rows?: number; cols?: number } = {}): Promise<number> => {
    await c.createContainer({ containerId: id, spec: s, rootfsPath: sb.rootfsGuestPath(id), ...opts });
    return (await c.startContainer({ containerId: id })).pid;
  };

  await t.test('the agent answers over virtio-serial and runs crun', async () => {
    const info = await c.check();
    assert.equal(info.sandboxId, 'sb-vm-e2e');
    assert.equal(info.runtime, '/usr/bin/crun');
    assert.ok(sb.vm.pid && isAlive(sb.vm.state().qemu!), 'qemu runs');
    assert.equal(sb.vm.phase, 'running');
    assert.equal(sb.vm.state().accel, 'tcg', 'auto picks TCG on these hosts');
    // The image's entry (boot.cjs) ran the bundle with its code cache: V8 in the guest took it.
    const consoleText = readFileSync(sb.vm.consoleLogPath, 'utf8');
    assert.match(consoleText, /"msg":"agent ready"/);
    assert.doesNotMatch(consoleText, /rejected by V8/, 'the agent\'s code cache is accepted in the guest');
  });

  await t.test('exit code 3 with exact stdout and stderr', async () => {
    const id = await newContainer('exit');
    const pid = await run(id, spec(['sh', '-c', 'echo to-stdout; echo to-stderr >&2; exit 3']));
    assert.ok(pid > 1);
    const [out, err, status] = await Promise.all([readText(c, { containerId: id }), readText(c, { containerId: id }, 'stderr'), exitOf(c, id)]);
    assert.equal(out, 'to-stdout\n');
    assert.equal(err, 'to-stderr\n');
    assert.equal(status, 3);
    await c.removeContainer({ containerId: id });
  });

  await t.test('/proc/version in a container is the guest kernel, not the host\'s', async (st) => {
    const id = await newContainer('kver');
    await run(id, spec(['sh', '-c', 'cat /proc/version; cat /proc/sys/kernel/random/boot_id']));
    const [out = '', bootId = ''] = (await readText(c, { containerId: id })).split('\n');
    assert.equal(await exitOf(c, id), 0);
    assert.ok(image.kernelRelease, 'manifest names the kernel release');
    assert.match(out, new RegExp(`^Linux version ${image.kernelRelease!.replace(/[.+]/g, '\\$&')} `));
    // Another kernel for sure, even when the host runs the guest's release: another boot, another /proc/version.
    assert.match(bootId, /^[0-9a-f-]{36}$/);
    assert.notEqual(bootId, readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(), 'the guest\'s boot id is not the host\'s');
    assert.notEqual(out.trim(), readFileSync('/proc/version', 'utf8').trim(), 'the guest\'s /proc/version is not the host\'s');
    st.diagnostic(`guest: ${image.kernelRelease}, host: ${release()}`);
    await c.removeContainer({ containerId: id });
  });

  await t.test('exec, ps, stats, pause/resume, SIGTERM to an exec (143), SIGKILL to the container (137)', async () => {
    const id = await newContainer('sleeper');
    await run(id, spec(['sh', '-c', 'while :; do echo tick; sleep 0.1; done']));
    // An exec with its own exit code and output.
    const e1 = await c.execProcess({ containerId: id, execId: 'e1', process: { args: ['sh', '-c', 'echo from-exec; echo exec-err >&2; exit 7'], cwd: '/', env: ['PATH=/bin'] } });
    assert.ok(e1.pid > 1);
    const [o1, r1, s1] = await Promise.all([
      readText(c, { containerId: id, execId: 'e1' }), readText(c, { containerId: id, execId: 'e1' }, 'stderr'), exitOf(c, id, 'e1'),
    ]);
    assert.deepEqual([o1, r1, s1], ['from-exec\n', 'exec-err\n', 7]);

    // A long-running exec, then ListProcesses and StatsContainer.
    await c.execProcess({ containerId: id, execId: 'e2', process: { args: ['sleep', '300'], cwd: '/', env: ['PATH=/bin'] } });
    const ps = await c.listProcesses({ containerId: id });
    assert.ok(ps.some((p) => p.cmd === 'sleep 300'), `exec not listed: ${JSON.stringify(ps)}`);
    assert.ok(ps.some((p) => p.cmd.startsWith('sh -c while')), `init not listed: ${JSON.stringify(ps)}`);
    const stats = await c.statsContainer({ containerId: id });
    assert.equal(stats.cgroupVersion, 2, 'the guest has cgroup v2');
    assert.ok(stats.memory.usageBytes > 0, `memory ${JSON.stringify(stats.memory)}`);
    assert.ok(stats.pids.current >= 2, `pids ${JSON.stringify(stats.pids)}`);
    assert.ok(stats.cpu.usageUsec > 0, `cpu ${JSON.stringify(stats.cpu)}`);

    // Pause: output stops; resume: it flows again.
    assert.match((await c.readStdout({ containerId: id }, { timeoutMs: 10_000 })).data.toString(), /tick/);
    await c.pauseContainer({ containerId: id });
    assert.equal((await c.listContainers()).containers.find((x) => x.containerId === id)?.state, 'paused');
    await expectCode(c.pauseContainer({ containerId: id }), Code.FAILED_PRECONDITION, /paused state/);
    await drainStdout(c, { containerId: id }, 500); // what was written before the freeze
    await expectCode(c.readStdout({ containerId: id }, { timeoutMs: 1_000 }), Code.DEADLINE_EXCEEDED);
    await c.resumeContainer({ containerId: id });
    assert.equal((await c.listContainers()).containers.find((x) => x.containerId === id)?.state, 'running');
    assert.match((await c.readStdout({ containerId: id }, { timeoutMs: 10_000 })).data.toString(), /tick/);

    // Signals: SIGTERM to the exec → 143; SIGKILL to the container → 137.
    await c.signalProcess({ containerId: id, execId: 'e2', signal: 'SIGTERM' });
    assert.equal(await exitOf(c, id, 'e2'), 143);
    await c.signalProcess({ containerId: id, signal: 'SIGKILL' });
    assert.equal(await exitOf(c, id), 137);
    assert.equal((await c.listContainers()).containers.find((x) => x.containerId === id)?.state, 'stopped');
    await c.removeContainer({ containerId: id });
  });

  await t.test('stdin round trip until EOF (cat)', async () => {
    const id = await newContainer('cat');
    await run(id, spec(['cat']), { stdin: true });
    const input = randomBytes(200 * 1024);
    const reading = (async () => {
      const parts: Buffer[] = [];
      for (;;) {
        const r = await c.readStdout({ containerId: id, maxLen: 256 * 1024 }, { timeoutMs: 60_000 });
        if (r.eof) return Buffer.concat(parts);
        parts.push(r.data);
      }
    })();
    for (let off = 0; off < input.length; off += 64 * 1024) {
      const chunk = input.subarray(off, off + 64 * 1024);
      assert.equal(await c.writeStdin({ containerId: id, data: chunk }, { timeoutMs: 60_000 }), chunk.length);
    }
    await c.closeStdin({ containerId: id });
    assert.ok((await reading).equals(input), 'output differs from input');
    assert.equal(await exitOf(c, id), 0);
    await c.removeContainer({ containerId: id });
  });

  await t.test('terminal: resized while running, stty size prints the new size', async () => {
    const id = await newContainer('tty');
    await run(id, spec(['sh', '-c', 'stty size; read x; stty size; exit 4'], true), { terminal: true, stdin: true, rows: 24, cols: 80 });
    // The first `stty size` shows the initial size; wait for it before resizing.
    let out = '';
    while (!/24 80/.test(out)) {
      const r = await c.readStdout({ containerId: id }, { timeoutMs: 30_000 });
      assert.equal(r.eof, false, `EOF before the first stty size: ${JSON.stringify(out)}`);
      out += r.data.toString();
    }
    await c.ttyWinResize({ containerId: id, rows: 50, cols: 132 });
    await c.writeStdin({ containerId: id, data: Buffer.from('go\n') }, { timeoutMs: 30_000 });
    out += await readText(c, { containerId: id });
    assert.match(out, /24 80[\s\S]*50 132/);
    assert.equal(await exitOf(c, id), 4);
    await c.removeContainer({ containerId: id });
  });

  await t.test('terminal: the size given at start is in place before the process runs (crun run and crun exec, repeated); an exec owns its pty and gets SIGWINCH', async (st) => {
    // `stty size` as the process itself (no shell first): its first ioctl
    // reads the size. A pty starts 0x0 (busybox stty then prints
    // "stty: standard input" instead of a size), so anything but `33 77` is
    // the size arriving late. crun exec releases the process before it sets
    // consoleSize on the master (docs/agent.md, Terminals): repeated to catch
    // that window.
    const RUNS = 10;
    const sizes: string[] = [];
    // The init process (crun run): crun sets the size on the slave in the
    // container before the process is started.
    for (let i = 0; i < 3; i++) {
      const id = await newContainer('tty-init');
      await run(id, spec(['stty', 'size'], true), { terminal: true, rows: 33, cols: 77 });
      const [out, status] = await Promise.all([readText(c, { containerId: id }), exitOf(c, id)]);
      sizes.push(out.trim());
      assert.equal(status, 0, out);
      await c.removeContainer({ containerId: id });
    }
    // Execs (crun exec) into a running container.
    const id = await newContainer('tty-exec');
    await run(id, spec(['sleep', '300']));
    for (let i = 0; i < RUNS; i++) {
      const execId = `size-${i}`;
      await c.execProcess({ containerId: id, execId, terminal: true, rows: 33, cols: 77, process: { args: ['stty', 'size'], cwd: '/', env: ['PATH=/bin'] } });
      const [out, status] = await Promise.all([readText(c, { containerId: id, execId }), exitOf(c, id, execId)]);
      sizes.push(out.trim());
      assert.equal(status, 0, out);
    }
    st.diagnostic(`sizes seen: ${JSON.stringify(sizes)}`);
    assert.deepEqual(sizes, Array<string>(3 + RUNS).fill('33 77'));

    // The exec'd shell is a session leader with the pty as its controlling
    // terminal and is the terminal's foreground process group (what job
    // control needs). Fields of /proc/<sh>/stat: pid comm state ppid pgrp
    // session tty_nr tpgid (comm is "(sh)", no spaces); `read` is a builtin,
    // so /proc/self is the shell.
    await c.execProcess({
      containerId: id, execId: 'ctty', terminal: true, rows: 33, cols: 77,
      process: { args: ['sh', '-c', 'tty; read -r pid comm state ppid pgrp sid ttynr tpgid rest < /proc/self/stat; echo "pid=$pid pgrp=$pgrp sid=$sid tty_nr=$ttynr tpgid=$tpgid"'], cwd: '/', env: ['PATH=/bin'] },
    });
    const [out, status] = await Promise.all([readText(c, { containerId: id, execId: 'ctty' }), exitOf(c, id, 'ctty')]);
    assert.equal(status, 0, out);
    assert.match(out, /^\/dev\/pts\/\d+\r?$/m, out);
    const m = /pid=(\d+) pgrp=(\d+) sid=(\d+) tty_nr=(\d+) tpgid=(-?\d+)/.exec(out);
    assert.ok(m, out);
    const [pid, pgrp, sid, ttyNr, tpgid] = m.slice(1).map(Number) as [number, number, number, number, number];
    assert.equal(sid, pid, `the shell leads its session: ${out}`);
    assert.notEqual(ttyNr, 0, `the shell has a controlling terminal: ${out}`);
    assert.equal(tpgid, pgrp, `the shell is the terminal's foreground process group: ${out}`);

    // A resize of a running exec reaches it as SIGWINCH (what a size that
    // came late would also do), and the new size is read in the handler.
    await c.execProcess({
      containerId: id, execId: 'winch', terminal: true, rows: 33, cols: 77,
      process: { args: ['sh', '-c', 'trap "echo winch; stty size" WINCH; echo ready; while :; do sleep 0.1; done'], cwd: '/', env: ['PATH=/bin'] },
    });
    let wout = '';
    const until = async (re: RegExp) => {
      while (!re.test(wout)) {
        const r = await c.readStdout({ containerId: id, execId: 'winch' }, { timeoutMs: 30_000 });
        assert.equal(r.eof, false, `EOF before ${re}: ${JSON.stringify(wout)}`);
        wout += r.data.toString();
      }
    };
    await until(/ready/);
    assert.doesNotMatch(wout, /winch/);
    await c.ttyWinResize({ containerId: id, execId: 'winch', rows: 50, cols: 132 });
    await until(/winch\r?\n50 132/);
    await c.signalProcess({ containerId: id, execId: 'winch', signal: 'SIGKILL' });
    assert.equal(await exitOf(c, id, 'winch'), 137);
    await c.signalProcess({ containerId: id, signal: 'SIGKILL' });
    assert.equal(await exitOf(c, id), 137);
    await c.removeContainer({ containerId: id });
  });

  await t.test('a host file outside the shared dir is unreachable from the container and from the VM', async (st) => {
    // Escape attempts placed in the share by the host: symlinks to the secret.
    writeFileSync(join(sb.sharedDir, 'inside.txt'), 'visible\n');
    symlinkSync(join('..', '..', 'secret.txt'), join(sb.sharedDir, 'escape-rel'));
    symlinkSync(secretPath, join(sb.sharedDir, 'escape-abs'));
    const g = `/guest${GUEST_SHARED_DIR}`;
    // `find DIR… | grep` for the secret in regular files only (a FIFO would
    // block grep), pruning proc and sysfs (reading all of /proc takes
    // minutes under TCG). The pattern is split in two variables so that it is
    // not itself in the container's config.json under the guest's /run.
    const search = (dirs: string) => `P="$S1$S2"; for d in ${dirs}; do ` +
      'find "$d" \\( -path "*/proc" -o -path "*/sys" \\) -prune -o -type f -exec grep -lF "$P" {} + 2>/dev/null | sed "s/^/FOUND: /"; done';
    // The container sees the guest's whole root at /guest (read-only): the
    // VM's view. It is mounted first, before the container's own /proc and
    // /sys exist under its rootfs (which is in the share).
    const spy = (script: string) => spec(['sh', '-c', script], false, (x) => {
      x.process.env.push(`S1=${secret.slice(0, 12)}`, `S2=${secret.slice(12)}`, `H=${secretPath}`, `G=${g}`);
      x.mounts.unshift({ destination: '/guest', type: 'bind', source: '/', options: ['rbind', 'ro'] });
    });
    const id = await newContainer('spy');
    const started = Date.now();
    await run(id, spy([
      'echo "share: $(cat $G/inside.txt)"',
      // The host path, in the container and in the VM; through the planted symlinks; through `..`.
      'for f in "$H" "/guest$H" "$G/escape-rel" "$G/escape-abs" "$G/../../../../..$H" "$G/../../secret.txt"; do',
      '  if cat "$f" >/dev/null 2>&1; then echo "READABLE: $f"; fi',
      'done',
      // Every regular file of the guest's root (but /proc, /sys, /dev; the
      // share included) and of the container's own root.
      search('$(ls -d /guest/* /* | grep -vxE "/guest/(proc|sys|dev)|/(proc|sys|dev|guest)")'),
      'echo searched',
    ].join('\n')));
    const [out, status] = await Promise.all([readText(c, { containerId: id }), exitOf(c, id)]);
    st.diagnostic(`search of the guest's / took ${Date.now() - started} ms`);
    assert.equal(status, 0);
    assert.match(out, /^share: visible$/m, 'the share itself is visible');
    assert.match(out, /^searched$/m);
    assert.doesNotMatch(out, /READABLE|FOUND/, out);
    // Positive control: the same search finds the secret once it is in the share.
    writeFileSync(join(sb.sharedDir, 'planted.txt'), `${secret}\n`);
    const id2 = await newContainer('spy');
    await run(id2, spy(search('"$G"')));
    assert.equal((await readText(c, { containerId: id2 })).trim(), `FOUND: ${g}/planted.txt`);
    assert.equal(await exitOf(c, id2), 0);
    await c.removeContainer({ containerId: id });
    await c.removeContainer({ containerId: id2 });
  });

  await t.test('bad requests get their codes and the agent keeps serving', async () => {
    await expectCode(c.startContainer({ containerId: 'no-such' }), Code.NOT_FOUND, /container no-such not found/);
    await expectCode(c.waitProcess({ containerId: 'no-such' }, { timeoutMs: 10_000 }), Code.NOT_FOUND);
    await c.check();
    const id = await newContainer('dup');
    await c.createContainer({ containerId: id, spec: spec(['true']), rootfsPath: sb.rootfsGuestPath(id) });
    await expectCode(c.createContainer({ containerId: id, spec: spec(['true']), rootfsPath: sb.rootfsGuestPath(id) }), Code.ALREADY_EXISTS, /already exists/);
    await c.check();
    await expectCode(c.createContainer({ containerId: 'bad-json', spec: Buffer.from('{"process": '), rootfsPath: sb.rootfsGuestPath(id) }), Code.INVALID_ARGUMENT, /spec_json: malformed JSON/);
    await expectCode(c.createContainer({ containerId: 'bad-args', spec: { process: { args: [] } }, rootfsPath: sb.rootfsGuestPath(id) }), Code.INVALID_ARGUMENT, /spec_json\.process\.args/);
    await expectCode(c.createContainer({ containerId: 'bad-root', spec: spec(['true']), rootfsPath: `${GUEST_SHARED_DIR}/no-such/rootfs` }), Code.INVALID_ARGUMENT, /rootfs_path/);
    await c.check();
    // The created one still starts and exits normally.
    await c.startContainer({ containerId: id });
    assert.equal(await exitOf(c, id), 0);
    await c.removeContainer({ containerId: id });
    assert.equal((await c.check()).sandboxId, 'sb-vm-e2e');
  });

  await t.test('DestroySandbox kills every container and unmounts the share; CreateSandbox mounts it again', async () => {
    const ids = [await newContainer('d'), await newContainer('d')];
    for (const id of ids) await run(id, spec(['sleep', '300']));
    await c.execProcess({ containerId: ids[0]!, execId: 'x', process: { args: ['sleep', '200'], cwd: '/' } });
    const waits = [exitOf(c, ids[0]!), exitOf(c, ids[1]!), exitOf(c, ids[0]!, 'x')];
    await c.destroySandbox({ timeoutMs: 10_000 });
    assert.deepEqual(await Promise.all(waits), [137, 137, 137]);
    const st = await c.listContainers();
    assert.equal(st.sandboxId, '');
    assert.deepEqual(st.containers, []);
    await sleep(100); // the console log is written asynchronously
    assert.match(readFileSync(sb.vm.consoleLogPath, 'utf8'), /"shared fs unmounted"/);
    // The next pod's sandbox in the same VM: the share is mounted again and used.
    await c.createSandbox({ sandboxId: 'sb-vm-e2e', sharedFs: { tag: 'kataShared', mountPoint: GUEST_SHARED_DIR } });
    const id = await newContainer('again');
    await run(id, spec(['cat', '/etc/hostname']));
    assert.equal(await readText(c, { containerId: id }), 'busybox\n');
    assert.equal(await exitOf(c, id), 0);
  });

  await t.test('stop: no QEMU, no virtiofsd, no socket, no mount, no sandbox dir left', async (st) => {
    const vmState = sb.vm.state();
    recorded = vmState;
    const qemu = vmState.qemu!;
    const vfsd = vmState.virtiofsd!;
    assert.ok(isAlive(qemu) && isAlive(vfsd), 'both run before stop');
    assert.ok(mountsUnder(sandboxDir).length > 0, 'the shared dir is bind-mounted while running');
    const t1 = Date.now();
    await sb.stop();
    st.diagnostic(`stop took ${Date.now() - t1} ms`);
    assert.equal(isAlive(qemu), false, `qemu pid ${qemu.pid} still alive`);
    assert.equal(isAlive(vfsd), false, `virtiofsd pid ${vfsd.pid} still alive`);
    assert.equal(existsSync(`/proc/${qemu.pid}`) && readFileSync(`/proc/${qemu.pid}/cmdline`, 'utf8').includes('sandbox-sb-vm-e2e'), false);
    assert.equal(sb.vm.phase, 'stopped');
    assert.equal(c.isClosed, true, 'agent connection closed');
    for (const f of [vmState.qmpSocket, vfsd.socketPath, join(sandboxDir, 'agent.sock'), virtiofsdLockFile(vfsd.socketPath)]) {
      assert.equal(existsSync(f), false, `${f} left`);
    }
    assert.deepEqual(mountsUnder(root), [], 'mounts left');
    assert.equal(existsSync(sandboxDir), false, 'sandbox dir left');
    assert.deepEqual(mountsUnder(dirname(sandboxDir)), []);
    // The secret is still where it was: stop removed only the sandbox's files.
    assert.equal(readFileSync(secretPath, 'utf8'), `${secret}\n`);
    await sb.stop(); // idempotent
  });
});
