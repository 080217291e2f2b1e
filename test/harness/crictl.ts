/** Driving kata-crictl from tests: in process (run()) or the shipped wrapper (exit codes, streams). */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../../src/cri-client/cli.js';
import { projectRoot } from './busybox.js';

export const CRICTL_BIN = join(projectRoot(), 'bin', 'kata-crictl');

export interface CrictlResult {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface CrictlOptions {
  env?: Record<string, string>;
  /** Do not add `-r <endpoint>`. */
  raw?: boolean;
  /** Run bin/kata-crictl (a new Node each time, ~0.3 s) instead of run() in this process. */
  spawn?: boolean;
  /** SIGKILL the spawned CLI after this long. */
  timeoutMs?: number;
}

export type Crictl = (args: string[], opts?: CrictlOptions) => Promise<CrictlResult>;

/** A kata-crictl runner against `endpoint()` (read at each call: the endpoint exists only once containerd runs). */
export function crictlRunner(endpoint: () => string, defaultTimeoutMs: number): Crictl {
  return async (args, opts = {}) => {
    const started = Date.now();
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.CONTAINER_RUNTIME_ENDPOINT;
    delete env.IMAGE_SERVICE_ENDPOINT;
    Object.assign(env, opts.env ?? {});
    const argv = opts.raw ? args : ['-r', endpoint(), ...args];
    if (!opts.spawn) {
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      const code = await run(argv, { env, out: (d) => void out.push(Buffer.from(d)), err: (d) => void err.push(Buffer.from(d)) });
      return { code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), ms: Date.now() - started };
    }
    const child = spawn(CRICTL_BIN, argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? defaultTimeoutMs);
    return new Promise((res, rej) => {
      child.once('error', rej);
      child.once('close', (code) => {
        clearTimeout(timer);
        res({ code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), ms: Date.now() - started });
      });
    });
  };
}

/** Asserts exit 0, showing the output and `log()` (e.g. containerd's log tail) otherwise. */
export function expectOk(r: CrictlResult, what: string, log: () => string): CrictlResult {
  assert.equal(r.code, 0, `${what}: exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}\n--- containerd log ---\n${log()}`);
  return r;
}

export const outputLines = (s: string): string[] => s.split('\n').filter(Boolean);
export const outputJson = (r: CrictlResult): any => JSON.parse(r.stdout);

/** Writes `v` as a crictl input file `<dir>/<name>`; its path. */
export function writeJsonFile(dir: string, name: string, v: unknown): string {
  const p = join(dir, name);
  writeFileSync(p, JSON.stringify(v, null, 2));
  return p;
}
