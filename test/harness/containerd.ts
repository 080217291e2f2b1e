// A private containerd for end-to-end tests.
//
// Everything lives under one temp dir (root, state, sockets, config, log); the
// system's /run/containerd and /var/lib/containerd are never used by containerd
// itself. stop() ends containerd, every shim started with `-address <our
// socket>` and everything below those shims, every process whose command line
// names the temp dir, unmounts what is mounted under the temp dir and removes it.
// Processes are only ever ended by pid.
//
// Note: containerd 1.6's shims (runc's, and any shim that follows pkg/shim)
// put their ttrpc socket at /run/containerd/s/<sha256(address/ns/id)>, and the
// runc shim keeps runc state under /run/containerd/runc/<ns> unless given a
// runc root (`ctr run --runc-root`, CRI `options.Root`). stop() removes our own
// entries there (socket files of our shims, runc/<our unique ns>), never
// anything else.
//
// Our own shim (containerd-shim-kata-v2) keeps its per-pod state, sockets and
// mounts under $KATA_TS_RUN_ROOT (default /run/kata-ts). The harness sets it
// to <temp dir>/kata for containerd (and so for every shim it starts) unless
// `env` overrides it, so stop() finds QEMU/virtiofsd through the dir on their
// command lines and unmounts the pods' shared dirs.

import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { defaultConfigText, templateConfigEdit, templatesOn } from './guest.js';

// ---------------------------------------------------------------------------
// public types

export interface RuntimeConfig {
  /** e.g. "io.containerd.kata.v2" */
  runtimeType: string;
  /** Written as `[…runtimes.<name>.options]` (nested objects become sub-tables). */
  options?: Record<string, unknown>;
  /** Other keys of the runtime table (pod_annotations, privileged_without_host_devices, …). */
  extra?: Record<string, unknown>;
}

export interface CriOptions {
  /** `sandbox_image` (default registry.k8s.io/pause:3.6, see busybox.ts pauseImage()). */
  sandboxImage?: string;
  /** CNI config dir (default <dir>/cni/net.d, created empty). */
  cniConfDir?: string;
  /** CNI plugin dir (default /usr/lib/cni, Debian's containernetworking-plugins). */
  cniBinDir?: string;
  /** `default_runtime_name` (default "runc"). */
  defaultRuntime?: string;
}

export interface ContainerdOptions {
  /** CRI runtime handlers; a "runc" handler (io.containerd.runc.v2, runc root under our state) is added unless given. */
  runtimes?: Record<string, RuntimeConfig>;
  /** Enable the CRI plugin (disabled by default). */
  cri?: boolean | CriOptions;
  /** Directories put in front of PATH for containerd (where it looks up containerd-shim-<name>-v2). */
  extraPath?: string[];
  /** Namespace ctr() uses by default (default: a unique "kata-e2e-<hex>", so cgroup paths never collide). */
  namespace?: string;
  /** Snapshotter: "auto" (default) probes overlayfs under the temp dir and falls back to native. */
  snapshotter?: 'auto' | 'overlayfs' | 'native';
  /** containerd log level (default "info", or $KATA_TEST_CONTAINERD_LOG_LEVEL). */
  logLevel?: string;
  /**
   * Extra environment for containerd (and so for the shims it starts).
   * KATA_TS_RUN_ROOT defaults to <temp dir>/kata (see kataRunRoot); give it here to override.
   */
  env?: Record<string, string>;
  /**
   * Which configuration.toml the kata shims read when a pod gives no ConfigPath:
   * `hermetic` (default) writes the project's default with this checkout's
   * guest paths to <temp dir>/configuration.toml and points KATA_CONF_FILE
   * at it (an env KATA_CONF_FILE given in `env` wins), so a test never reads
   * the machine's /etc/kata-containers or /usr/share/defaults; `system`
   * leaves the shim's own lookup alone (the main job).
   */
  kataConfig?: 'hermetic' | 'system';
  /** An edit of the hermetic configuration.toml (e.g. turning a switch on for a whole suite); must change it. */
  kataConfigEdit?: (text: string) => string;
  /** Raw TOML appended to config.toml (must not repeat a table written here). */
  extraConfig?: string;
  /** Parent of the temp dir (default os.tmpdir()). */
  baseDir?: string;
  /** How long to wait for the sockets (default 20 s). */
  startTimeoutMs?: number;
  /**
   * Run containerd (and so the CNI plugins it calls, its shims and their
   * children) in this network namespace: a name under /var/run/netns or an
   * absolute path to a netns file. containerd is started as
   * `nsenter --net=<path> -- containerd …` (nsenter with only --net setns()es
   * and execs: same pid, same mount namespace, so mounts, sockets and pids are
   * seen as without it). The namespace must exist and is the caller's to
   * remove. Unix sockets are not bound to a network namespace: ctr and the
   * CRI client work from the caller's namespace.
   */
  netns?: string;
}

