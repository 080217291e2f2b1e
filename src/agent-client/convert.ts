/**
 * Domain types ⇄ agent protocol messages: the only place the client touches
 * protobuf shapes (int64 as Long, Timestamp, JSON bytes).
 */
import { constants as osConstants } from 'node:os';
import type { kata } from '../proto/gen/agent.js';
import { InvalidArgumentError } from '../errors/index.js';
import { int64ToNumber } from '../ttrpc/messages.js';
import type {
  AgentInfo, ContainerStateName, ContainerStats, ContainerStatus, CreateContainerRequest, ExecProcessRequest,
  ExitStatus, InterfaceConfig, InterfaceStatus, OciJson, ProcessInfo, ReadResult, RouteConfig, RouteStatus, SandboxStatus,
} from './types.js';

type P = typeof kata.agent.v1;
type Num = number | { toNumber(): number } | null | undefined;

const n = (v: Num): number => int64ToNumber(v);

export function jsonBytes(doc: OciJson): Uint8Array {
  return doc instanceof Uint8Array ? doc : Buffer.from(JSON.stringify(doc));
}

export function signalNumber(sig: number | NodeJS.Signals): number {
  if (typeof sig === 'number') return sig;
  const num = (osConstants.signals as Record<string, number | undefined>)[sig];
  if (num === undefined) throw new InvalidArgumentError(`signal: unknown signal ${sig}`);
  return num;
}

export function toTimestampDate(ts: { seconds?: Num; nanos?: number | null } | null | undefined): Date {
  if (!ts) return new Date(0);
  return new Date(n(ts.seconds) * 1000 + Math.floor((ts.nanos ?? 0) / 1e6));
}

export function toCreateContainer(req: CreateContainerRequest): kata.agent.v1.CreateContainerRequest.$Properties {
  return {
    containerId: req.containerId,
    specJson: jsonBytes(req.spec),
    rootfsPath: req.rootfsPath ?? '',
    terminal: req.terminal ?? false,
    stdin: req.stdin ?? false,
    rows: req.rows ?? 0,
    cols: req.cols ?? 0,
  };
}

export function toExecProcess(req: ExecProcessRequest): kata.agent.v1.ExecProcessRequest.$Properties {
  return {
    containerId: req.containerId,
    execId: req.execId,
    processJson: jsonBytes(req.process),
    terminal: req.terminal ?? false,
    stdin: req.stdin ?? false,
    rows: req.rows ?? 0,
    cols: req.cols ?? 0,
  };
}

export function fromCheck(r: InstanceType<P['CheckResponse']>): AgentInfo {
  return { version: r.version, sandboxId: r.sandboxId, runtime: r.runtime, uptimeMs: n(r.uptimeMs) };
}

export function fromWait(r: InstanceType<P['WaitProcessResponse']>): ExitStatus {
  return { exitStatus: r.exitStatus, exitedAt: toTimestampDate(r.exitedAt) };
}

export function fromRead(r: InstanceType<P['ReadStreamResponse']>): ReadResult {
  const d = r.data;
  return { data: Buffer.from(d.buffer, d.byteOffset, d.byteLength), eof: r.eof };
}

export function fromProcesses(r: InstanceType<P['ListProcessesResponse']>): ProcessInfo[] {
  return r.processes.map((p) => ({ pid: p.pid ?? 0, ppid: p.ppid ?? 0, cmd: p.cmd ?? '', state: p.state ?? '' }));
}

export function fromStats(r: InstanceType<P['StatsContainerResponse']>): ContainerStats {
  const stat: Record<string, number> = {};
  for (const [k, v] of Object.entries(r.memory?.stat ?? {})) stat[k] = n(v as Num);
  return {
    cgroupVersion: r.cgroupVersion,
    cpu: {
      usageUsec: n(r.cpu?.usageUsec),
      userUsec: n(r.cpu?.userUsec),
      systemUsec: n(r.cpu?.systemUsec),
      nrPeriods: n(r.cpu?.nrPeriods),
      nrThrottled: n(r.cpu?.nrThrottled),
      throttledUsec: n(r.cpu?.throttledUsec),
    },
    memory: {
      usageBytes: n(r.memory?.usageBytes),
      limitBytes: n(r.memory?.limitBytes),
      swapUsageBytes: n(r.memory?.swapUsageBytes),
      stat,
    },
    pids: { current: n(r.pids?.current), limit: n(r.pids?.limit) },
    oomKills: n(r.oomKills),
  };
}

const STATES: readonly ContainerStateName[] = ['created', 'running', 'paused', 'stopped'];

export function fromListContainers(r: InstanceType<P['ListContainersResponse']>): SandboxStatus {
  return {
    sandboxId: r.sandboxId,
    containers: r.containers.map((c): ContainerStatus => ({
      containerId: c.containerId ?? '',
      state: STATES.includes(c.state as ContainerStateName) ? (c.state as ContainerStateName) : 'stopped',
      processes: (c.processes ?? []).map((p) => ({
        execId: p.execId ?? '',
        pid: p.pid ?? 0,
        terminal: p.terminal ?? false,
        ...(p.exited ? { exit: { exitStatus: p.exitStatus ?? 0, exitedAt: toTimestampDate(p.exitedAt) } } : {}),
      })),
    })),
  };
}

export function toInterface(c: InterfaceConfig): kata.agent.v1.Interface.$Properties {
  return {
    name: c.name ?? '',
    hwAddr: c.hwAddr ?? '',
    addresses: [...c.addresses],
    mtu: c.mtu ?? 0,
    up: c.up ?? true,
  };
}

export function fromInterface(r: kata.agent.v1.IInterface): InterfaceStatus {
  return { name: r.name ?? '', hwAddr: r.hwAddr ?? '', addresses: [...(r.addresses ?? [])], mtu: r.mtu ?? 0, up: r.up ?? false };
}

export function toRoute(c: RouteConfig): kata.agent.v1.Route.$Properties {
  return {
    dest: c.dest ?? 'default',
    gateway: c.gateway ?? '',
    device: c.device ?? '',
    source: c.source ?? '',
    scope: c.scope ?? '',
    metric: c.metric ?? 0,
  };
}

export function fromRoutes(r: InstanceType<P['Routes']>): RouteStatus[] {
  return r.routes.map((x) => ({
    dest: x.dest ?? '',
    gateway: x.gateway ?? '',
    device: x.device ?? '',
    source: x.source ?? '',
    scope: x.scope ?? '',
    metric: x.metric ?? 0,
  }));
}
