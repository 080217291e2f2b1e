/**
 * A virtio-net NIC on an existing tap device, given by name (the network
 * layer creates the tap in the pod's netns and starts QEMU there), or by a
 * descriptor QEMU inherits (a jailed QEMU: jail.ts). QEMU runs no scripts.
 */
import { checkInt, checkQemuId, checkString, invalid } from '../validate.js';
import { virtioDevice, type DeviceKind } from './types.js';

export interface TapNetConfig {
  kind: 'tap-net';
  /** QEMU netdev id. */
  id: string;
  /**
   * Host tap interface name (at most 15 bytes). Absent: a NIC with no
   * back-end (`-netdev hubport` on an otherwise empty hub), the stand-in a
   * VM template boots with so that its clones, whose NIC is the pod's tap,
   * have the same device set.
   */
  ifname?: string;
  /**
   * The tap as a descriptor QEMU inherits (`-netdev tap,fd=N`): a jailed
   * QEMU cannot open taps itself; kata-ts-jailer opens `ifname` as fd N.
   */
  fd?: number;
  /** Guest MAC, e.g. 52:54:00:12:34:56. */
  mac?: string;
  /** vhost-net acceleration (needs /dev/vhost-net). */
  vhost?: boolean;
  /**
   * The MTU the device advertises to the guest (virtio-net `host_mtu`, so
   * the guest NIC starts with the pod's MTU); omitted: the guest's default.
   */
  mtu?: number;
}

export const tapNet: DeviceKind<TapNetConfig> = {
  kind: 'tap-net',

  validate(cfg, field) {
    checkQemuId(cfg.id, `${field}.id`);
    if (cfg.ifname !== undefined) checkString(cfg.ifname, `${field}.ifname`);
    if (cfg.ifname !== undefined && !/^[A-Za-z0-9._-]{1,15}$/.test(cfg.ifname)) {
      throw invalid(`${field}.ifname`, `must be 1-15 letters, digits, '.', '_', '-' (got ${JSON.stringify(cfg.ifname)})`);
    }
    if (cfg.mac !== undefined && !/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(cfg.mac)) {
      throw invalid(`${field}.mac`, `must look like 52:54:00:12:34:56 (got ${JSON.stringify(cfg.mac)})`);
    }
    if (cfg.mtu !== undefined) checkInt(cfg.mtu, `${field}.mtu`, 68, 65535);
    if (cfg.fd !== undefined) {
      checkInt(cfg.fd, `${field}.fd`, 3, 1023);
      if (cfg.ifname === undefined) throw invalid(`${field}.fd`, 'needs ifname (the tap the descriptor is opened on)');
    }
  },

  ids: (cfg) => [cfg.id],

  args(cfg, ctx) {
    const vhost = cfg.vhost ? ',vhost=on' : '';
    const mac = cfg.mac === undefined ? '' : `,mac=${cfg.mac.toLowerCase()}`;
    const mtu = cfg.mtu === undefined ? '' : `,host_mtu=${cfg.mtu}`;
    return [
      '-netdev', cfg.ifname === undefined
        ? `hubport,id=${cfg.id},hubid=0`
        : cfg.fd !== undefined
          ? `tap,id=${cfg.id},fd=${cfg.fd}${vhost}`
          : `tap,id=${cfg.id},ifname=${cfg.ifname},script=no,downscript=no${vhost}`,
      '-device', `${virtioDevice('virtio-net', ctx.machine)},netdev=${cfg.id}${mac}${mtu}`,
    ];
  },

  needsSharedMemory: () => false,
};
