/**
 * SandboxVm: one pod's VM with its agent, ready to run containers — the glue
 * between `src/vm` (which knows no agent) and `src/agent-client` (which knows
 * no VM). The shim's service will hold one per pod.
 *
 * It owns, and releases on every path (failed start, stop, stop after a
 * crash), in reverse order of acquisition:
 *
 *   <dir>/               the sandbox dir (0700; removed if we made it)
 *   <dir>/shared/        the pod's shared dir, served to the guest by virtio-fs
 *                        (tag `kataShared`) and mounted by the agent at
 *                        GUEST_SHARED_DIR; a container's rootfs goes in
 *                        shared/<cid>/rootfs (host) = <GUEST_SHARED_DIR>/<cid>/rootfs (guest)
 *   the Vm               QEMU + virtiofsd + sockets (BootVmProvider / QemuVm.stop)
 *   the AgentClient      the connection that passed the ready probe
 *   the agent's sandbox  CreateSandbox (mounts the share) / DestroySandbox
 *
 * Boot: the guest image's kernel + initrd, its root image as a read-only
 * virtio-blk disk (/dev/vda), its kernel command line plus
 * `-- --serial-port agent.0 --runtime /usr/bin/crun` (words after `--` are
 * the init's arguments, which it hands to the agent), microvm, accel `auto`
 * (a KVM probe with the bare initrd; TCG here). Ready = AgentClient.connect
 * (the KATAAGENT1 handshake) + Check answered; that client is kept.
 *
 * Networking (docs/network.md): with `netns` QEMU starts inside the pod's
 * network namespace, and `network` gives the guest a virtio-net NIC on a tap
 * there (src/network's attachTap makes it; the caller removes it after
 * stop()). The guest NIC is configured afterwards through the agent
 * (updateInterface / updateRoutes).
 *
 * Nothing is removed through a mount: a directory is deleted only when
 * /proc/self/mountinfo shows nothing mounted under it.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { join, posix } from 'node:path';
import { AgentClient } from '../agent-client/index.js';
import { FailedPreconditionError, InvalidArgumentError, StatusError } from '../errors/index.js';
import type { Logger } from '../log/index.js';
import {
  BootVmProvider, followFile, mountsUnder, qemuFilesDir, VM_FILES, type JailSettings, type AccelSetting, type BootVmProviderOptions, type HotplugRoom, type MachineType, type Vm, type VmProvider, type VmResources,
} from '../vm/index.js';
import type { GuestImage } from './guest-image.js';

/** virtio-fs tag of the pod's shared dir. */
export const SHARED_FS_TAG = 'kataShared';
/** Where the agent mounts the shared dir in the guest (a tmpfs: the guest root is read-only). */
export const GUEST_SHARED_DIR = '/run/kata-containers/shared/containers';
/** The agent's virtio-serial port. */
export const AGENT_PORT = 'agent.0';
/** The OCI runtime in the guest image. */
export const GUEST_RUNTIME = '/usr/bin/crun';
/**
 * 1 vCPU (a second one does not help under TCG), 256 MiB: measured (bench/vm.ts)
 * as enough for the agent plus busybox containers (the guest's page cache
 * holds node from the root image); give big workloads more.
 */
export const DEFAULT_RESOURCES: VmResources = { vcpus: 1, memoryMiB: 256 };
/** Boot → agent answers Check (TCG boots the agent in 6-10 s here; a loaded host takes longer). */
export const AGENT_READY_TIMEOUT_MS = 90_000;
/** One connect + handshake attempt of the ready probe. */
const PROBE_CONNECT_TIMEOUT_MS = 15_000;
/** CreateSandbox (the share's mount), before the time kernel modules add. */
const CREATE_SANDBOX_TIMEOUT_MS = 30_000;
/** OnlineCPUMem: the agent waits up to 10 s for hot-plugged CPUs to show up. */
const ONLINE_TIMEOUT_MS = 15_000;
/** DestroySandbox during stop: the agent's own kill timeout. */
const DESTROY_TIMEOUT_MS = 5_000;

