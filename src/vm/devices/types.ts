/**
 * What every device kind provides: one config type, its validation, and its
 * QEMU arguments. The machine type picks the virtio transport: virtio-mmio
 * (`-device X-device`) on microvm, PCI (`-device X-pci`) on q35.
 */
export type MachineType = 'microvm' | 'q35';

export interface DeviceContext {
  machine: MachineType;
}

export interface DeviceKind<C extends { kind: string }> {
  readonly kind: C['kind'];
  /** Throws InvalidArgumentError naming `${field}.<member>`. */
  validate(cfg: C, field: string): void;
  /** QEMU ids this device claims (checked for uniqueness across devices). */
  ids(cfg: C): string[];
  /** The device's arguments; `cfg` has been validated. */
  args(cfg: C, ctx: DeviceContext): string[];
  /** True when guest RAM must be a shared memfd (vhost-user devices). */
  needsSharedMemory(cfg: C): boolean;
}

/** `virtio-blk` → `virtio-blk-device` (microvm, virtio-mmio) or `virtio-blk-pci` (q35). */
export function virtioDevice(base: string, machine: MachineType): string {
  return machine === 'microvm' ? `${base}-device` : `${base}-pci`;
}
