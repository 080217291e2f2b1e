/**
 * QEMU's argv from a typed config. Pure: no file system access, so it is
 * table-tested; `validateQemuConfig` names the offending field.
 *
 * Choices (see docs/vm.md):
 * - `-nodefaults -no-user-config -nographic -no-reboot`: no devices, config
 *   files, display or monitor we did not ask for; a guest reboot or panic
 *   (`panic=-1`) ends QEMU instead of looping.
 * - microvm: virtio-mmio devices, no firmware, option ROMs off;
 *   `virtio-mmio.force-legacy=false` because vhost-user-fs (virtiofsd)
 *   rejects legacy virtio; `tsc_early_khz` because TSC calibration hangs.
 * - guest RAM is a shared memfd (`memory-backend=mem`) only when a
 *   vhost-user device needs it.
 * - serial console → a file chardev; QMP → a unix socket QEMU listens on.
 */
import { devicesArgs, needsSharedMemory, validateDevices, type DeviceConfig } from './devices/index.js';
import type { MachineType } from './devices/types.js';
import { checkAbsPath, checkInt, checkOneOf, checkSocketPath, checkString, invalid, opt } from './validate.js';
import { MAX_VCPUS } from '../agent-protocol/limits.js';
import { hotplugKernelParams, memoryArg, smpArg, validateHotplugRoom, type HotplugRoom } from './hotplug.js';

export type { MachineType } from './devices/types.js';

/** An accelerator QEMU is started with (the `auto` choice is made in accel.ts). */
export type Accelerator = 'kvm' | 'tcg';

/** The QEMU binary, found on PATH. */
export const QEMU_BINARY = 'qemu-system-x86_64';

export const MACHINE_TYPES: readonly MachineType[] = ['microvm', 'q35'];
export const ACCELERATORS: readonly Accelerator[] = ['kvm', 'tcg'];

export const MIN_MEMORY_MIB = 64;
export const MAX_MEMORY_MIB = 1024 * 1024;
/** The vCPU bound, shared with the agent (which onlines hot-plugged CPUs). */
export { MAX_VCPUS } from '../agent-protocol/limits.js';

export interface QemuConfig {
  machine: MachineType;
  accel: Accelerator;
  vcpus: number;
  memoryMiB: number;
  /** microvm: the uncompressed vmlinux; q35: a bzImage works too. */
  kernel: string;
  initrd?: string;
  /** Appended after our defaults (`console=ttyS0 panic=-1`, tsc_early_khz on microvm). */
  kernelParams?: readonly string[];
  /** Host TSC kHz for microvm's `tsc_early_khz` (see host.ts); omitted when undefined. */
  tscKhz?: number;
  /** The guest's serial console is written to this file. */
  consoleLog: string;
  /** QEMU listens for QMP here. */
  qmpSocket: string;
  devices: readonly DeviceConfig[];
  /** Shows up in `ps` and QEMU's thread names. */
  name?: string;
  /**
   * Guest RAM in a file (a VM template's memory, or a clone's): `share`
   * true maps it MAP_SHARED (the template writes its RAM into the file; a
   * vhost-user device can map it), false MAP_PRIVATE (a clone's writes stay
   * its own, copy-on-write, and the file's pages are shared by every clone).
   * Absent: anonymous RAM (a memfd when a vhost-user device needs it).
   */
  memoryFile?: { path: string; share: boolean };
  /** `-incoming defer`: the VM waits for `migrate-incoming` (a clone restoring a template's state). */
  incoming?: boolean;
  /** Room to grow by hot-plug (q35 only: hotplug.ts). */
  hotplug?: HotplugRoom;
  /**
   * QEMU's own seccomp filter, `-sandbox <value>` (Kata's `seccompsandbox`),
   * e.g. jail.ts DEFAULT_SECCOMP_SANDBOX; absent: none.
   */
  seccompSandbox?: string;
}

