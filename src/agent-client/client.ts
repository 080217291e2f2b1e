/**
 * AgentClient: the host's typed client of the guest agent (AgentService over
 * ttrpc), used by the shim. It knows no containerd.
 *
 * - One TtrpcClient owns the connection; every short call has a default
 *   timeout (sent to the agent as the ttrpc deadline too); the long-lived
 *   calls (waitProcess, readStdout/readStderr, writeStdin, getOOMEvent) have
 *   none unless asked and take an AbortSignal.
 * - When the channel breaks, every outstanding and later call fails with
 *   UNAVAILABLE. The agent keeps all state: AgentClient.connect() again gives
 *   a new client, and a wait cut short is simply asked again (an exit is
 *   delivered as often as it is asked for).
 * - Requests and answers are plain domain types (types.ts), converted in
 *   convert.ts.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from '../log/index.js';
import { DeadlineExceededError, UnavailableError } from '../errors/index.js';
import { TtrpcClient, type MessageCodec } from '../ttrpc/index.js';
import { kata } from '../proto/gen/agent.js';
import {
  fromCheck, fromInterface, fromListContainers, fromProcesses, fromRead, fromRoutes, fromStats, fromWait, jsonBytes, signalNumber,
  toCreateContainer, toExecProcess, toInterface, toRoute,
} from './convert.js';
import { agentHandshake, DEFAULT_HANDSHAKE_TIMEOUT_MS } from './handshake.js';
import type {
  AgentInfo, CallOptions, ContainerRef, ContainerStats, CreateContainerRequest, CreateSandboxRequest,
  DestroySandboxRequest, ExecProcessRequest, ExitStatus, InterfaceConfig, InterfaceStatus, LongCallOptions, OomEvent,
  ProcessInfo, ProcessRef, ReadResult, ReadStreamRequest, RouteConfig, RouteStatus, SandboxStatus, SignalProcessRequest,
  TtyWinResizeRequest, UpdateContainerRequest, WriteStdinRequest,
} from './types.js';

const pb = kata.agent.v1;

/** The ttrpc service name (package kata.agent.v1, service AgentService). */
export const AGENT_SERVICE_NAME = 'kata.agent.v1.AgentService';
/** Default deadline of a short call: crun commands take ~0.25 s under TCG, more on a busy guest. */
export const DEFAULT_CALL_TIMEOUT_MS = 30_000;
/** Extra time given to DestroySandbox beyond the agent's own kill timeout. */
const DESTROY_MARGIN_MS = 15_000;

export interface AgentClientOptions {
  /** Default timeout of short calls (DEFAULT_CALL_TIMEOUT_MS). */
  timeoutMs?: number;
  logger?: Logger;
}

export interface AgentConnectOptions extends AgentClientOptions {
  /** Connect + handshake deadline (10 s). */
  connectTimeoutMs?: number;
  signal?: AbortSignal;
  /** How often HELLO is repeated until the agent answers (250 ms). */
  helloIntervalMs?: number;
}

export class AgentClient {
  private readonly ttrpc: TtrpcClient;
  private readonly timeoutMs: number;

  /**
   * Wraps a stream on which the channel handshake is done (see
   * AgentClient.connect / agentHandshake).
   */
  constructor(stream: Duplex, opts: AgentClientOptions = {}) {
    this.ttrpc = new TtrpcClient(stream, opts.logger);
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    // The handshake left the stream paused; the ttrpc reader takes over.
    stream.resume();
  }

