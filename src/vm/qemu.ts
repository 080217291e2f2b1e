/**
 * `QemuVm`: one QEMU process per pod, its QMP session, and (optionally) the
 * virtiofsd serving the pod's shared dir.
 *
 * - QEMU is spawned detached (own session and process group, stdio to a log
 *   file): it survives the shim, which may restart and re-attach with
 *   `QemuVm.attach(state)`. It is named by pid + /proc start time.
 * - Every file lives in the per-sandbox 0700 dir: qmp.sock, agent.sock,
 *   virtiofsd.sock, console.log, qemu.log, virtiofsd.log and vm.json (the
 *   state record, rewritten as soon as each process is spawned).
 * - QEMU dying on its own is seen at once: the child's 'exit' when it is our
 *   child, and the QMP socket closing (then pid + start time are polled) when
 *   it was re-attached. Either emits 'exit' with expected=false.
 * - stop(): [system_powerdown →] quit → SIGTERM → SIGKILL, each bounded;
 *   then virtiofsd, mounts, files, dir. Idempotent, also after a crash.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { chmodSync, chownSync, closeSync, existsSync, lchownSync, lstatSync, mkdirSync, openSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CancelledError,
  Code,
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  StatusError,
  UnavailableError,
  wrap,
} from '../errors/index.js';
import type { Logger } from '../log/index.js';
import { abortError, deadline, settlesWithin, sleep, withDeadline } from './abort.js';
import { DEFAULT_AGENT_PORT_NAME, type BlockDeviceConfig, type DeviceConfig, type TapNetConfig } from './devices/index.js';
import { hostTscKhz, resolveOnPath } from './host.js';
import { unmountTree } from './mounts.js';
import { dieWithParent, identify, isAlive, tailFile, terminate, waitGone } from './proc.js';
import { buildQemuArgs, QEMU_BINARY, type MachineType, type QemuConfig } from './qemu-args.js';
import { cpuPlugCommands, memoryStepMiB, type HotpluggableCpu } from './hotplug.js';
import type { VmResources } from './provider.js';
import { needsSharedMemory } from './devices/index.js';
import { QmpClient, type QmpCallOptions, type QmpEvent, type QmpStatus } from './qmp-client.js';
import { endJailedUid, parseVmState, removeVmFiles, VM_STATE_FILE, VM_STATE_VERSION, writeStateFile, type VmState } from './state.js';
import { Virtiofsd, type VirtiofsCache } from './virtiofsd.js';
import { checkOp, type AgentEndpoint, type PauseOptions, type ReadyProbe, type StopOptions, type Vm, type VmEvents, type VmExit, type VmPhase, type WaitReadyOptions } from './vm.js';
import { checkAbsPath, checkString, invalid } from './validate.js';
import { checkJailSettings, FILE_CAPS, FIRST_TAP_FD, jailedCommand, type JailPlan, type JailSettings } from './jail.js';
import { leaseUid, releaseUid } from './uid-lease.js';
import { listenForMigration } from './migration-sink.js';
import { bindSelfShared } from './mounts.js';

/** Spawn → QMP greeting negotiated. */
export const QMP_CONNECT_TIMEOUT_MS = 10_000;
/** One QMP command during lifecycle operations. */
export const QMP_LIFECYCLE_TIMEOUT_MS = 5_000;
/** Boot → the ready probe succeeds (TCG boots take 2–4 s here). */
export const VM_READY_TIMEOUT_MS = 60_000;
/** system_powerdown → QEMU gone. */
export const QEMU_POWERDOWN_TIMEOUT_MS = 10_000;
/** quit → QEMU gone. */
export const QEMU_QUIT_TIMEOUT_MS = 5_000;
/** SIGTERM → QEMU gone. */
export const QEMU_TERM_TIMEOUT_MS = 3_000;
/** SIGKILL → QEMU gone. */
export const QEMU_KILL_TIMEOUT_MS = 3_000;
/** After QMP closes, how long our child's 'exit' may take before we poll /proc instead. */
export const CHILD_EXIT_GRACE_MS = 1_000;

/** Names of the files in the sandbox dir (a jailed QEMU's sockets and console are in its subdir JAIL_DIRS.qemu). */
export const VM_FILES = {
  qmp: 'qmp.sock',
  agent: 'agent.sock',
  virtiofsd: 'virtiofsd.sock',
  console: 'console.log',
  qemuLog: 'qemu.log',
  virtiofsdLog: 'virtiofsd.log',
  state: VM_STATE_FILE,
  migration: 'migrate.sock',
} as const;

/**
 * A jailed QEMU's dirs in the sandbox dir: `qemu/` is the only place it may
 * write (its uid's, 0700: sockets, console); `root/` is the empty mount point
 * of its jail's root (mounted in its own namespace only). vm.json and
 * qemu.log stay in the sandbox dir, which QEMU cannot see.
 */
export const JAIL_DIRS = { qemu: 'qemu', root: 'root' } as const;

/** Where QEMU's files go: the sandbox dir, or its `qemu/` when jailed. */
export function qemuFilesDir(dir: string, jailed: boolean): string {
  return jailed ? join(dir, JAIL_DIRS.qemu) : dir;
}

export interface QemuTimeouts {
  qmpConnectMs: number;
  qmpCommandMs: number;
  readyMs: number;
  powerdownMs: number;
  quitMs: number;
  termMs: number;
  killMs: number;
}

export const DEFAULT_QEMU_TIMEOUTS: QemuTimeouts = {
  qmpConnectMs: QMP_CONNECT_TIMEOUT_MS,
  qmpCommandMs: QMP_LIFECYCLE_TIMEOUT_MS,
  readyMs: VM_READY_TIMEOUT_MS,
  powerdownMs: QEMU_POWERDOWN_TIMEOUT_MS,
  quitMs: QEMU_QUIT_TIMEOUT_MS,
  termMs: QEMU_TERM_TIMEOUT_MS,
  killMs: QEMU_KILL_TIMEOUT_MS,
};

export interface SharedFsOptions {
  /**
   * `virtio-fs` (default): virtiofsd serves the dir over vhost-user.
   * `virtio-9p`: QEMU serves it itself (no daemon; the only way a VM
   * template and its clones can have a shared dir: see devices/shared-9p.ts).
   */
  kind?: 'virtio-fs' | 'virtio-9p';
  /** The only host directory the guest sees. */
  sharedDir: string;
  /** Guest mount tag (default `kataShared`). */
  tag?: string;
  cache?: VirtiofsCache;
  sandbox?: 'namespace' | 'chroot';
  announceSubmounts?: boolean;
  /** virtiofsd binary (default /usr/lib/qemu/virtiofsd). */
  binary?: string;
}

export type AgentChannelOptions =
  | { transport: 'virtio-serial'; portName?: string }
  | { transport: 'vsock'; guestCid: number };

export const DEFAULT_SHARED_FS_TAG = 'kataShared';

/** The machine itself, as in QemuConfig (see qemu-args.ts for each field). */
type MachineOptions = Pick<QemuConfig, 'accel' | 'vcpus' | 'memoryMiB' | 'kernel' | 'initrd' | 'kernelParams' | 'hotplug'>;

