// Local, registry-free test images and OCI bundles built around busybox-static.
//
// - busyboxImage(): an OCI image layout tarball (oci-layout, index.json,
//   blobs/sha256/…) with one gzip'd layer holding /bin/busybox and a symlink
//   per applet. `ctr images import` accepts it and names the image after the
//   `io.containerd.image.name` annotation of its index entry.
// - makeBundle(): a raw OCI runtime bundle (rootfs/ + config.json) for driving
//   a shim or runc directly.
//
// Tarballs are written by this file (no external `tar`), deterministically, and
// cached by content key under buildDir()/images, so a run builds each one once.

import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { chmod, copyFile, mkdir, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

export const BUSYBOX_IMAGE = 'docker.io/library/busybox:latest';
/** containerd 1.6.20's default CRI `sandbox_image`. */
export const PAUSE_IMAGE = 'registry.k8s.io/pause:3.6';
export const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Bumped whenever the layout written below changes, to invalidate caches. */
const FORMAT_VERSION = 1;
/** Fixed mtime for every tar entry (reproducible digests). */
const MTIME = 1_700_000_000;

// ---------------------------------------------------------------------------
// paths

/** The project root: the nearest ancestor of this file holding package.json (works from test/ and dist/test/). */
export function projectRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(d, 'package.json'))) return d;
    const up = dirname(d);
    if (up === d) throw new Error('harness: no package.json above ' + fileURLToPath(import.meta.url));
    d = up;
  }
}

/** Where built test artefacts are cached: $KATA_TEST_BUILD_DIR or <project>/build/harness. */
export function buildDir(): string {
  return resolve(process.env.KATA_TEST_BUILD_DIR || join(projectRoot(), 'build', 'harness'));
}

/** The busybox binary used: $BUSYBOX or /bin/busybox (Debian's busybox-static). */
export function busyboxPath(): string {
  return process.env.BUSYBOX || '/bin/busybox';
}

// ---------------------------------------------------------------------------
// rootfs description shared by the image layer and the bundle rootfs

export type RootfsEntry =
  | { type: 'dir'; path: string; mode: number }
  | { type: 'file'; path: string; mode: number; data: Buffer }
  | { type: 'symlink'; path: string; target: string };

/** True if the ELF file has a PT_INTERP header (i.e. is dynamically linked). */
function elfIsDynamic(buf: Buffer): boolean {
  if (buf.length < 64 || buf.readUInt32BE(0) !== 0x7f454c46) throw new Error('not an ELF file');
  if (buf[4] !== 2) throw new Error('only 64-bit ELF supported');
  const le = buf[5] === 1;
  const u16 = (o: number) => (le ? buf.readUInt16LE(o) : buf.readUInt16BE(o));
  const u32 = (o: number) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const u64 = (o: number) => Number(le ? buf.readBigUInt64LE(o) : buf.readBigUInt64BE(o));
  const phoff = u64(32);
  const phentsize = u16(54);
  const phnum = u16(56);
  for (let i = 0; i < phnum; i++) {
    if (u32(phoff + i * phentsize) === 3 /* PT_INTERP */) return true;
  }
  return false;
}

interface BusyboxInfo {
  data: Buffer;
  sha256: string;
  applets: string[];
}

let busyboxInfoCache: BusyboxInfo | undefined;

