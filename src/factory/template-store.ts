/**
 * The VM templates on disk, under `[factory] template_path`:
 *
 *   <root>/<key>/memory        the template's guest RAM (clones map it private, copy-on-write);
 *                              absent when a holder keeps it in a sealed memfd
 *                              (memory-holder.ts: a jailed QEMU's template), the
 *                              holder's pid and start time then in meta.json
 *   <root>/<key>/state         its device state (QEMU's migration stream, no RAM)
 *   <root>/<key>/meta.json     what it was made from and what its files must look like
 *   <root>/<key>.lock/         held (mkdir) by the process building that template
 *   <root>/<key>.building/     a template being made; renamed to <key> when complete
 *   <root>/<key>.failure.json  the last reason a pod could not use that template
 *
 * A template is used only when every check passes (`readTemplate`): the
 * meta's key and identity are the ones asked for, the memory file has its
 * full size and the identity it had when made (a rewritten or replaced file
 * is foreign), the state file has its recorded size and SHA-256. Anything
 * else is named in the error; the pod then boots cold.
 */
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FailedPreconditionError, NotFoundError } from '../errors/index.js';
import { identify, isAlive, type ProcessIdentity } from '../vm/proc.js';
import type { Logger } from '../log/index.js';
import { heldMemoryPath, releaseMemory } from './memory-holder.js';
import { sleep } from '../vm/abort.js';
import { canonical, fileIdentity, type FileIdentity, type TemplateIdentity } from './template-key.js';

export const TEMPLATE_META_VERSION = 1;
export const TEMPLATE_FILES = { memory: 'memory', state: 'state', meta: 'meta.json' } as const;

export interface TemplateMeta {
  version: typeof TEMPLATE_META_VERSION;
  key: string;
  identity: TemplateIdentity;
  /** QEMU's own version (its QMP greeting). */
  qemuVersion: string;
  createdAt: string;
  memory: FileIdentity;
  stateBytes: number;
  stateSha256: string;
  /** Boot → agent ready, and the save, when it was made. */
  bootMs: number;
  saveMs: number;
  /** The process holding the RAM in a sealed memfd (then no memory file): memory-holder.ts. */
  memoryHolder?: ProcessIdentity;
}

export interface Template {
  key: string;
  dir: string;
  memoryFile: string;
  stateFile: string;
  meta: TemplateMeta;
}

export const templateDir = (root: string, key: string): string => join(root, key);
export const lockDir = (root: string, key: string): string => join(root, `${key}.lock`);
export const buildingDir = (root: string, key: string): string => join(root, `${key}.building`);
export const failureFile = (root: string, key: string): string => join(root, `${key}.failure.json`);

const KEY_RE = /^[0-9a-f]{24}$/;

/** Same identity, whatever the order of its keys (the key hashes the same canonical form). */
function sameJson(a: unknown, b: unknown): boolean {
  return canonical(a) === canonical(b);
}

function sameFile(a: FileIdentity, b: FileIdentity): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;
}

