/**
 * Pod: the one service object of a shim — every container of one pod, the
 * pod's VM (booted by the first Create, through a SandboxFactory: the seam
 * where a warm pool will hand out pre-booted VMs), the exits loop and the
 * task events. The ttrpc handlers (task-service.ts) only decode, validate
 * and call in here.
 *
 * Exits: one watcher per started process waits on the agent (WaitProcess),
 * gives the process's output a short grace to reach containerd, and sends the
 * exit into a bounded channel (capacity 32, as in Kata). Output still flowing
 * then (a child holding the pipe) drains in the background, bounded, and is
 * cut at the bound; the exit is never held back by it. One loop takes the
 * exits in order, records the status and time on the process (completing
 * every Wait) and queues /tasks/exit.
 *
 * A lost VM (QEMU died, or the agent failed its health checks and QEMU was
 * killed) ends every process of the pod with 255, as Kata reports it, and
 * everything the VM held on the host is released at once.
 *
 * The pid containerd sees for every process is the pod's QEMU pid (as in
 * Kata): a host process that lives exactly as long as the pod's VM. Guest
 * pids are what Pids lists.
 */
import { readFile, stat } from 'node:fs/promises';
import { containerLimits, updatedLimits, type ContainerLimits } from './limits.js';
import { isAbsolute, join, posix } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AgentClient } from '../agent-client/index.js';
import {
  AlreadyExistsError, Code, FailedPreconditionError, hasCode, InvalidArgumentError, NotFoundError, StatusError,
  UnimplementedError,
} from '../errors/index.js';
import { ProcessIo, type ProcessStreams, type StdioConfig } from '../io/index.js';
import type { Logger } from '../log/index.js';
import { BoundedChannel } from './channel.js';
import { ShimContainer, TaskStatus } from './container.js';
import { guestProcess, guestSpec, specAnnotations } from './guest-spec.js';
import { checkId } from './ids.js';
import { refuseWhatAVmCannotGive } from './vm-boundary.js';
import { cgroupV2MetricsAny } from './metrics.js';
import { ShimProcess, type ExitRecord } from './process.js';
import { mountRootfs, mountSharedBinds, releaseContainerDir, type RootfsMount } from './rootfs.js';
import { TaskEvents, type EventSink, type MountInfo } from './task-events.js';
import { GUEST_HOSTNAME } from '../agent-protocol/hostname.js';

/** Capacity of the exits channel (Kata's). */
export const EXITS_CHANNEL_CAPACITY = 32;
/** The exit status of every process of a pod whose VM was lost (Kata's exitCode255). */
export const VM_LOST_EXIT_STATUS = 255;

/** The Pod's clocks (tests shorten them). */
export interface PodTimings {
  /** After an exit, how long the output may take to finish before the exit is reported anyway. */
  exitIoGraceMs: number;
  /** After an exit, how long the output keeps draining in the background before it is cut. */
  ioDrainTimeoutMs: number;
  /** The agent health check: a Check every intervalMs, each with timeoutMs; `failures` in a row mean the VM is lost. */
  healthIntervalMs: number;
  healthTimeoutMs: number;
  healthFailures: number;
}

export const DEFAULT_POD_TIMINGS: PodTimings = {
  exitIoGraceMs: 2_000,
  ioDrainTimeoutMs: 30_000,
  healthIntervalMs: 5_000,
  healthTimeoutMs: 5_000,
  healthFailures: 2,
};
/** Bound on closing a process's IO (a logging binary that does not exit is killed). */
const IO_CLOSE_TIMEOUT_MS = 5_000;
/** The type URL of an exec's OCI Process (JSON). */
export const PROCESS_SPEC_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/Process';
export const RESOURCES_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/LinuxResources';


/** What a pod needs of its VM. */
export interface PodSandbox {
  readonly agent: AgentClient;
  /** QEMU's pid. */
  readonly vmPid: number;
  /** Host path of the dir shared with the guest. */
  readonly sharedDir: string;
  /** The same dir in the guest. */
  readonly guestSharedDir: string;
  /** Resolves when the VM is gone (died, or stopped). */
  readonly exited: Promise<void>;
  /** Stops the VM and releases what it holds; `force`: the guest is hung, kill QEMU first. */
  stop(opts?: { force?: boolean }): Promise<void>;
  /**
   * Makes the VM fit these containers' limits (every container of the pod,
   * the one being created or updated included): grows it by hot-plug where
   * it can; FAILED_PRECONDITION naming the bound they exceed.
   */
  fit?(limits: readonly ContainerLimits[], signal?: AbortSignal): Promise<void>;
}

