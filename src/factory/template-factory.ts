/**
 * VM templates (Kata's `[factory] enable_template`): a pod's VM is a clone
 * of a template VM instead of a cold boot.
 *
 * - Template: a VM booted once with the pod VM's exact shape and its guest
 *   RAM in a file (`memory-backend-file`, shared), until its agent answers;
 *   then paused and its device state saved (`migrate` with `x-ignore-shared`:
 *   the RAM stays in the file). Made on first use, once even when several
 *   shims start pods together (a build lock), or by `kata-ts-runtime factory init`.
 * - Clone: QEMU started with the same argv, the template's memory file
 *   mapped private (copy-on-write: every clone shares the pages it has not
 *   written) and `-incoming defer`; the state is loaded and the VM runs on
 *   from the moment the template was saved, its agent reconnecting by itself.
 * - The shared dir of a template's pods is virtio-9p (inside QEMU: it
 *   migrates; vhost-user-fs cannot, and needs shared RAM: docs/templates.md).
 * - Failures cost speed, never a pod: a template that cannot be made, read
 *   or restored is named in one warning (and in `factory status`), and the pod
 *   boots cold.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { AgentClient } from '../agent-client/index.js';
import { connectReadyAgent } from '../sandbox/sandbox-vm.js';
import { Code, StatusError } from '../errors/index.js';
import type { Logger } from '../log/index.js';
import { BootVmProvider, type BootVmProviderOptions, type VmProvider, type VmRequest } from '../vm/provider.js';
import { hostTscKhz, resolveOnPath } from '../vm/host.js';
import type { Vm } from '../vm/vm.js';
import type { QemuVm } from '../vm/qemu.js';
import type { ProcessIdentity } from '../vm/proc.js';
import { holdMemory, releaseMemory } from './memory-holder.js';
import { templateIdentity, templateKey, type TemplateIdentity, type TemplateSpec } from './template-key.js';
import {
  acquireBuildLock, buildingDir, commitTemplate, readTemplate, recordFailure, TEMPLATE_FILES, type Template,
} from './template-store.js';

/** The MAC a template's stand-in NIC has; a clone's agent gives the guest NIC the pod's. */
export const TEMPLATE_NIC_MAC = '02:00:00:00:7e:01';
/** Boot → the template's agent answers (a template is a cold boot). */
export const TEMPLATE_READY_TIMEOUT_MS = 90_000;

export interface TemplateFactoryOptions {
  /** `[factory] template_path`. */
  root: string;
  logger: Logger;
  /** Bound on waiting for another process's build, and on our own boot (default TEMPLATE_READY_TIMEOUT_MS). */
  buildTimeoutMs?: number;
  /**
   * Run in the template before it is saved, with its agent (e.g. sandbox's
   * warmUpGuest: the paths every clone takes, so that clones find them warm).
   * A failure is logged and the template is saved as it is.
   */
  warmUp?: (agent: AgentClient, hostSharedDir: string, signal?: AbortSignal) => Promise<void>;
  /**
   * cgroup.procs files the template's memory holder joins before it holds
   * anything (memory-holder.ts): where the shim came from, when the shim
   * sits in the cgroup of the pod whose start made the template.
   */
  holderCgroupProcs?: () => string[];
}

/** How a pod got its VM. */
export type VmOrigin = { kind: 'clone'; template: string } | { kind: 'cold'; reason?: string };

export class TemplateFactory {
  private readonly log: Logger;
  private readonly buildTimeoutMs: number;

  constructor(private readonly opts: TemplateFactoryOptions) {
    this.log = opts.logger.child({ module: 'vm-factory' });
    this.buildTimeoutMs = opts.buildTimeoutMs ?? TEMPLATE_READY_TIMEOUT_MS;
  }