export interface CtrOptions {
  /** Kill ctr with SIGKILL after this long (default 30 s). */
  timeoutMs?: number;
  /** Data written to ctr's stdin, then closed. Default: stdin is /dev/null. */
  stdin?: string | Buffer;
  /** Namespace (default: the instance's). */
  namespace?: string;
  /** Extra environment for ctr. */
  env?: Record<string, string>;
  /**
   * Keep ctr's and runc's files under our temp dir (default true): inserts
   * `--fifo-dir <dir>/fifo` into `run`, `task exec` and `task start` (ctr's
   * default is /run/containerd/fifo), and `--runc-root <runcRoot>` into `run`
   * when the runtime is io.containerd.runc.v2 (the runc shim's default is
   * /run/containerd/runc). Flags already given are left alone.
   */
  inject?: boolean;
}

export interface CtrResult {
  /** Exit code, or null if ctr died of a signal (then see `signal`). */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  stdoutBuf: Buffer;
  /** True if the timeout killed ctr. */
  timedOut: boolean;
  durationMs: number;
}

export interface StopOptions {
  /**
   * First delete every task and container through ctr (bounded by a few
   * seconds), so shims clean up after themselves; then kill whatever is left.
   * Default true.
   */
  graceful?: boolean;
}

export interface Containerd {
  /** gRPC socket path. */
  readonly address: string;
  /** ttrpc socket path. */
  readonly ttrpcAddress: string;
  readonly root: string;
  readonly state: string;
  /** The temp dir holding everything. */
  readonly dir: string;
  readonly configPath: string;
  readonly logPath: string;
  /** Default namespace of ctr(). */
  readonly namespace: string;
  /** The snapshotter chosen ("overlayfs" or "native"); ctr() passes it via CONTAINERD_SNAPSHOTTER. */
  readonly snapshotter: 'overlayfs' | 'native';
  /** A dir under `dir` suitable for `ctr run --runc-root`. */
  readonly runcRoot: string;
  /** KATA_TS_RUN_ROOT as passed to containerd: <dir>/kata unless `env` gave another (not created by the harness). */
  readonly kataRunRoot: string;
  /** containerd's pid, or undefined while it is not running. */
  readonly pid: number | undefined;
  /** Run `ctr --address A --namespace N …args`. Never throws for a non-zero exit. */
  ctr(args: string[], opts?: CtrOptions): Promise<CtrResult>;
  /** Pids of the live shims started by this containerd (matched by `-address <our socket>`). */
  shimPids(): number[];
  /** Full teardown (idempotent). */
  stop(opts?: StopOptions): Promise<void>;
  /** SIGKILL containerd only (shims and containers stay). */
  kill9(): Promise<void>;
  /** Start containerd again on the same config/root/state (stopping it first with SIGTERM if it runs). */
  restart(): Promise<void>;
  /** The last `lines` lines of containerd's log (shim stderr lands there too). */
  logTail(lines?: number): string;
}

// ---------------------------------------------------------------------------
// small helpers (exported for other harness users)