export interface QemuVmOptions extends MachineOptions {
  sandboxId: string;
  /** The per-sandbox directory (made 0700; created if missing and then removed by stop()). */
  dir: string;
  /** Default microvm. */
  machine?: MachineType;
  /** Default: virtio-serial port `agent.0` backed by `<dir>/agent.sock`. */
  agent?: AgentChannelOptions;
  sharedFs?: SharedFsOptions;
  blockDevices?: readonly BlockDeviceConfig[];
  tapNets?: readonly TapNetConfig[];
  /**
   * A network namespace (a path such as /var/run/netns/cni-…) to run QEMU
   * in, so that its tap devices are the pod's: QEMU is started as
   * `nsenter --net=<netns> -- qemu-system-x86_64 …`. nsenter (util-linux)
   * execs QEMU without forking when only --net is given, so the pid is
   * QEMU's. The unix sockets (QMP, agent, virtiofsd) are not bound to a
   * network namespace and work as without it.
   */
  netns?: string;
  /** Default `nsenter` from PATH. */
  nsenterBinary?: string;
  /** Guest RAM in a file (QemuConfig.memoryFile): a VM template's, or a clone's. */
  memoryFile?: { path: string; share: boolean };
  /**
   * Restore this saved state (a VM template's, written by saveState) instead
   * of booting: QEMU starts with `-incoming defer`, loads it over QMP
   * (`x-ignore-shared`: the RAM is in memoryFile already) and runs on.
   */
  incomingState?: string;
  /** Default `qemu-system-x86_64` from PATH. */
  qemuBinary?: string;
  /** Run QEMU as its own uid in a jail (jail.ts); absent: as this process's user. */
  jail?: JailSettings;
  /** QEMU's seccomp filter (QemuConfig.seccompSandbox). */
  seccompSandbox?: string;
  /**
   * QEMU and virtiofsd die with the process that started them (SIGKILL via
   * PR_SET_PDEATHSIG), so that a VM never outlives its shim (kata-containers#2198).
   * Default false: the VM may outlive its starter and be attached to later.
   */
  dieWithParent?: boolean;
  logger: Logger;
  timeouts?: Partial<QemuTimeouts>;
}

export interface AttachOptions {
  logger: Logger;
  timeouts?: Partial<QemuTimeouts>;
  signal?: AbortSignal;
}

/** What start() needs beyond the state record. */
interface Plan {
  qemuConfig: QemuConfig;
  binary: string;
  sharedFs: SharedFsOptions | undefined;
  netns: string | undefined;
  nsenter: string;
  dieWithParent: boolean;
  incomingState: string | undefined;
  jail: Required<JailSettings> | undefined;
  /** Where QEMU's sockets and console are: the sandbox dir, or its `qemu/` when jailed (qemuFilesDir). */
  qemuDir: string;
  /** A jailed clone's held template RAM: the jailer opens it as INHERITED_MEMORY_FD. */
  inheritMemory: string | undefined;
}

/** Restore: migrate-incoming → the VM running (the state is a few hundred KB; RAM is not in it). */
export const QEMU_RESTORE_TIMEOUT_MS = 30_000;
/** Save: stop → migrate → completed. */
export const QEMU_SAVE_TIMEOUT_MS = 60_000;

/** The descriptor a restoring QEMU reads its incoming state from (`migrate-incoming fd:3`). */
const INCOMING_STATE_FD = 3;
/** The descriptor a jailed clone maps its template's held RAM from (`mem-path=/proc/self/fd/4`). */
const INHERITED_MEMORY_FD = 4;
/** A template's RAM held in a sealed memfd (src/factory/memory-holder.ts): another process's descriptor. */
const HELD_MEMORY = /^\/proc\/\d+\/fd\/\d+$/;

/** The QEMU binary spawn would run, as the absolute path the jailer needs. */
function jailedBinary(name: string): string {
  const p = resolveOnPath(name);
  if (p === undefined) throw new FailedPreconditionError(`${name}: not found on PATH`);
  return p;
}

/**
 * A socket in a jailed QEMU's dir, about to be connected to by this (root)
 * process: it must be a socket its uid made, not a symlink QEMU put there to
 * another pod's or containerd's socket. (Between this check and the connect
 * a swap is still possible; Node cannot connect through an O_PATH descriptor.)
 */
function checkJailedSocket(path: string, uid: number): void {
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (st && (!st.isSocket() || st.uid !== uid)) {
    throw new FailedPreconditionError(`${path}: not the socket the jailed QEMU (uid ${uid}) made (${st.isSymbolicLink() ? 'a symlink' : `owner ${st.uid}`}): refusing to connect`);
  }
}


/**
 * The command that starts QEMU: QEMU itself, or — to run it in a network
 * namespace — `nsenter --net=<netns> -- <qemu> <args>` (nsenter execs QEMU:
 * same pid, same start time).
 */
export function qemuLaunchCommand(binary: string, args: readonly string[], netns?: string, nsenter = 'nsenter'): { command: string; args: string[] } {
  if (netns === undefined) return { command: binary, args: [...args] };
  return { command: nsenter, args: [`--net=${netns}`, '--', binary, ...args] };
}

function describeExit(e: VmExit): string {
  const how = e.signal ? `killed by ${e.signal}` : e.code !== null ? `exit code ${e.code}` : 'exited';
  return e.reason ? `${how}, ${e.reason}` : how;
}

/** A QEMU VM: start, waitReady, pause/resume, stop; or attach to a running one. */
export class QemuVm extends EventEmitter<VmEvents> implements Vm {
  readonly sandboxId: string;

  private readonly log: Logger;
  private readonly timeouts: QemuTimeouts;
  private readonly plan: Plan | undefined;
  /** The record vm.json holds; mutated only by start() and teardown. */
  private readonly st: VmState;
  private phaseValue: VmPhase;
  private child: ChildProcess | undefined;
  private qmp: QmpClient | undefined;
  private virtiofsd: Virtiofsd | undefined;
  private exitValue: VmExit | undefined;
  private shutdownReason: string | undefined;
  private readonly exitPromise: Promise<VmExit>;
  private resolveExit!: (e: VmExit) => void;
  /** Aborted when the VM stops or dies: cancels in-flight start/pause/resume/waitReady. */
  private readonly opsAbort = new AbortController();
  /** pause/resume run one at a time, in call order. */
  private opChain: Promise<unknown> = Promise.resolve();
  private startPromise: Promise<void> | undefined;
  /** True once the dir is ours to clean (start() got past its checks). */
  private prepared: boolean;
  private stopPromise: Promise<void> | undefined;
  /** vCPUs and MiB now (boot size plus hot-plugged), and pc-dimms added. */
  private readonly grown: VmResources;
  private dimms = 0;
  /** A template's memory file handed to the jailed uid for the boot; given back to root at teardown. */
  private lentMemoryFile: string | undefined;