/** Boots (or, later, takes from a warm pool) the pod's VM. */
export type SandboxFactory = (req: {
  podId: string;
  /** The pod's network namespace (CRI/CNI made it), from the first container's spec; the VM joins it. */
  netnsPath?: string;
  /** The first container's OCI annotations (the pod's: io.katacontainers.config.* may shape its VM). */
  annotations?: Record<string, string>;
  /** The first container's linux.cgroupsPath (the pod's cgroup when it is the sandbox container). */
  cgroupsPath?: string;
  /** The first container's OCI hostname (CRI: the pod's): the guest's hostname. */
  hostname?: string;
  /** The first container's resource limits (`ctr run`: the pod's only container; sizes the VM). */
  limits?: ContainerLimits;
  signal?: AbortSignal;
}) => Promise<PodSandbox>;

/** What of the first container's spec the factory sees. */
type SandboxSpecInfo = Omit<Parameters<SandboxFactory>[0], 'podId' | 'signal'>;

export interface PodOptions {
  podId: string;
  namespace: string;
  logger: Logger;
  sandboxFactory: SandboxFactory;
  events: EventSink;
  timings?: Partial<PodTimings>;
}

export interface CreateRequest {
  id: string;
  bundle: string;
  rootfs: RootfsMount[];
  stdio: StdioConfig;
  checkpoint: string;
}

export interface ExecRequest {
  id: string;
  execId: string;
  stdio: StdioConfig;
  spec: { typeUrl: string; value: Uint8Array } | undefined;
}

export interface ProcessState {
  id: string;
  bundle: string;
  pid: number;
  status: TaskStatus;
  stdio: StdioConfig;
  exitStatus: number;
  exitedAt: Date | undefined;
  execId: string;
}


interface ExitItem {
  proc: ShimProcess;
  exit: ExitRecord;
  /** The task pid reported with it (the VM's, which may be gone by then). */
  pid: number;
}

export class Pod {
  readonly containers = new Map<string, ShimContainer>();
  private readonly pending = new Set<string>();
  /** Each container's limits (created or being created): what the VM must fit. */
  private readonly sizing = new Map<string, ContainerLimits>();
  private readonly exits = new BoundedChannel<ExitItem>(EXITS_CHANNEL_CAPACITY);
  private readonly events: TaskEvents;
  private readonly log: Logger;
  private readonly closing = new AbortController();
  private sandboxPromise: Promise<PodSandbox> | undefined;
  private sandboxValue: PodSandbox | undefined;
  /** The network namespace the current VM runs in (CRI/CNI's), if any. */
  private sandboxNetns: string | undefined;
  /** Cleanups of VMs that died (virtiofsd, mounts, tap, files); stopSandbox waits for them. */
  private readonly deadVmCleanups = new Set<Promise<void>>();
  private stopping: Promise<void> | undefined;
  private closed: Promise<void> | undefined;
  private readonly exitsLoopDone: Promise<void>;
  private readonly timings: PodTimings;

  constructor(private readonly opts: PodOptions) {
    this.log = opts.logger.child({ module: 'pod', pod: opts.podId });
    this.timings = { ...DEFAULT_POD_TIMINGS, ...opts.timings };
    this.events = new TaskEvents(opts.events);
    this.exitsLoopDone = this.exitsLoop();
  }

  get podId(): string {
    return this.opts.podId;
  }

  /** QEMU's pid, 0 while the pod has no VM. */
  get vmPid(): number {
    return this.sandboxValue?.vmPid ?? 0;
  }

  get isEmpty(): boolean {
    return this.containers.size === 0 && this.pending.size === 0;
  }

  // ---------------------------------------------------------------- lookups

  container(id: string): ShimContainer {
    checkId('id', id);
    const c = this.containers.get(id);
    if (!c) throw new NotFoundError(`container ${id}: not found`);
    return c;
  }

  private proc(id: string, execId: string): { c: ShimContainer; p: ShimProcess } {
    const c = this.container(id);
    return { c, p: c.process(execId) };
  }

  private get agent(): AgentClient {
    const sb = this.sandboxValue;
    if (!sb) throw new FailedPreconditionError(`pod ${this.opts.podId}: no VM`);
    return sb.agent;
  }

