/**
 * The shim's command line as containerd 1.6 writes it (Go `flag` syntax):
 *
 *   containerd-shim-kata-v2 -namespace NS -address A -publish-binary P -id ID [-bundle DIR] [-debug] [start|delete]
 *
 * No action means "serve". Flags take `-name value`, `-name=value`,
 * `--name value`; booleans take `-debug` or `-debug=true|false`. Parsing stops
 * at the first argument that is not a flag (the action), as Go's does.
 */
export type ShimAction = 'start' | 'delete' | 'serve';

export interface ShimFlags {
  namespace: string;
  /** containerd's gRPC socket. */
  address: string;
  /** containerd's own binary (`containerd publish` is the fallback event path). */
  publishBinary: string;
  id: string;
  /** Only on `delete` (the cwd is the bundle otherwise). */
  bundle: string;
  debug: boolean;
  /** Print the version and exit. */
  version: boolean;
  action: ShimAction;
}

export class UsageError extends Error {
  override name = 'UsageError';
}

const STRING_FLAGS = { namespace: 'namespace', address: 'address', 'publish-binary': 'publishBinary', id: 'id', bundle: 'bundle', socket: 'socket' } as const;
const BOOL_FLAGS = { debug: 'debug', v: 'version', version: 'version' } as const;

export function parseShimArgs(argv: readonly string[]): ShimFlags {
  const out: ShimFlags = { namespace: '', address: '', publishBinary: '', id: '', bundle: '', debug: false, version: false, action: 'serve' };
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') { i++; break; }
    if (!a.startsWith('-') || a === '-') break;
    const body = a.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq >= 0 ? body.slice(0, eq) : body;
    if (name in BOOL_FLAGS) {
      const key = BOOL_FLAGS[name as keyof typeof BOOL_FLAGS];
      if (eq < 0) out[key] = true;
      else {
        const v = body.slice(eq + 1);
        if (!['true', 'false', '1', '0', 't', 'f', 'TRUE', 'FALSE', 'True', 'False'].includes(v)) throw new UsageError(`invalid boolean value ${JSON.stringify(v)} for -${name}`);
        out[key] = ['true', '1', 't', 'TRUE', 'True'].includes(v);
      }
      continue;
    }
    if (name in STRING_FLAGS) {
      const key = STRING_FLAGS[name as keyof typeof STRING_FLAGS];
      let v: string;
      if (eq >= 0) v = body.slice(eq + 1);
      else {
        if (i + 1 >= argv.length) throw new UsageError(`flag needs an argument: -${name}`);
        v = argv[++i]!;
      }
      if (key !== 'socket') out[key] = v;
      continue;
    }
    throw new UsageError(`flag provided but not defined: -${name}`);
  }
  const rest = argv.slice(i);
  if (rest.length > 1) throw new UsageError(`unexpected arguments after ${rest[0]}: ${rest.slice(1).join(' ')}`);
  if (rest.length === 1) {
    if (rest[0] !== 'start' && rest[0] !== 'delete') throw new UsageError(`unknown action ${JSON.stringify(rest[0])} (start, delete, or none to serve)`);
    out.action = rest[0];
  }
  if (!out.version) {
    if (!out.namespace) throw new UsageError('shim namespace cannot be empty (-namespace)');
    if (!out.id && out.action !== 'serve') throw new UsageError('shim id cannot be empty (-id)');
  }
  return out;
}

/** argv for the serving shim that `start` spawns. */
export function serveArgs(f: ShimFlags): string[] {
  const a = ['-namespace', f.namespace, '-address', f.address, '-publish-binary', f.publishBinary, '-id', f.id];
  if (f.debug) a.push('-debug');
  return a;
}
