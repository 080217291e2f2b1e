/**
 * What containerd asks for a process's stdio, validated: pure, no I/O.
 *
 * Each of stdin/stdout/stderr from a Create/Exec request is
 * - ""                  null IO;
 * - an absolute path    a FIFO made by containerd/ctr (stdout/stderr may also
 *                       be an existing regular file, appended to, as the runc
 *                       shim does);
 * - a log URI (stdout)  `binary:///path/to/bin?k=v&flag` or `file:///abs/path`:
 *                       both stdout and stderr go there, as in containerd's
 *                       runc shim (it reads the URI from stdout only), so
 *                       stderr must then be "" or the same URI.
 * Anything else is INVALID_ARGUMENT with the field named.
 */
import { InvalidArgumentError } from '../errors/index.js';

export interface StdioConfig {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

export type StdioField = 'stdin' | 'stdout' | 'stderr';

/** A logging binary (binary://): started per process, fed stdout on fd 3 and stderr on fd 4. */
export interface BinaryLogTarget {
  kind: 'binary';
  uri: string;
  /** Absolute path of the binary. */
  path: string;
  /** argv after the binary, built from the query as containerd does. */
  args: string[];
}

/** A log file (file://): stdout and stderr appended to it. */
export interface FileLogTarget {
  kind: 'file';
  uri: string;
  /** Absolute path of the file. */
  path: string;
}

export type LogTarget = BinaryLogTarget | FileLogTarget;

export interface ParsedStdio {
  /** FIFO path, or null for no stdin. */
  stdin: string | null;
  /** FIFO (or regular file) path, or null for null IO; always null when `log` is set. */
  stdout: string | null;
  /** As stdout. */
  stderr: string | null;
  /** When set, stdout and stderr both go to this log. */
  log: LogTarget | null;
  terminal: boolean;
}

const SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):/;

/**
 * Validates a process's stdio strings. Throws InvalidArgumentError naming
 * the field (`stdout: unsupported URI scheme "http"`).
 */
export function parseStdio(cfg: StdioConfig): ParsedStdio {
  const stdin = parsePathField('stdin', cfg.stdin, false);
  const out = classify('stdout', cfg.stdout);
  const err = classify('stderr', cfg.stderr);
  if (out.kind === 'uri') {
    if (cfg.stderr !== '' && cfg.stderr !== cfg.stdout) {
      throw new InvalidArgumentError('stderr: must be empty or the same log URI as stdout when stdout is a log URI');
    }
    return { stdin, stdout: null, stderr: null, log: parseLogUri('stdout', cfg.stdout), terminal: cfg.terminal };
  }
  if (err.kind === 'uri') {
    throw new InvalidArgumentError('stderr: a log URI must be given as stdout too');
  }
  return { stdin, stdout: out.path, stderr: err.path, log: null, terminal: cfg.terminal };
}

type Classified = { kind: 'path'; path: string | null } | { kind: 'uri' };

function classify(field: StdioField, value: string): Classified {
  if (value === '' || value.startsWith('/')) return { kind: 'path', path: parsePathField(field, value, true) };
  if (SCHEME.test(value)) return { kind: 'uri' };
  throw new InvalidArgumentError(`${field}: path ${JSON.stringify(value)} is not absolute`);
}

function parsePathField(field: StdioField, value: string, uriAllowed: boolean): string | null {
  if (value === '') return null;
  if (value.includes('\0')) throw new InvalidArgumentError(`${field}: path contains a NUL byte`);
  if (!value.startsWith('/')) {
    if (!uriAllowed && SCHEME.test(value)) {
      throw new InvalidArgumentError(`${field}: must be a fifo path, not a URI (${JSON.stringify(value)})`);
    }
    throw new InvalidArgumentError(`${field}: path ${JSON.stringify(value)} is not absolute`);
  }
  return value;
}

/** Parses a binary:// or file:// URI of stdout. */
export function parseLogUri(field: StdioField, uri: string): LogTarget {
  const scheme = SCHEME.exec(uri)?.[1]?.toLowerCase() ?? '';
  if (scheme !== 'binary' && scheme !== 'file') {
    throw new InvalidArgumentError(`${field}: unsupported URI scheme ${JSON.stringify(scheme)}`);
  }
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    throw new InvalidArgumentError(`${field}: invalid URI ${JSON.stringify(uri)}`);
  }
  if (u.host !== '') {
    throw new InvalidArgumentError(`${field}: ${scheme} URI must have an empty host (${scheme}:///abs/path): ${JSON.stringify(uri)}`);
  }
  let path: string;
  try {
    path = decodeURIComponent(u.pathname);
  } catch {
    throw new InvalidArgumentError(`${field}: invalid URI ${JSON.stringify(uri)}`);
  }
  if (!path.startsWith('/') || path === '/' || path.includes('\0')) {
    throw new InvalidArgumentError(`${field}: ${scheme} URI must name an absolute path: ${JSON.stringify(uri)}`);
  }
  if (scheme === 'file') return { kind: 'file', uri, path };
  return { kind: 'binary', uri, path, args: binaryArgs(u.searchParams) };
}

/**
 * containerd's NewBinaryCmd: for each query key, the key then its first
 * value (an empty string for `?flag`, as Go's url.Query gives [""]). Keys
 * keep the order of their first appearance (Go's map order is random).
 */
export function binaryArgs(params: URLSearchParams): string[] {
  const seen = new Set<string>();
  const args: string[] = [];
  for (const [k, v] of params) {
    if (seen.has(k)) continue;
    seen.add(k);
    args.push(k, v);
  }
  return args;
}