  // ---------------------------------------------------------------- the VM

  private sandbox(signal?: AbortSignal, from: SandboxSpecInfo = {}): Promise<PodSandbox> {
    if (this.closing.signal.aborted) return Promise.reject(new FailedPreconditionError(`pod ${this.opts.podId}: the shim is shutting down`));
    if (!this.sandboxPromise) {
      const started = Date.now();
      const p = (async () => {
        if (this.stopping) await this.stopping;
        // A lost VM's release (its tap, its host cgroup) finishes before a new VM takes their place.
        await Promise.all([...this.deadVmCleanups]);
        const sb = await this.opts.sandboxFactory({ podId: this.opts.podId, ...from, ...(signal ? { signal } : {}) });
        this.sandboxValue = sb;
        this.sandboxNetns = from.netnsPath;
        this.log.info({ vmPid: sb.vmPid, ms: Date.now() - started }, 'pod VM ready');
        void this.oomLoop(sb);
        void this.healthLoop(sb);
        void sb.exited.then(() => this.vmLost(sb, 'QEMU exited'));
        return sb;
      })();
      this.sandboxPromise = p;
      p.catch(() => { if (this.sandboxPromise === p) this.sandboxPromise = undefined; });
    }
    return this.sandboxPromise;
  }

  /** Stops the VM (idempotent); a later Create boots a new one. */
  private stopSandbox(): Promise<void> {
    if (!this.stopping) {
      const sbp = this.sandboxPromise;
      this.sandboxPromise = undefined;
      this.stopping = (async () => {
        const sb = await sbp?.catch(() => undefined);
        if (sb) {
          await sb.stop().catch((err: unknown) => this.log.error({ err }, 'stopping the pod VM failed'));
          this.log.info('pod VM stopped');
        }
        if (this.sandboxValue === sb) {
          this.sandboxValue = undefined;
          this.sandboxNetns = undefined;
        }
        await Promise.all([...this.deadVmCleanups]);
      })().finally(() => { this.stopping = undefined; });
    }
    return this.stopping;
  }

  /**
   * The VM is gone (QEMU exited) or unusable (the agent stopped answering):
   * every process not yet ended ends with 255, and what the VM holds on the
   * host (QEMU if still there, virtiofsd, the shared dir's mounts, the tap and
   * its filters, the VM's files) is released now — nothing else would, and a
   * later Create boots a new VM. Without this the shim ended with the shared
   * dir still mounted and the tap in the pod netns, unless containerd's
   * `delete` happened to run after it.
   */
  private vmLost(sb: PodSandbox, why: string, opts: { force?: boolean } = {}): void {
    if (this.sandboxValue !== sb || this.closing.signal.aborted || this.stopping) return;
    this.log.error({ vmPid: sb.vmPid, why }, `the pod VM is lost: its processes end with ${VM_LOST_EXIT_STATUS}`);
    this.sandboxValue = undefined;
    this.sandboxPromise = undefined;
    const cleanup: Promise<void> = sb.stop(opts)
      .then(() => this.log.info('the lost pod VM is cleaned up'))
      .catch((err: unknown) => this.log.error({ err }, 'cleaning up after the lost pod VM failed'))
      .finally(() => this.deadVmCleanups.delete(cleanup));
    this.deadVmCleanups.add(cleanup);
    const at = new Date();
    for (const c of this.containers.values()) {
      for (const p of c.processes()) {
        if (p.state !== 'stopped') void this.exits.send({ proc: p, exit: { status: VM_LOST_EXIT_STATUS, at }, pid: sb.vmPid }).catch(() => {});
      }
    }
  }

  /**
   * The agent's health: a Check with a deadline every interval. A VM whose
   * agent misses `healthFailures` in a row (guest hung, agent dead, channel
   * broken while QEMU lives) is lost: QEMU is killed and the pod's processes
   * end with 255, so no Task RPC or Wait hangs on it.
   */
  private async healthLoop(sb: PodSandbox): Promise<void> {
    const signal = this.closing.signal;
    const t = this.timings;
    let failures = 0;
    while (this.sandboxValue === sb && !signal.aborted) {
      await sleep(t.healthIntervalMs, undefined, { signal }).catch(() => {});
      if (this.sandboxValue !== sb || signal.aborted) return;
      if (sb.agent.isClosed) {
        // QEMU's exit usually closes the connection first: let that be the reason if it is.
        const died = await Promise.race([sb.exited.then(() => true), sleep(1_000, false)]);
        this.vmLost(sb, died ? 'QEMU exited' : 'the agent connection closed while QEMU runs', { force: true });
        return;
      }
      try {
        await sb.agent.check({ timeoutMs: t.healthTimeoutMs, signal });
        failures = 0;
      } catch (err) {
        if (this.sandboxValue !== sb || signal.aborted) return;
        failures++;
        this.log.warn({ err, failures, of: t.healthFailures }, 'agent health check failed');
        if (failures >= t.healthFailures) {
          this.vmLost(sb, `the agent missed ${failures} health checks in a row (${t.healthTimeoutMs} ms deadline each)`, { force: true });
          return;
        }
      }
    }
  }

