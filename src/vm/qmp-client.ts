/**
 * A typed QMP client over a unix socket.
 *
 * One owner loop: the socket's 'data' handler feeds `QmpDecoder` and
 * dispatches each message — the greeting once, replies to the pending call
 * with the same `id` (QEMU answers in order, but we never rely on it), events
 * to 'event' listeners with their `data` and timestamp. Every call has its own
 * timeout and optional AbortSignal; a call that times out is forgotten and a
 * late reply to it is dropped. When the socket closes, every outstanding call
 * fails with UNAVAILABLE, 'close' is emitted and `closed` resolves.
 *
 * Why not npm `qemu-qmp`: see docs/vm.md (no ids, no timeouts, drops event
 * data, parses the first chunk read as a whole message).
 */
import { EventEmitter } from 'node:events';
import { createConnection, type Socket } from 'node:net';
import { Code, StatusError, UnavailableError } from '../errors/index.js';
import { silentLogger, type Logger } from '../log/index.js';
import { abortError, deadline, withDeadline } from './abort.js';
import { encodeCommand, QmpDecoder, type QmpEvent, type QmpGreeting, type QmpMessage } from './qmp-codec.js';

export type { QmpEvent, QmpGreeting } from './qmp-codec.js';

/** Default bound on one command's round trip. */
export const QMP_COMMAND_TIMEOUT_MS = 10_000;
/** Default bound on connect + greeting + qmp_capabilities. */
export const QMP_HANDSHAKE_TIMEOUT_MS = 5_000;

export interface QmpCallOptions {
  /** Bound on this call (default QMP_COMMAND_TIMEOUT_MS or the client's default). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface QmpConnectOptions {
  logger?: Logger;
  /** Bound on connect + greeting + capabilities negotiation. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Default per-command timeout for this client. */
  commandTimeoutMs?: number;
}

/** QEMU's RunState names (qapi/run-state.json); other strings may appear in newer QEMUs. */
export type QmpRunState =
  | 'debug' | 'inmigrate' | 'internal-error' | 'io-error' | 'paused' | 'postmigrate'
  | 'prelaunch' | 'finish-migrate' | 'restore-vm' | 'running' | 'save-vm' | 'shutdown'
  | 'suspended' | 'watchdog' | 'guest-panicked' | 'colo'
  | (string & {});

export interface QmpStatus {
  status: QmpRunState;
  running: boolean;
}

export interface QmpCpuInfo {
  cpuIndex: number;
  threadId: number;
  qomPath: string;
  target: string;
}

/** An error reply, converted once here: the QMP class picks the status code. */
export class QmpError extends StatusError {
  readonly qmpClass: string;
  readonly desc: string;
  readonly command: string;

  constructor(command: string, qmpClass: string, desc: string) {
    super(qmpCode(qmpClass), `qmp ${command}: ${qmpClass}: ${desc}`);
    this.name = 'QmpError';
    this.command = command;
    this.qmpClass = qmpClass;
    this.desc = desc;
  }
}

/** QMP error classes (qapi/error.json) → status codes. */
export function qmpCode(qmpClass: string): Code {
  switch (qmpClass) {
    case 'CommandNotFound': return Code.UNIMPLEMENTED;
    case 'DeviceNotFound': return Code.NOT_FOUND;
    case 'DeviceNotActive': return Code.FAILED_PRECONDITION;
    case 'KVMMissingCap': return Code.FAILED_PRECONDITION;
    case 'GenericError': return Code.UNKNOWN;
    default: return Code.UNKNOWN;
  }
}

interface Pending {
  command: string;
  resolve(value: unknown): void;
  reject(err: Error): void;
}

type QmpClientEvents = {
  /** An asynchronous QMP event (SHUTDOWN, STOP, RESUME, …). */
  event: [QmpEvent];
  /** The connection closed; `err` says why when it was not our own close(). */
  close: [Error | undefined];
};

/** A connected, negotiated QMP session. Create with `QmpClient.connect()`. */
export class QmpClient extends EventEmitter<QmpClientEvents> {
  /** Resolves once the socket has closed (never rejects). */
  readonly closed: Promise<void>;

  // All fields below are touched only by the socket's event handlers and by
  // the synchronous parts of execute()/close(): one owner loop, no locks.
  private readonly decoder = new QmpDecoder();
  private readonly pending = new Map<string, Pending>();
  private nextId = 1;
  private isClosedFlag = false;
  private closeReason: Error | undefined;
  private greetingValue: QmpGreeting | undefined;
  private onGreeting: ((g: QmpGreeting) => void) | undefined;
  private resolveClosed!: () => void;

