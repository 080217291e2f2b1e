/**
 * Events from the shim to containerd: `EventQueue` (ordered, bounded,
 * retrying) over an `EventPublisher` (ttrpc Forward, or containerd's
 * `publish` binary).
 */
import type { Logger } from 'pino';
import { InvalidArgumentError } from '../errors/index.js';
import { BinaryEventPublisher } from './binary-publisher.js';
import type { EventPublisher } from './queue.js';
import { TtrpcEventPublisher } from './ttrpc-publisher.js';

export {
  EventQueue, typeNameOf,
  type EventEnvelope, type EventMessageType, type EventPublisher, type EventQueueOptions, type PublishOptions, type RawEvent,
} from './queue.js';
export { TtrpcEventPublisher, EVENTS_SERVICE, forwardRequest, toTimestamp, type TtrpcEventPublisherOptions } from './ttrpc-publisher.js';
export { BinaryEventPublisher, publishArgs, type BinaryEventPublisherOptions } from './binary-publisher.js';

/** Event topics of containerd 1.6 (runtime/events.go). */
export const Topics = {
  TaskCreate: '/tasks/create',
  TaskStart: '/tasks/start',
  TaskOOM: '/tasks/oom',
  TaskExit: '/tasks/exit',
  TaskDelete: '/tasks/delete',
  TaskExecAdded: '/tasks/exec-added',
  TaskExecStarted: '/tasks/exec-started',
  TaskPaused: '/tasks/paused',
  TaskResumed: '/tasks/resumed',
  TaskCheckpointed: '/tasks/checkpointed',
} as const;

export interface PublisherConfig {
  /** TTRPC_ADDRESS from the environment containerd gives the shim. */
  ttrpcAddress?: string;
  /** The shim's `-publish-binary`. */
  publishBinary?: string;
  /** The shim's `-address` (containerd's gRPC socket). */
  containerdAddress?: string;
  logger?: Logger;
}

/**
 * ttrpc when TTRPC_ADDRESS is set, else the publish binary. One or the
 * other, never "ttrpc, then the binary on failure":
 * - every containerd that sets TTRPC_ADDRESS (≥ 1.3) serves Forward on it,
 *   and its shims use nothing else;
 * - a failed Forward is mostly containerd being down or restarting: the
 *   binary talks to the same daemon and would fail as well, and the queue
 *   retries anyway;
 * - a Forward that timed out may still have been delivered: sending the
 *   same event again through another path would duplicate it (e.g. two
 *   TaskExit), whereas the queue's retry of one path is what containerd's
 *   own shims do.
 */
export function createEventPublisher(cfg: PublisherConfig): EventPublisher {
  if (cfg.ttrpcAddress) return new TtrpcEventPublisher(cfg.ttrpcAddress, cfg.logger);
  if (cfg.publishBinary && cfg.containerdAddress) {
    return new BinaryEventPublisher(cfg.publishBinary, cfg.containerdAddress, cfg.logger);
  }
  throw new InvalidArgumentError('events: neither TTRPC_ADDRESS nor -publish-binary and -address are set');
}