  /** The template's shape for pods booted with `boot` and these resources and NICs. */
  async spec(boot: BootVmProviderOptions, req: Pick<VmRequest, 'resources' | 'tapNets' | 'logger' | 'signal'>): Promise<TemplateIdentity> {
    const accel = await new BootVmProvider(boot).accelerator(req.logger, req.signal);
    const machine = boot.machine ?? 'microvm';
    const root = boot.blockDevices?.find((d) => d.readOnly)?.path;
    if (root === undefined) throw new StatusError(Code.FAILED_PRECONDITION, 'a VM template needs the guest root image');
    const tsc = machine === 'microvm' ? hostTscKhz() : undefined;
    const spec: TemplateSpec = {
      // The binary spawn would run, for its identity (a name not on PATH stays a name: its identity then fails, naming it).
      qemuBinary: resolveOnPath(boot.qemuBinary ?? 'qemu-system-x86_64') ?? boot.qemuBinary ?? 'qemu-system-x86_64',
      kernel: boot.kernel,
      ...(boot.initrd !== undefined ? { initrd: boot.initrd } : {}),
      rootfs: root,
      machine,
      ...(boot.hotplug !== undefined ? { hotplug: boot.hotplug } : {}),
      accel: accel.accel,
      vcpus: req.resources.vcpus,
      memoryMiB: req.resources.memoryMiB,
      kernelParams: [...(boot.kernelParams ?? [])],
      ...(tsc !== undefined ? { tscKhz: tsc } : {}),
      nic: (req.tapNets?.length ?? 0) > 0,
      sharedFsTag: boot.sharedFsTag ?? 'kataShared',
      ...(boot.jail ? { sealedMemory: true as const } : {}),
    };
    return templateIdentity(spec);
  }

  /**
   * A VmProvider that clones the template matching each request (making it
   * first when there is none) and boots cold when it cannot; `onOrigin`
   * hears which, with the reason of a cold boot.
   */
  provider(boot: BootVmProviderOptions, onOrigin?: (o: VmOrigin) => void): VmProvider {
    return {
      acquire: async (req: VmRequest): Promise<Vm> => {
        let reason: string;
        let key: string | undefined;
        try {
          const id = await this.spec(boot, req);
          key = templateKey(id);
          const tpl = await this.ensure(key, id, boot, req);
          const vm = await this.clone(tpl, boot, req);
          onOrigin?.({ kind: 'clone', template: tpl.key });
          return vm;
        } catch (err) {
          if (req.signal?.aborted) throw err;
          reason = (err as Error).message;
          if (key) await recordFailure(this.opts.root, key, reason);
          this.log.warn({ err, template: key }, `VM template not usable, booting cold: ${reason}`);
        }
        const vm = await new BootVmProvider(boot).acquire(req);
        onOrigin?.({ kind: 'cold', reason });
        return vm;
      },
    };
  }

  /** The template for `key`: read and checked, or made now (once across processes). */
  async ensure(key: string, id: TemplateIdentity, boot: BootVmProviderOptions, req: Pick<VmRequest, 'logger' | 'signal'>): Promise<Template> {
    const root = this.opts.root;
    try {
      return await readTemplate(root, key, id);
    } catch (err) {
      if (!(err instanceof StatusError && err.code === Code.NOT_FOUND)) throw err;
    }
    const release = await acquireBuildLock(root, key, { timeoutMs: this.buildTimeoutMs + 30_000, ...(req.signal ? { signal: req.signal } : {}) });
    try {
      try {
        return await readTemplate(root, key, id); // made by whoever held the lock before us
      } catch (err) {
        if (!(err instanceof StatusError && err.code === Code.NOT_FOUND)) throw err;
      }
      return await this.build(key, id, boot, req);
    } finally {
      await release();
    }
  }

