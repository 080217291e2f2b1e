/**
 * virtio-9p: a host directory served by QEMU itself (`-fsdev local` +
 * `virtio-9p-device|pci`). The guest mounts it with
 * `mount -t 9p -o trans=virtio,version=9p2000.L <tag> <dir>`.
 *
 * Unlike virtio-fs it needs no daemon and no shared guest RAM, and QEMU can
 * migrate it while the guest has it unmounted: a VM template boots with it
 * (on a placeholder dir) and its clones, whose RAM is a private copy-on-write
 * mapping of the template's, get the pod's dir behind the same device. QEMU
 * runs in the host's mount namespace, so bind mounts made later under the
 * dir are seen at once.
 *
 * `security_model=none`: QEMU (root) creates files with the guest's
 * credentials where it can and ignores failures to set ownership (Kata's
 * choice); no xattr mapping.
 */
import { checkAbsPath, checkQemuId, checkString, invalid, opt } from '../validate.js';
import { virtioDevice, type DeviceKind } from './types.js';

/** The 9p mount tag limit (a u16 length; Linux and QEMU take up to 31 bytes in practice). */
export const MAX_9P_TAG_BYTES = 31;

export interface Shared9pConfig {
  kind: 'shared-9p';
  /** The host directory the guest sees. */
  path: string;
  /** The mount tag the guest uses. */
  tag: string;
  /** QEMU id (default `fs9p`). */
  id?: string;
}

export const shared9p: DeviceKind<Shared9pConfig> = {
  kind: 'shared-9p',

  validate(cfg, field) {
    checkAbsPath(cfg.path, `${field}.path`);
    checkString(cfg.tag, `${field}.tag`);
    if (Buffer.byteLength(cfg.tag) > MAX_9P_TAG_BYTES || !/^[A-Za-z0-9._:-]+$/.test(cfg.tag)) {
      throw invalid(`${field}.tag`, `must be 1-${MAX_9P_TAG_BYTES} letters, digits, '.', '_', ':', '-' (got ${JSON.stringify(cfg.tag)})`);
    }
    if (cfg.id !== undefined) checkQemuId(cfg.id, `${field}.id`);
  },

  ids: (cfg) => [cfg.id ?? 'fs9p'],

  args(cfg, ctx) {
    const id = cfg.id ?? 'fs9p';
    return [
      '-fsdev', `local,id=${id},path=${opt(cfg.path)},security_model=none`,
      '-device', `${virtioDevice('virtio-9p', ctx.machine)},fsdev=${id},mount_tag=${cfg.tag}`,
    ];
  },

  needsSharedMemory: () => false,
};
