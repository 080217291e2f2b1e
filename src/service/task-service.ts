/**
 * containerd.task.v2.Task over ttrpc: decode, check the fields, call the Pod,
 * encode. Nothing else lives here. Status codes come from the errors the Pod
 * throws (NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, INVALID_ARGUMENT…);
 * Checkpoint answers UNIMPLEMENTED.
 */
import { UnimplementedError } from '../errors/index.js';
import type { Logger } from '../log/index.js';
import { containerd, google } from '../proto/gen/containerd.js';
import { unary, type CallContext, type ServiceHandlers } from '../ttrpc/index.js';
import type { Pod } from './pod.js';
import { SHIM_VERSION } from './version.js';
import { exitTimestamp, toTimestamp } from '../proto/timestamp.js';

export const TASK_SERVICE = 'containerd.task.v2.Task';

const t = containerd.task.v2;
const Empty = google.protobuf.Empty;

export interface TaskServiceHooks {
  /** Shutdown with no container left: the shim ends after answering. */
  onShutdown(): void;
}

function anyOf(a: { type_url?: string | null; value?: Uint8Array | null } | null | undefined): { typeUrl: string; value: Uint8Array } | undefined {
  if (!a) return undefined;
  return { typeUrl: a.type_url ?? '', value: a.value ?? new Uint8Array() };
}

export function taskServiceHandlers(pod: Pod, hooks: TaskServiceHooks, logger: Logger): ServiceHandlers {
  const log = logger.child({ module: 'task-service' });
  // Each call logged at debug with its outcome; failures at info with the code.
  const traced = <Req extends { id?: string; execId?: string }, Res>(method: string, fn: (req: Req, ctx: CallContext) => Promise<Res>) =>
    async (req: Req, ctx: CallContext): Promise<Res> => {
      try {
        const res = await fn(req, ctx);
        log.debug({ method, id: req.id, exec: req.execId || undefined }, 'task call');
        return res;
      } catch (err) {
        log.info({ method, id: req.id, exec: req.execId || undefined, err }, 'task call failed');
        throw err;
      }
    };

  return {
    Create: unary(t.CreateTaskRequest, t.CreateTaskResponse, traced('Create', async (req, ctx) => ({
      pid: await pod.create({
        id: req.id,
        bundle: req.bundle,
        rootfs: req.rootfs.map((m) => ({ type: m.type ?? '', source: m.source ?? '', target: m.target ?? '', options: m.options ?? [] })),
        stdio: { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal },
        checkpoint: req.checkpoint,
      }, ctx.signal),
    }))),
    Start: unary(t.StartRequest, t.StartResponse, traced('Start', async (req) => ({ pid: await pod.start(req.id, req.execId) }))),
    Delete: unary(t.DeleteRequest, t.DeleteResponse, traced('Delete', async (req) => {
      const r = await pod.delete(req.id, req.execId);
      return { pid: r.pid, exitStatus: r.exitStatus, exitedAt: exitTimestamp(r.exitedAt) };
    })),
    Exec: unary(t.ExecProcessRequest, Empty, traced('Exec', async (req) => {
      await pod.exec({
        id: req.id,
        execId: req.execId,
        stdio: { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal },
        spec: anyOf(req.spec),
      });
      return {};
    })),
    ResizePty: unary(t.ResizePtyRequest, Empty, traced('ResizePty', async (req) => {
      await pod.resizePty(req.id, req.execId, req.width, req.height);
      return {};
    })),
    State: unary(t.StateRequest, t.StateResponse, traced('State', async (req) => {
      const s = pod.state(req.id, req.execId);
      return {
        id: s.id, bundle: s.bundle, pid: s.pid, status: s.status as number,
        stdin: s.stdio.stdin, stdout: s.stdio.stdout, stderr: s.stdio.stderr, terminal: s.stdio.terminal,
        exitStatus: s.exitStatus, exitedAt: exitTimestamp(s.exitedAt), execId: s.execId,
      };
    })),
    Pause: unary(t.PauseRequest, Empty, traced('Pause', async (req) => { await pod.pause(req.id); return {}; })),
    Resume: unary(t.ResumeRequest, Empty, traced('Resume', async (req) => { await pod.resume(req.id); return {}; })),
    Kill: unary(t.KillRequest, Empty, traced('Kill', async (req) => {
      await pod.kill(req.id, req.execId, req.signal, req.all);
      return {};
    })),
    Pids: unary(t.PidsRequest, t.PidsResponse, traced('Pids', async (req) => ({
      processes: (await pod.pids(req.id)).map((pid) => ({ pid })),
    }))),
    CloseIO: unary(t.CloseIORequest, Empty, traced('CloseIO', async (req) => {
      await pod.closeIO(req.id, req.execId, req.stdin);
      return {};
    })),
    Update: unary(t.UpdateTaskRequest, Empty, traced('Update', async (req) => {
      await pod.update(req.id, anyOf(req.resources));
      return {};
    })),
    Wait: unary(t.WaitRequest, t.WaitResponse, traced('Wait', async (req, ctx) => {
      const e = await pod.wait(req.id, req.execId, ctx.signal);
      return { exitStatus: e.status, exitedAt: toTimestamp(e.at) };
    })),
    Stats: unary(t.StatsRequest, t.StatsResponse, traced('Stats', async (req) => {
      const a = await pod.stats(req.id);
      return { stats: { type_url: a.typeUrl, value: a.value } };
    })),
    Connect: unary(t.ConnectRequest, t.ConnectResponse, traced('Connect', async () => ({
      shimPid: process.pid, taskPid: pod.vmPid, version: SHIM_VERSION,
    }))),
    Shutdown: unary(t.ShutdownRequest, Empty, traced('Shutdown', async () => {
      // As runc's shim: with containers left, answer and stay.
      if (pod.isEmpty) hooks.onShutdown();
      return {};
    })),
    Checkpoint: unary(t.CheckpointTaskRequest, Empty, traced('Checkpoint', async () => {
      throw new UnimplementedError('checkpoint: not supported by the kata shim');
    })),
  };
}