  /**
   * Connects to the agent through a unix socket (QEMU's chardev socket of the
   * agent's virtio-serial port, or an agent run with --listen unix:PATH) and
   * performs the channel handshake.
   */
  static async connect(path: string, opts: AgentConnectOptions = {}): Promise<AgentClient> {
    const timeoutMs = opts.connectTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    const started = Date.now();
    const sock = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection({ path });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new DeadlineExceededError(`agent: connect ${path}: timeout of ${timeoutMs} ms exceeded`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', (err) => {
        clearTimeout(timer);
        reject(new UnavailableError(`agent: connect ${path}: ${err.message}`, { cause: err }));
      });
    });
    sock.on('error', () => {}); // the TtrpcClient reports errors from here on
    try {
      await agentHandshake(sock, {
        timeoutMs: Math.max(1, timeoutMs - (Date.now() - started)),
        signal: opts.signal,
        helloIntervalMs: opts.helloIntervalMs,
      });
    } catch (err) {
      sock.destroy();
      throw err;
    }
    return new AgentClient(sock, opts);
  }

  /** Resolves when the connection is gone. */
  get closed(): Promise<void> {
    return this.ttrpc.closed;
  }

  get isClosed(): boolean {
    return this.ttrpc.isClosed;
  }

  /** Closes the connection; outstanding calls fail with UNAVAILABLE. The agent keeps its state. */
  close(): void {
    this.ttrpc.close();
  }

  async check(opts?: CallOptions): Promise<AgentInfo> {
    return fromCheck(await this.short('Check', pb.CheckRequest, pb.CheckResponse, {}, opts));
  }

  async createSandbox(req: CreateSandboxRequest, opts?: CallOptions): Promise<void> {
    await this.short('CreateSandbox', pb.CreateSandboxRequest, pb.Empty, {
      sandboxId: req.sandboxId,
      hostname: req.hostname ?? '',
      sharedFsTag: req.sharedFs?.tag ?? '',
      sharedFsMountPoint: req.sharedFs?.mountPoint ?? '',
      kernelModules: (req.kernelModules ?? []).map((m) => ({ name: m.name, parameters: [...(m.parameters ?? [])] })),
      sharedFsType: req.sharedFs ? (req.sharedFs.fstype ?? 'virtiofs') : '',
      msize_9p: req.sharedFs?.msize ?? 0,
      machineId: req.machineId ?? '',
    }, opts);
  }

  /** Adds host entropy to the guest kernel's pool and reseeds its CRNG (a VM restored from a template). */
  async reseedRandomDev(data: Uint8Array, opts?: CallOptions): Promise<void> {
    await this.short('ReseedRandomDev', pb.ReseedRandomDevRequest, pb.Empty, { data }, opts);
  }

  /** After vCPUs or memory were hot-plugged: the agent onlines `cpus` new CPUs (waiting for them) and offline memory. */
  async onlineCpuMem(req: { cpus: number; cpuOnly?: boolean }, opts?: CallOptions): Promise<{ cpus: number; memoryBlocks: number }> {
    const r = await this.short('OnlineCPUMem', pb.OnlineCPUMemRequest, pb.OnlineCPUMemResponse, { wait: true, nbCpus: req.cpus, cpuOnly: req.cpuOnly ?? false }, opts);
    return { cpus: r.cpus ?? 0, memoryBlocks: r.memoryBlocks ?? 0 };
  }

  /** Sets the guest's wall clock (a VM restored from a template resumes at the template's moment). */
  async setGuestDateTime(at: Date, opts?: CallOptions): Promise<void> {
    const ms = at.getTime();
    await this.short('SetGuestDateTime', pb.SetGuestDateTimeRequest, pb.Empty, { sec: Math.floor(ms / 1000), usec: (ms % 1000) * 1000 }, opts);
  }

  async destroySandbox(req: DestroySandboxRequest = {}, opts?: CallOptions): Promise<void> {
    const timeoutMs = opts?.timeoutMs ?? Math.max(this.timeoutMs, (req.timeoutMs ?? 10_000) + DESTROY_MARGIN_MS);
    await this.short('DestroySandbox', pb.DestroySandboxRequest, pb.Empty, { timeoutMs: req.timeoutMs ?? 0 }, { ...opts, timeoutMs });
  }

  async createContainer(req: CreateContainerRequest, opts?: CallOptions): Promise<void> {
    await this.short('CreateContainer', pb.CreateContainerRequest, pb.Empty, toCreateContainer(req), opts);
  }

  /** Starts the init process; its pid as the guest sees it. */
  async startContainer(req: ContainerRef, opts?: CallOptions): Promise<{ pid: number }> {
    const r = await this.short('StartContainer', pb.ContainerRequest, pb.StartContainerResponse, req, opts);
    return { pid: r.pid };
  }

  async removeContainer(req: ContainerRef, opts?: CallOptions): Promise<void> {
    await this.short('RemoveContainer', pb.ContainerRequest, pb.Empty, req, opts);
  }

  async pauseContainer(req: ContainerRef, opts?: CallOptions): Promise<void> {
    await this.short('PauseContainer', pb.ContainerRequest, pb.Empty, req, opts);
  }

  async resumeContainer(req: ContainerRef, opts?: CallOptions): Promise<void> {
    await this.short('ResumeContainer', pb.ContainerRequest, pb.Empty, req, opts);
  }

  async updateContainer(req: UpdateContainerRequest, opts?: CallOptions): Promise<void> {
    await this.short('UpdateContainer', pb.UpdateContainerRequest, pb.Empty,
      { containerId: req.containerId, resourcesJson: jsonBytes(req.resources) }, opts);
  }

  async statsContainer(req: ContainerRef, opts?: CallOptions): Promise<ContainerStats> {
    return fromStats(await this.short('StatsContainer', pb.ContainerRequest, pb.StatsContainerResponse, req, opts));
  }

  async listProcesses(req: ContainerRef, opts?: CallOptions): Promise<ProcessInfo[]> {
    return fromProcesses(await this.short('ListProcesses', pb.ContainerRequest, pb.ListProcessesResponse, req, opts));
  }

  /** Every container and process the agent knows, with exits: what a reconnecting shim reads. */
  async listContainers(opts?: CallOptions): Promise<SandboxStatus> {
    return fromListContainers(await this.short('ListContainers', pb.ListContainersRequest, pb.ListContainersResponse, {}, opts));
  }

  /** Starts a process in a running container; its pid. */
  async execProcess(req: ExecProcessRequest, opts?: CallOptions): Promise<{ pid: number }> {
    const r = await this.short('ExecProcess', pb.ExecProcessRequest, pb.ExecProcessResponse, toExecProcess(req), opts);
    return { pid: r.pid };
  }

  async signalProcess(req: SignalProcessRequest, opts?: CallOptions): Promise<void> {
    await this.short('SignalProcess', pb.SignalProcessRequest, pb.Empty, {
      containerId: req.containerId,
      execId: req.execId ?? '',
      signal: signalNumber(req.signal),
      all: req.all ?? false,
    }, opts);
  }

  /** Resolves when the process exits (at once if it has). Long-lived. */
  async waitProcess(req: ProcessRef, opts?: LongCallOptions): Promise<ExitStatus> {
    return fromWait(await this.long('WaitProcess', pb.ProcessRequest, pb.WaitProcessResponse, processRef(req), opts));
  }

  /** Forgets an exited exec on the agent (its exit can no longer be waited for). */
  async removeProcess(req: { containerId: string; execId: string }, opts?: CallOptions): Promise<void> {
    await this.short('RemoveProcess', pb.ProcessRequest, pb.Empty, req, opts);
  }

  /**
   * Writes to the process's stdin; resolves with the byte count once the
   * guest pipe accepted them (backpressure: a process not reading stalls
   * this call). Long-lived: no default timeout.
   */
  async writeStdin(req: WriteStdinRequest, opts?: LongCallOptions): Promise<number> {
    const r = await this.long('WriteStdin', pb.WriteStdinRequest, pb.WriteStdinResponse, { ...processRef(req), data: req.data }, opts);
    return r.len;
  }

  /** Closes stdin after the bytes already written (a terminal gets its EOF character). */
  async closeStdin(req: ProcessRef, opts?: CallOptions): Promise<void> {
    await this.short('CloseStdin', pb.ProcessRequest, pb.Empty, processRef(req), opts);
  }

  /** Up to maxLen bytes of stdout as soon as there are some, or eof. Long-lived. */
  async readStdout(req: ReadStreamRequest, opts?: LongCallOptions): Promise<ReadResult> {
    return fromRead(await this.long('ReadStdout', pb.ReadStreamRequest, pb.ReadStreamResponse,
      { ...processRef(req), maxLen: req.maxLen ?? 0 }, opts));
  }

  /** Up to maxLen bytes of stderr (a terminal process has none: eof at once). Long-lived. */
  async readStderr(req: ReadStreamRequest, opts?: LongCallOptions): Promise<ReadResult> {
    return fromRead(await this.long('ReadStderr', pb.ReadStreamRequest, pb.ReadStreamResponse,
      { ...processRef(req), maxLen: req.maxLen ?? 0 }, opts));
  }

  async ttyWinResize(req: TtyWinResizeRequest, opts?: CallOptions): Promise<void> {
    await this.short('TtyWinResize', pb.TtyWinResizeRequest, pb.Empty, { ...processRef(req), rows: req.rows, cols: req.cols }, opts);
  }

  /** The next OOM kill in the sandbox. Long-lived. */
  async getOOMEvent(opts?: LongCallOptions): Promise<OomEvent> {
    const r = await this.long('GetOOMEvent', pb.GetOOMEventRequest, pb.OOMEvent, {}, opts);
    return { containerId: r.containerId };
  }

  /**
   * Configures the guest NIC found by `hwAddr` (NOT_FOUND when no NIC has
   * it) or `name`: name, MTU, exactly these addresses, up (default); brings
   * `lo` up. Bad input: INVALID_ARGUMENT naming the field. Answers with the
   * interface as it now is.
   */
  async updateInterface(cfg: InterfaceConfig, opts?: CallOptions): Promise<InterfaceStatus> {
    return fromInterface(await this.short('UpdateInterface', pb.Interface, pb.Interface, toInterface(cfg), opts));
  }

  /**
   * Adds or replaces these routes (link routes first) and deletes those an
   * earlier call added that are not listed; the kernel's routes stay.
   * Answers with every route of the guest's main table.
   */
  async updateRoutes(routes: readonly RouteConfig[], opts?: CallOptions): Promise<RouteStatus[]> {
    return fromRoutes(await this.short('UpdateRoutes', pb.Routes, pb.Routes, { routes: routes.map(toRoute) }, opts));
  }

  /** Every guest interface but lo. */
  async listInterfaces(opts?: CallOptions): Promise<InterfaceStatus[]> {
    const r = await this.short('ListInterfaces', pb.ListInterfacesRequest, pb.Interfaces, {}, opts);
    return r.interfaces.map(fromInterface);
  }

  /** Every route of the guest's main table (IPv4, then IPv6). */
  async listRoutes(opts?: CallOptions): Promise<RouteStatus[]> {
    return fromRoutes(await this.short('ListRoutes', pb.ListRoutesRequest, pb.Routes, {}, opts));
  }

  private short<Req, Res>(method: string, reqType: MessageCodec<unknown, Req>, resType: MessageCodec<Res, unknown>,
    req: Req, opts?: CallOptions): Promise<Res> {
    return this.ttrpc.request(AGENT_SERVICE_NAME, method, reqType, resType, req, {
      timeoutMs: opts?.timeoutMs ?? this.timeoutMs,
      signal: opts?.signal,
    });
  }

  private long<Req, Res>(method: string, reqType: MessageCodec<unknown, Req>, resType: MessageCodec<Res, unknown>,
    req: Req, opts?: LongCallOptions): Promise<Res> {
    return this.ttrpc.request(AGENT_SERVICE_NAME, method, reqType, resType, req, {
      timeoutMs: opts?.timeoutMs,
      signal: opts?.signal,
    });
  }
}

function processRef(r: ProcessRef): { containerId: string; execId: string } {
  return { containerId: r.containerId, execId: r.execId ?? '' };
}
