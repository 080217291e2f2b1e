/**
 * What the rest of the shim sees of a VM: the `Vm` interface, its lifecycle
 * phases with the one table of operations each allows, and the exit record.
 */
import type { EventEmitter } from 'node:events';
import { FailedPreconditionError } from '../errors/index.js';
import type { VmResources } from './provider.js';
import type { VmState } from './state.js';

/**
 * created ─start→ starting ─→ running ⇄ paused
 *    │               │           │        │
 *    └──────────── stop ─────────┴────────┴─→ stopping ─→ stopped
 * QEMU dying on its own (running/paused) → exited; stop() then cleans up.
 */
export type VmPhase = 'created' | 'starting' | 'running' | 'paused' | 'stopping' | 'stopped' | 'exited';

export type VmOp = 'start' | 'waitReady' | 'pause' | 'resume' | 'stop' | 'grow';

/** The operations each phase allows; every other one fails naming the phase. */
const ALLOWED: Record<VmPhase, readonly VmOp[]> = {
  created: ['start', 'stop'],
  starting: ['stop'],
  running: ['waitReady', 'pause', 'stop', 'grow'],
  paused: ['resume', 'stop'],
  stopping: ['stop'],
  stopped: ['stop'],
  exited: ['stop'],
};

export function opAllowed(phase: VmPhase, op: VmOp): boolean {
  return ALLOWED[phase].includes(op);
}

/** Throws FAILED_PRECONDITION "vm <id>: cannot pause in stopped state". */
export function checkOp(sandboxId: string, phase: VmPhase, op: VmOp): void {
  if (!opAllowed(phase, op)) throw new FailedPreconditionError(`vm ${sandboxId}: cannot ${op} in ${phase} state`);
}

/** How QEMU ended. */
export interface VmExit {
  /** Exit code when QEMU was our child and exited; null otherwise. */
  code: number | null;
  /** Signal name when QEMU was our child and was killed; null otherwise. */
  signal: string | null;
  /** True when we asked for it (stop()); false when QEMU died on its own. */
  expected: boolean;
  at: Date;
  /** QEMU's SHUTDOWN event reason when one arrived (guest-shutdown, guest-panic, host-qmp-quit, …). */
  reason?: string;
}

/** Where the host side of the agent channel is. */
export type AgentEndpoint =
  | { transport: 'virtio-serial'; socketPath: string; portName: string }
  | { transport: 'vsock'; guestCid: number };

/** Called until it resolves: e.g. the agent client's health check. */
export type ReadyProbe = (signal: AbortSignal) => Promise<void>;

export interface WaitReadyOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface PauseOptions {
  signal?: AbortSignal;
}

export interface StopOptions {
  /** Ask the guest to power off (ACPI) before `quit`. */
  powerdown?: boolean;
  /**
   * The guest is hung or unreachable: no powerdown, no `quit` (QMP may not
   * answer either), SIGKILL to QEMU at once; the rest of the teardown as usual.
   */
  force?: boolean;
}

export type VmEvents = {
  /** QEMU went away: expected (stop()) or not (crash, kill -9, guest poweroff). */
  exit: [VmExit];
};

/** A pod's VM, booted or re-attached. */
export interface Vm extends EventEmitter<VmEvents> {
  readonly sandboxId: string;
  readonly phase: VmPhase;
  readonly agent: AgentEndpoint;
  readonly consoleLogPath: string;
  /** QEMU's pid once started. */
  readonly pid: number | undefined;
  /** The exit record once QEMU is gone. */
  readonly exitInfo: VmExit | undefined;
  /** The saved state this VM was restored from (a VM template's clone); absent for a booted VM. */
  readonly restoredFrom?: string | undefined;
  /** How the shared dir reaches the guest (absent: no shared dir). */
  readonly sharedFsKind?: 'virtio-fs' | 'virtio-9p' | undefined;
  /** Calls `probe` until it succeeds, the VM dies or the timeout passes. */
  waitReady(probe: ReadyProbe, opts?: WaitReadyOptions): Promise<void>;
  pause(opts?: PauseOptions): Promise<void>;
  resume(opts?: PauseOptions): Promise<void>;
  /** Stops QEMU and removes everything the VM created. Idempotent. */
  stop(opts?: StopOptions): Promise<void>;
  /** A JSON-serializable record for re-attaching or cleaning up later. */
  state(): VmState;
  /** vCPUs and MiB now (boot size plus hot-plugged); undefined when unknown (an attached VM). */
  readonly size?: VmResources | undefined;
  /**
   * Hot-plugs vCPUs and memory up to at least `target` (never shrinks); what
   * was added. FAILED_PRECONDITION when the VM has no room to grow.
   */
  grow?(target: VmResources, opts?: { signal?: AbortSignal }): Promise<VmResources>;
}
