/**
 * One container: its bundle on disk, its state (see state.ts), its init
 * process and its execs. Runs the OCI runtime through OciRuntime and
 * ContainerProcess; knows nothing of ttrpc or the host.
 *
 * Lifecycle operations that run the runtime (start, pause, resume, update,
 * remove) are serialized per container by `serial()`; the init's exit is
 * applied the moment it happens, so an operation that finds the container
 * stopped after its await leaves it stopped.
 */
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { isAbsolute, join, posix } from 'node:path';
import type { Logger } from '../log/index.js';
import { AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError } from '../errors/index.js';
import { Cgroup, type CgroupStats } from './cgroup.js';
import { missingCommand, pathFromEnv } from './exec-lookup.js';
import { ContainerProcess, type ExitInfo } from './process.js';
import type { OciRuntime } from './runtime.js';
import { checkContainerOp, nextContainerState, type ContainerEvent, type ContainerState } from './state.js';
import { isObject, type JsonObject } from './validate.js';

/** What a container needs from the agent around it. */
export interface ContainerEnv {
  runtime: OciRuntime;
  /** The tty-helper binary, when available. */
  ttyHelper: string | undefined;
  /**
   * Runs before the OCI runtime (e.g. `sys-helper oom-exec 0 --`): the
   * agent's oom_score_adj is -1000 and its containers must not inherit it.
   */
  launchPrefix?: readonly string[];
  /** Parent for cgroupsPath when the spec has none, e.g. /kata-agent. */
  cgroupParent: string;
  /** Where console sockets go (short: unix socket paths are limited to 107 bytes). */
  socketDir: string;
  /** A fresh short name for a console socket. */
  nextSocketName(): string;
  logger: Logger;
}

/** What a CreateContainer request asks for, after validation. */
export interface NewContainer {
  id: string;
  /** Parsed and checked OCI spec. */
  spec: JsonObject;
  /** Guest path of the rootfs ("" → spec root.path, which must be absolute). */
  rootfsPath: string;
  terminal: boolean;
  stdin: boolean;
  rows?: number;
  cols?: number;
}

export interface CreateContainerOptions extends NewContainer {
  /** The bundle directory to write (under the agent's state dir). */
  bundleDir: string;
}

export interface ExecOptions {
  execId: string;
  /** Parsed OCI Process. */
  process: JsonObject;
  terminal: boolean;
  stdin: boolean;
  rows?: number;
  cols?: number;
}

export interface ProcessEntry {
  pid: number;
  ppid: number;
  cmd: string;
  state: string;
}

export class Container {
  readonly id: string;
  readonly bundleDir: string;
  readonly init: ContainerProcess;
  // guarded by the event loop; exec ids are unique for the container's life.
  private readonly execs = new Map<string, ContainerProcess>();
  private stateValue: ContainerState = 'created';
  private cgroup: Cgroup | undefined;
  /** The oom_kill counter already reported. */
  private oomSeen = 0;
  /** Tail of the lifecycle queue (see serial()). */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly logger: Logger;

  private constructor(private readonly env: ContainerEnv, opts: CreateContainerOptions) {
    this.id = opts.id;
    this.bundleDir = opts.bundleDir;
    this.logger = env.logger.child({ container: opts.id });
    this.init = new ContainerProcess({
      containerId: opts.id,
      execId: '',
      terminal: opts.terminal,
      stdin: opts.stdin,
      rows: opts.rows,
      cols: opts.cols,
      logger: env.logger,
    });
  }

