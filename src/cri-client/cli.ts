// kata-crictl: crictl's commands, flags and input files on our CRI client.
// `run(argv, io)` is the whole program (main.ts wires it to the process); it
// resolves to the exit code and never calls process.exit.

import { readFile, open } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs, usage, UsageError, type CommandSpec, type FlagSpec, type FlagValues } from './args.js';
import { ConnectError, CriClient, CriError, DEFAULT_ENDPOINT, DEFAULT_TIMEOUT_MS, v1 } from './client.js';
import {
  containerStateName,
  createdAgo,
  formatFields,
  formatTable,
  humanSize,
  int64,
  nsToRfc3339,
  podStateName,
  splitRepoTag,
  truncateId,
} from './format.js';
import { decodeMessage, InputError, parseJson, type MessageType } from './input.js';
import { renderCriLog, splitLines, tailLines } from './logs.js';

export const VERSION = '0.1.0';

export interface Io {
  env: NodeJS.ProcessEnv;
  /** Write to stdout / stderr; resolve when the data is handed over. */
  out(data: string | Uint8Array): void | Promise<void>;
  err(data: string | Uint8Array): void | Promise<void>;
  /** Clock for "CREATED … ago" (tests pin it). */
  now?: () => number;
}

// ---------------------------------------------------------------------------
// flags and commands

const output = (def: string, values: string[]): FlagSpec => ({
  name: 'output',
  short: 'o',
  type: 'string',
  default: def,
  arg: values.join('|'),
  help: 'Output format',
});
const quiet: FlagSpec = { name: 'quiet', short: 'q', type: 'bool', help: 'Only print IDs' };
const noTrunc: FlagSpec = { name: 'no-trunc', type: 'bool', help: 'Do not truncate output' };
const label: FlagSpec = { name: 'label', type: 'strings', arg: 'key=value', help: 'Filter by label (repeatable)' };
const latest: FlagSpec = { name: 'latest', short: 'l', type: 'bool', help: 'Show the most recently created only' };
const last: FlagSpec = { name: 'last', short: 'n', type: 'int', arg: 'N', help: 'Show the N most recently created' };

export const GLOBAL_FLAGS: FlagSpec[] = [
  {
    name: 'runtime-endpoint',
    short: 'r',
    type: 'string',
    arg: 'ENDPOINT',
    help: `Runtime endpoint ($CONTAINER_RUNTIME_ENDPOINT, default ${DEFAULT_ENDPOINT})`,
  },
  { name: 'image-endpoint', short: 'i', type: 'string', arg: 'ENDPOINT', help: 'Image endpoint ($IMAGE_SERVICE_ENDPOINT, default: the runtime endpoint)' },
  { name: 'timeout', short: 't', type: 'duration', arg: 'DURATION', help: 'Timeout of each call to the runtime, e.g. 10s (default 10s)' },
  { name: 'debug', short: 'D', type: 'bool', help: 'Accepted for crictl compatibility (no effect)' },
  { name: 'version', short: 'v', type: 'bool', help: 'Print the version of kata-crictl' },
];