  private constructor(
    private readonly socket: Socket,
    private readonly log: Logger,
    private readonly commandTimeoutMs: number,
  ) {
    super();
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => {
      this.closeReason ??= err;
    });
    socket.on('close', () => this.onClose());
  }

  /**
   * Connects to QEMU's QMP socket, reads the greeting and negotiates
   * capabilities. Fails with UNAVAILABLE when nothing listens at `path`, and
   * DEADLINE_EXCEEDED when the handshake takes longer than `timeoutMs`.
   */
  static async connect(path: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const log = (opts.logger ?? silentLogger()).child({ qmp: path });
    const timeoutMs = opts.timeoutMs ?? QMP_HANDSHAKE_TIMEOUT_MS;
    return withDeadline(`qmp connect ${path}`, timeoutMs, opts.signal, async (signal) => {
      const socket = await connectUnix(path, signal);
      const client = new QmpClient(socket, log, opts.commandTimeoutMs ?? QMP_COMMAND_TIMEOUT_MS);
      try {
        await client.handshake(signal);
      } catch (err) {
        client.close();
        throw err;
      }
      log.debug({ version: client.greeting.version.qemu }, 'qmp connected');
      return client;
    });
  }

  /** QEMU's greeting (version, capabilities). */
  get greeting(): QmpGreeting {
    if (!this.greetingValue) throw new UnavailableError('qmp: no greeting yet');
    return this.greetingValue;
  }

  /** True once the socket has closed or close() was called. */
  get isClosed(): boolean {
    return this.isClosedFlag;
  }

  /** Number of calls waiting for a reply. */
  get outstanding(): number {
    return this.pending.size;
  }

  /**
   * Sends one command and resolves with its `return` value. Error replies
   * reject with `QmpError` (class and desc in the message).
   */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts: QmpCallOptions = {}): Promise<T> {
    if (this.isClosedFlag) {
      return Promise.reject(new UnavailableError(`qmp ${command}: connection closed`, { cause: this.closeReason }));
    }
    const timeoutMs = opts.timeoutMs ?? this.commandTimeoutMs;
    const d = deadline(timeoutMs, opts.signal);
    if (d.signal.aborted) {
      d.dispose();
      return Promise.reject(abortError(d.signal, `qmp ${command}`, timeoutMs));
    }
    const id = `c${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      const onAbort = (): void => {
        // Forget the call; a late reply with this id will be dropped.
        if (this.pending.delete(id)) {
          d.dispose();
          reject(abortError(d.signal, `qmp ${command}`, timeoutMs));
        }
      };
      this.pending.set(id, {
        command,
        resolve: (v) => {
          d.signal.removeEventListener('abort', onAbort);
          d.dispose();
          resolve(v as T);
        },
        reject: (e) => {
          d.signal.removeEventListener('abort', onAbort);
          d.dispose();
          reject(e);
        },
      });
      d.signal.addEventListener('abort', onAbort, { once: true });
      this.socket.write(encodeCommand(command, args, id));
    });
  }

  /** Pauses the vCPUs (`stop`). */
  async stop(opts?: QmpCallOptions): Promise<void> {
    await this.execute('stop', undefined, opts);
  }

  /** Resumes the vCPUs (`cont`). */
  async cont(opts?: QmpCallOptions): Promise<void> {
    await this.execute('cont', undefined, opts);
  }

  /** `query-status`. */
  async queryStatus(opts?: QmpCallOptions): Promise<QmpStatus> {
    const r = await this.execute<{ status: string; running: boolean }>('query-status', undefined, opts);
    return { status: r.status, running: r.running };
  }

  /**
   * `quit`: QEMU answers and exits at once. A connection that closes before
   * the answer arrives counts as success: QEMU is going away either way.
   */
  async quit(opts?: QmpCallOptions): Promise<void> {
    try {
      await this.execute('quit', undefined, opts);
    } catch (err) {
      if (err instanceof StatusError && err.code === Code.UNAVAILABLE) return;
      throw err;
    }
  }

  /** `system_powerdown`: asks the guest (ACPI power button) to power off. */
  async systemPowerdown(opts?: QmpCallOptions): Promise<void> {
    await this.execute('system_powerdown', undefined, opts);
  }

  /** `query-cpus-fast`: vCPU thread ids (for pinning or diagnostics). */
  async queryCpusFast(opts?: QmpCallOptions): Promise<QmpCpuInfo[]> {
    const r = await this.execute<Array<Record<string, unknown>>>('query-cpus-fast', undefined, opts);
    return r.map((c) => ({
      cpuIndex: Number(c['cpu-index']),
      threadId: Number(c['thread-id']),
      qomPath: String(c['qom-path'] ?? ''),
      target: String(c['target'] ?? ''),
    }));
  }

  /** `human-monitor-command`: runs an HMP command and returns its text output. */
  async humanMonitorCommand(args: { commandLine: string; cpuIndex?: number }, opts?: QmpCallOptions): Promise<string> {
    const a: Record<string, unknown> = { 'command-line': args.commandLine };
    if (args.cpuIndex !== undefined) a['cpu-index'] = args.cpuIndex;
    const r = await this.execute<string>('human-monitor-command', a, opts);
    return String(r);
  }

  /** Closes the connection; outstanding calls fail with UNAVAILABLE. Idempotent. */
  close(): void {
    if (this.isClosedFlag) return;
    // Fail outstanding calls now rather than on the socket's later 'close'.
    this.closeReason = undefined;
    this.onClose();
    this.socket.destroy();
  }

  // ---------------------------------------------------------------------------
  // the owner loop

  private async handshake(signal: AbortSignal): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      if (this.greetingValue) {
        resolve();
        return;
      }
      const onAbort = (): void => {
        cleanup();
        reject(abortError(signal, 'qmp greeting'));
      };
      const onClose = (): void => {
        cleanup();
        reject(new UnavailableError('qmp: connection closed before the greeting', { cause: this.closeReason }));
      };
      const cleanup = (): void => {
        this.onGreeting = undefined;
        signal.removeEventListener('abort', onAbort);
        this.off('close', onClose);
      };
      this.onGreeting = () => {
        cleanup();
        resolve();
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.on('close', onClose);
      if (this.isClosedFlag) onClose();
    });
    await this.execute('qmp_capabilities', undefined, { signal });
  }

  private onData(chunk: Buffer): void {
    let messages: QmpMessage[];
    try {
      messages = this.decoder.push(chunk);
    } catch (err) {
      this.log.error({ err }, 'qmp protocol error');
      this.closeReason = err as Error;
      this.socket.destroy();
      return;
    }
    for (const m of messages) this.dispatch(m);
  }

  private dispatch(m: QmpMessage): void {
    switch (m.type) {
      case 'greeting':
        this.greetingValue = m.greeting;
        this.onGreeting?.(m.greeting);
        return;
      case 'event':
        this.log.debug({ event: m.event.event, data: m.event.data }, 'qmp event');
        this.emit('event', m.event);
        return;
      case 'return':
      case 'error': {
        const p = m.id === undefined ? undefined : this.pending.get(m.id);
        if (!p) {
          this.log.warn({ id: m.id, type: m.type }, 'qmp reply for no pending call');
          return;
        }
        this.pending.delete(m.id!);
        if (m.type === 'return') p.resolve(m.value);
        else p.reject(new QmpError(p.command, m.errorClass, m.desc));
        return;
      }
      default: {
        const never: never = m;
        throw new Error(`unhandled qmp message ${JSON.stringify(never)}`);
      }
    }
  }

  private onClose(): void {
    if (this.isClosedFlag) return;
    this.isClosedFlag = true;
    const reason = this.closeReason;
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.reject(new UnavailableError(`qmp ${p.command}: connection closed before the reply`, { cause: reason }));
    }
    this.log.debug({ err: reason }, 'qmp closed');
    this.emit('close', reason);
    this.resolveClosed();
  }
}

/** Opens a unix socket; UNAVAILABLE (with the errno) when nobody listens. */
function connectUnix(path: string, signal: AbortSignal): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ path });
    const onAbort = (): void => {
      socket.destroy();
      reject(abortError(signal, `qmp connect ${path}`));
    };
    socket.once('connect', () => {
      signal.removeEventListener('abort', onAbort);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      signal.removeEventListener('abort', onAbort);
      reject(new UnavailableError(`qmp connect ${path}: ${err.code ?? err.message}`, { cause: err }));
    });
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
