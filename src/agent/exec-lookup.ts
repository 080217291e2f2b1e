/**
 * Is the container's command there? runc looks `process.args[0]` up inside
 * the container while creating it, so `ctr run … /x` fails at Create with
 * `exec: "/x": stat /x: no such file or directory` and leaves nothing. crun
 * only finds out at start. The agent does runc's check at CreateContainer,
 * on the container's root filesystem as the guest sees it: paths are
 * resolved as under chroot (absolute symlinks relative to the rootfs, `..`
 * stopping at its root), the command searched on the process's PATH.
 *
 * The spec's own mounts are not there yet at create time: a path that
 * crosses one of their destinations is "unknown" and never refused, so a
 * command living in a volume still starts (and fails at start if it really
 * is missing). Only a command that is certainly missing is refused.
 */
import { lstat, readlink, stat } from 'node:fs/promises';
import { join, posix } from 'node:path';

/** runc's and crun's PATH when the process sets none. */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const MAX_SYMLINKS = 40;

export type Lookup = { kind: 'found'; guestPath: string } | { kind: 'missing' } | { kind: 'unknown' };

function underAny(guestPath: string, dirs: readonly string[]): boolean {
  return dirs.some((d) => d === '/' || guestPath === d || guestPath.startsWith(`${d}/`));
}

/** Resolves the absolute container path `p` inside `root` (a host dir) as chroot would. */
export async function resolveInRoot(root: string, p: string, mountPoints: readonly string[] = []): Promise<Lookup> {
  let rest = p.split('/').filter((x) => x !== '');
  let cur: string[] = [];
  let links = 0;
  while (rest.length > 0) {
    const name = rest.shift()!;
    if (name === '.') continue;
    if (name === '..') {
      cur.pop();
      continue;
    }
    const next = [...cur, name];
    const guestPath = `/${next.join('/')}`;
    if (underAny(guestPath, mountPoints)) return { kind: 'unknown' };
    let st;
    try {
      st = await lstat(join(root, ...next));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      return code === 'ENOENT' || code === 'ENOTDIR' ? { kind: 'missing' } : { kind: 'unknown' };
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_SYMLINKS) return { kind: 'missing' };
      const target = await readlink(join(root, ...next));
      rest = [...target.split('/').filter((x) => x !== ''), ...rest];
      if (target.startsWith('/')) cur = [];
      continue;
    }
    if (rest.length > 0 && !st.isDirectory()) return { kind: 'missing' };
    cur = next;
  }
  return { kind: 'found', guestPath: `/${cur.join('/')}` };
}

/** A regular file with an execute bit, at a resolved path (unknown if it cannot be told). */
async function isExecutable(root: string, guestPath: string): Promise<boolean | undefined> {
  try {
    const st = await stat(join(root, guestPath));
    return st.isFile() && (st.mode & 0o111) !== 0;
  } catch {
    return undefined;
  }
}

/**
 * Looks the command up as runc does: a name with a slash is a path (relative
 * to `cwd`), a bare name is searched on `pathEnv`. Returns the reason to
 * refuse it (runc's wording), or undefined when it is there or cannot be told.
 */
export async function missingCommand(root: string, command: string, opts: { pathEnv?: string; cwd?: string; mountPoints?: readonly string[] } = {}): Promise<string | undefined> {
  const mounts = opts.mountPoints ?? [];
  const cwd = opts.cwd && opts.cwd.startsWith('/') ? opts.cwd : '/';
  if (command === '') return 'exec: "": the command is empty';
  if (command.includes('/')) {
    const r = await resolveInRoot(root, posix.resolve(cwd, command), mounts);
    if (r.kind === 'missing') return `exec: "${command}": stat ${command}: no such file or directory`;
    return undefined;
  }
  const dirs = (opts.pathEnv ?? DEFAULT_PATH).split(':').map((d) => (d === '' ? '.' : d));
  for (const d of dirs) {
    const r = await resolveInRoot(root, posix.resolve(cwd, d, command), mounts);
    if (r.kind === 'unknown') return undefined;
    if (r.kind === 'found' && (await isExecutable(root, r.guestPath)) !== false) return undefined;
  }
  return `exec: "${command}": executable file not found in $PATH`;
}

/** The spec's PATH (last PATH= wins, as in execve's environment lookup by runc), if any. */
export function pathFromEnv(env: unknown): string | undefined {
  if (!Array.isArray(env)) return undefined;
  let path: string | undefined;
  for (const e of env) if (typeof e === 'string' && e.startsWith('PATH=')) path = e.slice(5);
  return path;
}