async function sha256File(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

/**
 * The template for `key`, checked. NOT_FOUND when there is none;
 * FAILED_PRECONDITION naming what is wrong with one that is there.
 */
export async function readTemplate(root: string, key: string, identity?: TemplateIdentity): Promise<Template> {
  const dir = templateDir(root, key);
  const metaPath = join(dir, TEMPLATE_FILES.meta);
  const bad = (what: string): never => {
    throw new FailedPreconditionError(`template ${dir}: ${what}`);
  };
  let text: string;
  try {
    text = await readFile(metaPath, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      try {
        await stat(dir);
      } catch {
        throw new NotFoundError(`no template ${key} under ${root}`);
      }
      bad(`${TEMPLATE_FILES.meta} is missing`);
    }
    throw err;
  }
  let meta: TemplateMeta;
  try {
    meta = JSON.parse(text) as TemplateMeta;
  } catch {
    return bad(`${TEMPLATE_FILES.meta} is not JSON`);
  }
  if (meta?.version !== TEMPLATE_META_VERSION) bad(`${TEMPLATE_FILES.meta}: version ${JSON.stringify(meta?.version)}, want ${TEMPLATE_META_VERSION}`);
  if (typeof meta.identity?.spec?.memoryMiB !== 'number' || typeof meta.memory?.ino !== 'string') bad(`${TEMPLATE_FILES.meta}: no identity or memory record`);
  if (meta.key !== key) bad(`made for key ${JSON.stringify(meta.key)}, not ${key} (a foreign template)`);
  if (identity && !sameJson(meta.identity, identity)) bad('made from other files or settings (a foreign template)');
  const holder = meta.memoryHolder;
  if (holder !== undefined && !isAlive(holder)) {
    // Its sealed RAM went with it: the template is gone (ensure() makes it again).
    throw new NotFoundError(`template ${dir}: its memory holder (pid ${holder.pid}) is gone`);
  }
  const memoryFile = holder ? heldMemoryPath(holder) : join(dir, TEMPLATE_FILES.memory);
  const stateFile = join(dir, TEMPLATE_FILES.state);
  const mem = await fileIdentity(memoryFile, 'memory').catch(() => bad(`${TEMPLATE_FILES.memory} is missing`));
  const wantBytes = BigInt(meta.identity.spec.memoryMiB) * 1024n * 1024n;
  if (BigInt(mem.size) !== wantBytes) bad(`${TEMPLATE_FILES.memory} has ${mem.size} bytes, want ${wantBytes} (truncated?)`);
  // A sealed memfd cannot change, but a refused write still stamps its mtime (the kernel updates the
  // times before it checks the seals): the same memfd is enough there; a file must also keep its times.
  const same = holder ? mem.dev === meta.memory.dev && mem.ino === meta.memory.ino && mem.size === meta.memory.size : sameFile({ ...mem, path: meta.memory.path }, meta.memory);
  if (!same) bad(`${TEMPLATE_FILES.memory} was changed or replaced after the template was made`);
  const st = await stat(stateFile).catch(() => bad(`${TEMPLATE_FILES.state} is missing`));
  if (st.size !== meta.stateBytes) bad(`${TEMPLATE_FILES.state} has ${st.size} bytes, want ${meta.stateBytes} (truncated?)`);
  if ((await sha256File(stateFile)) !== meta.stateSha256) bad(`${TEMPLATE_FILES.state} does not match its recorded SHA-256`);
  return { key, dir, memoryFile, stateFile, meta };
}

/** Makes the building dir's files the template `key` (one rename: a template is whole or absent). */
export async function commitTemplate(root: string, key: string, meta: Omit<TemplateMeta, 'memory' | 'stateBytes' | 'stateSha256'>, logger?: Logger): Promise<Template> {
  const b = buildingDir(root, key);
  const stateFile = join(b, TEMPLATE_FILES.state);
  const st = await stat(stateFile);
  if (st.size === 0) throw new FailedPreconditionError(`template ${key}: the saved state is empty (disk full?)`);
  const full: TemplateMeta = {
    ...meta,
    // The identity after the rename (same inode; rename changes the ctime of neither file), or the held memfd's.
    memory: meta.memoryHolder
      ? await fileIdentity(heldMemoryPath(meta.memoryHolder), 'memory')
      : { ...(await fileIdentity(join(b, TEMPLATE_FILES.memory), 'memory')), path: join(templateDir(root, key), TEMPLATE_FILES.memory) },
    stateBytes: st.size,
    stateSha256: await sha256File(stateFile),
  };
  await writeFile(join(b, TEMPLATE_FILES.meta), `${JSON.stringify(full, null, 2)}\n`, { mode: 0o600 });
  await releaseHolder(templateDir(root, key), logger);
  await rm(templateDir(root, key), { recursive: true, force: true });
  await rename(b, templateDir(root, key));
  await rm(failureFile(root, key), { force: true });
  return readTemplate(root, key, meta.identity);
}

export interface FailureRecord {
  at: string;
  reason: string;
}

export async function recordFailure(root: string, key: string, reason: string): Promise<void> {
  try {
    await mkdir(root, { recursive: true, mode: 0o700 });
    await writeFile(failureFile(root, key), `${JSON.stringify({ at: new Date().toISOString(), reason } satisfies FailureRecord)}\n`, { mode: 0o600 });
  } catch {
    /* a full disk may be the very failure: the warning in the log is what remains */
  }
}

/** Process-wide lock on building `key`: mkdir is atomic; a dead owner's lock is taken over. */
export async function acquireBuildLock(root: string, key: string, opts: { timeoutMs: number; signal?: AbortSignal }): Promise<() => Promise<void>> {
  const dir = lockDir(root, key);
  const me = identify(process.pid);
  const t0 = Date.now();
  await mkdir(root, { recursive: true, mode: 0o700 });
  for (;;) {
    try {
      await mkdir(dir, { mode: 0o700 });
      await writeFile(join(dir, 'owner'), JSON.stringify(me));
      return () => rm(dir, { recursive: true, force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = await readFile(join(dir, 'owner'), 'utf8').then((t) => JSON.parse(t) as ProcessIdentity).catch(() => undefined);
    // No owner file yet: the owner is between its mkdir and its write, unless that was long ago.
    const ownerGone = owner ? !isAlive(owner) : Date.now() - (await stat(dir).then((s) => s.mtimeMs).catch(() => 0)) > 10_000;
    if (ownerGone) {
      await rm(dir, { recursive: true, force: true });
      continue;
    }
    if (Date.now() - t0 > opts.timeoutMs) throw new FailedPreconditionError(`template ${key}: another process (pid ${owner?.pid}) has been building it for over ${opts.timeoutMs} ms`);
    await sleep(100, opts.signal, 'template build lock');
  }
}

export interface TemplateStatus {
  key: string;
  dir: string;
  state: 'ready' | 'invalid' | 'building';
  reason?: string;
  meta?: TemplateMeta;
  /** Bytes of the memory file in use on disk (its touched pages). */
  memoryDiskBytes?: number;
  lastFailure?: FailureRecord;
}

/** Ends the memory holder a template dir's meta names, if it still runs (a removed dir would end it within a second anyway). */
async function releaseHolder(dir: string, logger?: Logger): Promise<void> {
  const meta = await readFile(join(dir, TEMPLATE_FILES.meta), 'utf8').then((t) => JSON.parse(t) as Partial<TemplateMeta>).catch(() => undefined);
  const h = meta?.memoryHolder;
  if (h && Number.isInteger(h.pid) && Number.isInteger(h.startTime)) await releaseMemory(h, logger);
}

/** Every template, build and recorded failure under `root`. */
export async function listTemplates(root: string): Promise<TemplateStatus[]> {
  let names: string[];
  try {
    names = await readdir(root);
  } catch {
    return [];
  }
  const keys = new Set<string>();
  for (const n of names) {
    const k = n.split('.')[0]!;
    if (KEY_RE.test(k)) keys.add(k);
  }
  const out: TemplateStatus[] = [];
  for (const key of [...keys].sort()) {
    const dir = templateDir(root, key);
    const lastFailure = await readFile(failureFile(root, key), 'utf8').then((t) => JSON.parse(t) as FailureRecord).catch(() => undefined);
    const base = { key, dir, ...(lastFailure ? { lastFailure } : {}) };
    if (names.includes(key)) {
      try {
        const t = await readTemplate(root, key);
        const used = await stat(t.memoryFile).then((s) => s.blocks * 512);
        out.push({ ...base, state: 'ready', meta: t.meta, memoryDiskBytes: used });
      } catch (err) {
        out.push({ ...base, state: 'invalid', reason: (err as Error).message });
      }
    } else if (names.includes(`${key}.building`) || names.includes(`${key}.lock`)) {
      out.push({ ...base, state: 'building' });
    } else if (lastFailure) {
      out.push({ ...base, state: 'invalid', reason: 'never made' });
    }
  }
  return out;
}

/** Removes every template, build, lock and failure record under `root` (only names this store makes), then `root` if empty. */
export async function destroyTemplates(root: string, logger?: Logger): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(root);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const n of names) {
    if (!KEY_RE.test(n.split('.')[0]!)) continue;
    await releaseHolder(join(root, n), logger);
    await rm(join(root, n), { recursive: true, force: true });
    removed.push(join(root, n));
  }
  if ((await readdir(root).catch(() => ['?'])).length === 0) await rm(root, { recursive: true, force: true });
  return removed;
}