function busyboxInfo(): BusyboxInfo {
  if (busyboxInfoCache) return busyboxInfoCache;
  const path = busyboxPath();
  if (!existsSync(path)) {
    throw new Error(`harness: ${path} not found: install busybox-static (apt-get install busybox-static) or set BUSYBOX`);
  }
  const data = readFileSync(path);
  if (elfIsDynamic(data)) {
    throw new Error(`harness: ${path} is dynamically linked; a container rootfs needs busybox-static`);
  }
  const applets = execFileSync(path, ['--list'], { encoding: 'utf8', timeout: 10_000 })
    .split('\n')
    .map((s) => s.trim())
    .filter((s) => /^[A-Za-z0-9_.[\-]+$/.test(s) && s !== 'busybox')
    .sort();
  for (const need of ['sh', 'echo', 'cat', 'sleep', 'head', 'wc', 'ls', 'true', 'false', 'kill', 'ps', 'id', 'env']) {
    if (!applets.includes(need)) throw new Error(`harness: ${path} lacks the applet ${need}`);
  }
  busyboxInfoCache = { data, sha256: createHash('sha256').update(data).digest('hex'), applets };
  return busyboxInfoCache;
}

/** The rootfs of every busybox image/bundle, parents before children. */
export function busyboxRootfsEntries(): RootfsEntry[] {
  const bb = busyboxInfo();
  const e: RootfsEntry[] = [];
  for (const [path, mode] of [
    ['bin', 0o755], ['dev', 0o755], ['etc', 0o755], ['home', 0o755], ['proc', 0o555], ['root', 0o700],
    ['run', 0o755], ['sbin', 0o755], ['sys', 0o555], ['tmp', 0o1777], ['usr', 0o755], ['usr/bin', 0o755],
    ['usr/sbin', 0o755], ['var', 0o755], ['var/tmp', 0o1777], ['var/www', 0o755],
  ] as const) {
    e.push({ type: 'dir', path, mode });
  }
  e.push({ type: 'file', path: 'bin/busybox', mode: 0o755, data: bb.data });
  for (const a of bb.applets) e.push({ type: 'symlink', path: `bin/${a}`, target: 'busybox' });
  // Common absolute paths scripts use.
  e.push({ type: 'symlink', path: 'usr/bin/env', target: '../../bin/busybox' });
  const text = (path: string, s: string): RootfsEntry => ({ type: 'file', path, mode: 0o644, data: Buffer.from(s) });
  e.push(text('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n'));
  e.push(text('etc/group', 'root:x:0:\nnogroup:x:65534:\n'));
  e.push(text('etc/hostname', 'busybox\n'));
  e.push(text('etc/hosts', '127.0.0.1\tlocalhost\n::1\tlocalhost\n'));
  e.push(text('etc/resolv.conf', ''));
  e.push(text('var/www/index.html', 'hello from busybox httpd\n'));
  return e;
}

/** Materialise the busybox rootfs into `dir` (created if missing). */
export async function writeBusyboxRootfs(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const ent of busyboxRootfsEntries()) {
    const p = join(dir, ent.path);
    if (ent.type === 'dir') {
      await mkdir(p, { recursive: true });
      await chmod(p, ent.mode);
    } else if (ent.type === 'file') {
      if (ent.path === 'bin/busybox') await copyFile(busyboxPath(), p);
      else await writeFile(p, ent.data);
      await chmod(p, ent.mode);
    } else {
      await symlink(ent.target, p);
    }
  }
}

// ---------------------------------------------------------------------------
// a minimal ustar writer

function octal(n: number, width: number): string {
  // width includes the trailing NUL
  return n.toString(8).padStart(width - 1, '0') + '\0';
}

function tarHeader(name: string, opts: { type: '0' | '2' | '5'; mode: number; size?: number; linkname?: string }): Buffer {
  const h = Buffer.alloc(512);
  let prefix = '';
  if (Buffer.byteLength(name) > 100) {
    const cut = name.lastIndexOf('/', 154);
    if (cut <= 0 || Buffer.byteLength(name.slice(cut + 1)) > 100) throw new Error('tar: name too long: ' + name);
    prefix = name.slice(0, cut);
    name = name.slice(cut + 1);
  }
  h.write(name, 0, 100, 'utf8');
  h.write(octal(opts.mode & 0o7777, 8), 100, 'ascii');
  h.write(octal(0, 8), 108, 'ascii'); // uid
  h.write(octal(0, 8), 116, 'ascii'); // gid
  h.write(octal(opts.size ?? 0, 12), 124, 'ascii');
  h.write(octal(MTIME, 12), 136, 'ascii');
  h.write('        ', 148, 'ascii'); // checksum placeholder
  h.write(opts.type, 156, 'ascii');
  if (opts.linkname) {
    if (Buffer.byteLength(opts.linkname) > 100) throw new Error('tar: link target too long: ' + opts.linkname);
    h.write(opts.linkname, 157, 100, 'utf8');
  }
  h.write('ustar\0', 257, 'ascii');
  h.write('00', 263, 'ascii');
  h.write('root', 265, 'ascii');
  h.write('root', 297, 'ascii');
  if (prefix) h.write(prefix, 345, 155, 'utf8');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + ' ', 148, 'ascii');
  return h;
}

