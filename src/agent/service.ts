/**
 * The AgentService ttrpc handlers: thin. Each decodes its request, checks
 * the input (ids, JSON, ranges → INVALID_ARGUMENT naming the field), looks
 * up the container or process (NOT_FOUND), delegates to the Sandbox /
 * Container / ContainerProcess, and encodes the answer. Wrong-state errors
 * come from the state machine (state.ts) as FAILED_PRECONDITION. Protobuf
 * types do not go past this file.
 */
import { unary, type ServiceHandlers } from '../ttrpc/index.js';
import { kata } from '../proto/gen/agent.js';
import type { Logger } from '../log/index.js';
import type { Sandbox } from './sandbox.js';
import type { OciRuntime } from './runtime.js';
import { AGENT_VERSION } from './version.js';
import { checkContainerId, checkExecId, checkOciProcess, checkSignal, checkWinSize, parseJsonObject } from './validate.js';
import { InvalidArgumentError } from '../errors/index.js';
import { checkSharedFs } from './shared-fs.js';
import { checkMachineId, CloneIdentity } from './clone-identity.js';
import { checkKernelModules } from './kernel-modules.js';
import { checkOnlineRequest, onlineCpuMem } from './cpu-mem.js';
import { checkInterface, checkRoutes, Network } from './network.js';
import { toTimestamp } from '../proto/timestamp.js';

const pb = kata.agent.v1;

export interface ServiceDeps {
  sandbox: Sandbox;
  runtime: OciRuntime;
  logger: Logger;
  /** When the agent started (for Check's uptime). */
  startedAt?: number;
  /** The guest's network (default: a real one, busybox `ip` from PATH). */
  network?: Network;
  /** Entropy and clock of a VM restored from a template (default: no helper: those calls fail). */
  identity?: CloneIdentity;
}

function optionalTimestamp(d: Date | undefined): kata.agent.v1.Timestamp.$Properties | undefined {
  return d ? toTimestamp(d) : undefined;
}

/** Optional terminal size of a create/exec request: both or neither. */
function optionalSize(rows: number, cols: number): { rows?: number; cols?: number } {
  if (!rows && !cols) return {};
  checkWinSize(rows, cols);
  return { rows, cols };
}

