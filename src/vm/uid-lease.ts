/**
 * One host uid per jailed QEMU, leased from a range no account uses
 * (docs/security.md): a lease is a file `<dir>/<uid>` made with O_EXCL, so
 * two shims starting pods at once never get the same uid. The file names its
 * VM (sandbox id and VM dir); it is removed when the VM is gone (QemuVm's
 * teardown, or cleanupFromState after a shim died). A lease is never taken
 * over: deciding that one is stale and taking it cannot be made atomic with
 * files alone, and two QEMUs on one uid could reach each other. A lease left
 * behind (a shim and its `delete` both killed mid-teardown) costs one uid of
 * 64 Ki until /run is cleared at boot.
 */
import { mkdir, readFile, rmdir, unlink, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { ResourceExhaustedError } from '../errors/index.js';
import { invalid } from './validate.js';

/**
 * Where leases live: beside the pod dirs of the run root (a name no container
 * id can have). Runtimes with different run roots need disjoint ranges.
 */
export const UID_LEASE_DIR = '.uids';
export const DEFAULT_UID_LEASE_DIR = `/run/kata-ts/${UID_LEASE_DIR}`;

/**
 * 0x70000000 + 64 Ki: above what systemd and useradd hand out (system and
 * user accounts, dynamic users, nspawn ranges up to 0x6FFFFFFF) and below
 * 2^31 (some tools read larger uids as negative).
 */
export const DEFAULT_UID_RANGE: UidRange = { first: 0x70000000, last: 0x70000000 + 0xffff };

export interface UidRange {
  first: number;
  last: number;
}

interface Lease {
  sandboxId: string;
  vmDir: string;
}

/** Parses "first-last" (the config's `rootless_uids`). */
export function parseUidRange(text: string, field: string): UidRange {
  const m = /^(\d+)-(\d+)$/.exec(text.trim());
  if (!m) throw invalid(field, `must be "first-last" uids (got ${JSON.stringify(text)})`);
  const first = Number(m[1]);
  const last = Number(m[2]);
  if (first < 1000 || last > 0x7fffffff || last < first) {
    throw invalid(field, `must lie within 1000-2147483647 with first <= last (got ${JSON.stringify(text)})`);
  }
  return { first, last };
}

async function readLease(path: string): Promise<Lease | undefined> {
  try {
    const l = JSON.parse(await readFile(path, 'utf8')) as Partial<Lease>;
    return typeof l.sandboxId === 'string' && typeof l.vmDir === 'string' ? { sandboxId: l.sandboxId, vmDir: l.vmDir } : undefined;
  } catch {
    return undefined;
  }
}

/** Creates the lease file; false when it exists. The dir is made (again) when missing: the last release removes it. */
async function take(dir: string, path: string, body: string): Promise<boolean> {
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      await writeFile(path, body, { flag: 'wx', mode: 0o600 });
      return true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') return false;
      if (code !== 'ENOENT') throw err;
      await mkdir(dir, { recursive: true, mode: 0o700 });
    }
  }
  throw new ResourceExhaustedError(`uid lease ${path}: its dir keeps vanishing`);
}

/**
 * Leases a uid for the VM in `vmDir`. Starts from a hash of the sandbox id
 * (spreads pods over the range) and probes upwards. RESOURCE_EXHAUSTED when
 * every uid of the range is leased.
 */
export async function leaseUid(opts: { dir: string; range: UidRange; sandboxId: string; vmDir: string }): Promise<number> {
  const { dir, range } = opts;
  const size = range.last - range.first + 1;
  const start = createHash('sha256').update(opts.sandboxId).digest().readUInt32BE(0) % size;
  const body = JSON.stringify({ sandboxId: opts.sandboxId, vmDir: opts.vmDir }) + '\n';
  for (let i = 0; i < size; i++) {
    const uid = range.first + ((start + i) % size);
    const path = join(dir, String(uid));
    if (await take(dir, path, body)) return uid;
  }
  throw new ResourceExhaustedError(`no free uid for QEMU in ${range.first}-${range.last} (${size} leased under ${dir})`);
}

/** Gives the uid back, if the lease is still this VM's. Idempotent. */
export async function releaseUid(dir: string, uid: number, sandboxId: string): Promise<void> {
  const path = join(dir, String(uid));
  const held = await readLease(path);
  if (held && held.sandboxId !== sandboxId) return;
  await unlink(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
  // The last lease out removes the dir (a pod's end leaves the run root as it found it).
  await rmdir(dir).catch(() => {});
}