export function tarBuffer(entries: RootfsEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    if (e.type === 'dir') {
      parts.push(tarHeader(e.path.replace(/\/?$/, '/'), { type: '5', mode: e.mode }));
    } else if (e.type === 'symlink') {
      parts.push(tarHeader(e.path, { type: '2', mode: 0o777, linkname: e.target }));
    } else {
      parts.push(tarHeader(e.path, { type: '0', mode: e.mode, size: e.data.length }));
      parts.push(e.data);
      const pad = (512 - (e.data.length % 512)) % 512;
      if (pad) parts.push(Buffer.alloc(pad));
    }
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------
// OCI image

export interface ImageOptions {
  /** Full image reference, e.g. docker.io/library/busybox:latest (default). */
  name?: string;
  /** Image config Cmd (default ["sh"]). */
  cmd?: string[];
  /** Image config Entrypoint (default none). */
  entrypoint?: string[];
  /** Image config Env (default [PATH=…]). */
  env?: string[];
  /** Image config WorkingDir (default "/"). */
  workingDir?: string;
  /** Image config Labels. */
  labels?: Record<string, string>;
}

export interface BuiltImage {
  /** Image reference containerd will know it as after `ctr images import`. */
  name: string;
  /** Path of the OCI layout tarball. */
  tarPath: string;
  /** sha256:… of the manifest. */
  manifestDigest: string;
  /** sha256:… of the image config (= the image id). */
  configDigest: string;
}

function ociArch(): string {
  const m: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  return m[process.arch] ?? process.arch;
}

const sha = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');

function buildImageTar(opts: Required<Omit<ImageOptions, 'entrypoint' | 'labels'>> & Pick<ImageOptions, 'entrypoint' | 'labels'>): { tar: Buffer; manifestDigest: string; configDigest: string } {
  const layerTar = tarBuffer(busyboxRootfsEntries());
  const layerGz = gzipSync(layerTar, { level: 6 });
  const created = new Date(MTIME * 1000).toISOString();
  const arch = ociArch();
  const config = Buffer.from(
    JSON.stringify({
      created,
      architecture: arch,
      os: 'linux',
      config: {
        Env: opts.env,
        Cmd: opts.cmd,
        ...(opts.entrypoint ? { Entrypoint: opts.entrypoint } : {}),
        WorkingDir: opts.workingDir,
        ...(opts.labels ? { Labels: opts.labels } : {}),
      },
      rootfs: { type: 'layers', diff_ids: [sha(layerTar)] },
      history: [{ created, created_by: 'containerd-shim-kata-v2 test harness: busybox-static' }],
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha(layerGz), size: layerGz.length }],
    }),
  );
  const tag = opts.name.includes('@') ? '' : (opts.name.match(/:([^/:]+)$/)?.[1] ?? 'latest');
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: sha(manifest),
          size: manifest.length,
          platform: { architecture: arch, os: 'linux' },
          annotations: {
            // containerd's importer names the image after this one …
            'io.containerd.image.name': opts.name,
            // … and OCI tools after this one.
            ...(tag ? { 'org.opencontainers.image.ref.name': tag } : {}),
          },
        },
      ],
    }),
  );
  const blob = (b: Buffer): RootfsEntry => ({ type: 'file', path: 'blobs/sha256/' + sha(b).slice(7), mode: 0o644, data: b });
  const tar = tarBuffer([
    { type: 'file', path: 'oci-layout', mode: 0o644, data: Buffer.from('{"imageLayoutVersion":"1.0.0"}') },
    { type: 'dir', path: 'blobs', mode: 0o755 },
    { type: 'dir', path: 'blobs/sha256', mode: 0o755 },
    blob(config),
    blob(layerGz),
    blob(manifest),
    { type: 'file', path: 'index.json', mode: 0o644, data: index },
  ]);
  return { tar, manifestDigest: sha(manifest), configDigest: sha(config) };
}

const imageMemo = new Map<string, BuiltImage>();

/**
 * Build (or reuse from the cache) a one-layer busybox OCI image tarball.
 * Synchronous work of a few tens of ms on the first call; cached on disk by
 * content (busybox binary, options, format version) and in memory.
 */
export function busyboxImage(options: ImageOptions = {}): BuiltImage {
  const opts = {
    name: options.name ?? BUSYBOX_IMAGE,
    cmd: options.cmd ?? ['sh'],
    env: options.env ?? [DEFAULT_PATH],
    workingDir: options.workingDir ?? '/',
    entrypoint: options.entrypoint,
    labels: options.labels,
  };
  const bb = busyboxInfo();
  const key = createHash('sha256')
    .update(JSON.stringify({ v: FORMAT_VERSION, bb: bb.sha256, arch: ociArch(), opts }))
    .digest('hex')
    .slice(0, 16);
  const memo = imageMemo.get(key);
  if (memo && existsSync(memo.tarPath)) return memo;

  const dir = join(buildDir(), 'images');
  mkdirSync(dir, { recursive: true });
  const base = opts.name.replace(/[^A-Za-z0-9_.-]+/g, '_');
  const tarPath = join(dir, `${base}-${key}.oci.tar`);
  const metaPath = tarPath + '.json';
  if (existsSync(tarPath) && existsSync(metaPath) && statSync(tarPath).size > 0) {
    try {
      const meta = JSON.parse(readFileSync(metaPath, 'utf8')) as BuiltImage;
      const img: BuiltImage = { ...meta, tarPath };
      imageMemo.set(key, img);
      return img;
    } catch {
      /* rebuild */
    }
  }
  const built = buildImageTar(opts);
  const img: BuiltImage = { name: opts.name, tarPath, manifestDigest: built.manifestDigest, configDigest: built.configDigest };
  // Atomic publish: concurrent test processes may build the same image.
  const tmp = `${tarPath}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, built.tar);
  renameSync(tmp, tarPath);
  const tmpMeta = `${metaPath}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmpMeta, JSON.stringify(img));
  renameSync(tmpMeta, metaPath);
  imageMemo.set(key, img);
  return img;
}