  /** Writes the bundle (config.json) and returns the container in created state. */
  static async create(env: ContainerEnv, opts: CreateContainerOptions): Promise<Container> {
    const spec = structuredClone(opts.spec);
    const root = isObject(spec.root) ? spec.root : {};
    if (opts.rootfsPath) {
      if (!isAbsolute(opts.rootfsPath)) throw new InvalidArgumentError(`rootfs_path: ${JSON.stringify(opts.rootfsPath)} must be absolute`);
      root.path = opts.rootfsPath;
    } else if (typeof root.path !== 'string' || !isAbsolute(root.path)) {
      throw new InvalidArgumentError('spec_json.root.path: must be an absolute path when rootfs_path is empty');
    }
    const rootPath = root.path as string;
    const st = await stat(rootPath).catch(() => undefined);
    if (!st?.isDirectory()) throw new InvalidArgumentError(`rootfs_path: ${rootPath} is not a directory in the guest`);
    spec.root = root;
    const proc = spec.process as JsonObject;
    // As runc at create: a command that is certainly not in the rootfs fails the Create, not the Start.
    const args = Array.isArray(proc.args) ? proc.args : [];
    const missing = await missingCommand(rootPath, typeof args[0] === 'string' ? args[0] : '', {
      ...(pathFromEnv(proc.env) !== undefined ? { pathEnv: pathFromEnv(proc.env)! } : {}),
      ...(typeof proc.cwd === 'string' ? { cwd: proc.cwd } : {}),
      mountPoints: Array.isArray(spec.mounts)
        ? spec.mounts.flatMap((m) => (isObject(m) && typeof m.destination === 'string' ? [posix.normalize(m.destination)] : []))
        : [],
    });
    if (missing) throw new InvalidArgumentError(`spec_json.process.args[0]: ${missing}`);
    proc.terminal = opts.terminal;
    if (opts.terminal && opts.rows && opts.cols) proc.consoleSize = { height: opts.rows, width: opts.cols };
    const linux = isObject(spec.linux) ? spec.linux : {};
    if (typeof linux.cgroupsPath !== 'string' || linux.cgroupsPath === '') {
      linux.cgroupsPath = `${env.cgroupParent.replace(/\/+$/, '')}/${opts.id}`;
    }
    spec.linux = linux;
    await mkdir(opts.bundleDir, { recursive: true, mode: 0o700 });
    await writeFile(join(opts.bundleDir, 'config.json'), JSON.stringify(spec));
    return new Container(env, opts);
  }

  get state(): ContainerState {
    return this.stateValue;
  }

  /** The init process, then the execs in creation order. */
  processes(): ContainerProcess[] {
    return [this.init, ...this.execs.values()];
  }

  /** The init ("") or an exec; NotFoundError otherwise. */
  process(execId: string): ContainerProcess {
    if (execId === '') return this.init;
    const p = this.execs.get(execId);
    if (!p) throw new NotFoundError(`process ${this.id}/${execId} not found`);
    return p;
  }

  /** Starts the init process; resolves with its pid. */
  start(): Promise<number> {
    return this.serial(async () => {
      this.transition('start');
      const pidFile = join(this.bundleDir, 'init.pid');
      const logFile = join(this.bundleDir, 'init.log');
      await Promise.all([rm(pidFile, { force: true }), rm(logFile, { force: true })]);
      void this.init.exited.then((e) => this.onInitExit(e));
      const pid = await this.init.start({
        runtimePath: this.env.runtime.path,
        runtimeArgv: (consoleSocket) => this.env.runtime.runArgv({ id: this.id, bundle: this.bundleDir, pidFile, logFile, consoleSocket }),
        pidFile,
        logFile,
        consoleSocket: join(this.env.socketDir, this.env.nextSocketName()),
        ttyHelper: this.env.ttyHelper,
      ...(this.env.launchPrefix ? { launchPrefix: this.env.launchPrefix } : {}),
        ...(this.env.launchPrefix ? { launchPrefix: this.env.launchPrefix } : {}),
      });
      await this.attachCgroup(pid);
      return pid;
    });
  }

  /** Starts an exec'd process; resolves with its pid. */
  async exec(opts: ExecOptions): Promise<number> {
    checkContainerOp(this.id, this.stateValue, 'exec');
    if (this.execs.has(opts.execId)) throw new AlreadyExistsError(`process ${this.id}/${opts.execId} already exists`);
    const proc = new ContainerProcess({
      containerId: this.id,
      execId: opts.execId,
      terminal: opts.terminal,
      stdin: opts.stdin,
      rows: opts.rows,
      cols: opts.cols,
      logger: this.env.logger,
    });
    this.execs.set(opts.execId, proc);
    const base = join(this.bundleDir, `exec-${opts.execId}`);
    const processFile = `${base}.json`;
    const pidFile = `${base}.pid`;
    const logFile = `${base}.log`;
    const spec: JsonObject = { ...opts.process, terminal: opts.terminal };
    if (opts.terminal && opts.rows && opts.cols) spec.consoleSize = { height: opts.rows, width: opts.cols };
    await writeFile(processFile, JSON.stringify(spec));
    return proc.start({
      runtimePath: this.env.runtime.path,
      runtimeArgv: (consoleSocket) => this.env.runtime.execArgv({ id: this.id, processFile, pidFile, logFile, consoleSocket }),
      pidFile,
      logFile,
      consoleSocket: join(this.env.socketDir, this.env.nextSocketName()),
      ttyHelper: this.env.ttyHelper,
      ...(this.env.launchPrefix ? { launchPrefix: this.env.launchPrefix } : {}),
    });
  }