  /**
   * Validates the options (INVALID_ARGUMENT naming the field) without touching
   * the system; start() does the work.
   */
  constructor(opts: QemuVmOptions);
  /** @internal used by attach() */
  constructor(opts: QemuVmOptions | undefined, restored: { state: VmState; logger: Logger; timeouts?: Partial<QemuTimeouts> });
  constructor(opts: QemuVmOptions | undefined, restored?: { state: VmState; logger: Logger; timeouts?: Partial<QemuTimeouts> }) {
    super();
    this.exitPromise = new Promise((r) => (this.resolveExit = r));
    if (restored) {
      this.st = restored.state;
      this.sandboxId = this.st.sandboxId;
      this.log = restored.logger.child({ module: 'vm', sandbox: this.sandboxId });
      this.timeouts = { ...DEFAULT_QEMU_TIMEOUTS, ...restored.timeouts };
      this.plan = undefined;
      this.grown = { vcpus: 0, memoryMiB: 0 };
      this.phaseValue = 'starting';
      this.prepared = true;
      return;
    }
    if (!opts) throw new InvalidArgumentError('options: required');
    checkString(opts.sandboxId, 'sandboxId');
    if (!/^[A-Za-z0-9._-]{1,128}$/.test(opts.sandboxId)) throw invalid('sandboxId', `must be 1-128 letters, digits, '.', '_', '-'`);
    checkAbsPath(opts.dir, 'dir');
    if (opts.netns !== undefined) checkAbsPath(opts.netns, 'netns');
    if (opts.nsenterBinary !== undefined) checkString(opts.nsenterBinary, 'nsenterBinary');
    if (opts.incomingState !== undefined) {
      checkAbsPath(opts.incomingState, 'incomingState');
      if (!opts.memoryFile) throw invalid('incomingState', 'needs memoryFile (the saved state holds no RAM)');
    }
    this.sandboxId = opts.sandboxId;
    this.grown = { vcpus: opts.vcpus, memoryMiB: opts.memoryMiB };
    this.log = opts.logger.child({ module: 'vm', sandbox: opts.sandboxId });
    this.timeouts = { ...DEFAULT_QEMU_TIMEOUTS, ...opts.timeouts };
    const machine = opts.machine ?? 'microvm';
    const jail = opts.jail ? checkJailSettings(opts.jail, 'jail') : undefined;
    const f = (name: string): string => join(opts.dir, name);
    // A jailed QEMU's sockets and console: in the one dir it may write.
    const qemuDir = qemuFilesDir(opts.dir, jail !== undefined);
    const q = (name: string): string => join(qemuDir, name);
    const devices: DeviceConfig[] = [];
    const agentOpt: AgentChannelOptions = opts.agent ?? { transport: 'virtio-serial' };
    let agent: AgentEndpoint;
    const files: string[] = [VM_FILES.qmp, VM_FILES.console, VM_FILES.qemuLog, VM_FILES.state, `${VM_FILES.state}.tmp`];
    if (agentOpt.transport === 'virtio-serial') {
      const portName = agentOpt.portName ?? DEFAULT_AGENT_PORT_NAME;
      agent = { transport: 'virtio-serial', socketPath: q(VM_FILES.agent), portName };
      devices.push({ kind: 'agent-channel', transport: 'virtio-serial', socketPath: agent.socketPath, portName });
      files.push(VM_FILES.agent);
    } else {
      agent = { transport: 'vsock', guestCid: agentOpt.guestCid };
      devices.push({ kind: 'agent-channel', transport: 'vsock', guestCid: agentOpt.guestCid });
    }
    if (jail) files.push(JAIL_DIRS.qemu, JAIL_DIRS.root);
    // A jailed QEMU cannot open a tap: the jailer opens each as a descriptor it inherits.
    const taps = (opts.tapNets ?? []).map((t, i) => (jail && t.ifname !== undefined ? { ...t, fd: FIRST_TAP_FD + i } : t));
    devices.push(...(opts.blockDevices ?? []), ...taps);
    // virtio-fs last: a VM template has no virtio-fs device (QEMU cannot migrate
    // vhost-user-fs), and its clones add it after the template's devices, in the
    // next free virtio-mmio slot, so that every device before it matches.
    if (opts.sharedFs) {
      checkAbsPath(opts.sharedFs.sharedDir, 'sharedFs.sharedDir');
      const tag = opts.sharedFs.tag ?? DEFAULT_SHARED_FS_TAG;
      if (opts.sharedFs.kind === 'virtio-9p') {
        devices.push({ kind: 'shared-9p', path: opts.sharedFs.sharedDir, tag });
      } else {
        devices.push({ kind: 'shared-fs', socketPath: q(VM_FILES.virtiofsd), tag });
        files.push(VM_FILES.virtiofsd, VM_FILES.virtiofsdLog);
      }
    }
    const tscKhz = machine === 'microvm' ? hostTscKhz() : undefined;
    // A jailed QEMU cannot reach another process's descriptor: the jailer opens it for QEMU.
    const inheritMemory = jail && opts.memoryFile && HELD_MEMORY.test(opts.memoryFile.path) ? opts.memoryFile.path : undefined;
    const memoryFile = opts.memoryFile && inheritMemory ? { ...opts.memoryFile, path: `/proc/self/fd/${INHERITED_MEMORY_FD}` } : opts.memoryFile;
    const qemuConfig: QemuConfig = {
      machine,
      accel: opts.accel,
      vcpus: opts.vcpus,
      memoryMiB: opts.memoryMiB,
      kernel: opts.kernel,
      ...(opts.initrd !== undefined ? { initrd: opts.initrd } : {}),
      ...(opts.kernelParams !== undefined ? { kernelParams: opts.kernelParams } : {}),
      ...(tscKhz !== undefined ? { tscKhz } : {}),
      consoleLog: q(VM_FILES.console),
      qmpSocket: q(VM_FILES.qmp),
      devices,
      name: `sandbox-${opts.sandboxId.slice(0, 32)}`,
      ...(memoryFile ? { memoryFile } : {}),
      ...(opts.incomingState !== undefined ? { incoming: true } : {}),
      ...(opts.hotplug !== undefined ? { hotplug: opts.hotplug } : {}),
      ...(opts.seccompSandbox !== undefined ? { seccompSandbox: opts.seccompSandbox } : {}),
    };
    buildQemuArgs(qemuConfig); // validate now: a bad config fails before anything exists
    this.plan = {
      qemuConfig,
      // The jailer execs an absolute path only.
      binary: jail ? jailedBinary(opts.qemuBinary ?? QEMU_BINARY) : opts.qemuBinary ?? QEMU_BINARY,
      sharedFs: opts.sharedFs,
      netns: opts.netns,
      nsenter: opts.nsenterBinary ?? 'nsenter',
      dieWithParent: opts.dieWithParent ?? false,
      incomingState: opts.incomingState,
      jail,
      qemuDir,
      inheritMemory,
    };
    this.st = {
      version: VM_STATE_VERSION,
      sandboxId: opts.sandboxId,
      dir: opts.dir,
      ownsDir: false,
      files,
      machine,
      accel: opts.accel,
      qmpSocket: qemuConfig.qmpSocket,
      consoleLog: qemuConfig.consoleLog,
      qemuLog: f(VM_FILES.qemuLog),
      agent,
      mounts: [],
      ...(opts.netns !== undefined ? { netns: opts.netns } : {}),
      createdAt: new Date().toISOString(),
    };
    this.phaseValue = 'created';
    this.prepared = false;
  }