  private async oomLoop(sb: PodSandbox): Promise<void> {
    const signal = this.closing.signal;
    while (!signal.aborted && this.sandboxValue === sb) {
      try {
        const e = await sb.agent.getOOMEvent({ signal });
        if (this.containers.has(e.containerId)) await this.events.oom(e.containerId);
      } catch (err) {
        if (signal.aborted || sb.agent.isClosed) return;
        this.log.warn({ err }, 'GetOOMEvent failed; retrying');
        await sleep(1_000, undefined, { signal }).catch(() => {});
      }
    }
  }

  // ---------------------------------------------------------------- exits

  private async exitsLoop(): Promise<void> {
    for (;;) {
      const item = await this.exits.receive();
      if (!item) return;
      const { proc, exit } = item;
      if (!proc.setExited(exit)) continue;
      this.log.info({ container: proc.containerId, exec: proc.execId || undefined, status: exit.status }, 'process exited');
      await this.events.exit({ containerId: proc.containerId, id: proc.id, pid: item.pid, exitStatus: exit.status, exitedAt: exit.at })
        .catch((err: unknown) => this.log.error({ err }, 'queueing /tasks/exit failed'));
    }
  }

  /**
   * Waits for a started process in the guest and sends its exit into the
   * channel once its output is through, or after a short grace: output still
   * flowing then (a child of the process holding the pipe) drains in the
   * background up to the drain bound and is cut there. The exit is never held
   * back longer than the grace.
   */
  private watch(p: ShimProcess, sb: PodSandbox): void {
    void (async () => {
      let exit: ExitRecord;
      try {
        const e = await sb.agent.waitProcess({ containerId: p.containerId, execId: p.execId }, { signal: this.closing.signal });
        // The host's clock, not the guest's (e.exitedAt): the guest reads the RTC at boot (whole
        // seconds) and drifts under TCG, so its time can be a second off. containerd stamps the
        // start on the host, and CRI showed finishedAt before startedAt. Kata does the same.
        exit = { status: e.exitStatus, at: new Date() };
      } catch (err) {
        if (this.closing.signal.aborted || p.exit) return;
        // The agent connection broke: the VM died or the agent did (vmLost reports the same).
        this.log.error({ err, process: p.name }, `waiting for the process failed: it ends with ${VM_LOST_EXIT_STATUS}`);
        exit = { status: VM_LOST_EXIT_STATUS, at: new Date() };
      }
      const io = p.io;
      if (io) {
        const t = this.timings;
        p.outputDeadline = Date.now() + t.ioDrainTimeoutMs;
        const drained = await Promise.race([io.drained.then(() => true), sleep(t.exitIoGraceMs, false, { ref: false })]);
        if (!drained) {
          this.log.warn({ process: p.name, graceMs: t.exitIoGraceMs, drainMs: t.ioDrainTimeoutMs },
            'output still flowing after the exit (a child holds the pipe?): the exit is reported now, the output drains in the background');
          void this.cutOutputAtDeadline(p, io);
        }
      }
      await this.exits.send({ proc: p, exit, pid: sb.vmPid }).catch(() => {});
    })();
  }

  /** Resolves when an exited process's output is through or its drain bound has passed (at once if it has no IO). */
  private async outputDone(p: ShimProcess): Promise<boolean> {
    if (!p.io) return true;
    const deadline = p.outputDeadline;
    if (deadline === undefined) return true;
    return Promise.race([p.io.drained.then(() => true), sleep(Math.max(0, deadline - Date.now()), false, { ref: false })]);
  }

