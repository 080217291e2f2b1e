/**
 * The agent's domain root: the sandbox (one per VM), its containers, OOM
 * events. Everything lives here, independent of any host connection, so a
 * host that reconnects (a restarted shim) finds every container, process and
 * pending exit where it left them.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { CloneIdentity } from './clone-identity.js';
import { join } from 'node:path';
import type { Logger } from '../log/index.js';
import { AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError } from '../errors/index.js';
import { Container, type ContainerEnv, type NewContainer } from './container.js';
import { OomMonitor } from './oom.js';
import { SharedFs, type SharedFsSpec } from './shared-fs.js';
import { loadKernelModules, type KernelModule } from './kernel-modules.js';
import type { OciRuntime } from './runtime.js';
import type { ContainerState } from './state.js';
import { checkOciSpec } from './validate.js';
import { GUEST_HOSTNAME } from '../agent-protocol/hostname.js';

export interface SandboxOptions {
  runtime: OciRuntime;
  /** Root of the agent's own files: bundles, console sockets. */
  stateDir: string;
  ttyHelper: string | undefined;
  /** ContainerEnv.launchPrefix. */
  launchPrefix?: readonly string[];
  cgroupParent: string;
  logger: Logger;
  /** The shared-dir mounter (default: a real one, mount/umount from PATH). */
  sharedFs?: SharedFs;
  /** Loads kernel modules (default: /sbin/modprobe). */
  loadModules?: (mods: readonly KernelModule[]) => Promise<void>;
  /** Writes the guest's machine id (default: CloneIdentity's, /run/machine-id). */
  writeMachineId?: (id: string) => Promise<void>;
}

export type { NewContainer } from './container.js';

export interface ProcessSummary {
  execId: string;
  pid: number;
  terminal: boolean;
  exit?: { status: number; exitedAt: Date };
}

export interface ContainerSummary {
  id: string;
  state: Exclude<ContainerState, 'removed'>;
  processes: ProcessSummary[];
}

/** How long DestroySandbox waits for processes after SIGKILL by default. */
export const DESTROY_TIMEOUT_MS = 10_000;

export class Sandbox {
  private sandboxIdValue = '';
  // guarded by the event loop: ids are reserved in `pending` before any await.
  private readonly containers = new Map<string, Container>();
  private readonly pending = new Set<string>();
  private readonly oom: OomMonitor;
  private readonly env: ContainerEnv;
  private socketCounter = 0;
  private readonly logger: Logger;
  private readonly sharedFs: SharedFs;

  private readonly loadModules: (mods: readonly KernelModule[]) => Promise<void>;
  private readonly writeMachineId: (id: string) => Promise<void>;

  constructor(private readonly opts: SandboxOptions) {
    this.logger = opts.logger.child({ module: 'sandbox' });
    this.sharedFs = opts.sharedFs ?? new SharedFs({ logger: opts.logger });
    this.loadModules = opts.loadModules ?? ((mods) => loadKernelModules(mods));
    this.writeMachineId = opts.writeMachineId ?? ((id) => new CloneIdentity(undefined).setMachineId(id));
    this.oom = new OomMonitor(() => this.containers.values(), this.logger);
    this.env = {
      runtime: opts.runtime,
      ttyHelper: opts.ttyHelper,
      ...(opts.launchPrefix ? { launchPrefix: opts.launchPrefix } : {}),
      cgroupParent: opts.cgroupParent,
      socketDir: join(opts.stateDir, 'tty'),
      nextSocketName: () => `${++this.socketCounter}.sock`,
      logger: opts.logger,
    };
  }

  /** Creates the state directories. */
  async init(): Promise<void> {
    await mkdir(join(this.opts.stateDir, 'containers'), { recursive: true, mode: 0o700 });
    await mkdir(this.env.socketDir, { recursive: true, mode: 0o700 });
  }

  get sandboxId(): string {
    return this.sandboxIdValue;
  }

