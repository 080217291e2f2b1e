/**
 * The closed set of device kinds and the one table that maps a config's
 * `kind` to its validation and arguments.
 */
import { invalid } from '../validate.js';
import { agentChannel, type AgentChannelConfig } from './agent-channel.js';
import { blockDevice, type BlockDeviceConfig } from './block-device.js';
import { sharedFs, type SharedFsConfig } from './shared-fs.js';
import { shared9p, type Shared9pConfig } from './shared-9p.js';
import { tapNet, type TapNetConfig } from './tap-net.js';
import type { DeviceContext, DeviceKind } from './types.js';

export type DeviceConfig = AgentChannelConfig | SharedFsConfig | Shared9pConfig | BlockDeviceConfig | TapNetConfig;

type KindTable = { [K in DeviceConfig['kind']]: DeviceKind<Extract<DeviceConfig, { kind: K }>> };

const KINDS: KindTable = {
  'agent-channel': agentChannel,
  'shared-fs': sharedFs,
  'shared-9p': shared9p,
  block: blockDevice,
  'tap-net': tapNet,
};

function kindOf<C extends DeviceConfig>(cfg: C, field: string): DeviceKind<C> {
  const k = (cfg as { kind?: unknown } | null)?.kind;
  if (typeof k !== 'string' || !Object.hasOwn(KINDS, k)) {
    throw invalid(`${field}.kind`, `must be one of ${Object.keys(KINDS).join(', ')} (got ${JSON.stringify(k)})`);
  }
  return KINDS[k as C['kind']] as unknown as DeviceKind<C>;
}

/** Validates every device and the uniqueness of their QEMU ids. */
export function validateDevices(devices: readonly DeviceConfig[], field = 'devices'): void {
  if (!Array.isArray(devices)) throw invalid(field, 'must be an array');
  const seen = new Map<string, number>();
  let agents = 0;
  devices.forEach((d, i) => {
    const f = `${field}[${i}]`;
    const kind = kindOf(d, f);
    kind.validate(d, f);
    if (d.kind === 'agent-channel' && ++agents > 1) throw invalid(f, 'only one agent-channel per VM');
    for (const id of kind.ids(d)) {
      const prev = seen.get(id);
      if (prev !== undefined) throw invalid(`${f}.id`, `QEMU id ${JSON.stringify(id)} already used by ${field}[${prev}]`);
      seen.set(id, i);
    }
  });
}

/** The arguments of every device, in order. */
export function devicesArgs(devices: readonly DeviceConfig[], ctx: DeviceContext): string[] {
  return devices.flatMap((d, i) => kindOf(d, `devices[${i}]`).args(d, ctx));
}

/** True when any device needs guest RAM in a shared memfd. */
export function needsSharedMemory(devices: readonly DeviceConfig[]): boolean {
  return devices.some((d, i) => kindOf(d, `devices[${i}]`).needsSharedMemory(d));
}