export const COMMANDS: CommandSpec[] = [
  { name: 'version', synopsis: '', summary: 'Display runtime version information', flags: [output('table', ['json', 'table'])], minArgs: 0, maxArgs: 0 },
  { name: 'info', synopsis: '', summary: 'Display information of the container runtime (Status, verbose)', flags: [output('json', ['json'])], minArgs: 0, maxArgs: 0 },
  {
    name: 'runp',
    synopsis: 'POD-CONFIG.json',
    summary: 'Run a new pod sandbox; prints its id',
    flags: [{ name: 'runtime', short: 'r', type: 'string', arg: 'HANDLER', help: 'Runtime handler (e.g. runc, kata); default: the runtime\'s default' }],
    minArgs: 1,
    maxArgs: 1,
  },
  {
    name: 'create',
    synopsis: 'POD-ID CONTAINER-CONFIG.json POD-CONFIG.json',
    summary: 'Create a new container in a pod; prints its id',
    flags: [
      { name: 'no-pull', type: 'bool', help: 'Never pull the image (fail if the runtime does not have it)' },
      { name: 'with-pull', type: 'bool', help: 'Always pull the image (default: pull only when the runtime does not have it)' },
    ],
    minArgs: 3,
    maxArgs: 3,
  },
  { name: 'start', synopsis: 'CONTAINER-ID...', summary: 'Start one or more created containers', flags: [], minArgs: 1 },
  {
    name: 'stop',
    synopsis: 'CONTAINER-ID...',
    summary: 'Stop one or more running containers',
    flags: [{ name: 'timeout', short: 't', type: 'int', default: 0, arg: 'SECONDS', help: 'Seconds to wait before killing the container' }],
    minArgs: 1,
  },
  {
    name: 'rm',
    synopsis: 'CONTAINER-ID...',
    summary: 'Remove one or more containers',
    flags: [
      { name: 'force', short: 'f', type: 'bool', help: 'Stop running containers first' },
      { name: 'all', short: 'a', type: 'bool', help: 'Remove all containers' },
    ],
    minArgs: 0,
  },
  {
    name: 'ps',
    synopsis: '',
    summary: 'List containers (running only, unless -a)',
    flags: [
      { name: 'all', short: 'a', type: 'bool', help: 'Show all containers' },
      { name: 'id', type: 'string', arg: 'ID', help: 'Filter by container id' },
      { name: 'pod', short: 'p', type: 'string', arg: 'POD-ID', help: 'Filter by pod id' },
      { name: 'name', type: 'string', arg: 'REGEX', help: 'Filter by container name (regular expression)' },
      { name: 'state', short: 's', type: 'string', arg: 'STATE', help: 'Filter by state: created, running, exited, unknown' },
      label,
      quiet,
      noTrunc,
      output('table', ['json', 'table']),
      latest,
      last,
    ],
    minArgs: 0,
    maxArgs: 0,
  },
  {
    name: 'pods',
    synopsis: '',
    summary: 'List pod sandboxes',
    flags: [
      { name: 'id', type: 'string', arg: 'ID', help: 'Filter by pod id' },
      { name: 'name', type: 'string', arg: 'REGEX', help: 'Filter by pod name (regular expression)' },
      { name: 'namespace', type: 'string', arg: 'REGEX', help: 'Filter by pod namespace (regular expression)' },
      { name: 'state', short: 's', type: 'string', arg: 'STATE', help: 'Filter by state: ready, notready' },
      label,
      quiet,
      noTrunc,
      output('table', ['json', 'table']),
      latest,
      last,
    ],
    minArgs: 0,
    maxArgs: 0,
  },
  { name: 'inspect', synopsis: 'CONTAINER-ID...', summary: 'Display the status of one or more containers', flags: [output('json', ['json', 'table'])], minArgs: 1 },
  { name: 'inspectp', synopsis: 'POD-ID...', summary: 'Display the status of one or more pods', flags: [output('json', ['json', 'table'])], minArgs: 1 },
  { name: 'stopp', synopsis: 'POD-ID...', summary: 'Stop one or more pods', flags: [], minArgs: 1 },
  {
    name: 'rmp',
    synopsis: 'POD-ID...',
    summary: 'Remove one or more pods',
    flags: [
      { name: 'force', short: 'f', type: 'bool', help: 'Stop the pods first' },
      { name: 'all', short: 'a', type: 'bool', help: 'Remove all pods' },
    ],
    minArgs: 0,
  },
  {
    name: 'exec',
    synopsis: 'CONTAINER-ID COMMAND [ARG...]',
    summary: 'Run a command in a running container (ExecSync) and exit with its exit code',
    flags: [
      { name: 'sync', short: 's', type: 'bool', help: 'Run synchronously (the only mode: accepted for crictl compatibility)' },
      { name: 'timeout', type: 'int', default: 0, arg: 'SECONDS', help: 'Kill the command after this many seconds (0: no limit)' },
      { name: 'interactive', short: 'i', type: 'bool', help: 'Not supported (needs the streaming Exec API)' },
      { name: 'tty', short: 't', type: 'bool', help: 'Not supported (needs the streaming Exec API)' },
    ],
    minArgs: 2,
    stopAtFirstArg: true,
  },
  {
    name: 'logs',
    synopsis: 'CONTAINER-ID',
    summary: "Print a container's logs (read from its CRI log file)",
    flags: [
      { name: 'tail', type: 'int', default: -1, arg: 'N', help: 'Only the last N lines (-1: all)' },
      { name: 'follow', short: 'f', type: 'bool', help: 'Keep printing new output until the container exits' },
      { name: 'timestamps', short: 't', type: 'bool', help: 'Show timestamps' },
    ],
    minArgs: 1,
    maxArgs: 1,
  },
  {
    name: 'images',
    aliases: ['image', 'img'],
    synopsis: '[IMAGE]',
    summary: 'List images',
    flags: [quiet, noTrunc, output('table', ['json', 'table'])],
    minArgs: 0,
    maxArgs: 1,
  },
  { name: 'pull', synopsis: 'IMAGE', summary: 'Pull an image', flags: [], minArgs: 1, maxArgs: 1 },
  { name: 'rmi', synopsis: 'IMAGE...', summary: 'Remove one or more images', flags: [], minArgs: 1 },
];