/** Poll `fn` until it returns a truthy value; throws after `timeoutMs`. */
export async function waitFor<T>(
  fn: () => T | Promise<T>,
  opts: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<NonNullable<T>> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${opts.what ?? 'condition'}` + (lastErr ? `: ${String(lastErr)}` : ''));
    }
    await sleep(opts.intervalMs ?? 50);
  }
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Argument vector of a process ([] if gone or a zombie/kernel thread). */
export function procCmdline(pid: number): string[] {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (!raw) return [];
    return raw.replace(/\0$/, '').split('\0');
  } catch {
    return [];
  }
}

/** { ppid, state } from /proc/<pid>/stat, or undefined if gone. */
export function procStat(pid: number): { ppid: number; state: string } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { state: rest[0]!, ppid: Number(rest[1]) };
  } catch {
    return undefined;
  }
}

/** True if the pid exists and is not a zombie. */
export function pidAlive(pid: number): boolean {
  const st = procStat(pid);
  return st !== undefined && st.state !== 'Z' && st.state !== 'X';
}

export function allPids(): number[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map(Number);
}

/** Pids of processes (not zombies) whose argv has `-address <address>` (or --address, -address=). */
export function findShimPids(address: string): number[] {
  const out: number[] = [];
  for (const pid of allPids()) {
    if (pid === process.pid) continue;
    const argv = procCmdline(pid);
    for (let i = 0; i < argv.length; i++) {
      const a = argv[i]!;
      if (((a === '-address' || a === '--address') && argv[i + 1] === address) || a === `-address=${address}` || a === `--address=${address}`) {
        // ctr also takes --address; a shim is anything that is not ctr.
        if (!/(^|\/)ctr$/.test(argv[0] ?? '')) out.push(pid);
        break;
      }
    }
  }
  return out.filter(pidAlive);
}

/** Every live descendant of the given pids (not including them). */
export function descendants(roots: number[]): number[] {
  const children = new Map<number, number[]>();
  for (const pid of allPids()) {
    const st = procStat(pid);
    if (!st) continue;
    const l = children.get(st.ppid) ?? [];
    l.push(pid);
    children.set(st.ppid, l);
  }
  const seen = new Set<number>();
  const stack = [...roots];
  while (stack.length) {
    const p = stack.pop()!;
    for (const c of children.get(p) ?? []) {
      if (!seen.has(c) && !roots.includes(c)) {
        seen.add(c);
        stack.push(c);
      }
    }
  }
  return [...seen].filter(pidAlive);
}

/** True if `arg` names the path `dir` or something under it (not merely a longer name sharing its prefix). */
export function mentionsPath(arg: string, dir: string): boolean {
  for (let i = arg.indexOf(dir); i >= 0; i = arg.indexOf(dir, i + 1)) {
    const next = arg[i + dir.length];
    if (next === undefined || !/[A-Za-z0-9_.-]/.test(next)) return true;
  }
  return false;
}

/** Live pids (not ourselves) whose command line mentions the path `dir` (see mentionsPath). */
export function pidsMentioning(dir: string): number[] {
  const out: number[] = [];
  for (const pid of allPids()) {
    if (pid === process.pid) continue;
    const argv = procCmdline(pid);
    if (argv.some((a) => mentionsPath(a, dir)) && pidAlive(pid)) out.push(pid);
  }
  return out;
}

function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Mount points at or under `dir` (from /proc/self/mountinfo), deepest first. */
export function mountsUnder(dir: string): string[] {
  const d = resolve(dir);
  const out: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    if (f.length < 5) continue;
    const mp = unescapeMountinfo(f[4]!);
    if (mp === d || mp.startsWith(d + '/')) out.push(mp);
  }
  return out.sort((a, b) => b.split('/').length - a.split('/').length || b.length - a.length);
}

function killPid(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* gone */
  }
}

// ---------------------------------------------------------------------------
// config

function tomlKey(k: string): string {
  return /^[A-Za-z0-9_-]+$/.test(k) ? k : JSON.stringify(k);
}

function tomlValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new Error('toml: non-finite number');
    return String(v);
  }
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (Array.isArray(v)) return '[' + v.map(tomlValue).join(', ') + ']';
  throw new Error('toml: unsupported value ' + JSON.stringify(v));
}

const isTable = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `[path]` then its scalar keys, then its sub-tables. */
export function tomlTable(path: string, obj: Record<string, unknown>): string {
  let s = `[${path}]\n`;
  const subs: [string, Record<string, unknown>][] = [];
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined) continue;
    if (isTable(v)) subs.push([k, v]);
    else s += `  ${tomlKey(k)} = ${tomlValue(v)}\n`;
  }
  for (const [k, v] of subs) s += '\n' + tomlTable(`${path}.${tomlKey(k)}`, v);
  return s;
}

interface Layout {
  dir: string;
  root: string;
  state: string;
  address: string;
  ttrpcAddress: string;
  configPath: string;
  logPath: string;
  runcRoot: string;
}

function writeConfig(l: Layout, opts: ContainerdOptions, snapshotter: string): void {
  const criOn = !!opts.cri;
  const disabled = [
    'io.containerd.snapshotter.v1.aufs',
    'io.containerd.snapshotter.v1.btrfs',
    'io.containerd.snapshotter.v1.zfs',
    'io.containerd.snapshotter.v1.devmapper',
    // would create /opt/containerd
    'io.containerd.internal.v1.opt',
    'io.containerd.tracing.processor.v1.otlp',
    'io.containerd.internal.v1.tracing',
  ];
  if (!criOn) disabled.push('io.containerd.grpc.v1.cri');
  let s = `# written by test/harness/containerd.ts\nversion = 2\n`;
  s += `root = ${tomlValue(l.root)}\nstate = ${tomlValue(l.state)}\n`;
  s += `disabled_plugins = ${tomlValue(disabled)}\n\n`;
  s += tomlTable('grpc', { address: l.address }) + '\n';
  s += tomlTable('ttrpc', { address: l.ttrpcAddress }) + '\n';
  s += tomlTable('debug', { address: '', level: opts.logLevel ?? process.env.KATA_TEST_CONTAINERD_LOG_LEVEL ?? 'info' }) + '\n';
  s += tomlTable('metrics', { address: '' }) + '\n';
  // shim v1 runtime: unused, but the tasks service needs a RuntimePlugin loaded; keep its runc root private.
  s += tomlTable('plugins."io.containerd.runtime.v1.linux"', { runtime_root: join(l.state, 'runc-v1') }) + '\n';

  const runtimes: Record<string, unknown> = {};
  const cri = isTable(opts.cri) ? (opts.cri as CriOptions) : {};
  if (criOn && !opts.runtimes?.runc) {
    runtimes.runc = { runtime_type: 'io.containerd.runc.v2', options: { Root: l.runcRoot } };
  }
  for (const [name, rt] of Object.entries(opts.runtimes ?? {})) {
    runtimes[name] = { ...(rt.extra ?? {}), runtime_type: rt.runtimeType, ...(rt.options ? { options: rt.options } : {}) };
  }
  if (criOn || Object.keys(runtimes).length) {
    const cniConf = cri.cniConfDir ?? join(l.dir, 'cni', 'net.d');
    if (!cri.cniConfDir) mkdirSync(cniConf, { recursive: true });
    s +=
      tomlTable('plugins."io.containerd.grpc.v1.cri"', {
        sandbox_image: cri.sandboxImage ?? 'registry.k8s.io/pause:3.6',
        // no CAP_SYS_RESOURCE here: runc cannot set oom_score_adj -998
        restrict_oom_score_adj: true,
        // parallel instances must not fight over port 10010
        stream_server_address: '127.0.0.1',
        stream_server_port: '0',
        enable_selinux: false,
        containerd: {
          snapshotter,
          default_runtime_name: cri.defaultRuntime ?? 'runc',
          runtimes,
        },
        cni: { bin_dir: cri.cniBinDir ?? '/usr/lib/cni', conf_dir: cniConf },
      }) + '\n';
  }
  if (opts.extraConfig) s += opts.extraConfig + '\n';
  writeFileSync(l.configPath, s);
}

