/**
 * The older way to publish, kept by containerd for shims that have no
 * TTRPC_ADDRESS (containerd ≤ 1.2's runtime/v2/shim `remoteEventsPublisher`):
 * run
 *
 *   <publish-binary> --address <containerd gRPC address> publish --topic <topic> --namespace <ns>
 *
 * with stdin = the protobuf encoding of the event's google.protobuf.Any.
 * containerd's `publish` command (cmd/containerd/command/publish.go) reads
 * stdin to EOF, decodes the Any and calls the gRPC Events.Publish; exit
 * status 0 means delivered. containerd stamps the event itself on that
 * path, so the envelope's timestamp is not carried.
 */
import { spawn } from 'node:child_process';
import type { Logger } from 'pino';
import { CancelledError, DeadlineExceededError, UnavailableError } from '../errors/index.js';
import { google } from '../proto/gen/containerd.js';
import type { EventEnvelope, EventPublisher } from './queue.js';

export interface BinaryEventPublisherOptions {
  /** The child is killed (SIGKILL) after this long (default 5 s). */
  timeoutMs?: number;
}

/** How much of the child's stderr is kept for the error message. */
const STDERR_MAX = 4096;

/** The `publish` argv (after the binary) for one envelope. */
export function publishArgs(containerdAddress: string, env: Pick<EventEnvelope, 'topic' | 'namespace'>): string[] {
  return ['--address', containerdAddress, 'publish', '--topic', env.topic, '--namespace', env.namespace];
}

export class BinaryEventPublisher implements EventPublisher {
  private readonly timeoutMs: number;

  /**
   * `publishBinary`: the shim's `-publish-binary` (containerd's own path);
   * `containerdAddress`: the shim's `-address` (containerd's gRPC socket).
   */
  constructor(
    private readonly publishBinary: string,
    private readonly containerdAddress: string,
    private readonly logger?: Logger,
    opts: BinaryEventPublisherOptions = {},
  ) {
    this.timeoutMs = opts.timeoutMs ?? 5_000;
  }

  forward(env: EventEnvelope, signal: AbortSignal): Promise<void> {
    const what = `publish ${env.topic}`;
    if (signal.aborted) return Promise.reject(new CancelledError(`${what}: cancelled`, { cause: signal.reason }));
    const stdin = google.protobuf.Any.encode({ type_url: env.typeUrl, value: env.value }).finish();
    return new Promise<void>((resolve, reject) => {
      const child = spawn(this.publishBinary, publishArgs(this.containerdAddress, env), {
        stdio: ['pipe', 'ignore', 'pipe'],
      });
      let stderr = '';
      let failure: Error | undefined;
      const kill = (err: Error) => {
        failure ??= err;
        child.kill('SIGKILL');
      };
      const timer = setTimeout(
        () => kill(new DeadlineExceededError(`${what}: ${this.publishBinary} did not finish in ${this.timeoutMs} ms`)),
        this.timeoutMs);
      const onAbort = () => kill(new CancelledError(`${what}: cancelled`, { cause: signal.reason }));
      signal.addEventListener('abort', onAbort, { once: true });
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
      };

      child.stderr!.setEncoding('utf8');
      child.stderr!.on('data', (s: string) => {
        if (stderr.length < STDERR_MAX) stderr += s.slice(0, STDERR_MAX - stderr.length);
      });
      // The child may exit without reading stdin (EPIPE): its exit status tells.
      child.stdin!.on('error', (err) => this.logger?.debug({ err }, 'publish binary stdin'));
      child.stdin!.end(stdin);

      child.once('error', (err) => {
        // spawn failed (ENOENT, EACCES): no 'close' may follow.
        done();
        reject(new UnavailableError(`${what}: cannot run ${this.publishBinary}: ${err.message}`, { cause: err }));
      });
      child.once('close', (code, sig) => {
        done();
        if (failure) return reject(failure);
        if (code === 0) return resolve();
        const how = code === null ? `killed by ${sig}` : `exit status ${code}`;
        const detail = stderr.trim();
        reject(new UnavailableError(`${what}: ${this.publishBinary} ${how}${detail ? `: ${detail}` : ''}`));
      });
    });
  }
}
