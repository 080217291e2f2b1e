/**
 * The seam where a pod gets its VM.
 *
 * `BootVmProvider` boots a fresh VM for every request. A warm pool comes
 * later behind the same interface: a `PoolVmProvider` would keep N VMs booted
 * (QEMU + agent up, no shared dir yet) and on `acquire` hand one over —
 * hot-plugging the pod's virtio-fs share (`chardev-add` + `device_add
 * vhost-user-fs-…` over QMP), moving its files into the pod's dir — then
 * refill the pool in the background. Callers must therefore not assume the
 * VM was booted during `acquire`, only that it is running and ready.
 */
import type { Logger } from '../log/index.js';
import { chooseAccel, type AccelChoice, type AccelSetting, type KvmProbeOptions } from './accel.js';
import type { BlockDeviceConfig, TapNetConfig } from './devices/index.js';
import type { MachineType } from './qemu-args.js';
import type { HotplugRoom } from './hotplug.js';
import type { JailSettings } from './jail.js';
import { QemuVm, type AgentChannelOptions, type QemuTimeouts } from './qemu.js';
import type { VirtiofsCache } from './virtiofsd.js';
import type { Vm } from './vm.js';

/** CPU and memory for a pod's VM. */
export interface VmResources {
  vcpus: number;
  memoryMiB: number;
}

export interface VmRequest {
  sandboxId: string;
  /** The per-sandbox 0700 directory for sockets, logs and the state file. */
  dir: string;
  resources: VmResources;
  /** The host directory served to the guest over virtio-fs (and nothing else). */
  sharedDir: string;
  /** The pod's network namespace: QEMU runs in it (see QemuVmOptions.netns). */
  netns?: string;
  /** The pod's NICs: taps that exist in `netns` (src/network's attachTap). */
  tapNets?: readonly TapNetConfig[];
  logger: Logger;
  signal?: AbortSignal;
}

export interface VmProvider {
  /** A running VM for the pod; on failure nothing of it is left. */
  acquire(req: VmRequest): Promise<Vm>;
}

export interface BootVmProviderOptions {
  /** Guest kernel (uncompressed vmlinux for microvm). */
  kernel: string;
  initrd?: string;
  kernelParams?: readonly string[];
  machine?: MachineType;
  /** Room to grow by hot-plug (q35): QemuConfig.hotplug. */
  hotplug?: HotplugRoom;
  /** `auto` probes KVM once per process (see accel.ts). */
  accel: AccelSetting;
  /** The probe guest for `auto` (typically the guest kernel + bare-initrd.img). */
  kvmProbe?: KvmProbeOptions;
  agent?: AgentChannelOptions;
  /** Guest mount tag of the shared dir. */
  sharedFsTag?: string;
  /** virtio-fs (default; virtiofsd) or virtio-9p (inside QEMU). */
  sharedFsKind?: 'virtio-fs' | 'virtio-9p';
  /** virtiofsd cache mode (default auto: host and guest both write the share). */
  sharedFsCache?: VirtiofsCache;
  /** E.g. the read-only guest root image. */
  blockDevices?: readonly BlockDeviceConfig[];
  qemuBinary?: string;
  /** Jail QEMU: its own uid, no capabilities, a private root (QemuVmOptions.jail). */
  jail?: JailSettings;
  /** QEMU's seccomp filter (QemuVmOptions.seccompSandbox). */
  seccompSandbox?: string;
  virtiofsdBinary?: string;
  /** QEMU and virtiofsd die with this process (QemuVmOptions.dieWithParent). */
  dieWithParent?: boolean;
  /** Guest RAM in a file (QemuVmOptions.memoryFile): a VM template's or a clone's. */
  memoryFile?: { path: string; share: boolean };
  /** Restore this saved state instead of booting (QemuVmOptions.incomingState): a clone. */
  incomingState?: string;
  timeouts?: Partial<QemuTimeouts>;
  /**
   * Called with the started VM; resolves when the guest is ready (the agent
   * answers). acquire() waits for it through `vm.waitReady`.
   */
  readyProbe?: (vm: Vm, signal: AbortSignal) => Promise<void>;
  /** Bound on readyProbe (default QemuTimeouts.readyMs). */
  readyTimeoutMs?: number;
}

/** Boots a new VM per request. */
export class BootVmProvider implements VmProvider {
  constructor(private readonly opts: BootVmProviderOptions) {}

  /** The accelerator VMs will use (probes once for `auto`). */
  accelerator(logger: Logger, signal?: AbortSignal): Promise<AccelChoice> {
    return chooseAccel({
      setting: this.opts.accel,
      logger,
      ...(this.opts.kvmProbe ? { probe: this.opts.kvmProbe } : {}),
      ...(signal ? { signal } : {}),
    });
  }

  async acquire(req: VmRequest): Promise<Vm> {
    const o = this.opts;
    const accel = await this.accelerator(req.logger, req.signal);
    const vm = new QemuVm({
      sandboxId: req.sandboxId,
      dir: req.dir,
      accel: accel.accel,
      vcpus: req.resources.vcpus,
      memoryMiB: req.resources.memoryMiB,
      kernel: o.kernel,
      sharedFs: {
        sharedDir: req.sharedDir,
        ...(o.sharedFsKind !== undefined ? { kind: o.sharedFsKind } : {}),
        ...(o.sharedFsTag !== undefined ? { tag: o.sharedFsTag } : {}),
        ...(o.sharedFsCache !== undefined ? { cache: o.sharedFsCache } : {}),
        ...(o.virtiofsdBinary !== undefined ? { binary: o.virtiofsdBinary } : {}),
      },
      logger: req.logger,
      ...(o.machine !== undefined ? { machine: o.machine } : {}),
      ...(o.hotplug !== undefined ? { hotplug: o.hotplug } : {}),
      ...(o.initrd !== undefined ? { initrd: o.initrd } : {}),
      ...(o.kernelParams !== undefined ? { kernelParams: o.kernelParams } : {}),
      ...(o.agent !== undefined ? { agent: o.agent } : {}),
      ...(o.blockDevices !== undefined ? { blockDevices: o.blockDevices } : {}),
      ...(req.tapNets !== undefined ? { tapNets: req.tapNets } : {}),
      ...(req.netns !== undefined ? { netns: req.netns } : {}),
      ...(o.qemuBinary !== undefined ? { qemuBinary: o.qemuBinary } : {}),
      ...(o.jail !== undefined ? { jail: o.jail } : {}),
      ...(o.seccompSandbox !== undefined ? { seccompSandbox: o.seccompSandbox } : {}),
      ...(o.dieWithParent !== undefined ? { dieWithParent: o.dieWithParent } : {}),
      ...(o.memoryFile !== undefined ? { memoryFile: o.memoryFile } : {}),
      ...(o.incomingState !== undefined ? { incomingState: o.incomingState } : {}),
      ...(o.timeouts !== undefined ? { timeouts: o.timeouts } : {}),
    });
    await vm.start(req.signal ? { signal: req.signal } : {});
    if (o.readyProbe) {
      const probe = o.readyProbe;
      try {
        await vm.waitReady((signal) => probe(vm, signal), {
          ...(o.readyTimeoutMs !== undefined ? { timeoutMs: o.readyTimeoutMs } : {}),
          ...(req.signal ? { signal: req.signal } : {}),
        });
      } catch (err) {
        await vm.stop().catch((e: unknown) => req.logger.error({ err: e }, 'stop after failed boot'));
        throw err;
      }
    }
    return vm;
  }
}
