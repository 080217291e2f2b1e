/**
 * Host-side stdio of container processes: containerd's FIFOs and log URIs
 * (binary://, file://) on one side, the process's streams in the guest
 * (ProcessStreams) on the other. See process-io.ts for the lifecycle.
 */
export { ProcessIo, DEFAULT_CLOSE_TIMEOUT_MS, DEFAULT_STDIN_CLOSE_GRACE_MS, type ProcessIoOptions } from './process-io.js';
export { DEFAULT_READ_CHUNK, STDIN_DRAIN_IDLE_MS, type ProcessStreams } from './copy.js';
export { DEFAULT_LOGGER_READY_TIMEOUT_MS } from './binary-logger.js';
export {
  parseStdio, parseLogUri, binaryArgs,
  type StdioConfig, type ParsedStdio, type LogTarget, type BinaryLogTarget, type FileLogTarget, type StdioField,
} from './stdio-config.js';
