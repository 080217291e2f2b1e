/**
 * virtio-fs: a `vhost-user-fs` device whose backend is virtiofsd's socket.
 * The guest mounts it with `mount -t virtiofs <tag> <dir>` and sees only the
 * directory virtiofsd serves (the sandbox's shared dir). vhost-user needs the
 * guest RAM in a shared memfd, which `needsSharedMemory` asks qemu-args for.
 */
import { checkInt, checkQemuId, checkSocketPath, checkString, invalid, opt } from '../validate.js';
import { virtioDevice, type DeviceKind } from './types.js';

/** Linux's virtio-fs tag limit (virtio_fs_config.tag is 36 bytes). */
export const MAX_VIRTIOFS_TAG_BYTES = 36;

export interface SharedFsConfig {
  kind: 'shared-fs';
  /** virtiofsd's vhost-user socket (`--socket-path`). */
  socketPath: string;
  /** The mount tag the guest uses. */
  tag: string;
  /** QEMU id (default `fs0`). */
  id?: string;
  /** Virtqueue size, a power of two (QEMU's default 128). */
  queueSize?: number;
}

export const sharedFs: DeviceKind<SharedFsConfig> = {
  kind: 'shared-fs',

  validate(cfg, field) {
    checkSocketPath(cfg.socketPath, `${field}.socketPath`);
    checkString(cfg.tag, `${field}.tag`);
    if (Buffer.byteLength(cfg.tag) > MAX_VIRTIOFS_TAG_BYTES || /[,\s]/.test(cfg.tag)) {
      throw invalid(`${field}.tag`, `must be at most ${MAX_VIRTIOFS_TAG_BYTES} bytes without commas or spaces (got ${JSON.stringify(cfg.tag)})`);
    }
    if (cfg.id !== undefined) checkQemuId(cfg.id, `${field}.id`);
    if (cfg.queueSize !== undefined) {
      checkInt(cfg.queueSize, `${field}.queueSize`, 16, 1024);
      if ((cfg.queueSize & (cfg.queueSize - 1)) !== 0) throw invalid(`${field}.queueSize`, 'must be a power of two');
    }
  },

  ids: (cfg) => [cfg.id ?? 'fs0'],

  args(cfg, ctx) {
    const id = cfg.id ?? 'fs0';
    const q = cfg.queueSize === undefined ? '' : `,queue-size=${cfg.queueSize}`;
    return [
      '-chardev', `socket,id=${id},path=${opt(cfg.socketPath)}`,
      '-device', `${virtioDevice('vhost-user-fs', ctx.machine)},chardev=${id},tag=${cfg.tag}${q}`,
    ];
  },

  needsSharedMemory: () => true,
};