export interface SandboxVmOptions {
  sandboxId: string;
  /** The per-sandbox directory (created 0700 if missing; must not hold a VM already). */
  dir: string;
  image: GuestImage;
  logger: Logger;
  resources?: VmResources;
  /** Default microvm (vmlinux); q35 boots the bzImage. */
  machine?: MachineType;
  /** Room to grow by hot-plug (q35 only): grow() adds vCPUs and memory up to it. */
  hotplug?: HotplugRoom;
  /** Default `auto`: a KVM probe with the image's bare initrd, TCG otherwise. */
  accel?: AccelSetting;
  /** More agent flags (e.g. `--debug`). No spaces. */
  agentArgs?: readonly string[];
  /** More kernel parameters (e.g. `guest.debug` for the init's timings). */
  kernelParams?: readonly string[];
  readyTimeoutMs?: number;
  signal?: AbortSignal;
  /** Call timeout of the kept AgentClient (its default otherwise). */
  agentCallTimeoutMs?: number;
  /** QEMU binary (default qemu-system-x86_64 on PATH). */
  qemuBinary?: string;
  /** virtiofsd binary (default /usr/lib/qemu/virtiofsd). */
  virtiofsdBinary?: string;
  /** Jail QEMU (its own uid, no capabilities, a private root: src/vm/jail.ts); absent: QEMU runs as root. */
  jail?: JailSettings;
  /** QEMU's seccomp filter, `-sandbox <value>`; absent: none. */
  seccompSandbox?: string;
  /**
   * The pod's network namespace (what CNI made, e.g. /var/run/netns/cni-…):
   * QEMU runs in it (`nsenter --net=<netns>`), so it can open the pod's tap.
   */
  netns?: string;
  /** The pod's NIC: a tap in `netns` (src/network attachTap) given to the guest as virtio-net. */
  network?: SandboxNetwork;
  /**
   * Each line of the guest console (kernel, init and agent output), from the
   * first, as QEMU writes it, until the VM is stopped (e.g. into the shim's
   * log when debugging is on). Without it the console is only in the VM's
   * console.log, whose tail a failed boot's error carries.
   */
  onConsoleLine?: (line: string) => void;
  /** Kernel modules (name, parameters) the agent loads before the sandbox is created. */
  kernelModules?: ReadonlyArray<{ name: string; parameters: readonly string[] }>;
  /** How the shared dir reaches the guest: virtio-fs (default) or virtio-9p (msize in bytes; 0: the agent's default). */
  sharedFs?: 'virtio-fs' | 'virtio-9p';
  msize9p?: number;
  /**
   * Where the VM comes from, given how it would boot (the sandbox factory's
   * seam): default a cold boot (BootVmProvider); src/factory's TemplateFactory
   * clones a VM template instead. A VM restored from a saved state gets fresh
   * entropy and the host's clock before anything runs in it.
   */
  vmSource?: (boot: BootVmProviderOptions) => VmProvider;
  /** The guest's hostname (default: the image's). */
  hostname?: string;
  /** The guest's /etc/machine-id (default: derived from the sandbox id). */
  machineId?: string;
}

/** A pod's machine id: 32 hex digits derived from its id (stable across shim restarts, distinct per pod). */
export function podMachineId(sandboxId: string): string {
  return createHash('sha256').update(`kata-ts machine-id ${sandboxId}`).digest('hex').slice(0, 32);
}

/** The guest NIC: the host tap it is backed by, its MAC (the pod veth's), the MTU it advertises. */
export interface SandboxNetwork {
  tapName: string;
  mac: string;
  mtu?: number;
}

/** QEMU's netdev/device id of the pod's NIC. */
export const POD_NIC_ID = 'net0';

/** The kernel parameters that boot `image` into the agent. */
export function agentKernelParams(image: GuestImage, extra: { kernelParams?: readonly string[]; agentArgs?: readonly string[] } = {}): string[] {
  return [
    ...image.cmdline,
    ...(extra.kernelParams ?? []),
    '--',
    '--serial-port', AGENT_PORT,
    '--runtime', GUEST_RUNTIME,
    ...(extra.agentArgs ?? []),
  ];
}

/**
 * How a pod VM boots `image` (everything but the ready probe): the kernel for
 * the machine type, the stage-1 initrd, the root image as a read-only
 * virtio-blk disk, the agent's kernel parameters, the agent's virtio-serial
 * port, the shared dir's virtio-fs tag and cache mode.
 */
