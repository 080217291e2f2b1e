/**
 * A virtio-blk disk backed by a host file: the read-only guest root image
 * first of all (`readOnly` defaults to true). The `serial` shows up in the
 * guest as /sys/block/vdX/serial, so the guest can find a disk by name.
 */
import { checkAbsPath, checkOneOf, checkQemuId, invalid, opt } from '../validate.js';
import { virtioDevice, type DeviceKind } from './types.js';

export interface BlockDeviceConfig {
  kind: 'block';
  /** QEMU drive id. */
  id: string;
  /** Host image file. */
  path: string;
  /** Default true: the guest cannot write the image. */
  readOnly?: boolean;
  /** Default raw. */
  format?: 'raw' | 'qcow2';
  /** virtio-blk serial (at most 20 bytes). */
  serial?: string;
}

export const blockDevice: DeviceKind<BlockDeviceConfig> = {
  kind: 'block',

  validate(cfg, field) {
    checkQemuId(cfg.id, `${field}.id`);
    checkAbsPath(cfg.path, `${field}.path`);
    if (cfg.format !== undefined) checkOneOf(cfg.format, `${field}.format`, ['raw', 'qcow2'] as const);
    if (cfg.readOnly !== undefined && typeof cfg.readOnly !== 'boolean') throw invalid(`${field}.readOnly`, 'must be a boolean');
    if (cfg.serial !== undefined && !/^[A-Za-z0-9._-]{1,20}$/.test(cfg.serial)) {
      throw invalid(`${field}.serial`, `must be 1-20 letters, digits, '.', '_', '-' (got ${JSON.stringify(cfg.serial)})`);
    }
  },

  ids: (cfg) => [cfg.id],

  args(cfg, ctx) {
    const ro = cfg.readOnly ?? true;
    const serial = cfg.serial === undefined ? '' : `,serial=${cfg.serial}`;
    return [
      '-drive', `file=${opt(cfg.path)},if=none,format=${cfg.format ?? 'raw'},readonly=${ro ? 'on' : 'off'},id=${cfg.id}`,
      '-device', `${virtioDevice('virtio-blk', ctx.machine)},drive=${cfg.id}${serial}`,
    ];
  },

  needsSharedMemory: () => false,
};
