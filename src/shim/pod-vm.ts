/**
 * How the serving shim gets its pod's VM (the Pod's SandboxFactory): today
 * it boots one (SandboxVm from the guest image); a warm pool of pre-booted
 * VMs plugs in here later. When the pod has a network namespace (CRI/CNI
 * made it; the sandbox's OCI spec names it), the VM joins it: the CNI veth
 * is found, a tap is tied to it with tc mirred (src/network), QEMU starts in
 * the namespace with the tap as its NIC, and the agent gives the guest NIC
 * the pod's addresses and routes. What was made on the host is recorded in
 * `<pod dir>/network.json` before each step, for `delete` after a crash.
 *
 * The VM's shape comes from configuration.toml (src/config; found through
 * ConfigPath, KATA_CONF_FILE, /etc/kata-containers/configuration.toml, the
 * installed default), read once when the serving shim starts: vCPUs, memory,
 * machine type, accelerator, kernel params, agent dial timeout, network
 * model, debug switches and the guest files: its kernel/initrd/image are used
 * and the image's other files (cmdline, manifest, bare initrd) are taken
 * from the kernel's directory.
 * [factory] enable_template makes the VM a clone of a VM template
 * (src/factory) when one can be made and used, a cold boot otherwise.
 * Settings SandboxVm cannot honour yet (shared_fs = none,
 * virtio_fs_cache other than auto) refuse
 * the pod rather than being ignored. An invalid file fails the pod's first
 * Create with the validation error.
 */
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { applyAnnotations, jailerPath, kernelModules, kernelParamWords, loadConfig, type KataConfig } from '../config/index.js';
import { FailedPreconditionError } from '../errors/index.js';
import { cgroupPathOf, HostCgroup, originProcsFiles, parseHostCgroupState, removeCreated } from '../cgroups/host.js';
import type { Logger } from '../log/index.js';
import {
  attachTap, DEFAULT_TAP_NAME, detach, discover, guestInterface, guestRoutes, parseTapState, type TapState,
} from '../network/index.js';
import { loadGuestImage, SandboxVm, warmUpGuest, type GuestImage, type SandboxVmOptions } from '../sandbox/index.js';
import { TemplateFactory } from '../factory/index.js';
import { podResources } from './pod-sizing.js';
import { MAX_MEMORY_MIB, MAX_VCPUS, parseUidRange, type HotplugRoom, type UidRange, UID_LEASE_DIR } from '../vm/index.js';
import { runRoot } from './pod-paths.js';
import { qemuHardening } from './qemu-hardening.js';
import type { PodSandbox, SandboxFactory } from '../service/pod.js';

export const NETWORK_STATE_FILE = 'network.json';
/** The host cgroup dirs a sandbox_cgroup_only pod made (for `delete` after a crash). */
export const CGROUP_STATE_FILE = 'cgroup.json';

