/**
 * containerd's task events (/tasks/*), encoded with the generated types and
 * handed to an EventSink (the bounded queue to Events.Forward). Type names are
 * bare (`containerd.events.TaskExit`): what containerd 1.6's subscribers decode.
 */
import { containerd } from '../proto/gen/containerd.js';
import { exitTimestamp } from '../proto/timestamp.js';

const ev = containerd.events;

export interface EventSink {
  /** Queues an event (waits while the queue is full; never drops). */
  publish(topic: string, typeName: string, value: Uint8Array): Promise<void>;
}

export interface TaskIoInfo {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

export interface MountInfo {
  type: string;
  source: string;
  target: string;
  options: string[];
}

export class TaskEvents {
  constructor(private readonly sink: EventSink) {}

  create(e: { containerId: string; bundle: string; rootfs: MountInfo[]; io: TaskIoInfo; pid: number }): Promise<void> {
    return this.sink.publish('/tasks/create', 'containerd.events.TaskCreate',
      ev.TaskCreate.encode({ containerId: e.containerId, bundle: e.bundle, rootfs: e.rootfs, io: e.io, checkpoint: '', pid: e.pid }).finish());
  }

  start(e: { containerId: string; pid: number }): Promise<void> {
    return this.sink.publish('/tasks/start', 'containerd.events.TaskStart', ev.TaskStart.encode(e).finish());
  }

  exit(e: { containerId: string; id: string; pid: number; exitStatus: number; exitedAt: Date }): Promise<void> {
    return this.sink.publish('/tasks/exit', 'containerd.events.TaskExit', ev.TaskExit.encode({
      containerId: e.containerId, id: e.id, pid: e.pid, exitStatus: e.exitStatus, exitedAt: exitTimestamp(e.exitedAt),
    }).finish());
  }

  delete(e: { containerId: string; pid: number; exitStatus: number; exitedAt: Date | undefined }): Promise<void> {
    return this.sink.publish('/tasks/delete', 'containerd.events.TaskDelete', ev.TaskDelete.encode({
      containerId: e.containerId, id: e.containerId, pid: e.pid, exitStatus: e.exitStatus, exitedAt: exitTimestamp(e.exitedAt),
    }).finish());
  }

  execAdded(e: { containerId: string; execId: string }): Promise<void> {
    return this.sink.publish('/tasks/exec-added', 'containerd.events.TaskExecAdded', ev.TaskExecAdded.encode(e).finish());
  }

  execStarted(e: { containerId: string; execId: string; pid: number }): Promise<void> {
    return this.sink.publish('/tasks/exec-started', 'containerd.events.TaskExecStarted', ev.TaskExecStarted.encode(e).finish());
  }

  paused(containerId: string): Promise<void> {
    return this.sink.publish('/tasks/paused', 'containerd.events.TaskPaused', ev.TaskPaused.encode({ containerId }).finish());
  }

  resumed(containerId: string): Promise<void> {
    return this.sink.publish('/tasks/resumed', 'containerd.events.TaskResumed', ev.TaskResumed.encode({ containerId }).finish());
  }

  oom(containerId: string): Promise<void> {
    return this.sink.publish('/tasks/oom', 'containerd.events.TaskOOM', ev.TaskOOM.encode({ containerId }).finish());
  }
}