  /**
   * Idempotent for the same id (a restarted shim calls it again): the shared
   * dir is mounted again if it is not. The share is mounted before the id is
   * taken, so a failed mount leaves no sandbox behind and can be retried.
   */
  async createSandbox(id: string, hostname: string, sharedFs?: SharedFsSpec, kernelModules: readonly KernelModule[] = [], machineId?: string): Promise<void> {
    if (this.sandboxIdValue && this.sandboxIdValue !== id) throw new AlreadyExistsError(`sandbox ${this.sandboxIdValue} already exists`);
    if (hostname && !GUEST_HOSTNAME.test(hostname)) {
      throw new InvalidArgumentError(`hostname: ${JSON.stringify(hostname)} is not a valid hostname`);
    }
    // Modules first (a share or a container may need one); loading twice is a no-op.
    if (kernelModules.length > 0) {
      await this.loadModules(kernelModules);
      this.logger.info({ modules: kernelModules.map((m) => m.name) }, 'kernel modules loaded');
    }
    if (sharedFs) await this.sharedFs.ensure(sharedFs);
    if (this.sandboxIdValue === id) return;
    if (hostname) await writeFile('/proc/sys/kernel/hostname', hostname);
    if (machineId) await this.writeMachineId(machineId);
    this.sandboxIdValue = id;
    this.logger.info({ sandbox: id, sharedFs }, 'sandbox created');
  }

  /** Kills every process, removes every container, forgets the sandbox. */
  async destroySandbox(timeoutMs = DESTROY_TIMEOUT_MS): Promise<void> {
    const all = [...this.containers.values()];
    await Promise.all(all.map((c) => c.kill(timeoutMs)));
    for (const c of all) {
      this.oom.unwatch(c);
      await c.remove().catch((err) => this.logger.warn({ err, container: c.id }, 'remove during destroy failed'));
      this.containers.delete(c.id);
    }
    // The containers' rootfs were inside the share: unmount it last.
    await this.sharedFs.release();
    this.logger.info({ sandbox: this.sandboxIdValue, containers: all.length }, 'sandbox destroyed');
    this.sandboxIdValue = '';
  }

  async createContainer(req: NewContainer): Promise<void> {
    this.requireSandbox();
    if (this.containers.has(req.id) || this.pending.has(req.id)) throw new AlreadyExistsError(`container ${req.id} already exists`);
    checkOciSpec(req.spec, 'spec_json');
    this.pending.add(req.id);
    try {
      const c = await Container.create(this.env, {
        ...req,
        bundleDir: join(this.opts.stateDir, 'containers', req.id),
      });
      this.containers.set(req.id, c);
      this.logger.info({ container: req.id }, 'container created');
    } finally {
      this.pending.delete(req.id);
    }
  }

  async startContainer(id: string): Promise<number> {
    const c = this.container(id);
    const pid = await c.start();
    this.oom.watch(c);
    void c.init.exited.then(() => this.oom.unwatch(c));
    return pid;
  }

  async removeContainer(id: string): Promise<void> {
    const c = this.container(id);
    await c.remove();
    this.oom.unwatch(c);
    this.containers.delete(id);
    this.logger.info({ container: id }, 'container removed');
  }

  /** A container by id, or NotFoundError. */
  container(id: string): Container {
    const c = this.containers.get(id);
    if (!c || c.state === 'removed') throw new NotFoundError(`container ${id} not found`);
    return c;
  }

  list(): ContainerSummary[] {
    const out: ContainerSummary[] = [];
    for (const c of this.containers.values()) {
      if (c.state === 'removed') continue;
      out.push({
        id: c.id,
        state: c.state,
        processes: c.processes().map((p) => ({ execId: p.execId, pid: p.pid, terminal: p.terminal, exit: p.exit })),
      });
    }
    return out;
  }

  /** The next OOM event's container id. */
  nextOomEvent(signal?: AbortSignal): Promise<string> {
    return this.oom.next(signal);
  }

  /** Stops background work (the agent is exiting); processes are left alone. */
  close(): void {
    this.oom.close();
  }

  private requireSandbox(): void {
    if (!this.sandboxIdValue) throw new FailedPreconditionError('no sandbox: call CreateSandbox first');
  }
}
