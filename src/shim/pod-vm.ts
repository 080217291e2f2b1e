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
 * KATA_CONF_FILE, /etc/kata-containers/configuration.toml, the project
 * default), read once when the serving shim starts: vCPUs, memory, machine
 * type, accelerator, kernel params, agent dial timeout, network model, and
 * the guest files. With no operator file (the project default is in use) the
 * guest image stays $KATA_TS_GUEST_DIR (bin/containerd-shim-kata-v2 sets it);
 * with one, its kernel/initrd/image are used and the image's other files
 * (cmdline, manifest, bare initrd) are taken from the kernel's directory.
 * Settings SandboxVm cannot honour yet (shared_fs other than virtio-fs,
 * virtio_fs_cache other than auto) refuse
 * the pod rather than being ignored. An invalid file fails the pod's first
 * Create with the validation error.
 */
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { applyAnnotations, kernelParamWords, loadConfig, type KataConfig } from '../config/index.js';
import { FailedPreconditionError } from '../errors/index.js';
import type { Logger } from '../log/index.js';
import {
  attachTap, DEFAULT_TAP_NAME, detach, discover, guestInterface, guestRoutes, parseTapState, type TapState,
} from '../network/index.js';
import { loadGuestImage, SandboxVm, type GuestImage, type SandboxVmOptions } from '../sandbox/index.js';
import type { PodSandbox, SandboxFactory } from '../service/pod.js';

export const NETWORK_STATE_FILE = 'network.json';

export function guestImageDir(env: NodeJS.ProcessEnv = process.env): string {
  const d = env['KATA_TS_GUEST_DIR'];
  if (d) return resolve(d);
  // dist/src/shim/pod-vm.js → the project root (bin/containerd-shim-kata-v2 sets the variable for the bundle)
  return resolve(dirname(fileURLToPath(import.meta.url)), '../../../build/guest');
}

function writeNetworkState(dir: string, st: TapState): void {
  const path = join(dir, NETWORK_STATE_FILE);
  writeFileSync(`${path}.tmp`, JSON.stringify(st), { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
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

/** What of the configuration the pod VM uses: its SandboxVm options and whether it joins the pod network. */
export interface PodVmSettings {
  image: GuestImage;
  vm: Pick<SandboxVmOptions, 'resources' | 'machine' | 'accel' | 'kernelParams' | 'readyTimeoutMs' | 'qemuBinary' | 'virtiofsdBinary'>;
  network: boolean;
}

const DEFAULT_QEMU = '/usr/bin/qemu-system-x86_64';
const DEFAULT_VIRTIOFSD = '/usr/lib/qemu/virtiofsd';

/** Maps the config to the VM's settings; FAILED_PRECONDITION for what SandboxVm cannot do yet. */
export function podVmSettings(cfg: KataConfig, env: NodeJS.ProcessEnv = process.env): PodVmSettings {
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
  mustExist('virtio_fs_daemon', q.virtio_fs_daemon);
  if (q.shared_fs !== 'virtio-fs') unsupported('shared_fs', q.shared_fs, 'virtio-fs');
  if (q.virtio_fs_cache !== 'auto') unsupported('virtio_fs_cache', q.virtio_fs_cache, 'auto');
  let image: GuestImage;
  if (cfg.source === 'default') {
    image = loadGuestImage(guestImageDir(env));
  } else {
    mustExist('kernel', q.kernel);
    mustExist('initrd', q.initrd);
    mustExist('image', q.image);
    const base = loadGuestImage(dirname(q.kernel));
    image = {
      ...base,
      ...(q.machine_type === 'microvm' ? { vmlinux: q.kernel } : { bzImage: q.kernel }),
      initrd: q.initrd,
      rootfs: q.image,
    };
  }
  return {
    image,
    vm: {
      resources: { vcpus: q.default_vcpus, memoryMiB: q.default_memory },
      machine: q.machine_type,
      accel: q.machine_accelerators,
      kernelParams: kernelParamWords(cfg),
      readyTimeoutMs: cfg.agent.kata.dial_timeout * 1000,
      ...(q.path !== DEFAULT_QEMU ? { qemuBinary: q.path } : {}),
      ...(q.virtio_fs_daemon !== DEFAULT_VIRTIOFSD ? { virtiofsdBinary: q.virtio_fs_daemon } : {}),
    },
    network: cfg.runtime.internetworking_model === 'tcfilter',
  };
}

export function bootSandboxFactory(logger: Logger, dir: string): SandboxFactory {
  // Read and validated once, when the serving shim starts; the file in use is logged.
  let cfg: KataConfig | undefined;
  let cfgErr: unknown;
  try {
    // containerd's runtime option ConfigPath (handed over by `start`) comes first.
    cfg = loadConfig({ explicit: process.env['KATA_TS_CONFIG_PATH'] });
    logger.info({ config: cfg.file, source: cfg.source }, 'configuration');
  } catch (err) {
    cfgErr = err;
    logger.error({ err }, 'configuration invalid: pods will be refused');
  }
  return async ({ podId, netnsPath: podNetns, annotations, signal }) => {
    if (!cfg) throw cfgErr;
    // io.katacontainers.config.hypervisor.* of the pod: only keys in enable_annotations, paths only from valid_*_paths.
    const settings = podVmSettings(applyAnnotations(cfg, annotations));
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
        tap = await attachTap(netnsPath, net.iface, DEFAULT_TAP_NAME, { logger, onProgress: (st) => writeNetworkState(dir, st) });
        writeNetworkState(dir, tap);
      }
      s = await SandboxVm.start({
        sandboxId: podId, dir, image, logger, ...settings.vm,
        ...(signal ? { signal } : {}),
        ...(netnsPath && tap && net ? { netns: netnsPath, network: { tapName: tap.tap, mac: net.iface.mac, mtu: net.iface.mtu } } : {}),
      });
    } catch (err) {
      await undoNetwork();
      throw err;
    }
    try {
      if (net) {
        await s.agent.updateInterface(guestInterface(net));
        await s.agent.updateRoutes(guestRoutes(net));
        logger.info({ iface: net.iface.name, addresses: net.iface.addresses }, 'pod network configured in the guest');
      }
    } catch (err) {
      await s.stop().catch(() => {});
      await undoNetwork();
      throw err;
    }
    const vm = s.vm;
    const exited = new Promise<void>((r) => (vm.exitInfo ? r() : vm.once('exit', () => r())));
    let stopped: (() => void) | undefined;
    const stoppedP = new Promise<void>((r) => { stopped = r; });
    const sb: PodSandbox = {
      agent: s.agent,
      vmPid: vm.pid ?? 0,
      sharedDir: s.sharedDir,
      guestSharedDir: s.guestSharedDir,
      exited: Promise.race([exited, stoppedP]),
      // QEMU holds the tap: the VM goes first.
      stop: (opts) => s.stop(opts).finally(async () => {
        await undoNetwork();
        stopped?.();
      }),
    };
    return sb;
  };
}