  /**
   * Re-attaches to a VM recorded by an earlier process (shim restart):
   * checks pid + start time, connects QMP, reads the run state.
   * UNAVAILABLE when that QEMU is no longer running (use cleanupFromState).
   */
  static async attach(state: VmState, opts: AttachOptions): Promise<QemuVm> {
    const st = parseVmState(structuredClone(state));
    if (!st.qemu) throw new FailedPreconditionError(`vm ${st.sandboxId}: state has no qemu process`);
    if (!isAlive(st.qemu)) throw new UnavailableError(`vm ${st.sandboxId}: qemu pid ${st.qemu.pid} is not running`);
    const vm = new QemuVm(undefined, { state: st, logger: opts.logger, ...(opts.timeouts ? { timeouts: opts.timeouts } : {}) });
    if (st.virtiofsd) vm.virtiofsd = Virtiofsd.attach(st.virtiofsd, vm.log);
    try {
      const signal = opts.signal ? AbortSignal.any([opts.signal, vm.opsAbort.signal]) : vm.opsAbort.signal;
      if (st.jail) checkJailedSocket(st.qmpSocket, st.jail.uid);
      vm.qmp = await QmpClient.connect(st.qmpSocket, { logger: vm.log, timeoutMs: vm.timeouts.qmpConnectMs, signal, commandTimeoutMs: vm.timeouts.qmpCommandMs });
      vm.watchQmp(vm.qmp);
      const status = await vm.qmp.queryStatus();
      vm.phaseValue = status.status === 'paused' ? 'paused' : 'running';
    } catch (err) {
      vm.qmp?.close();
      throw wrap(err, `vm ${st.sandboxId}: attach`);
    }
    vm.log.info({ pid: st.qemu.pid, phase: vm.phaseValue }, 'vm re-attached');
    return vm;
  }

  get phase(): VmPhase {
    return this.phaseValue;
  }

  get pid(): number | undefined {
    return this.st.qemu?.pid;
  }

  get agent(): AgentEndpoint {
    return this.st.agent;
  }

  get consoleLogPath(): string {
    return this.st.consoleLog;
  }

  get exitInfo(): VmExit | undefined {
    return this.exitValue;
  }

  get restoredFrom(): string | undefined {
    return this.plan?.incomingState;
  }

  get sharedFsKind(): 'virtio-fs' | 'virtio-9p' | undefined {
    const sf = this.plan?.sharedFs;
    return sf ? (sf.kind ?? 'virtio-fs') : undefined;
  }

  /** The last lines of the guest's serial console. */
  consoleTail(lines = 30): string {
    return tailFile(this.st.consoleLog, lines);
  }

  /** A JSON-serializable copy of the state record. */
  state(): VmState {
    return structuredClone(this.st);
  }

  /** QEMU's version, as its QMP greeting gives it (e.g. `7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)`). */
  qemuVersion(): string {
    const v = this.liveQmp('version').greeting.version;
    return `${v.qemu.major}.${v.qemu.minor}.${v.qemu.micro}${v.package ? ` (${v.package.trim()})` : ''}`;
  }

  /** QMP `query-status`. */
  async queryStatus(opts: QmpCallOptions = {}): Promise<QmpStatus> {
    const qmp = this.liveQmp('query-status');
    return qmp.queryStatus({ timeoutMs: this.timeouts.qmpCommandMs, ...opts });
  }

  /**
   * Creates the dir, starts virtiofsd (if asked), spawns QEMU and connects
   * QMP. On failure everything made so far is removed and the VM is stopped.
   */
  async start(opts: { signal?: AbortSignal } = {}): Promise<void> {
    checkOp(this.sandboxId, this.phaseValue, 'start');
    this.phaseValue = 'starting';
    this.startPromise = this.doStart(opts.signal);
    return this.startPromise;
  }

  async waitReady(probe: ReadyProbe, opts: WaitReadyOptions = {}): Promise<void> {
    checkOp(this.sandboxId, this.phaseValue, 'waitReady');
    const timeoutMs = opts.timeoutMs ?? this.timeouts.readyMs;
    const outer = opts.signal ? AbortSignal.any([opts.signal, this.opsAbort.signal]) : this.opsAbort.signal;
    const d = deadline(timeoutMs, outer);
    const t0 = Date.now();
    let attempts = 0;
    let lastErr: unknown;
    let backoff = 20;
    try {
      for (;;) {
        attempts++;
        try {
          await probe(d.signal);
          this.log.info({ ms: Date.now() - t0, attempts }, 'vm ready');
          return;
        } catch (err) {
          lastErr = err;
        }
        if (d.signal.aborted) break;
        try {
          await sleep(backoff, d.signal);
        } catch {
          break;
        }
        backoff = Math.min(backoff * 2, 500);
      }
      const last = lastErr instanceof Error ? lastErr.message : String(lastErr);
      const tail = this.consoleTail(20);
      if (this.exitValue) {
        throw new UnavailableError(`vm ${this.sandboxId}: qemu exited while waiting for the guest (${describeExit(this.exitValue)}); console:\n${tail}`);
      }
      const err = abortError(d.signal, `vm ${this.sandboxId}: wait for the guest`, timeoutMs);
      if (err.code === Code.DEADLINE_EXCEEDED) {
        throw new DeadlineExceededError(
          `vm ${this.sandboxId}: guest not ready within ${timeoutMs} ms (${attempts} probes, last error: ${last}); console:\n${tail}`,
          { cause: lastErr },
        );
      }
      throw err;
    } finally {
      d.dispose();
    }
  }

  /** QMP `stop`, then `query-status` must say paused. */
  async pause(opts: PauseOptions = {}): Promise<void> {
    checkOp(this.sandboxId, this.phaseValue, 'pause');
    return this.serialize('pause', opts.signal, async (signal) => {
      checkOp(this.sandboxId, this.phaseValue, 'pause');
      const qmp = this.liveQmp('pause');
      await qmp.stop({ signal, timeoutMs: this.timeouts.qmpCommandMs });
      const s = await qmp.queryStatus({ signal, timeoutMs: this.timeouts.qmpCommandMs });
      if (s.status !== 'paused') throw new InternalError(`vm ${this.sandboxId}: pause: status is ${s.status} after stop`);
      if (this.phaseValue === 'running') this.phaseValue = 'paused';
      this.log.info('vm paused');
    });
  }