  private async cutOutputAtDeadline(p: ShimProcess, io: ProcessIo): Promise<void> {
    if (await this.outputDone(p)) return;
    this.log.warn({ process: p.name, drainMs: this.timings.ioDrainTimeoutMs }, 'output still flowing at the drain bound: cut');
    await io.close(IO_CLOSE_TIMEOUT_MS);
  }

  private streams(sb: PodSandbox, p: ShimProcess): ProcessStreams {
    const ref = { containerId: p.containerId, execId: p.execId };
    const agent = sb.agent;
    return {
      readStdout: (maxLen, signal) => agent.readStdout({ ...ref, maxLen }, { signal }),
      readStderr: (maxLen, signal) => agent.readStderr({ ...ref, maxLen }, { signal }),
      writeStdin: (data, signal) => agent.writeStdin({ ...ref, data }, { signal }),
      closeStdin: () => agent.closeStdin(ref),
    };
  }

  /** What the pod holds, for the shim's debug dump (SIGUSR1). */
  debugState(): Record<string, unknown> {
    return {
      pod: this.opts.podId,
      vmPid: this.vmPid,
      vmBooting: this.sandboxPromise !== undefined && this.sandboxValue === undefined,
      stopping: this.stopping !== undefined,
      closing: this.closing.signal.aborted,
      pendingCreates: [...this.pending],
      queuedExits: this.exits.length,
      containers: [...this.containers.values()].map((c) => ({
        id: c.id,
        bundle: c.bundle,
        paused: c.paused,
        processes: c.processes().map((p) => ({
          id: p.id, state: p.state, starting: p.starting, guestPid: p.guestPid, exit: p.exit,
          stdio: p.stdio, io: p.io !== undefined,
        })),
      })),
    };
  }

  // ---------------------------------------------------------------- Task API

  async create(req: CreateRequest, signal?: AbortSignal): Promise<number> {
    checkId('id', req.id);
    if (this.containers.has(req.id) || this.pending.has(req.id)) throw new AlreadyExistsError(`container ${req.id}: already exists`);
    if (this.closing.signal.aborted) throw new FailedPreconditionError(`pod ${this.opts.podId}: the shim is shutting down`);
    if (req.checkpoint) throw new UnimplementedError('checkpoint: restoring a container from a checkpoint is not supported');
    const hostSpec = await readBundleSpec(req.bundle);
    refuseWhatAVmCannotGive(hostSpec, req.id === this.opts.podId);
    this.pending.add(req.id);
    const undo: Array<() => Promise<unknown>> = [];
    try {
      const io = await ProcessIo.open(req.stdio, { containerId: req.id, namespace: this.opts.namespace, logger: this.log });
      undo.push(() => io.close(IO_CLOSE_TIMEOUT_MS));
      const sb = await this.sandbox(signal, sandboxSpecInfo(hostSpec));
      this.sizing.set(req.id, containerLimits(hostSpec));
      undo.push(async () => this.sizing.delete(req.id));
      await sb.fit?.([...this.sizing.values()], signal);
      const hostDir = join(sb.sharedDir, req.id);
      const guestDir = posix.join(sb.guestSharedDir, req.id);
      const pause = req.id === this.opts.podId ? undefined : this.containers.get(this.opts.podId)?.init;
      const g = guestSpec(hostSpec, guestDir, pause?.state === 'running' ? { sandboxGuestPid: pause.guestPid } : {});
      if (g.dropped.length > 0) this.log.info({ container: req.id, dropped: g.dropped }, 'spec adapted for the guest');
      await mountRootfs(hostDir, req.rootfs, req.bundle);
      undo.push(() => releaseContainerDir(hostDir));
      await mountSharedBinds(hostDir, g.binds);
      await sb.agent.createContainer({
        containerId: req.id,
        spec: g.spec,
        rootfsPath: posix.join(guestDir, 'rootfs'),
        terminal: req.stdio.terminal,
        stdin: req.stdio.stdin !== '',
      }, signal ? { signal } : {});
      const rootfs: MountInfo[] = req.rootfs.map((m) => ({ type: m.type, source: m.source, target: m.target ?? '', options: m.options }));
      const c = new ShimContainer(req.id, req.bundle, hostDir, rootfs, req.stdio);
      c.init.io = io;
      this.containers.set(req.id, c);
      await this.events.create({ containerId: req.id, bundle: req.bundle, rootfs, io: req.stdio, pid: sb.vmPid });
      this.log.info({ container: req.id }, 'container created');
      return sb.vmPid;
    } catch (err) {
      for (const u of undo.reverse()) await u().catch((e: unknown) => this.log.warn({ err: e, container: req.id }, 'undo after failed create'));
      // The VM booted for this container alone goes with it: a failed start leaves nothing.
      if (this.containers.size === 0 && this.pending.size === 1 && this.sandboxPromise) {
        this.log.info({ container: req.id }, 'create failed and the pod holds no container: stopping its VM');
        await this.stopSandbox();
      }
      throw err;
    } finally {
      this.pending.delete(req.id);
    }
  }

