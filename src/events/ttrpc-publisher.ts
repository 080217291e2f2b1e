/**
 * Delivers events the way containerd 1.6's own shims do
 * (runtime/v2/shim/publisher.go): `containerd.services.events.ttrpc.v1.Events/Forward`
 * on the ttrpc socket containerd passes in TTRPC_ADDRESS, one
 * ForwardRequest{envelope} per event, 5 s per call.
 *
 * The connection is made on first use and kept; after a failure that may
 * have broken it (closed, timed out, cancelled) it is dropped and the next
 * call dials again, so a restarted containerd is picked up.
 */
import type { Logger } from 'pino';
import { Code, hasCode } from '../errors/index.js';
import { TtrpcClient } from '../ttrpc/index.js';
import { containerd, google } from '../proto/gen/containerd.js';
import type { EventEnvelope, EventPublisher } from './queue.js';
import { toTimestamp } from '../proto/timestamp.js';

export const EVENTS_SERVICE = 'containerd.services.events.ttrpc.v1.Events';

const ForwardRequest = containerd.services.events.ttrpc.v1.ForwardRequest;
const Empty = google.protobuf.Empty;

export interface TtrpcEventPublisherOptions {
  /** Per Forward call (default 5 s, as containerd's shims). */
  callTimeoutMs?: number;
  /** Per dial (default 5 s). */
  connectTimeoutMs?: number;
}

export { toTimestamp };

/** The ForwardRequest an envelope becomes (exported for tests and other transports). */
export function forwardRequest(env: EventEnvelope): containerd.services.events.ttrpc.v1.ForwardRequest.$Properties {
  return {
    envelope: {
      timestamp: toTimestamp(env.timestamp),
      namespace: env.namespace,
      topic: env.topic,
      event: { type_url: env.typeUrl, value: env.value },
    },
  };
}

export class TtrpcEventPublisher implements EventPublisher {
  private readonly path: string;
  private client: TtrpcClient | undefined;
  private connecting: Promise<TtrpcClient> | undefined;
  private readonly callTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private closed = false;

  /** `ttrpcAddress`: containerd's TTRPC_ADDRESS (a socket path; a `unix://` prefix is accepted). */
  constructor(ttrpcAddress: string, private readonly logger?: Logger, opts: TtrpcEventPublisherOptions = {}) {
    this.path = ttrpcAddress.replace(/^unix:\/\//, '');
    this.callTimeoutMs = opts.callTimeoutMs ?? 5_000;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 5_000;
  }

  async forward(env: EventEnvelope, signal: AbortSignal): Promise<void> {
    const client = await this.connect(signal);
    try {
      await client.request(EVENTS_SERVICE, 'Forward', ForwardRequest, Empty, forwardRequest(env),
        { timeoutMs: this.callTimeoutMs, signal });
    } catch (err) {
      // A status containerd answered leaves the connection fine; anything
      // else may have broken it: dial again next time.
      if (client.isClosed || hasCode(err, Code.UNAVAILABLE) || hasCode(err, Code.DEADLINE_EXCEEDED)
        || hasCode(err, Code.CANCELLED)) {
        this.drop(client);
      }
      throw err;
    }
  }

  close(): void {
    this.closed = true;
    if (this.client) this.drop(this.client);
  }

  private async connect(signal: AbortSignal): Promise<TtrpcClient> {
    if (this.client && !this.client.isClosed) return this.client;
    this.client = undefined;
    this.connecting ??= TtrpcClient.connect(this.path, { timeoutMs: this.connectTimeoutMs, signal, logger: this.logger })
      .then((c) => {
        if (this.closed) {
          c.close();
          return c;
        }
        this.logger?.debug({ address: this.path }, 'connected to containerd events service');
        this.client = c;
        return c;
      })
      .finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  private drop(client: TtrpcClient): void {
    if (this.client === client) this.client = undefined;
    client.close();
  }
}