  /** QMP `cont`, then `query-status` must say running. */
  async resume(opts: PauseOptions = {}): Promise<void> {
    checkOp(this.sandboxId, this.phaseValue, 'resume');
    return this.serialize('resume', opts.signal, async (signal) => {
      checkOp(this.sandboxId, this.phaseValue, 'resume');
      const qmp = this.liveQmp('resume');
      await qmp.cont({ signal, timeoutMs: this.timeouts.qmpCommandMs });
      const s = await qmp.queryStatus({ signal, timeoutMs: this.timeouts.qmpCommandMs });
      if (s.status !== 'running') throw new InternalError(`vm ${this.sandboxId}: resume: status is ${s.status} after cont`);
      if (this.phaseValue === 'paused') this.phaseValue = 'running';
      this.log.info('vm resumed');
    });
  }

  /**
   * Stops QEMU ([system_powerdown →] quit → SIGTERM → SIGKILL) and removes
   * virtiofsd, mounts, sockets, logs and (if it made it) the dir. Safe on a
   * VM that already died, never started, or is being stopped.
   */
  async stop(opts: StopOptions = {}): Promise<void> {
    checkOp(this.sandboxId, this.phaseValue, 'stop');
    this.stopPromise ??= this.doStop(opts);
    return this.stopPromise;
  }

  // ---------------------------------------------------------------------------
  // start

  private async doStart(signal: AbortSignal | undefined): Promise<void> {
    const plan = this.plan!;
    const t0 = Date.now();
    const sig = signal ? AbortSignal.any([signal, this.opsAbort.signal]) : this.opsAbort.signal;
    try {
      for (const [field, path] of [['kernel', plan.qemuConfig.kernel], ['initrd', plan.qemuConfig.initrd]] as const) {
        if (path !== undefined && !isFile(path)) throw new InvalidArgumentError(`${field}: ${path}: no such file`);
      }
      if (plan.netns !== undefined && !existsSync(plan.netns)) {
        throw new FailedPreconditionError(`vm ${this.sandboxId}: netns: ${plan.netns}: no such network namespace`);
      }
      this.prepareDir();
      if (plan.jail) await this.prepareJail(plan.jail, plan);
      if (plan.sharedFs && plan.sharedFs.kind !== 'virtio-9p') {
        const sf = plan.sharedFs;
        this.virtiofsd = await Virtiofsd.start({
          socketPath: join(plan.qemuDir, VM_FILES.virtiofsd),
          sharedDir: sf.sharedDir,
          logFile: join(this.st.dir, VM_FILES.virtiofsdLog),
          logger: this.log,
          signal: sig,
          ...(sf.binary !== undefined ? { binary: sf.binary } : {}),
          ...(sf.cache !== undefined ? { cache: sf.cache } : {}),
          ...(sf.sandbox !== undefined ? { sandbox: sf.sandbox } : {}),
          ...(sf.announceSubmounts !== undefined ? { announceSubmounts: sf.announceSubmounts } : {}),
          dieWithParent: plan.dieWithParent,
        });
        this.st.virtiofsd = this.virtiofsd.state();
        this.st.mounts = [...this.st.mounts, ...this.st.virtiofsd.mounts];
        writeStateFile(this.st);
        // virtiofsd (root) made the socket; the jailed QEMU must be able to connect to it.
        if (this.st.jail) lchownSync(this.st.virtiofsd.socketPath, this.st.jail.uid, this.st.jail.gid);
      }
      this.spawnQemu(plan);
      const qmp = await this.connectQmp(sig);
      this.qmp = qmp;
      this.watchQmp(qmp);
      if (plan.incomingState !== undefined) await this.restore(qmp, plan.incomingState, sig);
      const status = await qmp.queryStatus({ signal: sig, timeoutMs: this.timeouts.qmpCommandMs });
      if (status.status !== 'running') throw new InternalError(`vm ${this.sandboxId}: qemu status ${status.status} after start`);
      if (this.phaseValue !== 'starting') throw new CancelledError(`vm ${this.sandboxId}: start: stopped meanwhile`);
      this.phaseValue = 'running';
      this.log.info({ pid: this.st.qemu!.pid, accel: this.st.accel, machine: this.st.machine, ms: Date.now() - t0 }, 'vm started');
    } catch (err) {
      // QMP closing first usually means QEMU is exiting: give its exit a moment, so the error carries its log.
      if (this.child && !this.exitValue) await settlesWithin(this.exitPromise, CHILD_EXIT_GRACE_MS);
      const failure = this.startError(err);
      this.log.error({ err: failure }, 'vm start failed');
      if (this.phaseValue === 'starting') this.phaseValue = 'stopping';
      await this.teardown({}).catch((e: unknown) => this.log.error({ err: e }, 'teardown after failed start'));
      this.phaseValue = 'stopped';
      throw failure;
    }
  }

  /** Names the phase and, when QEMU died, adds the tail of its log. */
  private startError(err: unknown): StatusError {
    if (this.exitValue && !(err instanceof StatusError && err.code === Code.INVALID_ARGUMENT)) {
      const log = tailFile(this.st.qemuLog, 15);
      return new UnavailableError(`vm ${this.sandboxId}: start: qemu ${describeExit(this.exitValue)}: ${log || '(no output)'}`, { cause: err });
    }
    if (err instanceof StatusError && err.code === Code.INVALID_ARGUMENT) return err;
    return wrap(err, `vm ${this.sandboxId}: start`);
  }

  private prepareDir(): void {
    const dir = this.st.dir;
    let exists = false;
    try {
      const s = statSync(dir);
      if (!s.isDirectory()) throw new FailedPreconditionError(`vm ${this.sandboxId}: ${dir} is not a directory`);
      exists = true;
    } catch (err) {
      if (err instanceof StatusError) throw err;
    }
    if (exists) {
      if (existsSync(join(dir, VM_FILES.state))) {
        throw new FailedPreconditionError(`vm ${this.sandboxId}: ${dir} already holds ${VM_FILES.state} (another VM, or one to clean up)`);
      }
    } else {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      this.st.ownsDir = true;
    }
    chmodSync(dir, 0o700);
    this.prepared = true;
    writeStateFile(this.st);
  }

  /**
   * Leases the jailed QEMU's uid (recorded at once: a shim killed now still
   * gives it back through cleanupFromState) and makes the dirs it gets.
   */
  private async prepareJail(jail: Required<JailSettings>, plan: Plan): Promise<void> {
    const uid = await leaseUid({ dir: jail.leaseDir, range: jail.uids, sandboxId: this.sandboxId, vmDir: this.st.dir });
    this.st.jail = { uid, gid: uid, leaseDir: jail.leaseDir, jailer: jail.jailer };
    writeStateFile(this.st);
    mkdirSync(plan.qemuDir, { mode: 0o700 });
    chownSync(plan.qemuDir, uid, uid);
    mkdirSync(join(this.st.dir, JAIL_DIRS.root), { mode: 0o700 });
    const mem = plan.qemuConfig.memoryFile;
    if (mem?.share && !existsSync(mem.path)) {
      // A template's RAM file: QEMU fills it; lent to its uid for the boot only.
      writeFileSync(mem.path, '', { mode: 0o600, flag: 'wx' });
      chownSync(mem.path, uid, uid);
      this.lentMemoryFile = mem.path;
    }
    const sf = plan.sharedFs;
    if (sf?.kind === 'virtio-9p') {
      // QEMU serves it from its own mount namespace: later binds under it (a
      // container's rootfs) reach QEMU only if the dir is a shared mount.
      await bindSelfShared(sf.sharedDir);
      this.st.mounts.push(sf.sharedDir);
      writeStateFile(this.st);
    }
    this.log.info({ uid, leaseDir: jail.leaseDir }, 'qemu jailed: own uid, no capabilities');
  }