  async start(id: string, execId: string): Promise<number> {
    const { c, p } = this.proc(id, execId);
    p.checkStartable();
    p.starting = true;
    try {
      return await c.serial(async () => {
        const sb = await this.sandbox();
        if (execId === '') {
          const r = await sb.agent.startContainer({ containerId: id });
          p.guestPid = r.pid;
        } else {
          if (c.init.state !== 'running') throw new FailedPreconditionError(`container ${id} is ${c.init.state}: cannot start exec ${execId}`);
          const r = await sb.agent.execProcess({
            containerId: id, execId, process: p.processSpec ?? {}, terminal: p.stdio.terminal, stdin: p.stdio.stdin !== '',
          });
          p.guestPid = r.pid;
        }
        p.state = 'running';
        p.io?.start(this.streams(sb, p));
        this.watch(p, sb);
        if (execId === '') await this.events.start({ containerId: id, pid: sb.vmPid });
        else await this.events.execStarted({ containerId: id, execId, pid: sb.vmPid });
        return sb.vmPid;
      });
    } finally {
      p.starting = false;
    }
  }

  async exec(req: ExecRequest): Promise<void> {
    const c = this.container(req.id);
    checkId('exec_id', req.execId);
    if (c.execs.has(req.execId)) throw new AlreadyExistsError(`exec ${req.execId} in container ${req.id}: already exists`);
    if (c.init.state !== 'running') throw new FailedPreconditionError(`container ${req.id} is ${c.init.state}: cannot exec in it`);
    if (!req.spec || req.spec.value.length === 0) throw new InvalidArgumentError('spec: the process spec must be set');
    if (!req.spec.typeUrl.endsWith('/Process')) throw new InvalidArgumentError(`spec: type ${JSON.stringify(req.spec.typeUrl)} is not an OCI Process`);
    let spec: Record<string, unknown>;
    try {
      spec = guestProcess(JSON.parse(Buffer.from(req.spec.value).toString('utf8')));
    } catch (err) {
      if (err instanceof StatusError) throw err;
      throw new InvalidArgumentError(`spec: not valid JSON: ${(err as Error).message}`);
    }
    const p = new ShimProcess(req.id, req.execId, req.stdio, spec);
    c.execs.set(req.execId, p);
    try {
      // A logging binary gets the exec id as CONTAINER_ID, as from containerd's runc shim.
      p.io = await ProcessIo.open(req.stdio, { containerId: req.execId, namespace: this.opts.namespace, logger: this.log });
    } catch (err) {
      c.execs.delete(req.execId);
      throw err;
    }
    await this.events.execAdded({ containerId: req.id, execId: req.execId });
  }