/** A record in the pod dir for `delete` after a crash (network.json, cgroup.json): written whole or not at all. */
function writeStateFile(dir: string, file: string, value: unknown): void {
  const path = join(dir, file);
  writeFileSync(`${path}.tmp`, JSON.stringify(value), { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}

/** Removes the pod cgroup a dead shim left (delete, stale pod dir); its processes die with the shim. */
export async function cleanupCgroupState(dir: string, logger: Logger): Promise<void> {
  const path = join(dir, CGROUP_STATE_FILE);
  if (!existsSync(path)) return;
  try {
    await removeCreated(parseHostCgroupState(JSON.parse(readFileSync(path, 'utf8'))).created);
    rmSync(path, { force: true });
  } catch (err) {
    logger.error({ err, path }, 'removing the pod cgroup failed');
  }
}

/** Removes the tap and filters a dead shim left (delete, stale pod dir). */
export async function cleanupNetworkState(dir: string, logger: Logger): Promise<void> {
  const path = join(dir, NETWORK_STATE_FILE);
  if (!existsSync(path)) return;
  try {
    await detach(parseTapState(JSON.parse(readFileSync(path, 'utf8'))), { logger });
    rmSync(path, { force: true });
  } catch (err) {
    logger.error({ err, path }, 'removing the pod network left by a dead shim failed');
  }
}

/** The host's CPUs and memory (MiB): the bounds when default_maxvcpus / default_maxmemory are 0, as in Kata. */
export function hostCapacity(): { cpus: number; memoryMiB: number } {
  return { cpus: availableParallelism(), memoryMiB: Math.floor(totalmem() / (1024 * 1024)) };
}

/** Whether the image's manifest lists the 9p modules (Debian's generic kernel has them, the cloud one not). */
function guestHas9p(image: GuestImage): boolean {
  const files = (image.manifest['modules'] as { rootfsFiles?: unknown } | undefined)?.rootfsFiles;
  return Array.isArray(files) && files.includes('9p') && files.includes('9pnet_virtio');
}

/** What of the configuration the pod VM uses: its SandboxVm options and whether it joins the pod network. */
export interface PodVmSettings {
  image: GuestImage;
  vm: Pick<SandboxVmOptions, 'resources' | 'hotplug' | 'machine' | 'accel' | 'kernelParams' | 'agentArgs' | 'readyTimeoutMs' | 'qemuBinary' | 'virtiofsdBinary' | 'kernelModules' | 'sharedFs' | 'msize9p' | 'jail' | 'seccompSandbox'>;
  network: boolean;
  /** [hypervisor.qemu] enable_debug: the guest console goes into the shim's log. */
  consoleToLog: boolean;
}

/** The configuration the serving shim read at start, or why it could not. */
export type ShimConfig = { cfg: KataConfig; err?: undefined } | { cfg?: undefined; err: unknown };

/**
 * Reads and validates the configuration once, when the serving shim starts
 * (containerd's runtime option ConfigPath, handed over by `start`, first),
 * and logs the file in use. [runtime] enable_debug turns the shim's log to
 * debug (as `-debug` does). A bad file is kept as the error every pod's
 * Create then fails with.
 */
export function loadShimConfig(logger: Logger): ShimConfig {
  try {
    const cfg = loadConfig({ explicit: process.env['KATA_TS_CONFIG_PATH'] });
    if (cfg.runtime.enable_debug) logger.level = 'debug';
    logger.info({ config: cfg.file, source: cfg.source, debug: logger.level === 'debug' }, 'configuration');
    // Anything that leaves QEMU less hardened than the default, each naming its key.
    for (const w of qemuHardening(cfg).weakened) logger.warn({ config: cfg.file }, `QEMU hardening weakened: ${w}`);
    return { cfg };
  } catch (err) {
    logger.error({ err }, 'configuration invalid: pods will be refused');
    return { err };
  }
}

const DEFAULT_QEMU = '/usr/bin/qemu-system-x86_64';
const DEFAULT_VIRTIOFSD = '/usr/lib/qemu/virtiofsd';

/** `rootless_uids` as a range; FAILED_PRECONDITION naming the key. */
function rootlessUids(cfg: KataConfig): UidRange {
  try {
    return parseUidRange(cfg.hypervisor.qemu.rootless_uids, 'rootless_uids');
  } catch (err) {
    throw new FailedPreconditionError(`config ${cfg.file}: [hypervisor.qemu] ${(err as Error).message}`);
  }
}

/** Maps the config to the VM's settings; FAILED_PRECONDITION for what SandboxVm cannot do yet. */
export function podVmSettings(cfg: KataConfig): PodVmSettings {
  const q = cfg.hypervisor.qemu;
  const unsupported = (key: string, v: string, want: string): never => {
    throw new FailedPreconditionError(`config ${cfg.file}: [hypervisor.qemu] ${key} = ${JSON.stringify(v)} is not supported yet (supported: ${want})`);
  };
  // Every file the VM needs, checked now: the pod's Create then fails naming the key, not later
  // with a spawn error or a half-built image.
  const mustExist = (key: string, f: string): void => {
    if (!existsSync(f)) throw new FailedPreconditionError(`config ${cfg.file}: [hypervisor.qemu] ${key} = ${JSON.stringify(f)}: no such file`);
  };
  mustExist('path', q.path);
  if (q.shared_fs === 'none') unsupported('shared_fs', q.shared_fs, 'virtio-fs, virtio-9p');
  if (q.shared_fs === 'virtio-fs') {
    mustExist('virtio_fs_daemon', q.virtio_fs_daemon);
    if (q.virtio_fs_cache !== 'auto') unsupported('virtio_fs_cache', q.virtio_fs_cache, 'auto');
  }
  if (q.rootless) mustExist('jailer_path', jailerPath(q));
  mustExist('kernel', q.kernel);
  mustExist('initrd', q.initrd);
  mustExist('image', q.image);
  const base = loadGuestImage(dirname(q.kernel));
  if (q.shared_fs === 'virtio-9p' && !guestHas9p(base)) {
    throw new FailedPreconditionError(`config ${cfg.file}: [hypervisor.qemu] shared_fs = "virtio-9p": the guest image ${dirname(q.kernel)} has no 9p modules (build it with GUEST_KERNEL_FLAVOR=generic)`);
  }
  const image: GuestImage = {
    ...base,
    ...(q.machine_type === 'microvm' ? { vmlinux: q.kernel } : { bzImage: q.kernel }),
    initrd: q.initrd,
    rootfs: q.image,
  };
  return {
    image,
    vm: {
      resources: { vcpus: q.default_vcpus, memoryMiB: q.default_memory },
      ...(q.machine_type === 'q35' ? { hotplug: hotplugRoom(q, hostCapacity()) } : {}),
      machine: q.machine_type,
      accel: q.machine_accelerators,
      // Kata's hypervisor debug: the kernel's messages on the console (after the image's `quiet`, so it wins)
      // and the init's timings; the agent's debug log (it writes to the console too).
      kernelParams: [...(q.enable_debug ? ['debug', 'guest.debug'] : []), ...kernelParamWords(cfg)],
      ...(cfg.agent.kata.enable_debug ? { agentArgs: ['--debug'] } : {}),
      ...(cfg.agent.kata.kernel_modules.length > 0 ? { kernelModules: kernelModules(cfg) } : {}),
      readyTimeoutMs: cfg.agent.kata.dial_timeout * 1000,
      ...(q.path !== DEFAULT_QEMU ? { qemuBinary: q.path } : {}),
      ...(q.virtio_fs_daemon !== DEFAULT_VIRTIOFSD ? { virtiofsdBinary: q.virtio_fs_daemon } : {}),
      sharedFs: q.shared_fs === 'virtio-9p' ? 'virtio-9p' : 'virtio-fs',
      ...(q.rootless ? { jail: { jailer: jailerPath(q), uids: rootlessUids(cfg), leaseDir: join(runRoot(), UID_LEASE_DIR) } } : {}),
      ...(q.seccompsandbox !== '' ? { seccompSandbox: q.seccompsandbox } : {}),
      ...(q.shared_fs === 'virtio-9p' ? { msize9p: q.msize_9p } : {}),
    },
    network: cfg.runtime.internetworking_model === 'tcfilter',
    consoleToLog: q.enable_debug,
  };
}

/**
 * The room a q35 VM gets to grow into (Kata's: `maxcpus` = default_maxvcpus,
 * `maxmem` = default_maxmemory, `slots` = memory_slots; 0 = the host's),
 * never below the defaults.
 */
export function hotplugRoom(q: KataConfig['hypervisor']['qemu'], host: { cpus: number; memoryMiB: number }): HotplugRoom {
  // QEMU's own bounds too (a host with more than 255 CPUs or 1 TiB must not make every q35 pod invalid).
  return {
    maxVcpus: Math.min(Math.max(q.default_maxvcpus || host.cpus, q.default_vcpus), MAX_VCPUS),
    maxMemoryMiB: Math.min(Math.max(q.default_maxmemory || host.memoryMiB, q.default_memory), MAX_MEMORY_MIB),
    memorySlots: q.memory_slots,
  };
}

export function bootSandboxFactory(logger: Logger, dir: string, config: ShimConfig): SandboxFactory {
  // Where the shim came from (containerd's cgroup), for sandbox_cgroup_only: read once, before any pod
  // cgroup is joined, so a pod cgroup is always left for it.
  const originCgroup = config.cfg?.runtime.sandbox_cgroup_only ? readFileSync('/proc/self/cgroup', 'utf8') : '';
  // [factory] enable_template: the pod's VM is a clone of a template (made on first use) when it can be.
  const templates = config.cfg?.factory.enable_template
    ? new TemplateFactory({
      root: config.cfg.factory.template_path, logger, buildTimeoutMs: config.cfg.agent.kata.dial_timeout * 1000, warmUp: warmUpGuest,
      // A template outlives the pod whose start made it: its memory holder goes where the shim came from.
      ...(config.cfg.runtime.sandbox_cgroup_only ? { holderCgroupProcs: () => originProcsFiles(originCgroup) } : {}),
    })
    : undefined;
  return async ({ podId, netnsPath: podNetns, annotations, cgroupsPath, hostname, limits, signal }) => {
    const cfg = config.cfg;
    if (!cfg) throw config.err;
    // io.katacontainers.config.hypervisor.* of the pod: only keys in enable_annotations, paths only from valid_*_paths.
    const podCfg = applyAnnotations(cfg, annotations);
    const settings = podVmSettings(podCfg);
    // Sized for its containers (Kata's arithmetic): the defaults plus the first container's limits.
    const sized = podResources(podCfg.hypervisor.qemu, limits ? [limits] : [], hostCapacity(), podCfg.file);
    // A clone starts at its template's size (the defaults) and grows by hot-plug, as Kata's do;
    // a cold boot, or a clone that cannot grow (microvm: a template of its own size), boots sized.
    const growAfterStart = templates !== undefined && settings.vm.hotplug !== undefined;
    if (!growAfterStart) settings.vm.resources = sized;
    if (limits) logger.info({ limits, resources: sized, growAfterStart }, 'pod VM sized for its container');
    // [runtime] sandbox_cgroup_only: the shim joins the pod's cgroup first, so QEMU and virtiofsd are born in it.
    const cgroup = cfg.runtime.sandbox_cgroup_only ? await joinPodCgroup(dir, cgroupsPath, originCgroup, logger) : undefined;
    const image = settings.image;
    const netnsPath = settings.network ? podNetns : undefined;
    let tap: TapState | undefined;
    const undoNetwork = async (): Promise<void> => {
      if (!tap) return;
      await detach(tap, { logger }).catch((err: unknown) => logger.error({ err }, 'removing the pod tap failed'));
      rmSync(join(dir, NETWORK_STATE_FILE), { force: true });
      tap = undefined;
    };
    let s: SandboxVm;
    let net: Awaited<ReturnType<typeof discover>> | undefined;
    try {
      if (netnsPath) {
        net = await discover(netnsPath);
        tap = await attachTap(netnsPath, net.iface, DEFAULT_TAP_NAME, { logger, onProgress: (st) => writeStateFile(dir, NETWORK_STATE_FILE, st) });
        writeStateFile(dir, NETWORK_STATE_FILE, tap);
      }
      s = await SandboxVm.start({
        sandboxId: podId, dir, image, logger, ...settings.vm,
        ...(hostname !== undefined ? { hostname } : {}),
        ...(templates ? { vmSource: (boot) => templates.provider(boot, (o) => logger.info({ origin: o }, o.kind === 'clone' ? 'pod VM cloned from a template' : 'pod VM booted cold')) } : {}),
        ...(settings.consoleToLog ? { onConsoleLine: consoleLogger(logger) } : {}),
        ...(signal ? { signal } : {}),
        ...(netnsPath && tap && net ? { netns: netnsPath, network: { tapName: tap.tap, mac: net.iface.mac, mtu: net.iface.mtu } } : {}),
      });
    } catch (err) {
      await undoNetwork();
      await cgroup?.undo();
      throw err;
    }
    try {
      if (growAfterStart) await s.grow(sized, signal);
      if (net) {
        await s.agent.updateInterface(guestInterface(net));
        await s.agent.updateRoutes(guestRoutes(net));
        logger.info({ iface: net.iface.name, addresses: net.iface.addresses }, 'pod network configured in the guest');
      }
    } catch (err) {
      await s.stop().catch(() => {});
      await undoNetwork();
      await cgroup?.undo();
      throw err;
    }
    const vm = s.vm;
    const exited = new Promise<void>((r) => (vm.exitInfo ? r() : vm.once('exit', () => r())));
    let stopped: (() => void) | undefined;
    const stoppedP = new Promise<void>((r) => { stopped = r; });
    let cannotGrowLogged = false;
    const sb: PodSandbox = {
      agent: s.agent,
      // A later container (a CRI pod's workloads): the VM grows to the defaults plus every
      // container's limits, bounded (FAILED_PRECONDITION naming the key past a bound).
      fit: async (all, sig) => {
        const target = podResources(podCfg.hypervisor.qemu, all, hostCapacity(), podCfg.file);
        const now = s.size;
        if (!now || (target.vcpus <= now.vcpus && target.memoryMiB <= now.memoryMiB)) return;
        if (settings.vm.hotplug === undefined) {
          if (!cannotGrowLogged) logger.warn({ size: now, wanted: target, machine: settings.vm.machine }, `the pod's containers ask for more than its VM has, and machine_type ${settings.vm.machine ?? 'microvm'} cannot hot-plug (q35 can): the VM keeps its size`);
          cannotGrowLogged = true;
          return;
        }
        const t0 = Date.now();
        const added = await s.grow(target, sig);
        logger.info({ added, size: s.size, ms: Date.now() - t0 }, 'pod VM grown for its containers');
      },
      vmPid: vm.pid ?? 0,
      sharedDir: s.sharedDir,
      guestSharedDir: s.guestSharedDir,
      exited: Promise.race([exited, stoppedP]),
      // QEMU holds the tap: the VM goes first.
      stop: (opts) => s.stop(opts).finally(async () => {
        await undoNetwork();
        await cgroup?.undo();
        stopped?.();
      }),
    };
    return sb;
  };
}

/**
 * Guest console lines into the shim's log. At info: [hypervisor.qemu]
 * enable_debug asked for them, whatever the shim's own level.
 */
function consoleLogger(logger: Logger): (line: string) => void {
  const log = logger.child({ source: 'vm-console' });
  return (line) => {
    if (line.trim() !== '') log.info({ line }, 'guest console');
  };
}

/**
 * Makes the pod's host cgroup (the sandbox container's linux.cgroupsPath)
 * and moves the shim into it; undo() moves the shim back to `origin` (its
 * cgroup when it started) and removes what was made, each step tried even
 * if another failed. A pod without a cgroupsPath keeps the shim's cgroup.
 */
async function joinPodCgroup(dir: string, cgroupsPath: string | undefined, origin: string, logger: Logger): Promise<{ undo: () => Promise<void> } | undefined> {
  if (!cgroupsPath) {
    logger.warn('sandbox_cgroup_only: the sandbox container names no linux.cgroupsPath; the VM stays in the shim\'s cgroup');
    return undefined;
  }
  const cg = await HostCgroup.create(cgroupPathOf(cgroupsPath));
  const state = join(dir, CGROUP_STATE_FILE);
  let undone: Promise<void> | undefined;
  const undo = (): Promise<void> => {
    undone ??= (async () => {
      await cg.leave(process.pid, origin).catch((err: unknown) => logger.error({ err, cgroup: cg.path }, 'leaving the pod cgroup failed'));
      try {
        await cg.remove();
        rmSync(state, { force: true });
      } catch (err) {
        // cgroup.json stays: the shim's exit (or a later `delete`) tries again.
        logger.error({ err, cgroup: cg.path }, 'removing the pod cgroup failed');
      }
    })();
    return undone;
  };
  try {
    writeStateFile(dir, CGROUP_STATE_FILE, cg.state());
    await cg.enter(process.pid);
  } catch (err) {
    await undo();
    throw new FailedPreconditionError(`joining cgroup ${cg.path}: ${(err as Error).message}`, { cause: err });
  }
  logger.info({ cgroup: cg.path, dirs: cg.dirs }, 'the shim (and so QEMU and virtiofsd) in the pod cgroup');
  return { undo };
}