  /** What the jailed QEMU gets: its files, devices, taps and, for 9p and clones, file capabilities. */
  private jailPlan(plan: Plan): JailPlan {
    const cfg = plan.qemuConfig;
    const j = this.st.jail!;
    const readOnly = [cfg.kernel, ...(cfg.initrd !== undefined ? [cfg.initrd] : [])];
    const readWrite = [plan.qemuDir];
    const taps: JailPlan['taps'] = [];
    let vhost = false;
    let serves9p = false;
    for (const d of cfg.devices) {
      if (d.kind === 'block') (d.readOnly ?? true ? readOnly : readWrite).push(d.path);
      if (d.kind === 'tap-net' && d.fd !== undefined && d.ifname !== undefined) taps.push({ fd: d.fd, ifname: d.ifname });
      if (d.kind === 'tap-net' && d.vhost) vhost = true;
      if (d.kind === 'shared-9p') {
        readWrite.push(d.path);
        serves9p = true;
      }
    }
    // A held template RAM comes as a descriptor (a sealed memfd, read through /proc/self/fd);
    // another memory file is bound in.
    if (cfg.memoryFile && plan.inheritMemory === undefined) readWrite.push(cfg.memoryFile.path);
    // 9p: QEMU acts on the pod's files with the guest's ownership. A clone of an
    // unsealed template: QEMU 7.2 opens its root-owned RAM file read-write.
    const fileCaps = serves9p || (cfg.memoryFile !== undefined && !cfg.memoryFile.share && plan.inheritMemory === undefined);
    return {
      uid: j.uid,
      gid: j.gid,
      root: join(this.st.dir, JAIL_DIRS.root),
      readOnly,
      readWrite,
      devices: ['null', 'zero', 'urandom', ...(cfg.accel === 'kvm' ? ['kvm'] : []), ...(vhost ? ['vhost-net'] : [])],
      keepCaps: fileCaps ? FILE_CAPS : [],
      proc: serves9p || plan.inheritMemory !== undefined,
      ...(plan.inheritMemory !== undefined ? { inherits: [{ fd: INHERITED_MEMORY_FD, path: plan.inheritMemory, sealed: true }] } : {}),
      ...(plan.incomingState !== undefined ? { keepFds: [INCOMING_STATE_FD] } : {}),
      taps,
      ...(plan.netns !== undefined ? { netns: plan.netns } : {}),
      pdeathsig: plan.dieWithParent,
    };
  }

  private spawnQemu(plan: Plan): void {
    const qemuArgs = buildQemuArgs(plan.qemuConfig);
    let launch: { command: string; args: string[] };
    if (plan.jail) {
      // The jailer enters the netns and sets the parent-death signal itself (a uid change clears it).
      launch = jailedCommand(plan.jail.jailer, this.jailPlan(plan), plan.binary, qemuArgs);
    } else {
      const l = qemuLaunchCommand(plan.binary, qemuArgs, plan.netns, plan.nsenter);
      launch = plan.dieWithParent ? dieWithParent(l.command, l.args) : l;
    }
    const { command, args } = launch;
    const stateFd = plan.incomingState !== undefined ? openSync(plan.incomingState, 'r') : undefined;
    let logFd: number;
    try {
      logFd = openSync(this.st.qemuLog, 'a', 0o600);
    } catch (err) {
      if (stateFd !== undefined) closeSync(stateFd);
      throw err;
    }
    let child: ChildProcess;
    try {
      // detached: setsid(), so QEMU has its own session and process group
      // (and outlives its starter unless dieWithParent); stdio to a file, never a pipe to us.
      // A clone reads its template's state from fd 3 (no shell: seccomp forbids spawning).
      child = spawn(command, args, { detached: true, stdio: ['ignore', logFd, logFd, ...(stateFd !== undefined ? [stateFd] : [])] });
    } finally {
      closeSync(logFd);
      if (stateFd !== undefined) closeSync(stateFd);
    }
    // The child handle stays ref'd: while we watch QEMU, its 'exit' must be
    // delivered even when nothing else keeps the event loop alive. Detached,
    // QEMU itself survives this process either way.
    this.child = child;
    child.once('exit', (code, signal) => this.markExited(code, signal));
    child.once('error', (err) => {
      this.log.error({ err, binary: command }, 'qemu spawn failed');
      this.markExited(null, null, `spawn failed: ${err.message}`);
    });
    const id = child.pid === undefined ? undefined : identify(child.pid);
    if (id) {
      this.st.qemu = { ...id, binary: plan.binary };
      writeStateFile(this.st);
    }
    this.log.debug({ pid: child.pid, command, args }, 'qemu spawned');
  }

  private async connectQmp(signal: AbortSignal): Promise<QmpClient> {
    const path = this.st.qmpSocket;
    return withDeadline(`vm ${this.sandboxId}: connect QMP`, this.timeouts.qmpConnectMs, signal, async (sig) => {
      for (;;) {
        if (this.exitValue) throw new UnavailableError(`vm ${this.sandboxId}: qemu exited before QMP was up`);
        if (existsSync(path)) {
          if (this.st.jail) checkJailedSocket(path, this.st.jail.uid);
          try {
            return await QmpClient.connect(path, { logger: this.log, signal: sig, timeoutMs: this.timeouts.qmpConnectMs, commandTimeoutMs: this.timeouts.qmpCommandMs });
          } catch (err) {
            if (!(err instanceof StatusError && err.code === Code.UNAVAILABLE)) throw err;
          }
        }
        await sleep(10, sig, 'qmp socket');
      }
    });
  }