export function sandboxBootOptions(image: GuestImage, o: {
  machine?: MachineType;
  hotplug?: HotplugRoom;
  accel?: AccelSetting;
  kernelParams?: readonly string[];
  agentArgs?: readonly string[];
  qemuBinary?: string;
  virtiofsdBinary?: string;
  sharedFs?: 'virtio-fs' | 'virtio-9p';
  jail?: JailSettings;
  seccompSandbox?: string;
} = {}): BootVmProviderOptions {
  const machine = o.machine ?? 'microvm';
  return {
    ...(o.qemuBinary !== undefined ? { qemuBinary: o.qemuBinary } : {}),
    ...(o.jail !== undefined ? { jail: o.jail } : {}),
    ...(o.seccompSandbox !== undefined ? { seccompSandbox: o.seccompSandbox } : {}),
    ...(o.virtiofsdBinary !== undefined ? { virtiofsdBinary: o.virtiofsdBinary } : {}),
    kernel: machine === 'microvm' ? image.vmlinux : image.bzImage,
    initrd: image.initrd,
    kernelParams: agentKernelParams(image, o),
    machine,
    ...(o.hotplug !== undefined ? { hotplug: o.hotplug } : {}),
    accel: o.accel ?? 'auto',
    kvmProbe: { kernel: image.vmlinux, initrd: image.bareInitrd, ...(o.qemuBinary !== undefined ? { qemuBinary: o.qemuBinary } : {}) },
    agent: { transport: 'virtio-serial', portName: AGENT_PORT },
    sharedFsTag: SHARED_FS_TAG,
    ...(o.sharedFs !== undefined ? { sharedFsKind: o.sharedFs } : {}),
    // The share holds container root filesystems that the host writes and
    // the guest reads and writes: coherent caching (auto), not `always`.
    sharedFsCache: 'auto',
    // A pod's VM never outlives its shim: nothing would ever attach to it again
    // (containerd runs `delete` for a dead shim), so its death takes QEMU and
    // virtiofsd along at once, whatever state the shim was in (kata-containers#2198).
    dieWithParent: true,
    blockDevices: [{ kind: 'block', id: 'guestroot', path: image.rootfs, readOnly: true, serial: 'guestroot' }],
  };
}

/**
 * One try of a VM's ready probe: connects to its agent (the KATAAGENT1
 * handshake) and asks Check; the connection on success, closed on failure.
 */
export async function connectReadyAgent(vm: Vm, signal: AbortSignal, logger: Logger, callTimeoutMs?: number): Promise<AgentClient> {
  const ep = vm.agent;
  if (ep.transport !== 'virtio-serial') throw new FailedPreconditionError(`agent transport ${ep.transport} is not supported here`);
  const c = await AgentClient.connect(ep.socketPath, {
    signal,
    connectTimeoutMs: PROBE_CONNECT_TIMEOUT_MS,
    // HELLO is lost while the guest has its port closed, so it is
    // repeated; often, so that readiness is seen within 50 ms.
    helloIntervalMs: 50,
    logger,
    ...(callTimeoutMs !== undefined ? { timeoutMs: callTimeoutMs } : {}),
  });
  try {
    await c.check({ signal, timeoutMs: 10_000 });
  } catch (err) {
    c.close();
    throw err;
  }
  return c;
}

type Cleanup = { what: string; run: () => Promise<void> | void };

export class SandboxVm {
  /** Host path of the shared dir. */
  readonly sharedDir: string;
  /** Guest path where the agent mounted it. */
  readonly guestSharedDir = GUEST_SHARED_DIR;
  /** ms from start() to the agent answering Check, and to CreateSandbox done. */
  readonly timings = { readyMs: 0, sandboxMs: 0 };

  private vmValue: Vm | undefined;
  private agentValue: AgentClient | undefined;
  private readonly cleanups: Cleanup[] = [];
  private readonly log: Logger;
  private stopping: Promise<void> | undefined;

  private constructor(private readonly opts: SandboxVmOptions) {
    this.sharedDir = join(opts.dir, 'shared');
    this.log = opts.logger.child({ module: 'sandbox-vm', sandbox: opts.sandboxId });
  }

  /** Boots the VM, waits for the agent, creates the agent's sandbox (mounting the share). */
  static async start(opts: SandboxVmOptions): Promise<SandboxVm> {
    const s = new SandboxVm(opts);
    try {
      await s.doStart();
    } catch (err) {
      await s.release().catch((e: unknown) => s.log.error({ err: e }, 'cleanup after failed start'));
      throw err;
    }
    return s;
  }

  get vm(): Vm {
    if (!this.vmValue) throw new FailedPreconditionError(`sandbox ${this.opts.sandboxId}: no VM`);
    return this.vmValue;
  }

  get agent(): AgentClient {
    if (!this.agentValue) throw new FailedPreconditionError(`sandbox ${this.opts.sandboxId}: no agent connection`);
    return this.agentValue;
  }

  /** vCPUs and MiB the VM has now. */
  get size(): VmResources | undefined {
    return this.vmValue?.size;
  }

