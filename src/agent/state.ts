/**
 * The legal moves of containers and processes, written down in one place.
 *
 * A container: created → running (⇄ paused) → stopped → removed. A process
 * (the init or an exec): created → running → exited. Everything else is
 * refused with a plain message ("cannot start container c1 in running
 * state"), as containerd's init_state.go does.
 *
 * Transitions change the state; operations (exec, signal, stats, …) only
 * check it. Both tables are data, so tests walk them row by row.
 */
import { FailedPreconditionError, NotFoundError } from '../errors/index.js';

export type ContainerState = 'created' | 'running' | 'paused' | 'stopped' | 'removed';

export const CONTAINER_STATES: readonly ContainerState[] = ['created', 'running', 'paused', 'stopped', 'removed'];

/** Events that move a container. */
export type ContainerEvent = 'start' | 'pause' | 'resume' | 'exit' | 'remove';

/** From each state, the events it accepts and where they lead. */
export const CONTAINER_TRANSITIONS: Readonly<Record<ContainerState, Readonly<Partial<Record<ContainerEvent, ContainerState>>>>> = {
  created: { start: 'running', remove: 'removed' },
  running: { pause: 'paused', exit: 'stopped' },
  // A paused container can die (SIGKILL reaches frozen tasks on cgroup v2, an
  // OOM kill, DestroySandbox); it then is stopped, no longer paused.
  paused: { resume: 'running', exit: 'stopped' },
  stopped: { remove: 'removed' },
  removed: {},
};

/** Operations that need a state but do not change it. */
export type ContainerOp = 'exec' | 'signal' | 'stats' | 'update' | 'ps' | 'io';

export const CONTAINER_OPS: Readonly<Record<ContainerOp, readonly ContainerState[]>> = {
  exec: ['running'],
  signal: ['running', 'paused'],
  stats: ['running', 'paused'],
  // In created state the resources are merged into the bundle's config.json.
  update: ['created', 'running', 'paused'],
  ps: ['running', 'paused'],
  io: ['created', 'running', 'paused', 'stopped'],
};

/** The human name of an event or op in error messages. */
const VERB: Record<ContainerEvent | ContainerOp, string> = {
  start: 'start',
  pause: 'pause',
  resume: 'resume',
  exit: 'exit',
  remove: 'remove',
  exec: 'exec in',
  signal: 'signal',
  stats: 'get stats of',
  update: 'update',
  ps: 'list processes of',
  io: 'use the stdio of',
};

/** The state `event` leads to from `state`, or a FailedPreconditionError. */
export function nextContainerState(id: string, state: ContainerState, event: ContainerEvent): ContainerState {
  const next = CONTAINER_TRANSITIONS[state][event];
  if (next === undefined) throw new FailedPreconditionError(`cannot ${VERB[event]} container ${id} in ${state} state`);
  return next;
}

/** Throws a FailedPreconditionError unless `op` is allowed in `state`. */
export function checkContainerOp(id: string, state: ContainerState, op: ContainerOp): void {
  // containerd's runc shim answers a kill of a finished process with NotFound ("process already
  // finished"), which containerd tolerates (StopPodSandbox, ctr task kill); FailedPrecondition it does not.
  if (op === 'signal' && state === 'stopped') throw new NotFoundError(`container ${id}: process already finished`);
  if (!CONTAINER_OPS[op].includes(state)) throw new FailedPreconditionError(`cannot ${VERB[op]} container ${id} in ${state} state`);
}

export type ProcessState = 'created' | 'running' | 'exited';

export const PROCESS_STATES: readonly ProcessState[] = ['created', 'running', 'exited'];

export type ProcessEvent = 'start' | 'exit';

export const PROCESS_TRANSITIONS: Readonly<Record<ProcessState, Readonly<Partial<Record<ProcessEvent, ProcessState>>>>> = {
  // A process whose runtime could not even be spawned exits from created.
  created: { start: 'running', exit: 'exited' },
  running: { exit: 'exited' },
  exited: {},
};

export type ProcessOp = 'signal' | 'resize' | 'write';

export const PROCESS_OPS: Readonly<Record<ProcessOp, readonly ProcessState[]>> = {
  signal: ['running'],
  // Before start the size is kept and applied when the terminal appears.
  resize: ['created', 'running'],
  write: ['created', 'running'],
};

export function nextProcessState(name: string, state: ProcessState, event: ProcessEvent): ProcessState {
  const next = PROCESS_TRANSITIONS[state][event];
  if (next === undefined) throw new FailedPreconditionError(`cannot ${event} process ${name} in ${state} state`);
  return next;
}

export function checkProcessOp(name: string, state: ProcessState, op: ProcessOp): void {
  if (op === 'signal' && state === 'exited') throw new NotFoundError(`process ${name}: process already finished`);
  if (!PROCESS_OPS[op].includes(state)) {
    const verb = op === 'write' ? 'write to' : op;
    throw new FailedPreconditionError(`cannot ${verb} process ${name} in ${state} state`);
  }
}
