/**
 * Adding this runtime to a containerd configuration file (version 2, the
 * format containerd 1.6 reads): the CRI plugin's runtime table for a handler
 * (`runtime_type`, `pod_annotations`, `options.ConfigPath`). The same text is
 * what docs/kubernetes.md shows and what the install e2e gives its private
 * containerd (a unit test keeps the doc in step).
 *
 * Idempotent and careful: a file that already has the same table is left
 * alone; one whose table differs, that is not valid TOML, or that is not
 * version 2 is refused with the reason (the file is the operator's: this
 * appends, never rewrites what is there); otherwise the table is appended,
 * after a backup of the old file.
 */
import { parse } from 'smol-toml';
import { FailedPreconditionError, InvalidArgumentError } from '../errors/index.js';

export const CRI_PLUGIN = 'io.containerd.grpc.v1.cri';
export const RUNTIME_TYPE = 'io.containerd.kata.v2';
export const POD_ANNOTATIONS = ['io.katacontainers.*'];

export interface RuntimeEntry {
  /** CRI runtime handler (RuntimeClass `handler`). */
  handler: string;
  /** The configuration.toml the handler's shims read (options.ConfigPath). */
  configPath: string;
}

function checkEntry(e: RuntimeEntry): void {
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(e.handler) || e.handler.length > 63) {
    throw new InvalidArgumentError(`handler: ${JSON.stringify(e.handler)} is not a DNS label (what a RuntimeClass handler must be)`);
  }
  if (!e.configPath.startsWith('/') || /["\\\n]/.test(e.configPath)) {
    throw new InvalidArgumentError(`config path: ${JSON.stringify(e.configPath)} must be an absolute path without quotes or backslashes`);
  }
}

/** The runtime table, as TOML text (two-space indented, as containerd's own default config). */
export function runtimeSnippet(e: RuntimeEntry): string {
  checkEntry(e);
  const t = `plugins."${CRI_PLUGIN}".containerd.runtimes.${e.handler}`;
  return [
    `[${t}]`,
    `  runtime_type = "${RUNTIME_TYPE}"`,
    `  pod_annotations = [${POD_ANNOTATIONS.map((a) => JSON.stringify(a)).join(', ')}]`,
    `[${t}.options]`,
    `  ConfigPath = "${e.configPath}"`,
    '',
  ].join('\n');
}

type Table = Record<string, unknown>;
const isTable = (v: unknown): v is Table => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The handler's table in a parsed config, if any. */
function runtimeTable(doc: Table, handler: string): Table | undefined {
  const plugins = doc['plugins'];
  const cri = isTable(plugins) ? plugins[CRI_PLUGIN] : undefined;
  const containerd = isTable(cri) ? cri['containerd'] : undefined;
  const runtimes = isTable(containerd) ? containerd['runtimes'] : undefined;
  const t = isTable(runtimes) ? runtimes[handler] : undefined;
  return isTable(t) ? t : undefined;
}

export type AddResult = { changed: false; text: string; why: string } | { changed: true; text: string };

/**
 * `text` (a containerd config, '' for none) with the runtime added. Throws
 * FAILED_PRECONDITION naming the reason for a file it must not touch.
 */
export function addRuntime(text: string, e: RuntimeEntry, file = 'config.toml'): AddResult {
  const snippet = runtimeSnippet(e);
  let doc: Table;
  try {
    doc = parse(text) as Table;
  } catch (err) {
    throw new FailedPreconditionError(`${file}: not valid TOML, left as it is: ${(err as Error).message.split('\n')[0]}`);
  }
  if (text.trim() === '') return { changed: true, text: `version = 2\n\n${snippet}` };
  if (doc['version'] !== 2) {
    throw new FailedPreconditionError(`${file}: version = ${JSON.stringify(doc['version'] ?? 1)}: only containerd's version 2 format is edited (\`containerd config migrate\` converts a version 1 file)`);
  }
  const have = runtimeTable(doc, e.handler);
  if (have) {
    const want = runtimeTable(parse(`version = 2\n${snippet}`) as Table, e.handler)!;
    const differs = Object.keys(want).filter((k) => JSON.stringify(have[k]) !== JSON.stringify(want[k]));
    if (differs.length === 0) return { changed: false, text, why: `the ${e.handler} runtime is already there` };
    throw new FailedPreconditionError(`${file}: a ${e.handler} runtime is there already, with other ${differs.join(', ')}: left as it is (edit it, or choose another --handler)`);
  }
  const out = `${text}${text.endsWith('\n') ? '' : '\n'}\n# Added by kata-ts-runtime containerd-config.\n${snippet}`;
  // What was appended must parse together with the rest (e.g. no table of the same name defined implicitly).
  try {
    parse(out);
  } catch (err) {
    throw new FailedPreconditionError(`${file}: adding the ${e.handler} runtime would make it invalid, left as it is: ${(err as Error).message.split('\n')[0]}`);
  }
  return { changed: true, text: out };
}