  /**
   * Grows the VM to at least `target` by hot-plug and has the agent online
   * what was added; what was added. FAILED_PRECONDITION when the VM has no
   * room (microvm, or past the room reserved at boot).
   */
  async grow(target: VmResources, signal?: AbortSignal): Promise<VmResources> {
    const vm = this.vm;
    if (!vm.grow) throw new FailedPreconditionError(`sandbox ${this.opts.sandboxId}: its VM cannot grow`);
    const online = (cpus: number): Promise<unknown> => this.agent.onlineCpuMem({ cpus }, { timeoutMs: ONLINE_TIMEOUT_MS, ...(signal ? { signal } : {}) });
    const before = vm.size?.vcpus ?? 0;
    let added: VmResources;
    try {
      added = await vm.grow(target, signal ? { signal } : {});
    } catch (err) {
      // vCPUs plugged before the failure are the VM's now: online them anyway (a later grow would not).
      const plugged = (vm.size?.vcpus ?? 0) - before;
      if (plugged > 0) await online(plugged).catch((e: unknown) => this.log.warn({ err: e, plugged }, 'onlining the vCPUs plugged before a failed grow failed'));
      throw err;
    }
    if (added.vcpus > 0 || added.memoryMiB > 0) await online(added.vcpus);
    return added;
  }

  /** Host path of a container's rootfs dir (inside the shared dir). */
  rootfsHostPath(containerId: string): string {
    return join(this.sharedDir, checkName(containerId), 'rootfs');
  }

  /** The same directory as the guest sees it (CreateContainer's rootfs_path). */
  rootfsGuestPath(containerId: string): string {
    return posix.join(GUEST_SHARED_DIR, checkName(containerId), 'rootfs');
  }

  /**
   * DestroySandbox (best effort), then closes the agent connection, stops
   * the VM and removes the shared dir and the sandbox dir. Idempotent; every
   * step runs even if an earlier one fails (the first error is thrown at the end).
   * `force`: the guest is hung — QEMU is SIGKILLed first (no DestroySandbox, no QMP quit).
   */
  stop(opts: { force?: boolean } = {}): Promise<void> {
    if (opts.force && !this.stopping && this.vmValue) {
      // A hung guest: QEMU is killed first, so that no step below waits on the agent or QMP.
      const vm = this.vmValue;
      this.stopping = vm.stop({ force: true }).catch((err: unknown) => this.log.warn({ err }, 'forced vm stop failed')).then(() => this.release());
    }
    this.stopping ??= this.release();
    return this.stopping;
  }

  private async doStart(): Promise<void> {
    const o = this.opts;
    const t0 = Date.now();
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(o.sandboxId)) throw new InvalidArgumentError(`sandboxId: ${JSON.stringify(o.sandboxId)} is not a valid id`);
    for (const a of [...(o.agentArgs ?? []), ...(o.kernelParams ?? [])]) {
      if (/\s/.test(a) || a === '--') throw new InvalidArgumentError(`kernel parameter ${JSON.stringify(a)}: no spaces, no "--"`);
    }

    // The dirs: made here so that the shared dir exists before virtiofsd starts.
    if (!existsSync(o.dir)) {
      mkdirSync(o.dir, { recursive: true, mode: 0o700 });
      this.push('sandbox dir', () => removeDirIfUnmounted(o.dir));
    } else if (!statSync(o.dir).isDirectory()) {
      throw new FailedPreconditionError(`sandbox dir ${o.dir} is not a directory`);
    }
    if (existsSync(this.sharedDir)) throw new FailedPreconditionError(`shared dir ${this.sharedDir} already exists`);
    mkdirSync(this.sharedDir, { mode: 0o755 });
    this.push('shared dir', () => removeDirIfUnmounted(this.sharedDir));