// ---------------------------------------------------------------------------
// errors

/** Go's names of gRPC codes, as in "rpc error: code = NotFound desc = …". */
const GO_CODE_NAMES: Record<number, string> = {
  0: 'OK', 1: 'Canceled', 2: 'Unknown', 3: 'InvalidArgument', 4: 'DeadlineExceeded', 5: 'NotFound', 6: 'AlreadyExists',
  7: 'PermissionDenied', 8: 'ResourceExhausted', 9: 'FailedPrecondition', 10: 'Aborted', 11: 'OutOfRange',
  12: 'Unimplemented', 13: 'Internal', 14: 'Unavailable', 15: 'DataLoss', 16: 'Unauthenticated',
};

/** An error with the context crictl gives ("run pod sandbox: rpc error: code = … desc = …"). */
export class CliError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CliError';
  }
}

export function describeError(what: string, e: unknown): string {
  if (e instanceof ConnectError) return e.message;
  if (e instanceof CriError) return `${what}: rpc error: code = ${GO_CODE_NAMES[e.code] ?? e.code} desc = ${e.details}`;
  return `${what}: ${(e as Error)?.message ?? String(e)}`;
}

async function attempt<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof ConnectError) throw e;
    throw new CliError(describeError(what, e));
  }
}

// ---------------------------------------------------------------------------
// JSON output (protobuf JSON mapping, as crictl's jsonpb with EmitDefaults)

interface JsonType<T> {
  toObject(m: T, o?: object): { [k: string]: unknown };
}

export function toJson<T>(type: JsonType<T>, m: T): { [k: string]: unknown } {
  return type.toObject(m, { longs: String, enums: String, bytes: String, defaults: true, arrays: true, objects: true });
}

const pretty = (v: unknown) => JSON.stringify(v, null, 2) + '\n';

/** A verbose info map: values are JSON documents (containerd's "info"); parse those that are. */
function parseInfo(info: { [k: string]: string } | null | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(info ?? {})) {
    try {
      out[k] = JSON.parse(v);
    } catch {
      out[k] = v;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// input files

async function loadConfig<T>(type: MessageType<T>, path: string, io: Io): Promise<T> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new CliError(`cannot read ${path}: ${(e as Error).message}`);
  }
  const { message, unknownFields } = decodeMessage(type, parseJson(text, path), path);
  for (const f of unknownFields) await io.err(`kata-crictl: warning: ${path}: unknown field "${f}" ignored\n`);
  return message;
}

