/**
 * Growing a running VM: vCPUs (ACPI CPU hot-plug) and memory (ACPI memory
 * hot-plug, one pc-dimm per step). Pure planning here, table-tested; QemuVm
 * runs the QMP commands.
 *
 * Measured with QEMU 7.2 under TCG (docs/sizing.md):
 * - q35 hot-plugs both: 2 vCPUs added and onlined in about 0.5 s, 1 GiB of
 *   memory visible in the guest in about 0.15 s (pc-dimm and virtio-mem-pci
 *   alike; pc-dimm needs no guest driver, so it is the one used).
 * - microvm has neither: `device_add` of a CPU answers "device plug request
 *   for unsupported device type", and with `pcie=on` a virtio-mem-pci device
 *   is accepted but never reaches the guest.
 *
 * The guest onlines hot-plugged memory itself (`memhp_default_state=online`
 * on its command line); CPUs are onlined by the agent (OnlineCPUMem).
 * Hot-plugged memory is never unplugged: a pod's VM keeps its high-water size.
 */
import { invalid } from './validate.js';

/** Linux's memory block on x86_64 guests under 64 GiB: the unit it onlines. */
export const GUEST_MEMORY_BLOCK_MIB = 128;
/** QEMU's bound on pc-dimm slots (ACPI_MAX_RAM_SLOTS). */
export const MAX_MEMORY_SLOTS = 256;

/** How far a VM may grow: QEMU reserves the room at launch (`-smp …,maxcpus=`, `-m …,slots=,maxmem=`). */
export interface HotplugRoom {
  /** vCPUs the VM may reach (≥ its boot vCPUs). */
  maxVcpus: number;
  /** MiB the VM may reach (≥ its boot memory). */
  maxMemoryMiB: number;
  /** pc-dimm slots: how many memory steps it may take. */
  memorySlots: number;
}

/** Throws INVALID_ARGUMENT naming the field. */
export function validateHotplugRoom(room: HotplugRoom, boot: { vcpus: number; memoryMiB: number; machine: string }, maxVcpus: number, maxMemoryMiB: number): void {
  if (typeof room !== 'object' || room === null) throw invalid('hotplug', 'must be an object');
  if (boot.machine !== 'q35') throw invalid('hotplug', `machine ${boot.machine} has no hot-plug (q35 has ACPI CPU and memory hot-plug)`);
  const int = (v: unknown, field: string, min: number, max: number): void => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw invalid(field, `must be an integer in ${min}..${max} (got ${String(v)})`);
  };
  int(room.maxVcpus, 'hotplug.maxVcpus', boot.vcpus, maxVcpus);
  int(room.maxMemoryMiB, 'hotplug.maxMemoryMiB', boot.memoryMiB, maxMemoryMiB);
  int(room.memorySlots, 'hotplug.memorySlots', 1, MAX_MEMORY_SLOTS);
}

/** `-smp` and `-m` values with the room reserved. */
export function smpArg(vcpus: number, room: HotplugRoom | undefined): string {
  return room && room.maxVcpus > vcpus ? `${vcpus},maxcpus=${room.maxVcpus}` : String(vcpus);
}

export function memoryArg(memoryMiB: number, room: HotplugRoom | undefined): string {
  return room && room.maxMemoryMiB > memoryMiB ? `${memoryMiB}M,slots=${room.memorySlots},maxmem=${room.maxMemoryMiB}M` : `${memoryMiB}M`;
}

/**
 * Kernel parameters a VM with memory room needs:
 * - `memhp_default_state=online`: hot-plugged memory is usable at once (no udev in the guest);
 * - `swiotlb=noforce`: room above 4 GiB otherwise makes the kernel reserve a
 *   64 MiB bounce buffer no virtio device uses (measured: MemTotal 208 → 142
 *   MiB of a 256 MiB VM).
 */
export function hotplugKernelParams(memoryMiB: number, room: HotplugRoom | undefined): string[] {
  return room && room.maxMemoryMiB > memoryMiB ? ['memhp_default_state=online', 'swiotlb=noforce'] : [];
}

/**
 * MiB of the next memory step: the missing amount in whole guest memory
 * blocks (the guest onlines no less), rounded up — or down when rounding up
 * would pass `maxMiB` (then the VM ends less than a block short of the target).
 */
export function memoryStepMiB(currentMiB: number, targetMiB: number, maxMiB = Infinity): number {
  if (targetMiB <= currentMiB) return 0;
  const up = Math.ceil((targetMiB - currentMiB) / GUEST_MEMORY_BLOCK_MIB) * GUEST_MEMORY_BLOCK_MIB;
  if (currentMiB + up <= maxMiB) return up;
  return Math.max(0, Math.floor((maxMiB - currentMiB) / GUEST_MEMORY_BLOCK_MIB) * GUEST_MEMORY_BLOCK_MIB);
}

/** One entry of QMP `query-hotpluggable-cpus`. */
export interface HotpluggableCpu {
  type: string;
  'vcpus-count': number;
  props: Record<string, number>;
  /** Set when the slot is occupied. */
  'qom-path'?: string;
}

/** A CPU slot's place in the topology, outermost first: its sort key and its device id. */
const TOPOLOGY = ['socket-id', 'die-id', 'core-id', 'thread-id'] as const;

/** `device_add` arguments for `count` more vCPUs, lowest free slots first; throws if there are not enough. */
export function cpuPlugCommands(slots: readonly HotpluggableCpu[], count: number, idPrefix = 'cpu'): Array<Record<string, unknown>> {
  const free = slots.filter((s) => s['qom-path'] === undefined && s['vcpus-count'] === 1);
  const order = (s: HotpluggableCpu): number[] => TOPOLOGY.map((k) => s.props[k] ?? 0);
  free.sort((a, b) => {
    const x = order(a);
    const y = order(b);
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
    return 0;
  });
  if (free.length < count) throw new RangeError(`${count} more vCPUs asked for, ${free.length} free slots`);
  return free.slice(0, count).map((s) => ({ driver: s.type, id: `${idPrefix}-${order(s).join('-')}`, ...s.props }));
}
