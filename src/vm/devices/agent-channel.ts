/**
 * The agent channel: how the host reaches the guest agent. Two transports
 * behind one config kind:
 * - `virtio-serial`: a `virtserialport` named `agent.0` whose backend is a
 *   unix socket QEMU listens on (server=on,wait=off); the host connects to it,
 *   and can reconnect after a shim restart. Works everywhere, including here.
 * - `vsock`: `vhost-vsock-device|pci` with a guest CID; the host dials
 *   AF_VSOCK (CID, port). Needs /dev/vhost-vsock (absent on our CI machines).
 */
import { invalid, checkInt, checkOneOf, checkQemuId, checkSocketPath, opt } from '../validate.js';
import { virtioDevice, type DeviceContext, type DeviceKind } from './types.js';

export const DEFAULT_AGENT_PORT_NAME = 'agent.0';

export interface VirtioSerialAgentChannel {
  kind: 'agent-channel';
  transport: 'virtio-serial';
  /** The unix socket QEMU listens on for the port's host end. */
  socketPath: string;
  /** Port name the guest finds in /sys/class/virtio-ports/<port>/name (default agent.0). */
  portName?: string;
  /** QEMU id prefix (default `agent`). */
  id?: string;
}

export interface VsockAgentChannel {
  kind: 'agent-channel';
  transport: 'vsock';
  /** The guest's context id: 3 … 2^32-2, unique on the host. */
  guestCid: number;
  id?: string;
}

export type AgentChannelConfig = VirtioSerialAgentChannel | VsockAgentChannel;

const TRANSPORTS = ['virtio-serial', 'vsock'] as const;

export const agentChannel: DeviceKind<AgentChannelConfig> = {
  kind: 'agent-channel',

  validate(cfg, field) {
    checkOneOf(cfg.transport, `${field}.transport`, TRANSPORTS);
    if (cfg.id !== undefined) checkQemuId(cfg.id, `${field}.id`);
    if (cfg.transport === 'virtio-serial') {
      checkSocketPath(cfg.socketPath, `${field}.socketPath`);
      if (cfg.portName !== undefined && !/^[A-Za-z0-9._-]{1,64}$/.test(cfg.portName)) {
        throw invalid(`${field}.portName`, `must be 1-64 letters, digits, '.', '_', '-' (got ${JSON.stringify(cfg.portName)})`);
      }
    } else {
      checkInt(cfg.guestCid, `${field}.guestCid`, 3, 0xffff_fffe);
    }
  },

  ids(cfg) {
    const id = cfg.id ?? 'agent';
    return cfg.transport === 'virtio-serial' ? [id, `${id}-serial`] : [id];
  },

  args(cfg, ctx: DeviceContext) {
    const id = cfg.id ?? 'agent';
    if (cfg.transport === 'vsock') {
      return ['-device', `${virtioDevice('vhost-vsock', ctx.machine)},id=${id},guest-cid=${cfg.guestCid}`];
    }
    const bus = `${id}-serial`;
    return [
      '-chardev', `socket,id=${id},path=${opt(cfg.socketPath)},server=on,wait=off`,
      '-device', `${virtioDevice('virtio-serial', ctx.machine)},id=${bus}`,
      '-device', `virtserialport,chardev=${id},name=${cfg.portName ?? DEFAULT_AGENT_PORT_NAME},bus=${bus}.0`,
    ];
  },

  needsSharedMemory: () => false,
};
