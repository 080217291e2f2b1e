/**
 * How the serving shim gets its pod's VM (the Pod's SandboxFactory): today
 * it boots one (SandboxVm from the guest image); a warm pool of pre-booted
 * VMs plugs in here later. When the pod has a network namespace (CRI/CNI
 * made it; the sandbox's OCI spec names it), the VM joins it: the CNI veth
 * is found, a tap is tied to it with tc mirred (src/network), QEMU starts in
 * the namespace with the tap as its NIC, and the agent gives the guest NIC
 * the pod's addresses and routes. What was made on the host is recorded in
 * `<pod dir>/network.json` before each step, for `delete` after a crash.
 */
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../log/index.js';
import {
  attachTap, DEFAULT_TAP_NAME, detach, discover, guestInterface, guestRoutes, parseTapState, type TapState,
} from '../network/index.js';
import { loadGuestImage, SandboxVm } from '../sandbox/index.js';
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

export function bootSandboxFactory(logger: Logger, dir: string): SandboxFactory {
  return async ({ podId, netnsPath, signal }) => {
    const image = loadGuestImage(guestImageDir());
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
        sandboxId: podId, dir, image, logger,
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
      stop: () => s.stop().finally(async () => {
        await undoNetwork();
        stopped?.();
      }),
    };
    return sb;
  };
}