  async delete(id: string, execId: string): Promise<{ pid: number; exitStatus: number; exitedAt: Date | undefined }> {
    const { c, p } = this.proc(id, execId);
    // As the runc shim, Delete lets the output of an exited process finish first (here bounded:
    // up to the drain bound after the exit), so that containerd's reader sees all of it.
    if (p.state === 'stopped') await Promise.all((execId === '' ? c.processes() : [p]).map((q) => (q.state === 'stopped' ? this.outputDone(q) : true)));
    return c.serial(async () => {
      if (p.state === 'running') throw new FailedPreconditionError(`process ${p.name} is running: cannot delete it`);
      if (p.starting) throw new FailedPreconditionError(`process ${p.name} is starting: cannot delete it`);
      const pid = this.vmPid;
      const exitStatus = p.exit?.status ?? 0;
      const exitedAt = p.exit?.at;
      if (execId !== '') {
        if (p.state === 'stopped' && this.sandboxValue) {
          await this.agent.removeProcess({ containerId: id, execId }).catch((err: unknown) => {
            if (!hasCode(err, Code.NOT_FOUND)) this.log.warn({ err, process: p.name }, 'RemoveProcess failed');
          });
        }
        await p.io?.close(IO_CLOSE_TIMEOUT_MS);
        c.execs.delete(execId);
        return { pid, exitStatus, exitedAt };
      }
      if (this.sandboxValue && !this.sandboxValue.agent.isClosed) {
        await this.agent.removeContainer({ containerId: id }).catch((err: unknown) => {
          if (!hasCode(err, Code.NOT_FOUND)) throw err;
        });
      }
      for (const q of c.processes()) await q.io?.close(IO_CLOSE_TIMEOUT_MS);
      await releaseContainerDir(c.hostDir);
      this.containers.delete(id);
      this.sizing.delete(id);
      await this.events.delete({ containerId: id, pid, exitStatus, exitedAt });
      this.log.info({ container: id, exitStatus }, 'container deleted');
      if (this.isEmpty) {
        // The VM in a network namespace that someone else owns (CRI/CNI): leave it (VM, tap, filters)
        // before this Delete answers. containerd's CRI tears the pod network down (CNI DEL) and
        // removes the namespace right after the sandbox container's Delete; a VM stopping in the
        // background would race it (QEMU still in the namespace during CNI DEL, our tap detach
        // finding the namespace gone). Otherwise (ctr run) the VM stops in the background and
        // Shutdown waits for it.
        if (this.sandboxNetns !== undefined) await this.stopSandbox();
        else void this.stopSandbox();
      }
      return { pid, exitStatus, exitedAt };
    });
  }

  async kill(id: string, execId: string, signal: number, all: boolean): Promise<void> {
    const { p } = this.proc(id, execId);
    if (!Number.isInteger(signal) || signal < 1 || signal > 64) throw new InvalidArgumentError(`signal: ${signal} is not a signal number (1-64)`);
    if (all && execId !== '') throw new InvalidArgumentError('all: only valid for the init process (exec_id must be empty)');
    p.checkSignalable();
    if (p.state === 'created') {
      if (execId !== '') throw new FailedPreconditionError(`process ${p.name} is not started: cannot signal it`);
      // Nothing runs yet: the container ends as a killed one would.
      await this.exits.send({ proc: p, exit: { status: 128 + signal, at: new Date() }, pid: this.vmPid });
      return;
    }
    await this.agent.signalProcess({ containerId: id, execId, signal, all });
  }

  async pause(id: string): Promise<void> {
    const c = this.container(id);
    await c.serial(async () => {
      if (c.init.state !== 'running' || c.paused) throw new FailedPreconditionError(`container ${id} is ${c.paused ? 'paused' : c.init.state}: cannot pause it`);
      await this.agent.pauseContainer({ containerId: id });
      c.paused = true;
    });
    await this.events.paused(id);
  }

  async resume(id: string): Promise<void> {
    const c = this.container(id);
    await c.serial(async () => {
      if (!c.paused) throw new FailedPreconditionError(`container ${id} is not paused: cannot resume it`);
      await this.agent.resumeContainer({ containerId: id });
      c.paused = false;
    });
    await this.events.resumed(id);
  }

  state(id: string, execId: string): ProcessState {
    const { c, p } = this.proc(id, execId);
    return {
      id: p.id,
      bundle: c.bundle,
      pid: this.vmPid,
      status: c.status(p),
      stdio: p.stdio,
      exitStatus: p.exit?.status ?? 0,
      exitedAt: p.exit?.at,
      execId,
    };
  }

  async pids(id: string): Promise<number[]> {
    const c = this.container(id);
    if (c.init.state !== 'running') return [];
    return (await this.agent.listProcesses({ containerId: id })).map((x) => x.pid);
  }

  async closeIO(id: string, execId: string, stdin: boolean): Promise<void> {
    const { p } = this.proc(id, execId);
    if (stdin) await p.io?.closeStdin();
  }

  async resizePty(id: string, execId: string, width: number, height: number): Promise<void> {
    const { p } = this.proc(id, execId);
    if (!p.stdio.terminal || p.state !== 'running') return; // as runc's shim: no console, nothing to resize
    if (width === 0 || height === 0) throw new InvalidArgumentError(`width/height: ${width}x${height} is not a terminal size`);
    await this.agent.ttyWinResize({ containerId: id, execId, rows: height, cols: width });
  }