  /** Forgets an exited exec: its record and its files. */
  async removeExec(execId: string): Promise<void> {
    if (execId === '') throw new InvalidArgumentError('exec_id: the init process goes with RemoveContainer');
    const proc = this.process(execId);
    if (!proc.exit) throw new FailedPreconditionError(`cannot remove process ${proc.name} in ${proc.state} state`);
    this.execs.delete(execId);
    proc.stdout.close();
    proc.stderr.close();
    const base = join(this.bundleDir, `exec-${execId}`);
    await Promise.all(['.json', '.pid', '.log'].map((ext) => rm(base + ext, { force: true })));
  }

  /**
   * Signals a process. `all` (init only) signals every process of the
   * container through the runtime.
   */
  async signal(execId: string, sig: number, all: boolean): Promise<void> {
    const proc = this.process(execId);
    if (all) {
      if (execId !== '') throw new InvalidArgumentError('all: only valid for the init process (exec_id "")');
      checkContainerOp(this.id, this.stateValue, 'signal');
      try {
        await this.env.runtime.kill(this.id, sig, true);
      } catch (err) {
        // The init exited (crun then has no state for it, or no process to signal) while the
        // kill was on its way: what the runc shim answers for a finished process.
        if (proc.state === 'exited' || /No such file or directory|does not exist|not running|no such process/i.test((err as Error).message)) {
          throw new NotFoundError(`container ${this.id}: process already finished`, { cause: err });
        }
        throw err;
      }
      return;
    }
    if (execId === '') checkContainerOp(this.id, this.stateValue, 'signal');
    proc.signal(sig);
  }

  pause(): Promise<void> {
    return this.serial(async () => {
      nextContainerState(this.id, this.stateValue, 'pause');
      await this.env.runtime.pause(this.id);
      this.transitionIfStill('pause');
    });
  }

  resume(): Promise<void> {
    return this.serial(async () => {
      nextContainerState(this.id, this.stateValue, 'resume');
      await this.env.runtime.resume(this.id);
      this.transitionIfStill('resume');
    });
  }

  /** Applies OCI LinuxResources: through the runtime when running, into config.json before start. */
  update(resources: JsonObject): Promise<void> {
    return this.serial(async () => {
      checkContainerOp(this.id, this.stateValue, 'update');
      if (this.stateValue === 'created') {
        const configPath = join(this.bundleDir, 'config.json');
        const spec = JSON.parse(await readFile(configPath, 'utf8')) as JsonObject;
        const linux = isObject(spec.linux) ? spec.linux : {};
        linux.resources = { ...(isObject(linux.resources) ? linux.resources : {}), ...resources };
        spec.linux = linux;
        await writeFile(configPath, JSON.stringify(spec));
        return;
      }
      const file = join(this.bundleDir, `resources-${Date.now()}.json`);
      await writeFile(file, JSON.stringify(resources));
      try {
        await this.env.runtime.update(this.id, file);
      } finally {
        await rm(file, { force: true });
      }
    });
  }

  async stats(): Promise<CgroupStats> {
    checkContainerOp(this.id, this.stateValue, 'stats');
    if (!this.cgroup) throw new FailedPreconditionError(`container ${this.id}: its cgroup was not found`);
    return this.cgroup.stats();
  }

  /** The processes in the container's cgroup (ps-like). */
  async listProcesses(): Promise<ProcessEntry[]> {
    checkContainerOp(this.id, this.stateValue, 'ps');
    const pids = this.cgroup ? await this.cgroup.pids().catch(() => undefined) : undefined;
    const list = pids ?? (await this.env.runtime.ps(this.id));
    const out: ProcessEntry[] = [];
    for (const pid of list.sort((a, b) => a - b)) {
      const entry = await procEntry(pid);
      if (entry) out.push(entry);
    }
    return out;
  }