/** The handlers, by method name, for TtrpcServer.register(AGENT_SERVICE, …). */
export function agentServiceHandlers(deps: ServiceDeps): ServiceHandlers {
  const { sandbox, runtime } = deps;
  const startedAt = deps.startedAt ?? Date.now();
  const network = deps.network ?? new Network({ logger: deps.logger });
  const identity = deps.identity ?? new CloneIdentity(undefined);
  const empty = () => Promise.resolve(pb.Empty.create());
  const processOf = (containerId: string, execId: string) =>
    sandbox.container(checkContainerId(containerId)).process(checkExecId(execId));

  return {
    Check: unary(pb.CheckRequest, pb.CheckResponse, async () => ({
      version: AGENT_VERSION,
      sandboxId: sandbox.sandboxId,
      runtime: runtime.path,
      uptimeMs: Date.now() - startedAt,
    })),

    CreateSandbox: unary(pb.CreateSandboxRequest, pb.Empty, async (req) => {
      await sandbox.createSandbox(checkContainerId(req.sandboxId, 'sandbox_id'), req.hostname,
        checkSharedFs(req.sharedFsTag, req.sharedFsMountPoint, req.sharedFsType, req.msize_9p),
        checkKernelModules((req.kernelModules ?? []).map((m) => ({ name: m.name ?? '', parameters: m.parameters ?? [] }))),
        req.machineId === '' ? undefined : checkMachineId(req.machineId));
      return empty();
    }),

    ReseedRandomDev: unary(pb.ReseedRandomDevRequest, pb.Empty, async (req) => {
      await identity.reseed(req.data);
      return empty();
    }),

    OnlineCPUMem: unary(pb.OnlineCPUMemRequest, pb.OnlineCPUMemResponse, async (req) => {
      const r = await onlineCpuMem(checkOnlineRequest(req.nbCpus, req.cpuOnly));
      deps.logger.info({ ...r, asked: req.nbCpus }, 'hot-plugged CPUs and memory online');
      return { cpus: r.cpus, memoryBlocks: r.memoryBlocks };
    }),

    SetGuestDateTime: unary(pb.SetGuestDateTimeRequest, pb.Empty, async (req) => {
      await identity.setTime(Number(req.sec), Number(req.usec));
      return empty();
    }),

    DestroySandbox: unary(pb.DestroySandboxRequest, pb.Empty, async (req) => {
      await sandbox.destroySandbox(req.timeoutMs || undefined);
      return empty();
    }),

    CreateContainer: unary(pb.CreateContainerRequest, pb.Empty, async (req) => {
      const id = checkContainerId(req.containerId);
      const spec = parseJsonObject(req.specJson, 'spec_json');
      await sandbox.createContainer({
        id,
        spec,
        rootfsPath: req.rootfsPath,
        terminal: req.terminal,
        stdin: req.stdin,
        ...optionalSize(req.rows, req.cols),
      });
      return empty();
    }),

    StartContainer: unary(pb.ContainerRequest, pb.StartContainerResponse, async (req) => ({
      pid: await sandbox.startContainer(checkContainerId(req.containerId)),
    })),

    RemoveContainer: unary(pb.ContainerRequest, pb.Empty, async (req) => {
      await sandbox.removeContainer(checkContainerId(req.containerId));
      return empty();
    }),

    PauseContainer: unary(pb.ContainerRequest, pb.Empty, async (req) => {
      await sandbox.container(checkContainerId(req.containerId)).pause();
      return empty();
    }),

    ResumeContainer: unary(pb.ContainerRequest, pb.Empty, async (req) => {
      await sandbox.container(checkContainerId(req.containerId)).resume();
      return empty();
    }),

    UpdateContainer: unary(pb.UpdateContainerRequest, pb.Empty, async (req) => {
      const c = sandbox.container(checkContainerId(req.containerId));
      await c.update(parseJsonObject(req.resourcesJson, 'resources_json'));
      return empty();
    }),

    StatsContainer: unary(pb.ContainerRequest, pb.StatsContainerResponse, async (req) => {
      const s = await sandbox.container(checkContainerId(req.containerId)).stats();
      return {
        cgroupVersion: s.cgroupVersion,
        cpu: s.cpu,
        memory: s.memory,
        pids: s.pids,
        oomKills: s.oomKills,
      };
    }),

    ListProcesses: unary(pb.ContainerRequest, pb.ListProcessesResponse, async (req) => ({
      processes: await sandbox.container(checkContainerId(req.containerId)).listProcesses(),
    })),

    ListContainers: unary(pb.ListContainersRequest, pb.ListContainersResponse, async () => ({
      sandboxId: sandbox.sandboxId,
      containers: sandbox.list().map((c) => ({
        containerId: c.id,
        state: c.state,
        processes: c.processes.map((p) => ({
          execId: p.execId,
          pid: p.pid,
          terminal: p.terminal,
          exited: p.exit !== undefined,
          exitStatus: p.exit?.status ?? 0,
          exitedAt: optionalTimestamp(p.exit?.exitedAt),
        })),
      })),
    })),

    ExecProcess: unary(pb.ExecProcessRequest, pb.ExecProcessResponse, async (req) => {
      const c = sandbox.container(checkContainerId(req.containerId));
      const execId = checkExecId(req.execId);
      if (execId === '') throw new InvalidArgumentError('exec_id: must not be empty');
      const proc = checkOciProcess(parseJsonObject(req.processJson, 'process_json'), 'process_json');
      const pid = await c.exec({
        execId,
        process: proc,
        terminal: req.terminal,
        stdin: req.stdin,
        ...optionalSize(req.rows, req.cols),
      });
      return { pid };
    }),

    SignalProcess: unary(pb.SignalProcessRequest, pb.Empty, async (req) => {
      const c = sandbox.container(checkContainerId(req.containerId));
      await c.signal(checkExecId(req.execId), checkSignal(req.signal), req.all);
      return empty();
    }),

    WaitProcess: unary(pb.ProcessRequest, pb.WaitProcessResponse, async (req, ctx) => {
      const e = await processOf(req.containerId, req.execId).wait(ctx.signal);
      return { exitStatus: e.status, exitedAt: optionalTimestamp(e.exitedAt) };
    }),

    RemoveProcess: unary(pb.ProcessRequest, pb.Empty, async (req) => {
      await sandbox.container(checkContainerId(req.containerId)).removeExec(checkExecId(req.execId));
      return empty();
    }),

    WriteStdin: unary(pb.WriteStdinRequest, pb.WriteStdinResponse, async (req) => ({
      len: await processOf(req.containerId, req.execId).stdin.write(req.data),
    })),

    CloseStdin: unary(pb.ProcessRequest, pb.Empty, async (req) => {
      processOf(req.containerId, req.execId).stdin.close();
      return empty();
    }),

    ReadStdout: unary(pb.ReadStreamRequest, pb.ReadStreamResponse, async (req, ctx) =>
      processOf(req.containerId, req.execId).stdout.read(req.maxLen, ctx.signal)),

    ReadStderr: unary(pb.ReadStreamRequest, pb.ReadStreamResponse, async (req, ctx) =>
      processOf(req.containerId, req.execId).stderr.read(req.maxLen, ctx.signal)),

    TtyWinResize: unary(pb.TtyWinResizeRequest, pb.Empty, async (req) => {
      checkWinSize(req.rows, req.cols);
      processOf(req.containerId, req.execId).resize(req.rows, req.cols);
      return empty();
    }),

    GetOOMEvent: unary(pb.GetOOMEventRequest, pb.OOMEvent, async (_req, ctx) => ({
      containerId: await sandbox.nextOomEvent(ctx.signal),
    })),

    UpdateInterface: unary(pb.Interface, pb.Interface, async (req) =>
      network.updateInterface(checkInterface({ name: req.name, hwAddr: req.hwAddr, addresses: req.addresses, mtu: req.mtu, up: req.up }))),

    UpdateRoutes: unary(pb.Routes, pb.Routes, async (req) => ({
      routes: await network.updateRoutes(checkRoutes(req.routes.map((r) => ({
        dest: r.dest ?? '',
        gateway: r.gateway ?? '',
        device: r.device ?? '',
        source: r.source ?? '',
        scope: r.scope ?? '',
        metric: r.metric ?? 0,
      })))),
    })),

    ListInterfaces: unary(pb.ListInterfacesRequest, pb.Interfaces, async () => ({
      interfaces: await network.listInterfaces(),
    })),

    ListRoutes: unary(pb.ListRoutesRequest, pb.Routes, async () => ({
      routes: await network.listRoutes(),
    })),
  };
}
