// A typed promise client of the Kubernetes CRI (runtime.v1 RuntimeService and
// ImageService) over @grpc/grpc-js, built on the static protobufjs code
// generated from proto/cri/api.proto (no proto-loader): every call is a
// `makeUnaryRequest` with the generated encode/decode and a deadline.
//
// Errors: a failed call rejects with a CriError (a StatusError carrying the
// gRPC code, the server's message and the operation); when the runtime could
// not be reached at all (nothing listening, not a gRPC server, or no answer
// before the deadline while still connecting) it rejects with a ConnectError
// instead, whose message names the endpoint.

import * as grpc from '@grpc/grpc-js';
import { Code, StatusError } from '../errors/index.js';
import { runtime } from '../proto/gen/cri.js';

export import v1 = runtime.v1;

/** containerd's default socket, as crictl assumes it. */
export const DEFAULT_ENDPOINT = 'unix:///run/containerd/containerd.sock';
export const DEFAULT_TIMEOUT_MS = 10_000;
/** The CRI version a client announces in VersionRequest (crictl sends the same). */
export const CRI_CLIENT_VERSION = 'v1';
/** ExecSync may return up to 16 MiB each of stdout and stderr (CRI spec): leave room. */
const MAX_MESSAGE = 64 * 1024 * 1024;

export interface CriClientOptions {
  /** Runtime endpoint: unix:///path, unix:/path, /path, or host:port. */
  endpoint?: string;
  /** Image endpoint (default: the runtime endpoint). */
  imageEndpoint?: string;
  /** Default deadline of each call (default 10 s). */
  timeoutMs?: number;
}

export interface CallOptions {
  /** Deadline of this call in ms from now; Infinity for none. Default: the client's timeoutMs. */
  timeoutMs?: number;
}

/** A gRPC error answered by the runtime (or by grpc-js on its behalf). */
export class CriError extends StatusError {
  /** The gRPC method, e.g. "RunPodSandbox". */
  readonly method: string;
  /** The server's message (grpc "details"). */
  readonly details: string;
  constructor(method: string, code: Code, details: string) {
    super(code, details);
    this.name = 'CriError';
    this.method = method;
    this.details = details;
  }
}

/** The runtime endpoint could not be reached. */
export class ConnectError extends StatusError {
  readonly endpoint: string;
  constructor(endpoint: string, reason: string) {
    super(Code.UNAVAILABLE, `cannot connect to the runtime at ${endpoint}: ${reason}`);
    this.name = 'ConnectError';
    this.endpoint = endpoint;
  }
}

/**
 * The grpc-js target for an endpoint. crictl's forms: unix:///abs/path,
 * unix:/abs/path (and a bare absolute path); tcp://host:port or host:port.
 */
export function grpcTarget(endpoint: string): string {
  const e = endpoint.trim();
  if (!e) throw new Error('empty runtime endpoint');
  if (e.startsWith('unix://')) {
    const path = e.slice('unix://'.length);
    if (!path.startsWith('/')) throw new Error(`endpoint ${endpoint}: a unix socket path must be absolute (unix:///path)`);
    return `unix://${path}`;
  }
  if (e.startsWith('unix:')) return grpcTarget('unix://' + e.slice('unix:'.length));
  if (e.startsWith('/')) return `unix://${e}`;
  if (e.startsWith('tcp://')) return e.slice('tcp://'.length);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(e) && !e.startsWith('dns:')) throw new Error(`endpoint ${endpoint}: unsupported scheme (use unix:// or tcp://)`);
  return e;
}

interface Encoder<T> {
  encode(message: T): { finish(): Uint8Array };
}
interface Decoder<T> {
  decode(reader: Uint8Array): T;
}

/** One gRPC channel (a grpc-js Client) to one endpoint. */
class Conn {
  readonly client: grpc.Client;
  /** Set after the first answered call: later failures are the runtime's, not the connection's. */
  private reached = false;