  async update(id: string, resources: { typeUrl: string; value: Uint8Array } | undefined): Promise<void> {
    const c = this.container(id);
    if (!resources || resources.value.length === 0) throw new InvalidArgumentError('resources: must be set');
    let json: unknown;
    try {
      json = JSON.parse(Buffer.from(resources.value).toString('utf8'));
    } catch (err) {
      throw new InvalidArgumentError(`resources: not valid JSON: ${(err as Error).message}`);
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new InvalidArgumentError('resources: must be an OCI LinuxResources object');
    await c.serial(async () => {
      // Raised limits grow the VM first (a refusal names the bound and changes nothing).
      const limits = updatedLimits(this.sizing.get(id) ?? {}, json);
      await this.sandboxValue?.fit?.([...new Map(this.sizing).set(id, limits).values()], this.closing.signal);
      await this.agent.updateContainer({ containerId: id, resources: json as Record<string, unknown> });
      this.sizing.set(id, limits);
    });
  }

  async stats(id: string): Promise<{ typeUrl: string; value: Uint8Array }> {
    const c = this.container(id);
    if (c.init.state === 'stopped') throw new FailedPreconditionError(`container ${id} is stopped: no stats`);
    return cgroupV2MetricsAny(await this.agent.statsContainer({ containerId: id }));
  }

  async wait(id: string, execId: string, signal?: AbortSignal): Promise<ExitRecord> {
    const { p } = this.proc(id, execId);
    return p.waitExit(signal);
  }

  /**
   * Ends the pod: stops the VM, closes every IO, stops the loops. Called by
   * the shim on Shutdown (when no container is left) and on SIGTERM.
   */
  close(): Promise<void> {
    this.closed ??= (async () => {
      this.closing.abort();
      await this.stopSandbox();
      for (const c of this.containers.values()) {
        for (const p of c.processes()) await p.io?.close(IO_CLOSE_TIMEOUT_MS).catch(() => {});
        await releaseContainerDir(c.hostDir).catch((err: unknown) => this.log.warn({ err, container: c.id }, 'releasing the container dir failed'));
      }
      this.exits.close();
      await this.exitsLoopDone;
    })();
    return this.closed;
  }
}

/** The network namespace path a spec names (CRI's pod netns), if any. */
/** The netns, annotations and cgroupsPath of a container's spec, as the SandboxFactory takes them. */
function sandboxSpecInfo(spec: unknown): SandboxSpecInfo {
  const netnsPath = networkNamespacePath(spec);
  const annotations = specAnnotations(spec);
  const cg = (spec as { linux?: { cgroupsPath?: unknown } } | null)?.linux?.cgroupsPath;
  const hostname = (spec as { hostname?: unknown } | null)?.hostname;
  const limits = containerLimits(spec);
  return {
    ...(Object.keys(limits).length > 0 ? { limits } : {}),
    ...(typeof hostname === 'string' && GUEST_HOSTNAME.test(hostname) ? { hostname } : {}),
    ...(netnsPath ? { netnsPath } : {}),
    ...(annotations ? { annotations } : {}),
    ...(typeof cg === 'string' && cg !== '' ? { cgroupsPath: cg } : {}),
  };
}

export function networkNamespacePath(spec: unknown): string | undefined {
  const ns = (spec as { linux?: { namespaces?: unknown } } | null)?.linux?.namespaces;
  if (!Array.isArray(ns)) return undefined;
  for (const n of ns) {
    const o = n as { type?: unknown; path?: unknown } | null;
    if (o?.type === 'network' && typeof o.path === 'string' && o.path !== '') return o.path;
  }
  return undefined;
}

/** config.json of a bundle, with errors naming the field. */
async function readBundleSpec(bundle: string): Promise<unknown> {
  if (bundle === '') throw new InvalidArgumentError('bundle: must be set');
  if (!isAbsolute(bundle)) throw new InvalidArgumentError(`bundle: ${JSON.stringify(bundle)} must be an absolute path`);
  const st = await stat(bundle).catch(() => undefined);
  if (!st) throw new NotFoundError(`bundle ${bundle}: not found`);
  if (!st.isDirectory()) throw new InvalidArgumentError(`bundle: ${bundle} is not a directory`);
  let text: string;
  try {
    text = await readFile(join(bundle, 'config.json'), 'utf8');
  } catch {
    throw new NotFoundError(`bundle ${bundle}: config.json not found`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new InvalidArgumentError(`bundle ${bundle}: config.json is not valid JSON: ${(err as Error).message}`);
  }
}
