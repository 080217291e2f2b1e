/**
 * The agent protocol's requests and answers as plain domain types: numbers,
 * Dates, Buffers and objects. Protobuf types stay in convert.ts.
 */

/** Options of a short call: it has a default timeout. */
export interface CallOptions {
  /** Overrides the client's default timeout for this call. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Options of a long-lived call (wait, read, OOM): no timeout unless given. */
export interface LongCallOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
}

export interface AgentInfo {
  version: string;
  /** "" before CreateSandbox. */
  sandboxId: string;
  /** The OCI runtime binary the agent runs. */
  runtime: string;
  uptimeMs: number;
}

export interface CreateSandboxRequest {
  sandboxId: string;
  /** Sets the guest's hostname when given. */
  hostname?: string;
  /**
   * The pod's shared dir (virtio-fs) for the agent to mount before it
   * answers: the device's tag and an absolute guest mount point on a
   * writable file system (e.g. under /run). Container rootfs paths then
   * point inside the mount point.
   */
  sharedFs?: { tag: string; mountPoint: string; fstype?: 'virtiofs' | '9p'; msize?: number };
  /** The guest's /etc/machine-id (32 lowercase hex digits). */
  machineId?: string;
  /** Kernel modules the agent loads (modprobe, in order) first; one the image lacks fails the call. */
  kernelModules?: ReadonlyArray<{ name: string; parameters?: readonly string[] }>;
}

export interface DestroySandboxRequest {
  /** How long the agent waits for processes after SIGKILL (agent default 10 s). */
  timeoutMs?: number;
}

export interface ContainerRef {
  containerId: string;
}

export interface ProcessRef {
  containerId: string;
  /** Omitted or "": the container's init process. */
  execId?: string;
}

/** An OCI document: an object (sent as JSON) or raw JSON bytes. */
export type OciJson = Record<string, unknown> | Uint8Array;

export interface CreateContainerRequest {
  containerId: string;
  /** The OCI runtime spec (config.json). */
  spec: OciJson;
  /** Guest path of the rootfs inside the shared dir; "" → spec root.path (absolute). */
  rootfsPath?: string;
  terminal?: boolean;
  /** Whether stdin will be written (else it is /dev/null). */
  stdin?: boolean;
  rows?: number;
  cols?: number;
}

export interface ExecProcessRequest {
  containerId: string;
  execId: string;
  /** The OCI Process (spec.process). */
  process: OciJson;
  terminal?: boolean;
  stdin?: boolean;
  rows?: number;
  cols?: number;
}

export interface SignalProcessRequest extends ProcessRef {
  /** A number or a name such as "SIGTERM". */
  signal: number | NodeJS.Signals;
  /** Every process of the container (init only). */
  all?: boolean;
}

export interface ExitStatus {
  /** Exit code, or 128 + signal number. */
  exitStatus: number;
  exitedAt: Date;
}

export interface WriteStdinRequest extends ProcessRef {
  data: Uint8Array;
}

export interface ReadStreamRequest extends ProcessRef {
  /** At most this many bytes (agent default 64 KiB, max 1 MiB). */
  maxLen?: number;
}

export interface ReadResult {
  data: Buffer;
  /** No more data will come. */
  eof: boolean;
}

export interface TtyWinResizeRequest extends ProcessRef {
  rows: number;
  cols: number;
}

export interface UpdateContainerRequest {
  containerId: string;
  /** OCI LinuxResources. */
  resources: OciJson;
}

export interface ProcessInfo {
  pid: number;
  ppid: number;
  cmd: string;
  state: string;
}

export interface ContainerStats {
  cgroupVersion: number;
  cpu: {
    usageUsec: number;
    userUsec: number;
    systemUsec: number;
    nrPeriods: number;
    nrThrottled: number;
    throttledUsec: number;
  };
  memory: {
    usageBytes: number;
    /** 0: unlimited. */
    limitBytes: number;
    swapUsageBytes: number;
    stat: Record<string, number>;
  };
  pids: { current: number; limit: number };
  oomKills: number;
}

export type ContainerStateName = 'created' | 'running' | 'paused' | 'stopped';

export interface ProcessStatus {
  /** "" for the init process. */
  execId: string;
  pid: number;
  terminal: boolean;
  /** Present once the process exited. */
  exit?: ExitStatus;
}

export interface ContainerStatus {
  containerId: string;
  state: ContainerStateName;
  /** The init process first. */
  processes: ProcessStatus[];
}

export interface SandboxStatus {
  sandboxId: string;
  containers: ContainerStatus[];
}

export interface OomEvent {
  containerId: string;
}

/**
 * The guest NIC to configure (UpdateInterface). Found by `hwAddr` (the MAC
 * the host gave the virtio-net device), else by `name`.
 */
export interface InterfaceConfig {
  /** The guest name; renames the NIC found by `hwAddr` when it differs. */
  name?: string;
  /** aa:bb:cc:dd:ee:ff */
  hwAddr?: string;
  /** CIDR, IPv4 and IPv6 ("10.88.0.2/24"): the interface's global addresses become exactly these. */
  addresses: string[];
  /** Omitted: unchanged. */
  mtu?: number;
  /** Default true. */
  up?: boolean;
}

/** An interface as the guest has it. */
export interface InterfaceStatus {
  name: string;
  hwAddr: string;
  /** Global addresses, CIDR, IPv4 first. */
  addresses: string[];
  mtu: number;
  up: boolean;
}

/** A route (UpdateRoutes / ListRoutes). */
export interface RouteConfig {
  /** "default" or CIDR ("10.96.0.0/12"); a bare address is a host route. Default "default". */
  dest?: string;
  gateway?: string;
  device?: string;
  /** Preferred source address. */
  source?: string;
  /** "global" | "link" | "host" | "site" (default: the kernel's choice). */
  scope?: string;
  /** 0 / omitted: the kernel default. */
  metric?: number;
}

/** A route as the guest has it ("" for what it lacks). */
export interface RouteStatus {
  dest: string;
  gateway: string;
  device: string;
  source: string;
  scope: string;
  metric: number;
}
