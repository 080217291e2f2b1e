// ctr-level helpers shared by the end-to-end tests that drive a private
// containerd (test/harness/containerd.ts): task and container listings,
// waiting for a task status, forced removal, a shim's socket and bundle,
// the QEMU processes of one containerd, and a running `ctr events`.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, readSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { allPids, mentionsPath, pidAlive, procCmdline, waitFor, type Containerd, type CtrResult } from './containerd.js';

export const SANDBOX_ID_ANNOTATION = 'io.kubernetes.cri.sandbox-id';
export const CONTAINER_TYPE_ANNOTATION = 'io.kubernetes.cri.container-type';

/** `ctr run` flags that put a container into pod `pod` (the sandbox itself when `id === pod`). */
export function podAnnotations(pod: string, id: string): string[] {
  return ['--annotation', `${CONTAINER_TYPE_ANNOTATION}=${id === pod ? 'sandbox' : 'container'}`, '--annotation', `${SANDBOX_ID_ANNOTATION}=${pod}`];
}

export function ok(r: CtrResult, what: string): void {
  assert.equal(r.code, 0, `${what}: exit ${r.code ?? r.signal}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
}

export function show(r: CtrResult): string {
  return `exit ${r.code ?? r.signal}${r.timedOut ? ' (timed out)' : ''}\nstdout: ${JSON.stringify(r.stdout)}\nstderr: ${r.stderr}`;
}

/** `ctr task ls` as a map id → { pid, status }. */
export async function tasks(c: Containerd): Promise<Map<string, { pid: number; status: string }>> {
  const r = await c.ctr(['task', 'ls'], { timeoutMs: 30_000 });
  ok(r, 'task ls');
  const m = new Map<string, { pid: number; status: string }>();
  for (const line of r.stdout.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 3) m.set(f[0]!, { pid: Number(f[1]), status: f[2]! });
  }
  return m;
}

export async function waitStatus(c: Containerd, id: string, status: string, timeoutMs = 120_000): Promise<{ pid: number; status: string }> {
  let last: unknown;
  try {
    return await waitFor(
      async () => {
        const t = (await tasks(c)).get(id);
        last = t;
        return t?.status === status ? t : undefined;
      },
      { timeoutMs, intervalMs: 100, what: `task ${id} ${status}` },
    );
  } catch (e) {
    throw new Error(`${(e as Error).message} (last: ${JSON.stringify(last)})`);
  }
}

export async function containerIds(c: Containerd): Promise<string[]> {
  const r = await c.ctr(['containers', 'ls', '-q'], { timeoutMs: 30_000 });
  ok(r, 'containers ls');
  return r.stdout.split('\n').map((s) => s.trim()).filter(Boolean);
}

/** Remove a container of ours whatever state it is in (test cleanup; errors ignored). */
export async function forceRemove(c: Containerd, id: string): Promise<void> {
  await c.ctr(['task', 'kill', '-a', '-s', 'KILL', id], { timeoutMs: 30_000 });
  await c.ctr(['task', 'delete', '-f', id], { timeoutMs: 60_000 });
  await c.ctr(['containers', 'delete', id], { timeoutMs: 30_000 });
}

/** forceRemove for each of `ids` that containerd still lists. */
export async function removeIfPresent(c: Containerd, ids: string[]): Promise<void> {
  const have = await containerIds(c).catch(() => ids);
  for (const id of ids) if (have.includes(id)) await forceRemove(c, id);
}

/** containerd's task state dir of a namespace: <state>/io.containerd.runtime.v2.task/<ns>. */
export function taskStateDir(c: Containerd, namespace = c.namespace): string {
  return join(c.state, 'io.containerd.runtime.v2.task', namespace);
}

/** containerd's bundle of a task: <state>/io.containerd.runtime.v2.task/<ns>/<id>. */
export function bundleDir(c: Containerd, id: string): string {
  return join(taskStateDir(c), id);
}

/** The shim's socket path, from the `address` file the shim wrote in the bundle (unix:///path). */
export function shimSocket(c: Containerd, id: string): string {
  const a = readFileSync(join(bundleDir(c, id), 'address'), 'utf8').trim();
  assert.match(a, /^unix:\/\/\//, `address file of ${id}: ${a}`);
  return a.slice('unix://'.length);
}

/** Live QEMU processes of this containerd (their command lines name our temp dir: the run root's sockets). */
export function qemuPids(c: Containerd): number[] {
  return allPids().filter((pid) => {
    const argv = procCmdline(pid);
    return /^qemu-system/.test(basename(argv[0] ?? '')) && argv.some((a) => mentionsPath(a, c.dir)) && pidAlive(pid);
  });
}

/** Live virtiofsd processes of this containerd. */
export function virtiofsdPids(c: Containerd): number[] {
  return allPids().filter((pid) => {
    const argv = procCmdline(pid);
    return /virtiofsd$/.test(basename(argv[0] ?? '')) && argv.some((a) => mentionsPath(a, c.dir)) && pidAlive(pid);
  });
}

/** Every unix socket at or under `dir`. */
export function socketsUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    let ents;
    try {
      ents = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of ents) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isSocket()) out.push(p);
    }
  };
  walk(dir);
  return out;
}

/** The sorted names in `dir` ([] if it does not exist). */
export function entries(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}

/** A running `ctr events`, its stdout split into lines. */
export class CtrEvents {
  readonly lines: string[] = [];
  private err = '';
  private readonly p: ChildProcess;
  private readonly closed: Promise<void>;
  constructor(c: Containerd) {
    this.p = spawn('ctr', ['--address', c.address, '--namespace', c.namespace, 'events'], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.closed = new Promise((r) => this.p.once('close', () => r()));
    let buf = '';
    this.p.stdout!.setEncoding('utf8');
    this.p.stdout!.on('data', (s: string) => {
      buf += s;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        this.lines.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    });
    this.p.stderr!.setEncoding('utf8');
    this.p.stderr!.on('data', (s: string) => (this.err += s));
  }
  /** The first line holding every one of `parts`, if any yet. */
  find(parts: string[]): string | undefined {
    return this.lines.find((l) => parts.every((p) => l.includes(p)));
  }
  waitLine(parts: string[], what: string, timeoutMs: number): Promise<string> {
    return waitFor(() => this.find(parts), { timeoutMs, intervalMs: 50, what: `ctr events: ${what}` }).catch(
      (e: Error) => {
        throw new Error(`${e.message}\nctr events stdout:\n${this.lines.join('\n')}\nstderr:\n${this.err}`);
      },
    );
  }
  async stop(): Promise<void> {
    try {
      this.p.kill('SIGKILL');
    } catch {
      /* gone */
    }
    await this.closed;
  }
}

/** The parts of a `ctr events` line of a /tasks/exit of `id` (exec `execId`, default the init) with `status`. */
export function exitEventParts(c: Containerd, container: string, status: number, execId = container): string[] {
  return [` ${c.namespace} /tasks/exit `, `"container_id":"${container}"`, `"id":"${execId}"`, `"exit_status":${status}`];
}

/** VmRSS of a process in bytes (undefined once it is gone). */
export function rssBytes(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Sets the `[debug] level` of containerd's config.toml; it takes effect at
 * the next start (c.restart()). Returns the level it replaced. At "debug"
 * containerd logs every event a shim forwards (see forwardedEvents) and
 * starts new shims with -debug.
 */
export function setContainerdLogLevel(c: Containerd, level: string): string {
  const config = readFileSync(c.configPath, 'utf8');
  const re = /(\[debug\][^[]*?level = )"([a-z]+)"/;
  const m = re.exec(config);
  assert.ok(m, `no [debug] level in ${c.configPath}`);
  writeFileSync(c.configPath, config.replace(re, `$1"${level}"`));
  return m[2]!;
}

/** The size of containerd's log now: a mark for forwardedEvents. */
export function logMark(c: Containerd): number {
  try {
    return statSync(c.logPath).size;
  } catch {
    return 0;
  }
}

/**
 * How many events of `topic` (e.g. "/tasks/exit") in namespace `namespace`
 * containerd accepted from shims (its `msg="event forwarded"` debug lines)
 * between byte offsets `from` and `to` (default: the end) of its log.
 * Only counts while containerd runs at debug level (setContainerdLogLevel).
 */
/** containerd's log (where it copies its shims' logs) from byte `from` to `to` (default: its end). */
export function logSince(c: Containerd, from: number, to?: number): string {
  const fd = openSync(c.logPath, 'r');
  try {
    const end = to ?? statSync(c.logPath).size;
    const buf = Buffer.alloc(Math.max(0, end - from));
    let off = 0;
    while (off < buf.length) {
      const n = readSync(fd, buf, off, buf.length - off, from + off);
      if (n === 0) break;
      off += n;
    }
    return buf.subarray(0, off).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

export function forwardedEvents(c: Containerd, topic: string, from: number, to?: number, namespace = c.namespace): number {
  const text = logSince(c, from, to);
  const needle = `msg="event forwarded" ns=${namespace} topic=${topic} `;
  let count = 0;
  for (let i = text.indexOf(needle); i >= 0; i = text.indexOf(needle, i + needle.length)) count++;
  return count;
}