    let probed: AgentClient | undefined;
    const bootOptions: BootVmProviderOptions = {
      ...sandboxBootOptions(o.image, o),
      readyTimeoutMs: o.readyTimeoutMs ?? AGENT_READY_TIMEOUT_MS,
      readyProbe: async (vm, signal) => {
        const c = await connectReadyAgent(vm, signal, this.log, o.agentCallTimeoutMs);
        probed?.close();
        probed = c;
      },
    };
    const provider = o.vmSource ? o.vmSource(bootOptions) : new BootVmProvider(bootOptions);
    if (o.onConsoleLine) {
      // From QEMU's start, so a boot that fails is followed too; stopped after the VM
      // (cleanups run last first), reading through its open fd what the VM's stop unlinks.
      const follower = followFile(join(qemuFilesDir(o.dir, o.jail !== undefined), VM_FILES.console), o.onConsoleLine);
      this.push('console follower', () => follower.stop());
    }
    let vm: Vm;
    try {
      vm = await provider.acquire({
        sandboxId: o.sandboxId,
        dir: o.dir,
        resources: o.resources ?? DEFAULT_RESOURCES,
        sharedDir: this.sharedDir,
        logger: o.logger,
        ...(o.netns !== undefined ? { netns: o.netns } : {}),
        ...(o.network ? {
          tapNets: [{
            kind: 'tap-net' as const,
            id: POD_NIC_ID,
            ifname: o.network.tapName,
            mac: o.network.mac,
            ...(o.network.mtu !== undefined ? { mtu: o.network.mtu } : {}),
          }],
        } : {}),
        ...(o.signal ? { signal: o.signal } : {}),
      });
    } catch (err) {
      (probed as AgentClient | undefined)?.close();
      throw err;
    }
    this.vmValue = vm;
    this.push('vm', () => vm.stop());
    const agent = probed as AgentClient | undefined;
    if (!agent) throw new FailedPreconditionError(`sandbox ${o.sandboxId}: VM ready without an agent connection`);
    this.agentValue = agent;
    this.push('agent connection', () => agent.close());
    this.timings.readyMs = Date.now() - t0;

    // A clone resumes as the template was: the same CRNG state and clock. It gets its own
    // before any container runs; the three calls go together (each is a process start in the guest).
    const call = { ...(o.signal ? { signal: o.signal } : {}), timeoutMs: 10_000 };
    const identity = vm.restoredFrom === undefined ? [] : [
      agent.reseedRandomDev(randomBytes(64), call),
      agent.setGuestDateTime(new Date(), call),
    ];
    const created = agent.createSandbox({
      sandboxId: o.sandboxId,
      sharedFs: {
        tag: SHARED_FS_TAG,
        mountPoint: GUEST_SHARED_DIR,
        fstype: vm.sharedFsKind === 'virtio-9p' ? '9p' : 'virtiofs',
        ...(vm.sharedFsKind === 'virtio-9p' && o.msize9p ? { msize: o.msize9p } : {}),
      },
      ...(o.hostname !== undefined ? { hostname: o.hostname } : {}),
      machineId: o.machineId ?? podMachineId(o.sandboxId),
      ...(o.kernelModules?.length ? { kernelModules: o.kernelModules } : {}),
    }, {
      ...(o.signal ? { signal: o.signal } : {}),
      // The agent gives each modprobe up to 15 s and the share's mount as much: room for all of them.
      timeoutMs: CREATE_SANDBOX_TIMEOUT_MS + 15_000 * (o.kernelModules?.length ?? 0),
    });
    const results = await Promise.allSettled([created, ...identity]);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    this.push('agent sandbox', async () => {
      // Kills the containers and unmounts the share in the guest; skipped when
      // the VM or the connection is already gone (the VM's stop ends them anyway).
      if (agent.isClosed || vm.exitInfo) return;
      await agent.destroySandbox({ timeoutMs: DESTROY_TIMEOUT_MS });
    });
    this.timings.sandboxMs = Date.now() - t0;
    this.log.info({ readyMs: this.timings.readyMs, sandboxMs: this.timings.sandboxMs, pid: vm.pid }, 'sandbox vm ready');
  }

  private push(what: string, run: Cleanup['run']): void {
    this.cleanups.push({ what, run });
  }

  /** Runs every cleanup, last first; throws the first failure after all ran. */
  private async release(): Promise<void> {
    let first: unknown;
    while (this.cleanups.length > 0) {
      const c = this.cleanups.pop()!;
      try {
        await c.run();
      } catch (err) {
        this.log.warn({ err, step: c.what }, 'sandbox cleanup step failed');
        first ??= err instanceof StatusError ? err : new FailedPreconditionError(`sandbox ${this.opts.sandboxId}: ${c.what}: ${(err as Error).message}`, { cause: err });
      }
    }
    if (first !== undefined) throw first;
  }
}

function checkName(id: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(id)) throw new InvalidArgumentError(`container id ${JSON.stringify(id)} is not a valid id`);
  return id;
}

/** rm -rf, but never through a mount point. */
function removeDirIfUnmounted(dir: string): void {
  const left = mountsUnder(dir);
  if (left.length > 0) throw new FailedPreconditionError(`not removing ${dir}: still mounted: ${left.join(', ')}`);
  rmSync(dir, { recursive: true, force: true });
}