// ---------------------------------------------------------------------------
// filters

function labelSelector(labels: string[]): Record<string, string> | undefined {
  if (!labels.length) return undefined;
  const sel: Record<string, string> = {};
  for (const l of labels) {
    const eq = l.indexOf('=');
    if (eq <= 0) throw new UsageError(`invalid --label "${l}": key=value expected`);
    sel[l.slice(0, eq)] = l.slice(eq + 1);
  }
  return sel;
}

function regex(flag: string, v: string | undefined): RegExp | undefined {
  if (!v) return undefined;
  try {
    return new RegExp(v);
  } catch (e) {
    throw new UsageError(`invalid --${flag} regular expression: ${(e as Error).message}`);
  }
}

const CONTAINER_STATE_FLAG: Record<string, number> = { created: 0, running: 1, exited: 2, unknown: 3 };
const POD_STATE_FLAG: Record<string, number> = { ready: 0, notready: 1 };

function stateFlag(map: Record<string, number>, v: string | undefined): number | undefined {
  if (!v) return undefined;
  const k = v.toLowerCase().replace(/^(container_|sandbox_)/, '').replace(/[_-]/g, '');
  const s = map[k];
  if (s === undefined) throw new UsageError(`invalid --state "${v}": one of ${Object.keys(map).join(', ')}`);
  return s;
}

/** Newest first (crictl's order), then --latest / --last. */
function newestFirst<T extends { createdAt: unknown }>(items: T[], f: FlagValues): T[] {
  const sorted = [...items].sort((a, b) => {
    const d = int64(b.createdAt) - int64(a.createdAt);
    return d > 0n ? 1 : d < 0n ? -1 : 0;
  });
  if (f.latest) return sorted.slice(0, 1);
  const n = f.last as number | undefined;
  return n !== undefined && n > 0 ? sorted.slice(0, n) : sorted;
}

// ---------------------------------------------------------------------------
// commands

interface Ctx {
  io: Io;
  client: CriClient;
  flags: FlagValues;
  args: string[];
  now: () => number;
}

type Handler = (c: Ctx) => Promise<number>;

const checkOutput = (f: FlagValues, allowed: string[]) => {
  const o = String(f.output);
  if (!allowed.includes(o)) throw new UsageError(`unsupported output format "${o}": ${allowed.join(' or ')}`);
  return o;
};