/** Throws InvalidArgumentError naming the first bad field. */
export function validateQemuConfig(cfg: QemuConfig): void {
  if (typeof cfg !== 'object' || cfg === null) throw invalid('config', 'must be an object');
  checkOneOf(cfg.machine, 'machine', MACHINE_TYPES);
  checkOneOf(cfg.accel, 'accel', ACCELERATORS);
  checkInt(cfg.vcpus, 'vcpus', 1, MAX_VCPUS);
  checkInt(cfg.memoryMiB, 'memoryMiB', MIN_MEMORY_MIB, MAX_MEMORY_MIB);
  checkAbsPath(cfg.kernel, 'kernel');
  if (cfg.initrd !== undefined) checkAbsPath(cfg.initrd, 'initrd');
  if (cfg.kernelParams !== undefined) {
    if (!Array.isArray(cfg.kernelParams)) throw invalid('kernelParams', 'must be an array of strings');
    cfg.kernelParams.forEach((p, i) => {
      checkString(p, `kernelParams[${i}]`);
      if (/\s/.test(p)) throw invalid(`kernelParams[${i}]`, `must not contain spaces (got ${JSON.stringify(p)})`);
    });
  }
  if (cfg.tscKhz !== undefined) checkInt(cfg.tscKhz, 'tscKhz', 1, 100_000_000);
  checkAbsPath(cfg.consoleLog, 'consoleLog');
  checkSocketPath(cfg.qmpSocket, 'qmpSocket');
  if (cfg.memoryFile !== undefined) {
    checkAbsPath(cfg.memoryFile.path, 'memoryFile.path');
    if (/[,\s]/.test(cfg.memoryFile.path)) throw invalid('memoryFile.path', `must not contain commas or spaces (got ${JSON.stringify(cfg.memoryFile.path)})`);
    if (typeof cfg.memoryFile.share !== 'boolean') throw invalid('memoryFile.share', 'must be a boolean');
    if (!cfg.memoryFile.share && needsSharedMemory(cfg.devices ?? [])) {
      throw invalid('memoryFile.share', 'must be true: a vhost-user device (virtio-fs) maps guest RAM, which a private mapping hides from it');
    }
  }
  if (cfg.incoming !== undefined && typeof cfg.incoming !== 'boolean') throw invalid('incoming', 'must be a boolean');
  if (cfg.hotplug !== undefined) validateHotplugRoom(cfg.hotplug, cfg, MAX_VCPUS, MAX_MEMORY_MIB);
  if (cfg.seccompSandbox !== undefined && !/^on(,[a-z]+=(allow|deny|children))*$/.test(cfg.seccompSandbox)) {
    throw invalid('seccompSandbox', `must be "on" followed by ",<feature>=allow|deny|children" items (got ${JSON.stringify(cfg.seccompSandbox)})`);
  }
  if (cfg.name !== undefined && !/^[A-Za-z0-9._-]{1,64}$/.test(cfg.name)) {
    throw invalid('name', `must be 1-64 letters, digits, '.', '_', '-' (got ${JSON.stringify(cfg.name)})`);
  }
  validateDevices(cfg.devices);
}

/** The guest kernel command line. */
export function kernelCmdline(cfg: Pick<QemuConfig, 'machine' | 'tscKhz' | 'kernelParams'> & Partial<Pick<QemuConfig, 'memoryMiB' | 'hotplug'>>): string {
  const params = ['console=ttyS0', 'panic=-1'];
  if (cfg.machine === 'microvm' && cfg.tscKhz !== undefined) params.push(`tsc_early_khz=${cfg.tscKhz}`);
  params.push(...hotplugKernelParams(cfg.memoryMiB ?? 0, cfg.hotplug));
  params.push(...(cfg.kernelParams ?? []));
  return params.join(' ');
}

/** Validates `cfg` and returns QEMU's arguments (without the binary). */
export function buildQemuArgs(cfg: QemuConfig): string[] {
  validateQemuConfig(cfg);
  const shared = needsSharedMemory(cfg.devices);
  const machine: string[] = [cfg.machine];
  if (cfg.machine === 'microvm') machine.push('x-option-roms=off');
  if (shared || cfg.memoryFile) machine.push('memory-backend=mem');

  const args: string[] = [];
  if (cfg.seccompSandbox !== undefined) args.push('-sandbox', cfg.seccompSandbox);
  if (cfg.name !== undefined) args.push('-name', `${cfg.name},debug-threads=on`);
  args.push(
    '-machine', machine.join(','),
    '-accel', cfg.accel,
    '-cpu', cfg.accel === 'kvm' ? 'host' : 'max',
    '-smp', smpArg(cfg.vcpus, cfg.hotplug),
    '-m', memoryArg(cfg.memoryMiB, cfg.hotplug),
  );
  if (cfg.memoryFile) {
    const m = cfg.memoryFile;
    args.push('-object', `memory-backend-file,id=mem,size=${cfg.memoryMiB}M,mem-path=${m.path},share=${m.share ? 'on' : 'off'}`);
  } else if (shared) {
    args.push('-object', `memory-backend-memfd,id=mem,size=${cfg.memoryMiB}M,share=on`);
  }
  args.push('-nodefaults', '-no-user-config', '-nographic', '-no-reboot');
  if (cfg.machine === 'microvm') args.push('-global', 'virtio-mmio.force-legacy=false');
  args.push('-kernel', cfg.kernel);
  if (cfg.initrd !== undefined) args.push('-initrd', cfg.initrd);
  args.push('-append', kernelCmdline(cfg));
  args.push(
    '-chardev', `file,id=console,path=${opt(cfg.consoleLog)}`,
    '-serial', 'chardev:console',
    '-chardev', `socket,id=qmp,path=${opt(cfg.qmpSocket)},server=on,wait=off`,
    '-mon', 'chardev=qmp,mode=control',
  );
  args.push(...devicesArgs(cfg.devices, { machine: cfg.machine }));
  if (cfg.incoming) args.push('-incoming', 'defer');
  return args;
}