  constructor(readonly endpoint: string) {
    this.client = new grpc.Client(grpcTarget(endpoint), grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': MAX_MESSAGE,
      'grpc.max_send_message_length': MAX_MESSAGE,
      // The default authority of a unix target is "localhost"; containerd does not care.
      'grpc.enable_retries': 0,
    });
  }

  unary<Req, Res>(service: string, method: string, reqType: Encoder<Req>, resType: Decoder<Res>, req: Req, timeoutMs: number): Promise<Res> {
    const path = `/runtime.v1.${service}/${method}`;
    const options: grpc.CallOptions = Number.isFinite(timeoutMs) ? { deadline: Date.now() + timeoutMs } : {};
    return new Promise<Res>((resolve, reject) => {
      this.client.makeUnaryRequest<Req, Res>(
        path,
        (m) => Buffer.from(reqType.encode(m).finish()),
        (b) => resType.decode(b),
        req,
        new grpc.Metadata(),
        options,
        (err, res) => {
          if (err) {
            reject(this.toError(method, err, timeoutMs));
            return;
          }
          this.reached = true;
          resolve(res as Res);
        },
      );
    });
  }

  private toError(method: string, err: grpc.ServiceError, timeoutMs: number): Error {
    const code = err.code as number as Code;
    const state = this.client.getChannel().getConnectivityState(false);
    if (!this.reached && state !== grpc.connectivityState.READY) {
      if (code === Code.UNAVAILABLE) return new ConnectError(this.endpoint, cleanReason(err.details));
      if (code === Code.DEADLINE_EXCEEDED) {
        return new ConnectError(this.endpoint, `no answer within ${formatMs(timeoutMs)} (is it a gRPC server?)`);
      }
    }
    return new CriError(method, code, err.details ?? err.message);
  }

  close(): void {
    this.client.close();
  }
}

/** grpc-js says "No connection established. Last error: Error: connect ENOENT /x (…)": keep the useful part. */
function cleanReason(details: string | undefined): string {
  const d = (details ?? '').trim();
  const m = /Last error: (?:Error: )?(.*)$/s.exec(d);
  return (m ? m[1]! : d || 'unavailable')
    .replace(/\s*\(\d{4}-\d\d-\d\dT[^)]*\)\s*$/, '')
    .replace(/\.?\s*Resolution note:\s*$/, '')
    .trim();
}

function formatMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

/** Typed CRI calls. Create with `new CriClient(opts)`, `close()` when done. */
export class CriClient {
  readonly endpoint: string;
  readonly imageEndpoint: string;
  readonly timeoutMs: number;
  private readonly rt: Conn;
  private readonly img: Conn;

  constructor(opts: CriClientOptions = {}) {
    this.endpoint = opts.endpoint ?? DEFAULT_ENDPOINT;
    this.imageEndpoint = opts.imageEndpoint || this.endpoint;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.rt = new Conn(this.endpoint);
    this.img = this.imageEndpoint === this.endpoint ? this.rt : new Conn(this.imageEndpoint);
  }

  private call<Req, Res>(method: string, reqType: Encoder<Req>, resType: Decoder<Res>, req: Req, o?: CallOptions): Promise<Res> {
    return this.rt.unary('RuntimeService', method, reqType, resType, req, o?.timeoutMs ?? this.timeoutMs);
  }

  private icall<Req, Res>(method: string, reqType: Encoder<Req>, resType: Decoder<Res>, req: Req, o?: CallOptions): Promise<Res> {
    return this.img.unary('ImageService', method, reqType, resType, req, o?.timeoutMs ?? this.timeoutMs);
  }

  // --- runtime ---------------------------------------------------------------

  version(o?: CallOptions): Promise<v1.VersionResponse> {
    return this.call('Version', v1.VersionRequest, v1.VersionResponse, v1.VersionRequest.create({ version: CRI_CLIENT_VERSION }), o);
  }

  status(verbose = true, o?: CallOptions): Promise<v1.StatusResponse> {
    return this.call('Status', v1.StatusRequest, v1.StatusResponse, v1.StatusRequest.create({ verbose }), o);
  }

  /** Returns the new pod sandbox id. */
  async runPodSandbox(config: v1.PodSandboxConfig, runtimeHandler = '', o?: CallOptions): Promise<string> {
    const r = await this.call('RunPodSandbox', v1.RunPodSandboxRequest, v1.RunPodSandboxResponse, v1.RunPodSandboxRequest.create({ config, runtimeHandler }), o);
    return r.podSandboxId;
  }

  async stopPodSandbox(podSandboxId: string, o?: CallOptions): Promise<void> {
    await this.call('StopPodSandbox', v1.StopPodSandboxRequest, v1.StopPodSandboxResponse, v1.StopPodSandboxRequest.create({ podSandboxId }), o);
  }

  async removePodSandbox(podSandboxId: string, o?: CallOptions): Promise<void> {
    await this.call('RemovePodSandbox', v1.RemovePodSandboxRequest, v1.RemovePodSandboxResponse, v1.RemovePodSandboxRequest.create({ podSandboxId }), o);
  }

  podSandboxStatus(podSandboxId: string, verbose = false, o?: CallOptions): Promise<v1.PodSandboxStatusResponse> {
    return this.call('PodSandboxStatus', v1.PodSandboxStatusRequest, v1.PodSandboxStatusResponse, v1.PodSandboxStatusRequest.create({ podSandboxId, verbose }), o);
  }