const handlers: Record<string, Handler> = {
  async version({ io, client, flags }) {
    const o = checkOutput(flags, ['json', 'table']);
    const r = await attempt('get the runtime version', () => client.version());
    if (o === 'json') await io.out(pretty(toJson(v1.VersionResponse, r)));
    else {
      await io.out(`Version:  ${r.version}\nRuntimeName:  ${r.runtimeName}\nRuntimeVersion:  ${r.runtimeVersion}\nRuntimeApiVersion:  ${r.runtimeApiVersion}\n`);
    }
    return 0;
  },

  async info({ io, client, flags }) {
    checkOutput(flags, ['json']);
    const r = await attempt('get the runtime status', () => client.status(true));
    await io.out(pretty({ status: toJson(v1.RuntimeStatus, r.status as v1.RuntimeStatus), ...parseInfo(r.info) }));
    return 0;
  },

  async runp({ io, client, flags, args }) {
    const config = await loadConfig(v1.PodSandboxConfig, args[0]!, io);
    const id = await attempt('run pod sandbox', () => client.runPodSandbox(config, (flags.runtime as string | undefined) ?? '', { timeoutMs: client.timeoutMs * 2 }));
    await io.out(id + '\n');
    return 0;
  },

  async create({ io, client, flags, args }) {
    const [podId, ctrPath, podPath] = args as [string, string, string];
    const config = await loadConfig(v1.ContainerConfig, ctrPath, io);
    const sandboxConfig = await loadConfig(v1.PodSandboxConfig, podPath, io);
    const image = config.image?.image ?? '';
    if (flags['no-pull'] && flags['with-pull']) throw new UsageError('--no-pull and --with-pull exclude each other');
    if (image && !flags['no-pull']) {
      const have = flags['with-pull'] ? null : await attempt(`get the status of image "${image}"`, () => client.imageStatus(image));
      if (!have) await attempt(`pull image "${image}"`, () => client.pullImage(image, sandboxConfig));
    }
    const id = await attempt('create container', () => client.createContainer(podId, config, sandboxConfig));
    await io.out(id + '\n');
    return 0;
  },

  async start({ io, client, args }) {
    for (const id of args) {
      await attempt(`start container "${id}"`, () => client.startContainer(id));
      await io.out(id + '\n');
    }
    return 0;
  },

  async stop({ io, client, flags, args }) {
    const t = flags.timeout as number;
    if (t < 0) throw new UsageError('--timeout must not be negative');
    for (const id of args) {
      await attempt(`stop container "${id}"`, () => client.stopContainer(id, t));
      await io.out(id + '\n');
    }
    return 0;
  },

  async rm({ io, client, flags, args }) {
    let ids = args;
    if (flags.all) {
      if (args.length) throw new UsageError('rm: give container ids or --all, not both');
      ids = (await attempt('list containers', () => client.listContainers())).map((c) => c.id);
    } else if (!ids.length) throw new UsageError('"rm" needs CONTAINER-ID... or --all');
    let failed = 0;
    for (const id of ids) {
      try {
        if (flags.force) {
          const st = await attempt(`get the status of container "${id}"`, () => client.containerStatus(id));
          if (st.status?.state === v1.ContainerState.CONTAINER_RUNNING) {
            await attempt(`stop container "${id}"`, () => client.stopContainer(id, 0));
          }
        }
        await attempt(`remove container "${id}"`, () => client.removeContainer(id));
        await io.out(id + '\n');
      } catch (e) {
        if (e instanceof ConnectError) throw e;
        failed++;
        await io.err(`kata-crictl: ${(e as Error).message}\n`);
      }
    }
    return failed ? 1 : 0;
  },

  async ps({ io, client, flags, now }) {
    const o = checkOutput(flags, ['json', 'table']);
    let state = stateFlag(CONTAINER_STATE_FLAG, flags.state as string | undefined);
    if (state === undefined && !flags.all && !flags.id) state = v1.ContainerState.CONTAINER_RUNNING;
    const filter: v1.ContainerFilter.$Properties = {};
    if (flags.id) filter.id = flags.id as string;
    if (flags.pod) filter.podSandboxId = flags.pod as string;
    if (state !== undefined) filter.state = { state };
    const sel = labelSelector(flags.label as string[]);
    if (sel) filter.labelSelector = sel;
    const nameRe = regex('name', flags.name as string | undefined);
    let list = await attempt('list containers', () => client.listContainers(filter));
    if (nameRe) list = list.filter((c) => nameRe.test(c.metadata?.name ?? ''));
    list = newestFirst(list, flags);
    if (o === 'json') {
      await io.out(pretty({ containers: list.map((c) => toJson(v1.Container, c)) }));
      return 0;
    }
    if (flags.quiet) {
      await io.out(list.map((c) => c.id + '\n').join(''));
      return 0;
    }
    const trunc = !flags['no-trunc'];
    const podNames = new Map<string, string>();
    if (list.length) {
      for (const p of await attempt('list pod sandboxes', () => client.listPodSandbox())) podNames.set(p.id, p.metadata?.name ?? '');
    }
    const rows = [['CONTAINER', 'IMAGE', 'CREATED', 'STATE', 'NAME', 'ATTEMPT', 'POD ID', 'POD']];
    for (const c of list) {
      let image = c.image?.image || c.imageRef;
      if (trunc && image.startsWith('sha256:')) image = truncateId(image, 'sha256:');
      rows.push([
        trunc ? truncateId(c.id) : c.id,
        image,
        createdAgo(int64(c.createdAt), now()),
        containerStateName(c.state),
        c.metadata?.name ?? '',
        String(c.metadata?.attempt ?? 0),
        trunc ? truncateId(c.podSandboxId) : c.podSandboxId,
        podNames.get(c.podSandboxId) ?? 'unknown',
      ]);
    }
    await io.out(formatTable(rows));
    return 0;
  },

  async pods({ io, client, flags, now }) {
    const o = checkOutput(flags, ['json', 'table']);
    const filter: v1.PodSandboxFilter.$Properties = {};
    if (flags.id) filter.id = flags.id as string;
    const state = stateFlag(POD_STATE_FLAG, flags.state as string | undefined);
    if (state !== undefined) filter.state = { state };
    const sel = labelSelector(flags.label as string[]);
    if (sel) filter.labelSelector = sel;
    const nameRe = regex('name', flags.name as string | undefined);
    const nsRe = regex('namespace', flags.namespace as string | undefined);
    let list = await attempt('list pod sandboxes', () => client.listPodSandbox(filter));
    if (nameRe) list = list.filter((p) => nameRe.test(p.metadata?.name ?? ''));
    if (nsRe) list = list.filter((p) => nsRe.test(p.metadata?.namespace ?? ''));
    list = newestFirst(list, flags);
    if (o === 'json') {
      await io.out(pretty({ items: list.map((p) => toJson(v1.PodSandbox, p)) }));
      return 0;
    }
    if (flags.quiet) {
      await io.out(list.map((p) => p.id + '\n').join(''));
      return 0;
    }
    const trunc = !flags['no-trunc'];
    const rows = [['POD ID', 'CREATED', 'STATE', 'NAME', 'NAMESPACE', 'ATTEMPT', 'RUNTIME']];
    for (const p of list) {
      rows.push([
        trunc ? truncateId(p.id) : p.id,
        createdAgo(int64(p.createdAt), now()),
        podStateName(p.state),
        p.metadata?.name ?? '',
        p.metadata?.namespace ?? '',
        String(p.metadata?.attempt ?? 0),
        p.runtimeHandler || '(default)',
      ]);
    }
    await io.out(formatTable(rows));
    return 0;
  },

  async inspect({ io, client, flags, args }) {
    const o = checkOutput(flags, ['json', 'table']);
    for (const id of args) {
      const r = await attempt(`get the status of container "${id}"`, () => client.containerStatus(id, o === 'json'));
      const s = r.status as v1.ContainerStatus;
      if (o === 'json') {
        await io.out(pretty({ status: toJson(v1.ContainerStatus, s), ...parseInfo(r.info) }));
        continue;
      }
      const fields: [string, string][] = [
        ['ID', s.id],
        ['Name', s.metadata?.name ?? ''],
        ['Attempt', String(s.metadata?.attempt ?? 0)],
        ['State', v1.ContainerState[s.state] ?? String(s.state)],
        ['Created', nsToRfc3339(int64(s.createdAt))],
        ['Started', nsToRfc3339(int64(s.startedAt))],
        ['Finished', nsToRfc3339(int64(s.finishedAt))],
        ['Exit Code', String(s.exitCode)],
        ['Reason', s.reason],
        ['Message', s.message],
        ['Image', s.image?.image ?? ''],
        ['ImageRef', s.imageRef],
        ['Log Path', s.logPath],
      ];
      await io.out(formatFields(fields.filter(([, v]) => v !== '')));
    }
    return 0;
  },

  async inspectp({ io, client, flags, args }) {
    const o = checkOutput(flags, ['json', 'table']);
    for (const id of args) {
      const r = await attempt(`get the status of pod sandbox "${id}"`, () => client.podSandboxStatus(id, o === 'json'));
      const s = r.status as v1.PodSandboxStatus;
      if (o === 'json') {
        await io.out(pretty({ status: toJson(v1.PodSandboxStatus, s), ...parseInfo(r.info) }));
        continue;
      }
      const fields: [string, string][] = [
        ['ID', s.id],
        ['Name', s.metadata?.name ?? ''],
        ['UID', s.metadata?.uid ?? ''],
        ['Namespace', s.metadata?.namespace ?? ''],
        ['Attempt', String(s.metadata?.attempt ?? 0)],
        ['Status', v1.PodSandboxState[s.state] ?? String(s.state)],
        ['Created', nsToRfc3339(int64(s.createdAt))],
        ['IP Addresses', [s.network?.ip ?? '', ...(s.network?.additionalIps ?? []).map((a) => a.ip ?? '')].filter(Boolean).join(', ')],
        ['Runtime Handler', s.runtimeHandler],
      ];
      await io.out(formatFields(fields.filter(([, v]) => v !== '')));
    }
    return 0;
  },

  async stopp({ io, client, args }) {
    for (const id of args) {
      await attempt(`stop pod sandbox "${id}"`, () => client.stopPodSandbox(id));
      await io.out(`Stopped sandbox ${id}\n`);
    }
    return 0;
  },

  async rmp({ io, client, flags, args }) {
    let ids = args;
    if (flags.all) {
      if (args.length) throw new UsageError('rmp: give pod ids or --all, not both');
      ids = (await attempt('list pod sandboxes', () => client.listPodSandbox())).map((p) => p.id);
    } else if (!ids.length) throw new UsageError('"rmp" needs POD-ID... or --all');
    let failed = 0;
    for (const id of ids) {
      try {
        if (flags.force) await attempt(`stop pod sandbox "${id}"`, () => client.stopPodSandbox(id));
        await attempt(`remove pod sandbox "${id}"`, () => client.removePodSandbox(id));
        await io.out(`Removed sandbox ${id}\n`);
      } catch (e) {
        if (e instanceof ConnectError) throw e;
        failed++;
        await io.err(`kata-crictl: ${(e as Error).message}\n`);
      }
    }
    return failed ? 1 : 0;
  },

  async exec({ io, client, flags, args }) {
    if (flags.interactive || flags.tty) {
      throw new UsageError('exec -i/-t need the streaming Exec API, which kata-crictl does not implement: use exec -s without -i/-t');
    }
    const t = flags.timeout as number;
    if (t < 0) throw new UsageError('--timeout must not be negative');
    const [id, ...cmd] = args as [string, ...string[]];
    const r = await attempt('execing command in container synchronously', () => client.execSync(id, cmd, t));
    if (r.stdout?.length) await io.out(r.stdout);
    if (r.stderr?.length) await io.err(r.stderr);
    return r.exitCode;
  },

  async logs(c) {
    const { io, client, flags, args } = c;
    const id = args[0]!;
    const st = await attempt(`get the status of container "${id}"`, () => client.containerStatus(id));
    const path = st.status?.logPath ?? '';
    if (!path) {
      throw new CliError(`container "${id}" has no log file (the pod config needs "log_directory" and the container config "log_path")`);
    }
    const opts = { timestamps: !!flags.timestamps };
    const emit = async (lines: string[]) => {
      for (const o of renderCriLog(lines, opts)) await (o.stream === 'stderr' ? io.err(o.text) : io.out(o.text));
    };
    let fh;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      throw new CliError(`cannot open the log file of container "${id}": ${(e as Error).message}`);
    }
    try {
      let pos = 0;
      const readNew = async (): Promise<string> => {
        const size = (await fh.stat()).size;
        if (size < pos) pos = 0; // rotated/truncated
        if (size === pos) return '';
        const buf = Buffer.alloc(size - pos);
        const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
        pos += bytesRead;
        return buf.subarray(0, bytesRead).toString('utf8');
      };
      const first = splitLines(await readNew());
      await emit(tailLines(first.lines, flags.tail as number));
      let rest = first.rest;
      if (!flags.follow) {
        if (rest) await emit([rest]);
        return 0;
      }
      for (;;) {
        const running = (await attempt(`get the status of container "${id}"`, () => client.containerStatus(id))).status?.state === v1.ContainerState.CONTAINER_RUNNING;
        const chunk = splitLines(rest + (await readNew()));
        await emit(chunk.lines);
        rest = chunk.rest;
        if (!running) {
          if (rest) await emit([rest]);
          return 0;
        }
        await sleep(200);
      }
    } finally {
      await fh.close();
    }
  },

  async images({ io, client, flags, args }) {
    const o = checkOutput(flags, ['json', 'table']);
    const list = await attempt('list images', () => client.listImages(args[0]));
    if (o === 'json') {
      await io.out(pretty({ images: list.map((i) => toJson(v1.Image, i)) }));
      return 0;
    }
    if (flags.quiet) {
      await io.out(list.map((i) => i.id + '\n').join(''));
      return 0;
    }
    const trunc = !flags['no-trunc'];
    const rows = [['IMAGE', 'TAG', 'IMAGE ID', 'SIZE']];
    for (const img of list) {
      const id = trunc ? truncateId(img.id, 'sha256:') : img.id;
      const size = humanSize(Number(int64(img.size)));
      const tags = img.repoTags.length ? img.repoTags : img.repoDigests.length ? img.repoDigests : ['<none>'];
      for (const t of tags) {
        const [repo, tag] = splitRepoTag(t);
        rows.push([repo, tag, id, size]);
      }
    }
    await io.out(formatTable(rows));
    return 0;
  },

  async pull({ io, client, args }) {
    const ref = await attempt(`pull image "${args[0]}"`, () => client.pullImage(args[0]!));
    await io.out(`Image is up to date for ${ref}\n`);
    return 0;
  },

  async rmi({ io, client, args }) {
    for (const image of args) {
      await attempt(`remove image "${image}"`, () => client.removeImage(image));
      await io.out(`Deleted: ${image}\n`);
    }
    return 0;
  },
};