/**
 * A pause image for the CRI plugin's `sandbox_image`: sleeps forever and exits
 * 0 on SIGTERM/SIGINT (a bare `sleep` as PID 1 would ignore SIGTERM).
 */
export function pauseImage(name: string = PAUSE_IMAGE): BuiltImage {
  return busyboxImage({
    name,
    cmd: ['/bin/sh', '-c', "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"],
  });
}

/** Anything with the harness's ctr() shape (see containerd.ts). */
export interface CtrRunner {
  ctr(args: string[], opts?: { timeoutMs?: number }): Promise<{ code: number | null; stdout: string; stderr: string }>;
}

/** `ctr images import` the image into a (private) containerd; throws on failure. */
export async function importImage(c: CtrRunner, image: BuiltImage = busyboxImage()): Promise<void> {
  const r = await c.ctr(['images', 'import', '--all-platforms', image.tarPath], { timeoutMs: 60_000 });
  if (r.code !== 0) {
    throw new Error(`ctr images import ${image.tarPath} failed (${r.code}): ${r.stderr.trim()} ${r.stdout.trim()}`);
  }
  const ls = await c.ctr(['images', 'ls', '-q'], { timeoutMs: 20_000 });
  if (!ls.stdout.split('\n').includes(image.name)) {
    throw new Error(`ctr images import: ${image.name} not listed after import: ${ls.stdout.trim()} ${ls.stderr.trim()}`);
  }
}

// ---------------------------------------------------------------------------
// OCI runtime bundle

export interface BundleOptions {
  /** process.args */
  args: string[];
  /** process.terminal (default false) */
  terminal?: boolean;
  /** process.env (default [PATH=…], plus TERM=xterm when terminal) */
  env?: string[];
  /** process.cwd (default "/") */
  cwd?: string;
  /** hostname (default "busybox") */
  hostname?: string;
  /** root.readonly (default false) */
  readonlyRootfs?: boolean;
  /** Called with the spec before it is written, to adjust it in place. */
  mutate?: (spec: OciSpec) => void;
}

// A loose type: tests read and tweak arbitrary fields.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type OciSpec = Record<string, any>;

/** A minimal, valid runc spec (what `runc spec` writes, minus the terminal and the read-only root). */
export function runtimeSpec(opts: BundleOptions): OciSpec {
  const terminal = opts.terminal ?? false;
  const caps = ['CAP_AUDIT_WRITE', 'CAP_KILL', 'CAP_NET_BIND_SERVICE'];
  return {
    ociVersion: '1.0.2-dev',
    process: {
      terminal,
      user: { uid: 0, gid: 0 },
      args: opts.args,
      env: opts.env ?? (terminal ? [DEFAULT_PATH, 'TERM=xterm'] : [DEFAULT_PATH]),
      cwd: opts.cwd ?? '/',
      capabilities: { bounding: caps, effective: caps, permitted: caps, ambient: caps },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: 'rootfs', readonly: opts.readonlyRootfs ?? false },
    hostname: opts.hostname ?? 'busybox',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      {
        destination: '/dev/pts',
        type: 'devpts',
        source: 'devpts',
        options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
      },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
      { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    ],
    linux: {
      resources: { devices: [{ allow: false, access: 'rwm' }] },
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network' }],
      maskedPaths: [
        '/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list',
        '/proc/timer_stats', '/proc/sched_debug', '/sys/firmware', '/proc/scsi',
      ],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}

export interface Bundle {
  /** The bundle directory (absolute). */
  dir: string;
  rootfs: string;
  configPath: string;
  spec: OciSpec;
}

/** Write an OCI bundle (rootfs/ with busybox + config.json) into `dir` (created if missing; rootfs/ must not exist yet). */
export async function makeBundle(dir: string, opts: BundleOptions): Promise<Bundle> {
  const abs = resolve(dir);
  const rootfs = join(abs, 'rootfs');
  if (existsSync(rootfs)) throw new Error(`makeBundle: ${rootfs} already exists`);
  await writeBusyboxRootfs(rootfs);
  const spec = runtimeSpec(opts);
  opts.mutate?.(spec);
  const configPath = join(abs, 'config.json');
  await writeFile(configPath, JSON.stringify(spec, null, 2));
  return { dir: abs, rootfs, configPath, spec };
}
