/** Helpers for tests that drive the guest agent through AgentClient. */
import type { AgentClient } from '../../src/agent-client/index.js';
import { Code } from '../../src/errors/index.js';
import { expectCode } from './status.js';

export interface ProcessRef {
  containerId: string;
  execId?: string;
}

/** Reads a process's stdout or stderr until EOF; each read bounded by `timeoutMs` when given. */
export async function readAll(
  c: AgentClient, ref: ProcessRef, which: 'stdout' | 'stderr' = 'stdout', timeoutMs?: number,
): Promise<Buffer> {
  const opts = timeoutMs === undefined ? undefined : { timeoutMs };
  const parts: Buffer[] = [];
  for (;;) {
    const r = which === 'stdout' ? await c.readStdout(ref, opts) : await c.readStderr(ref, opts);
    if (r.eof) return Buffer.concat(parts);
    parts.push(r.data);
  }
}

/** Reads stdout until a read of `quietMs` brings nothing (DEADLINE_EXCEEDED): drains what is buffered. */
export async function drainStdout(c: AgentClient, ref: ProcessRef, quietMs: number): Promise<void> {
  for (;;) {
    try {
      await c.readStdout(ref, { timeoutMs: quietMs });
    } catch (err) {
      await expectCode(Promise.reject(err), Code.DEADLINE_EXCEEDED);
      return;
    }
  }
}