// ---------------------------------------------------------------------------
// entry

/** The runtime endpoint from the flag, then $CONTAINER_RUNTIME_ENDPOINT, then the default. */
export function resolveEndpoints(global: FlagValues, env: NodeJS.ProcessEnv): { endpoint: string; imageEndpoint: string } {
  const endpoint = (global['runtime-endpoint'] as string | undefined) || env.CONTAINER_RUNTIME_ENDPOINT || DEFAULT_ENDPOINT;
  const imageEndpoint = (global['image-endpoint'] as string | undefined) || env.IMAGE_SERVICE_ENDPOINT || endpoint;
  return { endpoint, imageEndpoint };
}

export async function run(argv: string[], io: Io): Promise<number> {
  let client: CriClient | undefined;
  try {
    const p = parseArgs(argv, GLOBAL_FLAGS, COMMANDS);
    if (p.global.version && !p.command) {
      await io.out(`kata-crictl version ${VERSION}\n`);
      return 0;
    }
    if (p.help || !p.command) {
      await (p.help ? io.out : io.err)(usage(GLOBAL_FLAGS, COMMANDS, p.command));
      return p.help ? 0 : 1;
    }
    const { endpoint, imageEndpoint } = resolveEndpoints(p.global, io.env);
    const timeoutMs = (p.global.timeout as number | undefined) ?? DEFAULT_TIMEOUT_MS;
    if (timeoutMs <= 0) throw new UsageError('--timeout must be positive');
    client = new CriClient({ endpoint, imageEndpoint, timeoutMs });
    return await handlers[p.command]!({ io, client, flags: p.flags, args: p.args, now: io.now ?? Date.now });
  } catch (e) {
    const msg =
      e instanceof UsageError || e instanceof CliError || e instanceof ConnectError || e instanceof InputError
        ? e.message
        : e instanceof CriError
          ? describeError(e.method, e)
          : `internal error: ${(e as Error)?.stack ?? String(e)}`;
    await io.err(`kata-crictl: ${msg}\n`);
    return 1;
  } finally {
    client?.close();
  }
}

