/**
 * The agent's container and process state machines, row by row: every
 * (state, event) pair either leads where the table says or is refused with
 * FAILED_PRECONDITION and a plain message.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Code, StatusError } from '../../src/errors/index.js';
import {
  CONTAINER_OPS, CONTAINER_STATES, CONTAINER_TRANSITIONS, PROCESS_OPS, PROCESS_STATES, PROCESS_TRANSITIONS,
  checkContainerOp, checkProcessOp, nextContainerState, nextProcessState,
  type ContainerEvent, type ContainerOp, type ContainerState, type ProcessEvent, type ProcessOp,
} from '../../src/agent/state.js';

const EVENTS: ContainerEvent[] = ['start', 'pause', 'resume', 'exit', 'remove'];

/** The intended lifecycle, written out independently of the table. */
const EXPECTED: Record<ContainerState, Partial<Record<ContainerEvent, ContainerState>>> = {
  created: { start: 'running', remove: 'removed' },
  running: { pause: 'paused', exit: 'stopped' },
  paused: { resume: 'running', exit: 'stopped' },
  stopped: { remove: 'removed' },
  removed: {},
};

function refused(fn: () => unknown): StatusError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof StatusError);
    assert.equal(err.code, Code.FAILED_PRECONDITION);
    return err;
  }
  assert.fail('expected FAILED_PRECONDITION');
}

test('container transitions: every state × event', () => {
  assert.deepEqual(CONTAINER_TRANSITIONS, EXPECTED);
  for (const state of CONTAINER_STATES) {
    for (const event of EVENTS) {
      const want = EXPECTED[state][event];
      if (want) {
        assert.equal(nextContainerState('c1', state, event), want, `${state} --${event}-->`);
      } else {
        const err = refused(() => nextContainerState('c1', state, event));
        assert.equal(err.message, `cannot ${event} container c1 in ${state} state`);
      }
    }
  }
});

test('container operations: allowed states', () => {
  const expected: Record<ContainerOp, ContainerState[]> = {
    exec: ['running'],
    signal: ['running', 'paused'],
    stats: ['running', 'paused'],
    update: ['created', 'running', 'paused'],
    ps: ['running', 'paused'],
    io: ['created', 'running', 'paused', 'stopped'],
  };
  assert.deepEqual(CONTAINER_OPS, expected);
  for (const op of Object.keys(expected) as ContainerOp[]) {
    for (const state of CONTAINER_STATES) {
      if (expected[op].includes(state)) checkContainerOp('c1', state, op);
      else if (op === 'signal' && state === 'stopped') continue; // NotFound: below
      else assert.match(refused(() => checkContainerOp('c1', state, op)).message, new RegExp(`container c1 in ${state} state$`));
    }
  }
  assert.equal(refused(() => checkContainerOp('c1', 'paused', 'exec')).message, 'cannot exec in container c1 in paused state');
});

test('every container state is reachable from created and removed is final', () => {
  const seen = new Set<ContainerState>(['created']);
  const queue: ContainerState[] = ['created'];
  while (queue.length) {
    const s = queue.shift()!;
    for (const next of Object.values(CONTAINER_TRANSITIONS[s])) {
      if (next && !seen.has(next)) {
        seen.add(next);
        queue.push(next);
      }
    }
  }
  assert.deepEqual([...seen].sort(), [...CONTAINER_STATES].sort());
  assert.deepEqual(CONTAINER_TRANSITIONS.removed, {});
});

test('process transitions and operations', () => {
  const expected: Record<string, Partial<Record<ProcessEvent, string>>> = {
    created: { start: 'running', exit: 'exited' },
    running: { exit: 'exited' },
    exited: {},
  };
  assert.deepEqual(PROCESS_TRANSITIONS, expected);
  for (const state of PROCESS_STATES) {
    for (const event of ['start', 'exit'] as ProcessEvent[]) {
      const want = expected[state]![event];
      if (want) assert.equal(nextProcessState('c1/e1', state, event), want);
      else assert.equal(refused(() => nextProcessState('c1/e1', state, event)).message, `cannot ${event} process c1/e1 in ${state} state`);
    }
  }
  const ops: Record<ProcessOp, string[]> = { signal: ['running'], resize: ['created', 'running'], write: ['created', 'running'] };
  assert.deepEqual(PROCESS_OPS, ops);
  for (const op of Object.keys(ops) as ProcessOp[]) {
    for (const state of PROCESS_STATES) {
      if (ops[op].includes(state)) checkProcessOp('c1', state, op);
      else if (op === 'signal' && state === 'exited') continue; // NotFound: below
      else refused(() => checkProcessOp('c1', state, op));
    }
  }
  // A kill of a finished process: NotFound, as containerd's runc shim answers ("process already finished").
  assert.throws(() => checkProcessOp('c1', 'exited', 'signal'), (e: Error & { code?: number }) => e.code === Code.NOT_FOUND && e.message === 'process c1: process already finished');
  assert.throws(() => checkContainerOp('c1', 'stopped', 'signal'), (e: Error & { code?: number }) => e.code === Code.NOT_FOUND && e.message === 'container c1: process already finished');
  assert.equal(refused(() => checkProcessOp('c1', 'exited', 'resize')).message, 'cannot resize process c1 in exited state');
});