  /** Boots the template VM, waits for its agent, saves its state, stops it, commits the files. */
  private async build(key: string, id: TemplateIdentity, boot: BootVmProviderOptions, req: Pick<VmRequest, 'logger' | 'signal'>): Promise<Template> {
    const root = this.opts.root;
    const dir = buildingDir(root, key);
    const spec = id.spec;
    await rm(dir, { recursive: true, force: true });
    await mkdir(join(dir, 'share'), { recursive: true, mode: 0o700 });
    const t0 = Date.now();
    this.log.info({ template: key, dir: root }, 'making a VM template');
    let vm: Vm | undefined;
    let holder: ProcessIdentity | undefined;
    try {
      let bootMs = 0;
      let warmUpMs = 0;
      vm = await new BootVmProvider({
        ...boot,
        sharedFsKind: 'virtio-9p',
        memoryFile: { path: join(dir, TEMPLATE_FILES.memory), share: true },
        readyTimeoutMs: this.buildTimeoutMs,
        readyProbe: async (v, signal) => {
          const c = await connectReadyAgent(v, signal, this.log);
          try {
            bootMs = Date.now() - t0;
            if (this.opts.warmUp) {
              const w0 = Date.now();
              try {
                await this.opts.warmUp(c, join(dir, 'share'), signal);
                warmUpMs = Date.now() - w0;
              } catch (err) {
                if (signal.aborted) throw err;
                this.log.warn({ err, template: key }, 'warming the template up failed: saving it as it is');
              }
            }
          } finally {
            c.close();
          }
        },
      }).acquire({
        sandboxId: `template-${key.slice(0, 12)}`,
        dir: join(dir, 'vm'),
        resources: { vcpus: spec.vcpus, memoryMiB: spec.memoryMiB },
        sharedDir: join(dir, 'share'),
        logger: req.logger,
        ...(spec.nic ? { tapNets: [{ kind: 'tap-net' as const, id: 'net0', mac: TEMPLATE_NIC_MAC }] } : {}),
        ...(req.signal ? { signal: req.signal } : {}),
      });
      const qemu = vm as QemuVm;
      const { ms: saveMs } = await qemu.saveState(join(dir, TEMPLATE_FILES.state), req.signal ? { signal: req.signal } : {});
      const qemuVersion = await qemu.qemuVersion();
      await vm.stop();
      vm = undefined;
      await rm(join(dir, 'share'), { recursive: true, force: true });
      if (boot.jail) {
        // Clones of jailed QEMUs map the RAM from a sealed memfd: none can change what its siblings share.
        holder = await holdMemory(boot.jail.jailer, join(dir, TEMPLATE_FILES.memory), {
          ...(req.signal ? { signal: req.signal } : {}),
          ...(this.opts.holderCgroupProcs ? { cgroupProcs: this.opts.holderCgroupProcs() } : {}),
        });
        await rm(join(dir, TEMPLATE_FILES.memory)); // its pages are in the memfd now
      }
      const tpl = await commitTemplate(root, key, {
        version: 1, key, identity: id, qemuVersion, createdAt: new Date().toISOString(), bootMs, saveMs,
        ...(holder ? { memoryHolder: holder } : {}),
      }, this.log);
      this.log.info({ template: key, bootMs, warmUpMs, saveMs, ms: Date.now() - t0 }, 'VM template made');
      return tpl;
    } catch (err) {
      await vm?.stop().catch(() => {});
      if (holder) await releaseMemory(holder, this.log).catch(() => {});
      await rm(dir, { recursive: true, force: true }).catch(() => {});
      throw new StatusError(Code.FAILED_PRECONDITION, `making template ${key}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** A VM restored from `tpl` with the pod's back-ends (its sockets, its shared dir over 9p, its tap). */
  private clone(tpl: Template, boot: BootVmProviderOptions, req: VmRequest): Promise<Vm> {
    const t0 = Date.now();
    // The NIC as the template had it: the pod's tap behind it, no MTU feature the template lacked
    // (the agent sets the MTU and the MAC in the guest).
    const tapNets = req.tapNets?.map(({ mtu: _mtu, ...t }) => t);
    return new BootVmProvider({
      ...boot,
      sharedFsKind: 'virtio-9p',
      memoryFile: { path: tpl.memoryFile, share: false },
      incomingState: tpl.stateFile,
    }).acquire({ ...req, ...(tapNets ? { tapNets } : {}) }).then((vm) => {
      this.log.info({ template: tpl.key, ms: Date.now() - t0 }, 'VM cloned from a template');
      return vm;
    });
  }
}