  /**
   * True when the cgroup's OOM-kill counter rose since the last call. Reads
   * nothing once the container is no longer running.
   */
  async checkOom(): Promise<boolean> {
    if (!this.cgroup || (this.stateValue !== 'running' && this.stateValue !== 'paused')) return false;
    const n = await this.cgroup.oomKills();
    if (n === undefined || n <= this.oomSeen) return false;
    this.oomSeen = n;
    return true;
  }

  /** The file to watch for OOM events (cgroup v2), when known. */
  oomEventsFile(): string | undefined {
    return this.cgroup?.oomEventsFile();
  }

  /**
   * Removes a created or stopped container: the runtime's state, the bundle,
   * and (when the container had no pid namespace of its own) any exec still
   * alive.
   */
  remove(): Promise<void> {
    return this.serial(async () => {
      nextContainerState(this.id, this.stateValue, 'remove');
      for (const p of this.execs.values()) if (!p.exit) p.killRuntime();
      if (this.init.state !== 'created') {
        // A foreground `run` deletes the container when it exits; this only
        // cleans up after a runtime that was killed itself.
        await this.env.runtime.delete(this.id).catch(() => {});
      }
      this.transition('remove');
      for (const p of this.processes()) {
        p.abandon();
        p.stdout.close();
        p.stderr.close();
      }
      await rm(this.bundleDir, { recursive: true, force: true });
    });
  }

  /**
   * Kills every process (resuming a paused container first, since a frozen
   * task cannot die on cgroup v1) and waits up to `timeoutMs` for the exits.
   */
  async kill(timeoutMs: number): Promise<void> {
    if (this.stateValue === 'paused') await this.env.runtime.resume(this.id).catch(() => {});
    const live = this.processes().filter((p) => p.state === 'running');
    if (this.stateValue === 'running' || this.stateValue === 'paused') {
      await this.env.runtime.kill(this.id, 9, true).catch(() => {});
    }
    for (const p of live) {
      try {
        if (p.pid > 0 && !p.exit) process.kill(p.pid, 9);
      } catch {
        /* gone */
      }
    }
    const all = Promise.all(live.map((p) => p.exited));
    const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), timeoutMs).unref());
    if ((await Promise.race([all, timer])) === 'timeout') {
      this.logger.warn({ timeoutMs }, 'processes did not exit after SIGKILL; killing the runtime');
      for (const p of live) p.killRuntime();
      await Promise.race([all, new Promise((r) => setTimeout(r, 2_000).unref())]);
    }
  }

  private onInitExit(e: ExitInfo): void {
    if (this.stateValue === 'running' || this.stateValue === 'paused') this.transition('exit');
    this.logger.info({ status: e.status }, 'container exited');
  }

  private async attachCgroup(pid: number): Promise<void> {
    this.cgroup = await Cgroup.ofPid(pid);
    if (!this.cgroup) {
      this.logger.debug({ pid }, 'cgroup of container not found');
      return;
    }
    this.oomSeen = (await this.cgroup.oomKills()) ?? 0;
  }

  private transition(event: ContainerEvent): void {
    const next = nextContainerState(this.id, this.stateValue, event);
    this.logger.debug({ from: this.stateValue, to: next, event }, 'container state');
    this.stateValue = next;
  }

  /** Applies `event` unless the container stopped during the await (the exit won). */
  private transitionIfStill(event: ContainerEvent): void {
    if (this.stateValue === 'stopped') return;
    this.transition(event);
  }

  /** Runs `fn` after every earlier lifecycle operation of this container. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => {});
    return run;
  }
}

/** One /proc entry: pid, ppid, state, argv (or comm). undefined when gone. */
async function procEntry(pid: number): Promise<ProcessEntry | undefined> {
  try {
    const [statText, cmdline] = await Promise.all([
      readFile(`/proc/${pid}/stat`, 'utf8'),
      readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => ''),
    ]);
    // comm is in parentheses and may itself hold spaces or parentheses.
    const open = statText.indexOf('(');
    const close = statText.lastIndexOf(')');
    const comm = statText.slice(open + 1, close);
    const rest = statText.slice(close + 2).split(' ');
    const args = cmdline.split('\0').filter(Boolean);
    return { pid, ppid: Number(rest[1]) || 0, state: rest[0] ?? '?', cmd: args.length ? args.join(' ') : `[${comm}]` };
  } catch {
    return undefined;
  }
}