  async listPodSandbox(filter?: v1.PodSandboxFilter.$Properties, o?: CallOptions): Promise<v1.PodSandbox[]> {
    const req = v1.ListPodSandboxRequest.create(filter ? { filter: v1.PodSandboxFilter.create(filter) } : {});
    const r = await this.call('ListPodSandbox', v1.ListPodSandboxRequest, v1.ListPodSandboxResponse, req, o);
    return r.items as v1.PodSandbox[];
  }

  /** Returns the new container id. */
  async createContainer(podSandboxId: string, config: v1.ContainerConfig, sandboxConfig: v1.PodSandboxConfig, o?: CallOptions): Promise<string> {
    const req = v1.CreateContainerRequest.create({ podSandboxId, config, sandboxConfig });
    const r = await this.call('CreateContainer', v1.CreateContainerRequest, v1.CreateContainerResponse, req, o);
    return r.containerId;
  }

  async startContainer(containerId: string, o?: CallOptions): Promise<void> {
    await this.call('StartContainer', v1.StartContainerRequest, v1.StartContainerResponse, v1.StartContainerRequest.create({ containerId }), o);
  }

  /** `timeoutSec`: grace period before SIGKILL (0: kill at once). The call's deadline is extended by it. */
  async stopContainer(containerId: string, timeoutSec = 0, o?: CallOptions): Promise<void> {
    const req = v1.StopContainerRequest.create({ containerId, timeout: timeoutSec });
    await this.call('StopContainer', v1.StopContainerRequest, v1.StopContainerResponse, req, {
      timeoutMs: (o?.timeoutMs ?? this.timeoutMs) + timeoutSec * 1000,
    });
  }

  async removeContainer(containerId: string, o?: CallOptions): Promise<void> {
    await this.call('RemoveContainer', v1.RemoveContainerRequest, v1.RemoveContainerResponse, v1.RemoveContainerRequest.create({ containerId }), o);
  }

  async listContainers(filter?: v1.ContainerFilter.$Properties, o?: CallOptions): Promise<v1.Container[]> {
    const req = v1.ListContainersRequest.create(filter ? { filter: v1.ContainerFilter.create(filter) } : {});
    const r = await this.call('ListContainers', v1.ListContainersRequest, v1.ListContainersResponse, req, o);
    return r.containers as v1.Container[];
  }

  containerStatus(containerId: string, verbose = false, o?: CallOptions): Promise<v1.ContainerStatusResponse> {
    return this.call('ContainerStatus', v1.ContainerStatusRequest, v1.ContainerStatusResponse, v1.ContainerStatusRequest.create({ containerId, verbose }), o);
  }

  /**
   * Run `cmd` in the container and wait for it. `timeoutSec` (0: none) is the
   * runtime's limit on the command; the call's deadline is that plus the
   * client's timeout, or none when the command has no limit.
   */
  execSync(containerId: string, cmd: string[], timeoutSec = 0, o?: CallOptions): Promise<v1.ExecSyncResponse> {
    const req = v1.ExecSyncRequest.create({ containerId, cmd, timeout: timeoutSec });
    const timeoutMs = o?.timeoutMs ?? (timeoutSec > 0 ? timeoutSec * 1000 + this.timeoutMs : Infinity);
    return this.call('ExecSync', v1.ExecSyncRequest, v1.ExecSyncResponse, req, { timeoutMs });
  }

  // --- images ----------------------------------------------------------------

  async listImages(filter?: string, o?: CallOptions): Promise<v1.Image[]> {
    const req = v1.ListImagesRequest.create(filter ? { filter: { image: { image: filter } } } : {});
    const r = await this.icall('ListImages', v1.ListImagesRequest, v1.ListImagesResponse, req, o);
    return r.images as v1.Image[];
  }

  /** The image, or null when the runtime does not have it. */
  async imageStatus(image: string, o?: CallOptions): Promise<v1.Image | null> {
    const r = await this.icall('ImageStatus', v1.ImageStatusRequest, v1.ImageStatusResponse, v1.ImageStatusRequest.create({ image: { image } }), o);
    return (r.image as v1.Image | null | undefined) ?? null;
  }

  /** Returns the image reference (id) the runtime resolved. Pulls have no default deadline. */
  async pullImage(image: string, sandboxConfig?: v1.PodSandboxConfig, o?: CallOptions): Promise<string> {
    const req = v1.PullImageRequest.create({ image: { image }, ...(sandboxConfig ? { sandboxConfig } : {}) });
    const r = await this.icall('PullImage', v1.PullImageRequest, v1.PullImageResponse, req, { timeoutMs: o?.timeoutMs ?? Infinity });
    return r.imageRef;
  }

  async removeImage(image: string, o?: CallOptions): Promise<void> {
    await this.icall('RemoveImage', v1.RemoveImageRequest, v1.RemoveImageResponse, v1.RemoveImageRequest.create({ image: { image } }), o);
  }

  close(): void {
    this.rt.close();
    if (this.img !== this.rt) this.img.close();
  }
}