/** Can an overlay be mounted under `dir`? (Not on an overlay upper, e.g. inside some CI containers.) */
function overlayWorks(dir: string): boolean {
  const p = join(dir, 'overlay-probe');
  const m = join(p, 'merged');
  for (const d of ['lower', 'upper', 'work', 'merged']) mkdirSync(join(p, d), { recursive: true });
  let ok = false;
  try {
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${p}/lower,upperdir=${p}/upper,workdir=${p}/work`, m], {
      stdio: 'ignore',
      timeout: 10_000,
    });
    ok = true;
    execFileSync('umount', [m], { stdio: 'ignore', timeout: 10_000 });
  } catch {
    if (ok) {
      try {
        execFileSync('umount', ['-l', m], { stdio: 'ignore', timeout: 10_000 });
      } catch {
        /* reported by stop() if it stays */
      }
    }
  }
  rmSync(p, { recursive: true, force: true });
  return ok;
}

// ---------------------------------------------------------------------------
// the instance

const live = new Set<Instance>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Safety net for tests that forgot stop() or crashed: synchronous teardown.
  process.on('exit', () => {
    for (const inst of live) inst.teardownSync();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      for (const inst of live) inst.teardownSync();
      process.exit(128 + ({ SIGINT: 2, SIGTERM: 15, SIGHUP: 1 } as const)[sig]);
    });
  }
}

class Instance implements Containerd {
  readonly address: string;
  readonly ttrpcAddress: string;
  readonly root: string;
  readonly state: string;
  readonly dir: string;
  readonly configPath: string;
  readonly logPath: string;
  readonly runcRoot: string;
  readonly kataRunRoot: string;
  readonly namespace: string;
  readonly snapshotter: 'overlayfs' | 'native';
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private readonly env: NodeJS.ProcessEnv;
  private readonly startTimeoutMs: number;
  private readonly netnsPath: string | undefined;
  private readonly ctrs = new Set<ChildProcess>();
  /** (namespace, id) of every shim we have seen, for socket cleanup. */
  private readonly shimIds = new Map<string, { ns: string; id: string }>();
  private stopped = false;

  constructor(l: Layout, opts: ContainerdOptions, snapshotter: 'overlayfs' | 'native', namespace: string) {
    this.address = l.address;
    this.ttrpcAddress = l.ttrpcAddress;
    this.root = l.root;
    this.state = l.state;
    this.dir = l.dir;
    this.configPath = l.configPath;
    this.logPath = l.logPath;
    this.runcRoot = l.runcRoot;
    this.namespace = namespace;
    this.snapshotter = snapshotter;
    this.startTimeoutMs = opts.startTimeoutMs ?? 20_000;
    this.netnsPath = opts.netns === undefined ? undefined : opts.netns.startsWith('/') ? opts.netns : join('/var/run/netns', opts.netns);
    // Hermetic by default: our shim's run root under the temp dir, whatever the caller's environment says.
    const env: NodeJS.ProcessEnv = { ...process.env, KATA_TS_RUN_ROOT: join(l.dir, 'kata'), ...(opts.env ?? {}) };
    if ((opts.kataConfig ?? 'hermetic') === 'hermetic' && !opts.env?.KATA_CONF_FILE) {
      env.KATA_CONF_FILE = join(l.dir, 'configuration.toml');
      const base = defaultConfigText();
      const edited = opts.kataConfigEdit ? opts.kataConfigEdit(base) : base;
      if (opts.kataConfigEdit && edited === base) throw new Error('harness: kataConfigEdit changed nothing');
      // KATA_TS_TEST_TEMPLATES=1: this suite runs with VM templates on, under the temp dir.
      const text = templatesOn() ? templateConfigEdit(join(l.dir, 'templates'))(edited) : edited;
      writeFileSync(env.KATA_CONF_FILE, text);
    }
    this.kataRunRoot = env.KATA_TS_RUN_ROOT!;
    env.PATH = [...(opts.extraPath ?? []).map((p) => resolve(p)), env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'].join(':');
    delete env.CONTAINERD_ADDRESS;
    delete env.CONTAINERD_NAMESPACE;
    this.env = env;
  }

  get pid(): number | undefined {
    return this.child?.exitCode === null && this.child.signalCode === null ? this.child.pid : undefined;
  }

  async start(): Promise<void> {
    for (const s of [this.address, this.ttrpcAddress]) {
      try {
        unlinkSync(s); // stale socket of a killed instance
      } catch {
        /* none */
      }
    }
    const fd = openSync(this.logPath, 'a');
    writeFileSync(fd, `\n===== harness: starting containerd at ${new Date().toISOString()} =====\n`);
    let child: ChildProcess;
    try {
      if (this.netnsPath !== undefined && !existsSync(this.netnsPath)) {
        throw new Error(`harness: network namespace ${this.netnsPath} does not exist`);
      }
      child = this.netnsPath === undefined
        ? spawn('containerd', ['--config', this.configPath], { stdio: ['ignore', fd, fd], env: this.env })
        : spawn('nsenter', [`--net=${this.netnsPath}`, '--', 'containerd', '--config', this.configPath], { stdio: ['ignore', fd, fd], env: this.env });
    } finally {
      closeSync(fd);
    }
    this.child = child;
    let spawnError: Error | undefined;
    this.exited = new Promise<void>((res) => {
      child.once('error', (e) => {
        spawnError = e;
        res();
      });
      child.once('exit', () => res());
    });
    const deadline = Date.now() + this.startTimeoutMs;
    for (const sock of [this.address, this.ttrpcAddress]) {
      for (;;) {
        if (spawnError) throw new Error(`harness: cannot start containerd: ${spawnError.message}`);
        if (child.exitCode !== null || child.signalCode !== null) {
          throw new Error(`harness: containerd exited during start-up (${child.exitCode ?? child.signalCode}):\n${this.logTail(40)}`);
        }
        if (await canConnect(sock)) break;
        if (Date.now() > deadline) {
          await this.stopDaemon();
          throw new Error(`harness: containerd did not listen on ${sock} within ${this.startTimeoutMs} ms:\n${this.logTail(40)}`);
        }
        await sleep(25);
      }
    }
  }

  /** SIGTERM containerd, SIGKILL after `graceMs`; resolves when it has exited. */
  private async stopDaemon(graceMs = 5000): Promise<void> {
    const c = this.child;
    if (!c || c.pid === undefined) return;
    if (c.exitCode === null && c.signalCode === null) {
      killPid(c.pid, 'SIGTERM');
      const t = setTimeout(() => killPid(c.pid!, 'SIGKILL'), graceMs);
      await this.exited;
      clearTimeout(t);
    }
  }

  async kill9(): Promise<void> {
    const c = this.child;
    if (!c || c.pid === undefined || c.exitCode !== null || c.signalCode !== null) return;
    this.rememberShims();
    killPid(c.pid, 'SIGKILL');
    await this.exited;
  }

  async restart(): Promise<void> {
    if (this.stopped) throw new Error('harness: restart() after stop()');
    this.rememberShims();
    await this.stopDaemon();
    await this.start();
  }

  shimPids(): number[] {
    this.rememberShims();
    return findShimPids(this.address);
  }

  private rememberShims(): void {
    for (const pid of findShimPids(this.address)) {
      const argv = procCmdline(pid);
      const arg = (n: string) => {
        const i = argv.findIndex((a) => a === `-${n}` || a === `--${n}`);
        return i >= 0 ? argv[i + 1] : undefined;
      };
      const ns = arg('namespace');
      const id = arg('id');
      if (ns && id) this.shimIds.set(`${ns}/${id}`, { ns, id });
    }
  }

  ctr(args: string[], opts: CtrOptions = {}): Promise<CtrResult> {
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const started = Date.now();
    const env: NodeJS.ProcessEnv = { ...process.env, CONTAINERD_SNAPSHOTTER: this.snapshotter, ...(opts.env ?? {}) };
    delete env.CONTAINERD_ADDRESS;
    delete env.CONTAINERD_NAMESPACE;
    if (opts.inject ?? true) args = this.injectPaths(args);
    const child = spawn('ctr', ['--address', this.address, '--namespace', opts.namespace ?? this.namespace, ...args], {
      stdio: [opts.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      env,
    });
    this.ctrs.add(child);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    if (opts.stdin !== undefined) {
      child.stdin!.on('error', () => {
        /* ctr may exit before reading it all */
      });
      child.stdin!.end(opts.stdin);
    }
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    return new Promise<CtrResult>((res) => {
      let spawnErr: Error | undefined;
      child.once('error', (e) => {
        spawnErr = e;
      });
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        this.ctrs.delete(child);
        const stdoutBuf = Buffer.concat(out);
        let stderr = Buffer.concat(err).toString('utf8');
        if (spawnErr) stderr += `\nharness: spawn ctr failed: ${spawnErr.message}`;
        if (timedOut) stderr += `\nharness: ctr ${args.join(' ')} killed after ${timeoutMs} ms`;
        res({ code, signal, stdout: stdoutBuf.toString('utf8'), stdoutBuf, stderr, timedOut, durationMs: Date.now() - started });
      });
    });
  }

  private injectPaths(args: string[]): string[] {
    const has = (flag: string) => args.some((a) => a === flag || a.startsWith(flag + '='));
    const insertAt = (i: number, extra: string[]) => [...args.slice(0, i), ...extra, ...args.slice(i)];
    if (args[0] === 'run') {
      const extra: string[] = [];
      if (!has('--fifo-dir')) extra.push('--fifo-dir', join(this.dir, 'fifo'));
      const ri = args.findIndex((a) => a === '--runtime' || a.startsWith('--runtime='));
      const runtime = ri < 0 ? 'io.containerd.runc.v2' : args[ri]!.includes('=') ? args[ri]!.split('=')[1] : args[ri + 1];
      if (runtime === 'io.containerd.runc.v2' && !has('--runc-root')) extra.push('--runc-root', this.runcRoot);
      return insertAt(1, extra);
    }
    if (['task', 'tasks', 't'].includes(args[0] ?? '') && ['exec', 'start'].includes(args[1] ?? '') && !has('--fifo-dir')) {
      return insertAt(2, ['--fifo-dir', join(this.dir, 'fifo')]);
    }
    return args;
  }

  logTail(lines = 60): string {
    try {
      const all = readFileSync(this.logPath, 'utf8').split('\n');
      return all.slice(-lines - 1).join('\n');
    } catch (e) {
      return `(no containerd log: ${String(e)})`;
    }
  }

  /** Delete every task and container in every namespace, through containerd, within `budgetMs`. */
  private async gracefulCleanup(budgetMs: number): Promise<void> {
    const deadline = Date.now() + budgetMs;
    const left = () => Math.max(500, deadline - Date.now());
    const lines = (s: string) => s.split('\n').map((x) => x.trim()).filter(Boolean);
    const nss = await this.ctr(['namespaces', 'ls', '-q'], { timeoutMs: left() });
    if (nss.code !== 0) return;
    for (const ns of lines(nss.stdout)) {
      if (Date.now() > deadline) return;
      const tasks = await this.ctr(['tasks', 'ls', '-q'], { namespace: ns, timeoutMs: left() });
      for (const id of tasks.code === 0 ? lines(tasks.stdout) : []) {
        if (Date.now() > deadline) return;
        await this.ctr(['tasks', 'kill', '-a', '-s', 'SIGKILL', id], { namespace: ns, timeoutMs: Math.min(left(), 3000) });
        await this.ctr(['tasks', 'delete', '-f', id], { namespace: ns, timeoutMs: Math.min(left(), 5000) });
      }
      const ctrs = await this.ctr(['containers', 'ls', '-q'], { namespace: ns, timeoutMs: left() });
      for (const id of ctrs.code === 0 ? lines(ctrs.stdout) : []) {
        if (Date.now() > deadline) return;
        await this.ctr(['containers', 'delete', id], { namespace: ns, timeoutMs: Math.min(left(), 5000) });
      }
    }
  }

  async stop(opts: StopOptions = {}): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    try {
      if ((opts.graceful ?? true) && this.pid !== undefined) {
        try {
          await this.gracefulCleanup(15_000);
        } catch {
          /* fall through to the hard way */
        }
      }
      this.rememberShims();
      await this.stopDaemon();
      // Shims, their descendants, and anything naming our dir: SIGKILL until none are left.
      const deadline = Date.now() + 15_000;
      for (;;) {
        const victims = this.victims();
        if (!victims.length) break;
        if (Date.now() > deadline) throw new Error(`harness: processes survive SIGKILL: ${victims.join(' ')}`);
        for (const p of victims) killPid(p, 'SIGKILL');
        await sleep(50);
      }
      this.finishTeardown();
    } finally {
      live.delete(this);
    }
  }

  /** Processes to end: shims with our address, all below them, ctr children, anything naming our dir. */
  private victims(): number[] {
    const shims = findShimPids(this.address);
    for (const pid of shims) {
      const argv = procCmdline(pid);
      const i = argv.indexOf('-namespace');
      const j = argv.indexOf('-id');
      if (i >= 0 && j >= 0) this.shimIds.set(`${argv[i + 1]}/${argv[j + 1]}`, { ns: argv[i + 1]!, id: argv[j + 1]! });
    }
    const set = new Set<number>([...shims, ...descendants(shims), ...pidsMentioning(this.dir)]);
    const d = this.child?.pid;
    if (d !== undefined && pidAlive(d)) set.add(d);
    for (const c of this.ctrs) if (c.pid !== undefined && pidAlive(c.pid)) set.add(c.pid);
    set.delete(process.pid);
    return [...set];
  }

  /** Unmount, remove our entries under /run/containerd, our cgroups, and the temp dir. Synchronous. */
  private finishTeardown(): void {
    const errors: string[] = [];
    for (let round = 0; round < 10; round++) {
      const ms = mountsUnder(this.dir);
      if (!ms.length) break;
      for (const m of ms) {
        try {
          execFileSync('umount', ['-l', m], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000 });
        } catch (e) {
          if (round === 9) errors.push(`umount -l ${m}: ${String((e as { stderr?: Buffer }).stderr ?? e)}`);
        }
      }
    }
    // Sockets our shims left under /run/containerd/s (pkg/shim SocketAddress: sha256(address/ns/id)).
    for (const { ns, id } of this.shimIds.values()) {
      const h = createHash('sha256').update(join(this.address, ns, id)).digest('hex');
      for (const p of [`/run/containerd/s/${h}`]) {
        try {
          if (statSync(p).isSocket()) unlinkSync(p);
        } catch {
          /* not there */
        }
      }
    }
    // runc state and cgroups of our unique namespace (never a shared name such as "default" or "k8s.io").
    if (this.namespace.startsWith(NS_PREFIX)) {
      rmTreeDirsOnly(join('/run/containerd/runc', this.namespace), true);
      for (const h of cgroupHierarchies()) rmTreeDirsOnly(join(h, this.namespace), false);
    }
    cleanRunContainerd();
    try {
      rmSync(this.dir, { recursive: true, force: true, maxRetries: 3 });
    } catch (e) {
      errors.push(`rm -rf ${this.dir}: ${String(e)}`);
    }
    if (errors.length) throw new Error('harness: teardown incomplete:\n' + errors.join('\n'));
  }

  /** Best-effort synchronous teardown for the process 'exit' hook. */
  teardownSync(): void {
    if (this.stopped) return;
    this.stopped = true;
    live.delete(this);
    try {
      const deadline = Date.now() + 5000;
      for (;;) {
        const v = this.victims();
        if (!v.length || Date.now() > deadline) break;
        for (const p of v) killPid(p, 'SIGKILL');
        sleepSync(50);
      }
      this.finishTeardown();
    } catch (e) {
      process.stderr.write(`harness: exit-time teardown of ${this.dir} failed: ${String(e)}\n`);
    }
  }
}

const NS_PREFIX = 'kata-e2e-';
const RUN_DIR = '/run/containerd';
/** Did /run/containerd exist before this process first started a containerd? (undefined: not started yet) */
let runDirPreexisted: boolean | undefined;

/**
 * The runc shim of containerd 1.6 always creates /run/containerd/s (its socket
 * dir is hard-coded). If /run/containerd did not exist before we first started
 * containerd, remove what is left of it once it is empty and no containerd or
 * shim runs anywhere on the machine (a shim about to bind a socket there would
 * be visible with its -address argument), so the system dir is as we found it.
 */
function cleanRunContainerd(): void {
  if (runDirPreexisted !== false || !existsSync(RUN_DIR)) return;
  for (const pid of allPids()) {
    const argv = procCmdline(pid);
    const exe = (argv[0] ?? '').split('/').pop() ?? '';
    if (exe === 'containerd' || /^containerd-shim/.test(exe) || argv.includes('-address')) return;
  }
  for (const d of ['s', 'fifo', 'runc', '']) {
    try {
      rmdirSync(join(RUN_DIR, d));
    } catch {
      /* not there or not empty: leave it */
    }
  }
}

/** Remove a directory tree bottom-up. files=false: only rmdir (cgroupfs: control files go with the dir). */
function rmTreeDirsOnly(dir: string, files: boolean): void {
  let st;
  try {
    st = statSync(dir);
  } catch {
    return;
  }
  if (!st.isDirectory()) return;
  if (files) {
    rmSync(dir, { recursive: true, force: true });
    return;
  }
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) rmTreeDirsOnly(join(dir, e.name), false);
  }
  try {
    rmdirSync(dir);
  } catch {
    /* busy: a process is still in it */
  }
}

function cgroupHierarchies(): string[] {
  const base = '/sys/fs/cgroup';
  const out = [base];
  try {
    for (const e of readdirSync(base, { withFileTypes: true })) if (e.isDirectory()) out.push(join(base, e.name));
  } catch {
    /* no cgroupfs */
  }
  return out;
}

function canConnect(path: string): Promise<boolean> {
  if (!existsSync(path)) return Promise.resolve(false);
  return new Promise((res) => {
    const s = connect(path);
    const done = (ok: boolean) => {
      s.destroy();
      res(ok);
    };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
    s.setTimeout(1000, () => done(false));
  });
}

/** Start a private containerd; see ContainerdOptions. Register `t.after(() => c.stop())` right away. */
export async function startContainerd(opts: ContainerdOptions = {}): Promise<Containerd> {
  if (runDirPreexisted === undefined) runDirPreexisted = existsSync(RUN_DIR);
  const base = resolve(opts.baseDir ?? tmpdir());
  mkdirSync(base, { recursive: true });
  const dir = mkdtempSync(join(base, 'kata-e2e-'));
  const l: Layout = {
    dir,
    root: join(dir, 'root'),
    state: join(dir, 'state'),
    address: join(dir, 'containerd.sock'),
    ttrpcAddress: join(dir, 'containerd.sock.ttrpc'),
    configPath: join(dir, 'config.toml'),
    logPath: join(dir, 'containerd.log'),
    runcRoot: join(dir, 'runc'),
  };
  // sun_path is 108 bytes; the shims' sockets derive from our address too.
  if (Buffer.byteLength(l.ttrpcAddress) > 100) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`harness: socket path too long (${l.ttrpcAddress}); set baseDir or TMPDIR to a shorter dir`);
  }
  let snapshotter: 'overlayfs' | 'native';
  try {
    mkdirSync(l.root, { recursive: true });
    mkdirSync(l.state, { recursive: true });
    const want = opts.snapshotter ?? (process.env.KATA_TEST_SNAPSHOTTER as ContainerdOptions['snapshotter']) ?? 'auto';
    snapshotter = want === 'auto' ? (overlayWorks(dir) ? 'overlayfs' : 'native') : want;
    writeConfig(l, opts, snapshotter);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const namespace = opts.namespace ?? NS_PREFIX + randomBytes(4).toString('hex');
  const inst = new Instance(l, opts, snapshotter, namespace);
  installExitHook();
  live.add(inst);
  try {
    await inst.start();
  } catch (e) {
    try {
      await inst.stop({ graceful: false });
    } catch {
      /* report the start error */
    }
    throw e;
  }
  return inst;
}

/** Run `fn`; if it throws, print containerd's log tail to stderr, then rethrow. */
export async function withLogOnFailure<T>(c: Containerd, fn: () => Promise<T>, lines = 80): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    process.stderr.write(`\n----- containerd log tail (${c.logPath}) -----\n${c.logTail(lines)}\n-----\n`);
    throw e;
  }
}