  /**
   * Loads a saved state into a QEMU started with `-incoming defer` and runs
   * it. A state QEMU cannot load makes it exit (its log says why), which
   * fails start() with that log.
   */
  private async restore(qmp: QmpClient, stateFile: string, signal: AbortSignal): Promise<void> {
    const t0 = Date.now();
    await withDeadline(`vm ${this.sandboxId}: restore ${stateFile}`, QEMU_RESTORE_TIMEOUT_MS, signal, async (sig) => {
      const call = { signal: sig, timeoutMs: this.timeouts.qmpCommandMs };
      await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] }, call);
      await qmp.execute('migrate-incoming', { uri: `fd:${INCOMING_STATE_FD}` }, call);
      let interval = 5;
      for (;;) {
        const s = await qmp.queryStatus(call);
        if (s.status !== 'inmigrate') {
          if (s.status === 'paused' || s.status === 'postmigrate' || s.status === 'prelaunch') await qmp.cont(call);
          else if (s.status !== 'running') throw new InternalError(`vm ${this.sandboxId}: restore: status ${s.status} after loading ${stateFile}`);
          break;
        }
        await sleep(interval, sig, 'restore');
        interval = Math.min(interval * 2, 50);
      }
    });
    this.log.info({ ms: Date.now() - t0, state: stateFile }, 'vm restored from a saved state');
  }

  /**
   * Saves the running VM's device state to `stateFile` for clones (the RAM
   * stays in the shared memoryFile: `x-ignore-shared`). The VM is left
   * paused; stop() it afterwards. Needs memoryFile with share = true.
   */
  async saveState(stateFile: string, opts: { signal?: AbortSignal } = {}): Promise<{ ms: number }> {
    checkAbsPath(stateFile, 'stateFile');
    checkOp(this.sandboxId, this.phaseValue, 'pause');
    const mem = this.plan?.qemuConfig.memoryFile;
    if (!mem?.share) throw new FailedPreconditionError(`vm ${this.sandboxId}: saveState needs guest RAM in a shared memory file`);
    const t0 = Date.now();
    await this.serialize('save', opts.signal, async (signal) => {
      await withDeadline(`vm ${this.sandboxId}: save state`, QEMU_SAVE_TIMEOUT_MS, signal, async (sig) => {
        const qmp = this.liveQmp('save state');
        const call = { signal: sig, timeoutMs: this.timeouts.qmpCommandMs };
        await qmp.stop(call);
        if (this.phaseValue === 'running') this.phaseValue = 'paused';
        await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] }, call);
        // QEMU streams to a socket in its own dir; we write the file.
        const socketPath = join(this.plan!.qemuDir, VM_FILES.migration);
        const sink = await listenForMigration(socketPath, stateFile, this.st.jail);
        try {
          await qmp.execute('migrate', { uri: `unix:${socketPath}` }, call);
          await this.waitMigrated(qmp, call, sig);
          await Promise.race([sink.done, new Promise((_, reject) => sig.addEventListener('abort', () => reject(abortError(sig, 'save state')), { once: true }))]);
        } finally {
          await sink.close();
        }
      });
    });
    const ms = Date.now() - t0;
    this.log.info({ ms, state: stateFile }, 'vm state saved');
    return { ms };
  }

  /** Polls `query-migrate` until the outgoing migration completed. */
  private async waitMigrated(qmp: QmpClient, call: QmpCallOptions, sig: AbortSignal): Promise<void> {
    let interval = 5;
    for (;;) {
      const m = await qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate', undefined, call);
      if (m.status === 'completed') return;
      if (m.status === 'failed' || m.status === 'cancelled') {
        throw new InternalError(`vm ${this.sandboxId}: save state: migration ${m.status}${m['error-desc'] ? `: ${m['error-desc']}` : ''}`);
      }
      await sleep(interval, sig, 'save state');
      interval = Math.min(interval * 2, 50);
    }
  }

  /** vCPUs and MiB the VM has now (boot size plus what was hot-plugged); undefined for an attached VM. */
  get size(): VmResources | undefined {
    return this.plan ? { ...this.grown } : undefined;
  }

  /**
   * Hot-plugs vCPUs and memory until the VM has at least `target` (hotplug.ts):
   * free CPU slots from `query-hotpluggable-cpus`, memory as one pc-dimm of
   * whole guest memory blocks. The guest onlines the memory itself; its CPUs
   * come up offline (the agent onlines them). Never shrinks. Returns what was
   * added. FAILED_PRECONDITION when the VM has no room (microvm, or beyond
   * the room reserved at launch).
   */
  async grow(target: VmResources, opts: { signal?: AbortSignal } = {}): Promise<VmResources> {
    const added: VmResources = { vcpus: 0, memoryMiB: 0 };
    const cfg = this.plan?.qemuConfig;
    if (!cfg) throw new FailedPreconditionError(`vm ${this.sandboxId}: cannot grow a VM this process did not start`);
    checkOp(this.sandboxId, this.phaseValue, 'grow');
    await this.serialize('grow', opts.signal, async (signal) => {
      checkOp(this.sandboxId, this.phaseValue, 'grow');
      const room = cfg.hotplug;
      const cur = this.grown;
      if (target.vcpus <= cur.vcpus && target.memoryMiB <= cur.memoryMiB) return;
      if (!room) throw new FailedPreconditionError(`vm ${this.sandboxId}: cannot grow to ${target.vcpus} vCPUs / ${target.memoryMiB} MiB from ${cur.vcpus} / ${cur.memoryMiB}: machine ${cfg.machine} was started without hot-plug room`);
      // Whole guest memory blocks, never past maxmem (a target cut to the bound may not be a whole block away).
      const step = memoryStepMiB(cur.memoryMiB, target.memoryMiB, room.maxMemoryMiB);
      if (target.vcpus > room.maxVcpus) throw new FailedPreconditionError(`vm ${this.sandboxId}: ${target.vcpus} vCPUs asked for, at most ${room.maxVcpus} (maxcpus)`);
      if (step > 0 && this.dimms >= room.memorySlots) throw new FailedPreconditionError(`vm ${this.sandboxId}: all ${room.memorySlots} memory slots are used`);
      const qmp = this.liveQmp('grow');
      const call = { signal, timeoutMs: this.timeouts.qmpCommandMs };
      const t0 = Date.now();
      if (target.vcpus > cur.vcpus) {
        const slots = await qmp.execute<HotpluggableCpu[]>('query-hotpluggable-cpus', undefined, call);
        for (const cmd of cpuPlugCommands(slots, target.vcpus - cur.vcpus)) {
          await qmp.execute('device_add', cmd, call);
          cur.vcpus++;
          added.vcpus++;
        }
      }
      if (step > 0) {
        const id = `dimm${this.dimms}`;
        // A vhost-user device (virtio-fs) must be able to map the new RAM too: a shared memfd then.
        const backend = needsSharedMemory(cfg.devices) ? { 'qom-type': 'memory-backend-memfd', share: true } : { 'qom-type': 'memory-backend-ram' };
        await qmp.execute('object-add', { ...backend, id: `mem-${id}`, size: step * 1024 * 1024 }, call);
        try {
          await qmp.execute('device_add', { driver: 'pc-dimm', id, memdev: `mem-${id}` }, call);
        } catch (err) {
          await qmp.execute('object-del', { id: `mem-${id}` }, call).catch(() => {});
          throw err;
        }
        this.dimms++;
        cur.memoryMiB += step;
        added.memoryMiB = step;
      }
      this.log.info({ added, size: { ...cur }, ms: Date.now() - t0 }, 'vm grown');
    });
    return added;
  }

  // ---------------------------------------------------------------------------
  // exits

  private watchQmp(qmp: QmpClient): void {
    qmp.on('event', (e: QmpEvent) => {
      if (e.event === 'SHUTDOWN' && typeof e.data['reason'] === 'string') this.shutdownReason = e.data['reason'];
    });
    qmp.on('close', () => {
      if (this.exitValue || this.phaseValue === 'stopping' || this.phaseValue === 'stopped') return;
      void this.watchLiveness();
    });
  }

  /**
   * QMP closed without our asking: QEMU is (almost certainly) dying. Our own
   * child reports its exit status through 'exit'; a re-attached QEMU is not
   * our child, so poll pid + start time.
   */
  private async watchLiveness(): Promise<void> {
    const qemu = this.st.qemu;
    if (!qemu) return;
    // Ref'd timers: this watch is what reports the exit, it must not let the
    // process end first. It ends when QEMU is gone.
    if (this.child) await settlesWithin(this.exitPromise, CHILD_EXIT_GRACE_MS);
    let interval = 20;
    while (!this.exitValue && this.phaseValue !== 'stopped') {
      if (!isAlive(qemu)) {
        this.markExited(null, null);
        return;
      }
      await sleep(interval);
      interval = Math.min(interval * 2, 500);
    }
  }

  private markExited(code: number | null, signal: NodeJS.Signals | null, reason?: string): void {
    if (this.exitValue) return;
    const expected = this.phaseValue === 'stopping' || this.phaseValue === 'stopped';
    const info: VmExit = { code, signal, expected, at: new Date() };
    const why = reason ?? this.shutdownReason;
    if (why !== undefined) info.reason = why;
    this.exitValue = info;
    if (this.phaseValue === 'running' || this.phaseValue === 'paused') this.phaseValue = 'exited';
    this.opsAbort.abort(new UnavailableError(`vm ${this.sandboxId}: qemu ${describeExit(info)}`));
    this.resolveExit(info);
    if (this.phaseValue === 'starting') {
      // start() rejects with the reason; there is no running VM to report on.
      this.log.warn({ exit: info }, 'qemu exited during start');
      return;
    }
    if (expected) this.log.info({ exit: info }, 'qemu exited');
    else this.log.warn({ exit: info }, 'qemu exited unexpectedly');
    this.emit('exit', info);
  }

  // ---------------------------------------------------------------------------
  // stop

  private async doStop(opts: StopOptions): Promise<void> {
    const from = this.phaseValue;
    this.phaseValue = 'stopping';
    if (!this.opsAbort.signal.aborted) this.opsAbort.abort(new CancelledError(`vm ${this.sandboxId}: stopping`));
    if (from === 'created') {
      this.phaseValue = 'stopped';
      return;
    }
    if (from === 'starting' && this.startPromise) {
      // start() sees the abort, tears down what it made, and rejects.
      await this.startPromise.catch(() => {});
      this.phaseValue = 'stopped';
      return;
    }
    try {
      await this.teardown(opts);
    } finally {
      this.phaseValue = 'stopped';
    }
    this.log.info('vm stopped');
  }

  private qemuGone(ms: number): Promise<boolean> {
    const q = this.st.qemu;
    if (!q || this.exitValue) return Promise.resolve(true);
    return Promise.race([this.exitPromise.then(() => true), waitGone(q, ms)]);
  }

  /** Everything after the processes: idempotent, runs on every path. */
  private async teardown(opts: StopOptions): Promise<void> {
    const q = this.st.qemu;
    const t = this.timeouts;
    if (q && !this.exitValue && isAlive(q)) {
      const qmp = this.qmp && !this.qmp.isClosed && !opts.force ? this.qmp : undefined;
      if (opts.powerdown && qmp) {
        try {
          await qmp.systemPowerdown({ timeoutMs: t.qmpCommandMs });
          if (!(await this.qemuGone(t.powerdownMs))) this.log.warn({ timeoutMs: t.powerdownMs }, 'guest ignored system_powerdown');
        } catch (err) {
          this.log.warn({ err }, 'system_powerdown failed');
        }
      }
      if (qmp && !this.exitValue && isAlive(q)) {
        try {
          await qmp.quit({ timeoutMs: t.qmpCommandMs });
          if (!(await this.qemuGone(t.quitMs))) this.log.warn({ timeoutMs: t.quitMs }, 'qemu still running after quit');
        } catch (err) {
          this.log.warn({ err }, 'qmp quit failed');
        }
      }
      if (!this.exitValue && isAlive(q)) {
        if (opts.force) this.log.warn({ pid: q.pid }, 'killing qemu (forced stop)');
        const how = await terminate(q, { termTimeoutMs: opts.force ? 0 : t.termMs, killTimeoutMs: t.killMs, group: true, what: 'qemu', logger: this.log, exited: this.exitPromise });
        if (how === 'survived') throw new InternalError(`vm ${this.sandboxId}: qemu pid ${q.pid} survived SIGKILL`);
      }
    }
    if (q && !this.exitValue) {
      // Gone per /proc (a zombie is gone too); give our child's 'exit',
      // which carries the status, a moment to arrive.
      if (this.child) await settlesWithin(this.exitPromise, CHILD_EXIT_GRACE_MS);
      this.markExited(null, null);
    }
    this.qmp?.close();
    if (this.virtiofsd) await this.virtiofsd.stop();
    for (const m of this.st.mounts) await unmountTree(m);
    if (!this.prepared) return; // the dir's files are not ours (start failed its checks)
    if (this.lentMemoryFile !== undefined && existsSync(this.lentMemoryFile)) lchownSync(this.lentMemoryFile, 0, 0);
    const report = { removed: [] as string[], leftMounts: [] as string[] };
    try {
      // Nothing of the jailed uid may outlive QEMU: not in its dir while it goes, not when the uid is leased again.
      if (this.st.jail) await endJailedUid(this.st.jail, this.log);
      removeVmFiles(this.st, report, this.log);
    } finally {
      if (this.st.jail) await releaseUid(this.st.jail.leaseDir, this.st.jail.uid, this.sandboxId);
    }
    if (report.leftMounts.length > 0) {
      throw new FailedPreconditionError(`vm ${this.sandboxId}: mounts left under ${this.st.dir}: ${report.leftMounts.join(', ')}`);
    }
  }

  // ---------------------------------------------------------------------------
  // helpers

  private liveQmp(op: string): QmpClient {
    if (!this.qmp || this.qmp.isClosed) throw new UnavailableError(`vm ${this.sandboxId}: ${op}: no QMP connection`);
    return this.qmp;
  }

  /** Runs lifecycle operations one at a time; stop() or an exit cancels them. */
  private serialize(op: string, signal: AbortSignal | undefined, fn: (signal: AbortSignal) => Promise<void>): Promise<void> {
    const sig = signal ? AbortSignal.any([signal, this.opsAbort.signal]) : this.opsAbort.signal;
    const run = async (): Promise<void> => {
      if (sig.aborted) throw abortError(sig, `vm ${this.sandboxId}: ${op}`);
      try {
        await fn(sig);
      } catch (err) {
        if (sig.aborted && !(err instanceof StatusError && err.code === Code.FAILED_PRECONDITION)) {
          throw abortError(sig, `vm ${this.sandboxId}: ${op}`);
        }
        throw err;
      }
    };
    const p = this.opChain.then(run, run);
    this.opChain = p.catch(() => {});
    return p;
  }
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}
