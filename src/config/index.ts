/**
 * configuration.toml in Kata's shape: one typed, validated config object.
 *
 * Lookup order (first hit wins), Kata's: an explicit path (containerd's
 * runtime option `ConfigPath`), env `KATA_CONF_FILE`,
 * /etc/kata-containers/configuration.toml (the operator's), then
 * /usr/share/defaults/kata-containers/configuration.toml (the default that
 * scripts/setup.sh installs, rendered from this project's commented
 * `config/configuration.toml` with the guest image's absolute paths: see
 * renderDefaultConfig). An explicit path or KATA_CONF_FILE that does not
 * exist is an error (never a silent fallback).
 *
 * Validation happens once, in loadConfig: every error names the file, the
 * key and what is allowed. Relative paths in a file are resolved against the
 * file's directory (the template points into ../build/guest).
 *
 * Pod annotations `io.katacontainers.config.hypervisor.<key>` override the
 * file only for keys listed in `enable_annotations`; a path given by an
 * annotation must be listed in the matching `valid_*_paths` (an empty list
 * refuses every path): a security boundary, since an annotation comes from
 * whoever may create pods.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'smol-toml';
import { InvalidArgumentError } from '../errors/index.js';
import { isModuleEntry } from '../agent-protocol/kernel-modules.js';

export type MachineTypeSetting = 'microvm' | 'q35';
export type AcceleratorSetting = 'auto' | 'kvm' | 'tcg';
export type SharedFs = 'virtio-fs' | 'virtio-9p' | 'none';
export type VirtioFsCache = 'auto' | 'always' | 'none';
export type InternetworkingModel = 'tcfilter' | 'none';

export interface QemuConfig {
  path: string;
  kernel: string;
  initrd: string;
  image: string;
  machine_type: MachineTypeSetting;
  machine_accelerators: AcceleratorSetting;
  kernel_params: string;
  default_vcpus: number;
  default_memory: number;
  default_maxvcpus: number;
  default_maxmemory: number;
  memory_slots: number;
  shared_fs: SharedFs;
  virtio_fs_daemon: string;
  virtio_fs_cache: VirtioFsCache;
  msize_9p: number;
  rootless: boolean;
  rootless_uids: string;
  jailer_path: string;
  seccompsandbox: string;
  valid_hypervisor_paths: string[];
  valid_kernel_paths: string[];
  valid_initrd_paths: string[];
  valid_image_paths: string[];
  valid_virtio_fs_daemon_paths: string[];
  enable_annotations: string[];
  enable_debug: boolean;
}

export interface AgentConfig {
  dial_timeout: number;
  kernel_modules: string[];
  enable_debug: boolean;
  guest_runtime: string;
}

export interface RuntimeConfig {
  enable_debug: boolean;
  internetworking_model: InternetworkingModel;
  sandbox_cgroup_only: boolean;
}

export interface FactoryConfig {
  enable_template: boolean;
  template_path: string;
}

export interface KataConfig {
  /** The file read (absolute). */
  file: string;
  /** Which lookup step found it. */
  source: ConfigSource;
  hypervisor: { qemu: QemuConfig };
  agent: { kata: AgentConfig };
  runtime: RuntimeConfig;
  factory: FactoryConfig;
}

export type ConfigSource = 'explicit' | 'KATA_CONF_FILE' | 'etc' | 'default';

/** Thrown for a bad file or a refused annotation (INVALID_ARGUMENT). */
export class ConfigError extends InvalidArgumentError {}

type Kind =
  | { t: 'string' }
  | { t: 'path' }
  | { t: 'int'; min: number; max: number }
  | { t: 'bool' }
  | { t: 'strings' }
  | { t: 'paths' }
  | { t: 'enum'; values: readonly string[] };

interface KeySpec {
  kind: Kind;
  def: unknown;
  /** For path keys: the list an annotation's (or the file's) value must be in. */
  validList?: string;
}

const S: Kind = { t: 'string' };
const P: Kind = { t: 'path' };
const B: Kind = { t: 'bool' };
const L: Kind = { t: 'strings' };
const LP: Kind = { t: 'paths' };

const QEMU: Record<keyof QemuConfig, KeySpec> = {
  path: { kind: P, def: '/usr/bin/qemu-system-x86_64', validList: 'valid_hypervisor_paths' },
  kernel: { kind: P, def: '', validList: 'valid_kernel_paths' },
  initrd: { kind: P, def: '', validList: 'valid_initrd_paths' },
  image: { kind: P, def: '', validList: 'valid_image_paths' },
  machine_type: { kind: { t: 'enum', values: ['microvm', 'q35'] }, def: 'q35' },
  machine_accelerators: { kind: { t: 'enum', values: ['auto', 'kvm', 'tcg'] }, def: 'auto' },
  kernel_params: { kind: S, def: '' },
  default_vcpus: { kind: { t: 'int', min: 1, max: 64 }, def: 1 },
  default_memory: { kind: { t: 'int', min: 64, max: 65536 }, def: 256 },
  default_maxvcpus: { kind: { t: 'int', min: 0, max: 255 }, def: 0 },
  default_maxmemory: { kind: { t: 'int', min: 0, max: 1048576 }, def: 0 },
  memory_slots: { kind: { t: 'int', min: 1, max: 256 }, def: 10 },
  shared_fs: { kind: { t: 'enum', values: ['virtio-fs', 'virtio-9p', 'none'] }, def: 'virtio-fs' },
  virtio_fs_daemon: { kind: P, def: '/usr/lib/qemu/virtiofsd', validList: 'valid_virtio_fs_daemon_paths' },
  virtio_fs_cache: { kind: { t: 'enum', values: ['auto', 'always', 'none'] }, def: 'auto' },
  msize_9p: { kind: { t: 'int', min: 4096, max: 4194304 }, def: 524288 },
  rootless: { kind: B, def: true },
  rootless_uids: { kind: S, def: '1879048192-1879113727' },
  jailer_path: { kind: P, def: '' },
  seccompsandbox: { kind: S, def: 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny' },
  valid_hypervisor_paths: { kind: LP, def: [] },
  valid_kernel_paths: { kind: LP, def: [] },
  valid_initrd_paths: { kind: LP, def: [] },
  valid_image_paths: { kind: LP, def: [] },
  valid_virtio_fs_daemon_paths: { kind: LP, def: [] },
  enable_annotations: { kind: L, def: [] },
  enable_debug: { kind: B, def: false },
};

const AGENT: Record<keyof AgentConfig, KeySpec> = {
  dial_timeout: { kind: { t: 'int', min: 1, max: 3600 }, def: 90 },
  kernel_modules: { kind: L, def: [] },
  enable_debug: { kind: B, def: false },
  guest_runtime: { kind: { t: 'enum', values: ['/usr/bin/crun'] }, def: '/usr/bin/crun' },
};

const RUNTIME: Record<keyof RuntimeConfig, KeySpec> = {
  enable_debug: { kind: B, def: false },
  internetworking_model: { kind: { t: 'enum', values: ['tcfilter', 'none'] }, def: 'tcfilter' },
  sandbox_cgroup_only: { kind: B, def: false },
};

const FACTORY: Record<keyof FactoryConfig, KeySpec> = {
  enable_template: { kind: B, def: false },
  template_path: { kind: P, def: '/run/vc/vm/template' },
};

/** Table name → key specs; the only tables a file may have. */
const TABLES: Record<string, Record<string, KeySpec>> = {
  'hypervisor.qemu': QEMU,
  'agent.kata': AGENT,
  runtime: RUNTIME,
  factory: FACTORY,
};

/** Hypervisor keys an annotation can never change, even if listed in enable_annotations. */
const NEVER_ANNOTATABLE = new Set<string>([
  'valid_hypervisor_paths', 'valid_kernel_paths', 'valid_initrd_paths', 'valid_image_paths',
  'valid_virtio_fs_daemon_paths', 'enable_annotations',
  // QEMU's confinement is the operator's, never a pod's (docs/security.md).
  'rootless', 'rootless_uids', 'jailer_path', 'seccompsandbox',
]);

export const ANNOTATION_PREFIX = 'io.katacontainers.config.hypervisor.';
export const ETC_CONFIG = '/etc/kata-containers/configuration.toml';

/** Where the package's default lives (Kata's place for it); scripts/setup.sh installs it. */
export const DEFAULT_CONFIG = '/usr/share/defaults/kata-containers/configuration.toml';

/** The first line of a default rendered by renderDefaultConfig: marks a file setup may replace. */
export const DEFAULT_CONFIG_MARKER = '# kata-ts default configuration';

/**
 * The kata-ts-jailer this runtime ships, for `jailer_path = ""` (a file
 * without the key): $KATA_TS_JAILER (an installed version's, set by its
 * wrappers: scripts/install.sh), else the checkout's build/host/ (from
 * dist/src/config or the shim's bundle in build/shim, whichever exists).
 */
export function shippedJailerPath(env: NodeJS.ProcessEnv = process.env): string {
  const e = env['KATA_TS_JAILER'];
  if (e && e.startsWith('/')) return e;
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [resolve(here, '../../../build/host/kata-ts-jailer'), resolve(here, '../../build/host/kata-ts-jailer')];
  return candidates.find((c) => existsSync(c)) ?? candidates[0]!;
}

/** `jailer_path`, or the shipped jailer when the file leaves it empty. */
export function jailerPath(q: Pick<QemuConfig, 'jailer_path'>): string {
  return q.jailer_path || shippedJailerPath();
}

/**
 * config/configuration.toml of this project (the commented template, guest
 * paths relative to it): from dist/src/config/index.js (compiled) or
 * build/shim/*.mjs (the shim's bundle), whichever exists.
 */
export function templateConfigPath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [resolve(here, '../../../config/configuration.toml'), resolve(here, '../../config/configuration.toml')];
  return candidates.find((c) => existsSync(c)) ?? candidates[0]!;
}

/** Where a rendered default points the template's relative dirs, and what its header says of its origin. */
export interface RenderOptions {
  /**
   * Template-relative dirs to place elsewhere (an install's own copies:
   * `../build/guest` → `<version>/share/guest`); other relative paths are
   * made absolute against the template's directory.
   */
  relocate?: ReadonlyArray<{ from: string; to: string }>;
  /** The header's second line (default: installed by scripts/setup.sh from the template). */
  origin?: string;
}

/**
 * The installed default: the template's text with every relative path made
 * absolute (against the template's directory, or where `relocate` says), so
 * that it names the guest image and helpers wherever the file is read from,
 * under a header saying where it came from. Comments and layout stay as
 * written.
 */
export function renderDefaultConfig(templateText: string, templateFile: string, opts: RenderOptions = {}): string {
  const base = dirname(resolve(templateFile));
  // Validates the template first: an installed default must load.
  parseConfig(templateText, templateFile, 'default');
  for (const r of opts.relocate ?? []) {
    if (!/^\.\.?\//.test(r.from) || !r.to.startsWith('/')) throw new ConfigError(`relocate ${r.from} -> ${r.to}: want a "./…" or "../…" dir and an absolute one`);
  }
  const absolute = (rel: string): string => {
    const r = (opts.relocate ?? []).find((x) => rel === x.from || rel.startsWith(`${x.from}/`));
    return r ? `${r.to}${rel.slice(r.from.length)}` : resolve(base, rel);
  };
  const body = templateText.replace(/^(\s*[a-z_]+\s*=\s*)"(\.\.?\/[^"]*)"/gm, (_m, lhs: string, rel: string) => `${lhs}"${absolute(rel)}"`);
  // The rendered file must mean the same wherever it is read from: a relative path the rewrite missed would not.
  const a = parseConfig(body, '/nonexistent/a/configuration.toml', 'default');
  const b = parseConfig(body, '/nonexistent/b/c/configuration.toml', 'default');
  if (JSON.stringify(configData(a)) !== JSON.stringify(configData(b))) {
    throw new ConfigError(`config ${templateFile}: a relative path is not in the form "./…" or "../…" on a key = "…" line: it cannot be made absolute for the installed default`);
  }
  return [
    DEFAULT_CONFIG_MARKER,
    `# ${opts.origin ?? `Installed by scripts/setup.sh from ${resolve(templateFile)}; setup rewrites it.`}`,
    '# To change a setting, copy this file to /etc/kata-containers/configuration.toml',
    '# and edit the copy (it is read first), or point containerd\'s runtime option',
    '# ConfigPath at a file of your own.',
    '',
    body,
  ].join('\n');
}

export interface LookupOptions {
  /** containerd's runtime option ConfigPath. */
  explicit?: string | undefined;
  env?: NodeJS.ProcessEnv;
  /** Default /etc/kata-containers/configuration.toml (tests change it). */
  etcPath?: string;
  /**
   * Default: $KATA_TS_DEFAULT_CONFIG (an installed version's own default,
   * set by its wrappers: scripts/install.sh), else
   * /usr/share/defaults/kata-containers/configuration.toml (tests change it).
   */
  defaultPath?: string;
}

/** Which file to read, and why; throws when an explicit or env path is missing. */
export function findConfig(opts: LookupOptions = {}): { file: string; source: ConfigSource } {
  const env = opts.env ?? process.env;
  if (opts.explicit) {
    const f = resolve(opts.explicit);
    if (!existsSync(f)) throw new ConfigError(`config ${f} (runtime option ConfigPath): no such file`);
    return { file: f, source: 'explicit' };
  }
  const e = env['KATA_CONF_FILE'];
  if (e) {
    const f = resolve(e);
    if (!existsSync(f)) throw new ConfigError(`config ${f} (KATA_CONF_FILE): no such file`);
    return { file: f, source: 'KATA_CONF_FILE' };
  }
  const etc = opts.etcPath ?? ETC_CONFIG;
  if (existsSync(etc)) return { file: resolve(etc), source: 'etc' };
  const def = opts.defaultPath ?? (env['KATA_TS_DEFAULT_CONFIG'] || DEFAULT_CONFIG);
  if (!existsSync(def)) {
    throw new ConfigError(`no configuration: none of ConfigPath, KATA_CONF_FILE, ${etc}, ${def} is set or exists (scripts/setup.sh installs ${def})`);
  }
  return { file: resolve(def), source: 'default' };
}

/** Finds, reads and validates the configuration. */
export function loadConfig(opts: LookupOptions = {}): KataConfig {
  const { file, source } = findConfig(opts);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`config ${file}: ${(err as Error).message}`, { cause: err });
  }
  return parseConfig(text, file, source);
}

/** Parses and validates TOML text read from `file`. */
export function parseConfig(text: string, file: string, source: ConfigSource = 'explicit'): KataConfig {
  let doc: Record<string, unknown>;
  try {
    doc = parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new ConfigError(`config ${file}: not valid TOML: ${(err as Error).message.split('\n')[0]}`, { cause: err });
  }
  const fail = (msg: string): never => {
    throw new ConfigError(`config ${file}: ${msg}`);
  };
  const tables = new Map<string, Record<string, unknown>>();
  for (const [top, v] of Object.entries(doc)) {
    if (top === 'runtime' || top === 'factory') {
      if (!isTable(v)) fail(`[${top}] must be a table`);
      tables.set(top, v as Record<string, unknown>);
    } else if (top === 'hypervisor' || top === 'agent') {
      if (!isTable(v)) fail(`[${top}] must be a table`);
      const want = top === 'hypervisor' ? 'qemu' : 'kata';
      for (const [sub, sv] of Object.entries(v as Record<string, unknown>)) {
        if (sub !== want || !isTable(sv)) fail(`unknown table [${top}.${sub}] (allowed: [${top}.${want}])`);
        tables.set(`${top}.${want}`, sv as Record<string, unknown>);
      }
    } else {
      fail(`unknown ${isTable(v) ? 'table' : 'key'} ${isTable(v) ? `[${top}]` : top} (allowed tables: ${Object.keys(TABLES).map((t) => `[${t}]`).join(', ')})`);
    }
  }
  const base = dirname(file);
  const out: Record<string, Record<string, unknown>> = {};
  for (const [name, specs] of Object.entries(TABLES)) {
    const given = tables.get(name) ?? {};
    const o: Record<string, unknown> = {};
    for (const k of Object.keys(given)) {
      if (!(k in specs)) fail(`unknown key [${name}] ${k} (allowed: ${Object.keys(specs).join(', ')})`);
    }
    for (const [k, spec] of Object.entries(specs)) {
      o[k] = k in given ? convert(given[k], spec.kind, `[${name}] ${k}`, base, fail) : clone(spec.def);
    }
    out[name] = o;
  }
  const qemu = out['hypervisor.qemu'] as unknown as QemuConfig;
  for (const [k, spec] of Object.entries(QEMU)) {
    if (!spec.validList) continue;
    const v = (qemu as unknown as Record<string, string>)[k]!;
    const list = (qemu as unknown as Record<string, string[]>)[spec.validList]!;
    if (v !== '' && list.length > 0 && !list.includes(v)) {
      fail(`[hypervisor.qemu] ${k}: ${v} is not in ${spec.validList} (allowed: ${list.join(', ')})`);
    }
  }
  for (const k of ['kernel', 'initrd', 'image'] as const) {
    if (qemu[k] === '') fail(`[hypervisor.qemu] ${k}: required (the guest image's ${k === 'kernel' ? 'vmlinux' : k === 'initrd' ? 'initrd.img' : 'rootfs.img'})`);
  }
  for (const m of (out['agent.kata'] as unknown as AgentConfig).kernel_modules) {
    if (!isModuleEntry(m)) {
      fail(`[agent.kata] kernel_modules: ${JSON.stringify(m)} is not "name [param=value ...]" (a module of the guest image and its parameters)`);
    }
  }
  const factory = out['factory'] as unknown as FactoryConfig;
  if (factory.enable_template) {
    // Kata's rules, with our reasons: QEMU 7.2 refuses to save or load a VM with a vhost-user-fs
    // device, and vhost-user needs guest RAM the daemon shares, which a clone's private mapping is not.
    if (qemu.shared_fs !== 'virtio-9p') {
      fail(`[factory] enable_template = true needs [hypervisor.qemu] shared_fs = "virtio-9p" (got ${JSON.stringify(qemu.shared_fs)}: a virtio-fs device cannot be in a VM template)`);
    }
  }
  for (const a of qemu.enable_annotations) {
    if (!(a in QEMU) || NEVER_ANNOTATABLE.has(a)) {
      fail(`[hypervisor.qemu] enable_annotations: ${JSON.stringify(a)} is not an overridable key (allowed: ${annotatableKeys().join(', ')})`);
    }
  }
  return {
    file,
    source,
    hypervisor: { qemu },
    agent: { kata: out['agent.kata'] as unknown as AgentConfig },
    runtime: out['runtime'] as unknown as RuntimeConfig,
    factory: out['factory'] as unknown as FactoryConfig,
  };
}

export function annotatableKeys(): string[] {
  return Object.keys(QEMU).filter((k) => !NEVER_ANNOTATABLE.has(k));
}

/**
 * The config with the pod's `io.katacontainers.config.hypervisor.*`
 * annotations applied; throws ConfigError (the pod is refused) for a key not
 * in enable_annotations, a bad value, or a path not in its valid list.
 * `kernel_params` is appended to the file's, as Kata does.
 */
export function applyAnnotations(cfg: KataConfig, annotations: Readonly<Record<string, string>> | undefined): KataConfig {
  if (!annotations) return cfg;
  const qemu: QemuConfig = { ...cfg.hypervisor.qemu };
  const q = qemu as unknown as Record<string, unknown>;
  for (const [name, value] of Object.entries(annotations)) {
    if (!name.startsWith(ANNOTATION_PREFIX)) continue;
    const key = name.slice(ANNOTATION_PREFIX.length);
    const refuse = (why: string): never => {
      throw new ConfigError(`annotation ${name}: ${why}`);
    };
    const spec = (QEMU as Record<string, KeySpec>)[key];
    if (!spec || NEVER_ANNOTATABLE.has(key)) refuse(`unknown or non-overridable hypervisor key ${JSON.stringify(key)} (overridable: ${annotatableKeys().join(', ')})`);
    if (!cfg.hypervisor.qemu.enable_annotations.includes(key)) {
      refuse(`not allowed by ${cfg.file}: [hypervisor.qemu] enable_annotations = ${JSON.stringify(cfg.hypervisor.qemu.enable_annotations)}`);
    }
    const s = spec!;
    let v: unknown;
    switch (s.kind.t) {
      case 'int': {
        if (!/^\d+$/.test(value.trim())) refuse(`${JSON.stringify(value)} is not an integer`);
        v = Number(value.trim());
        const n = v as number;
        if (n < s.kind.min || n > s.kind.max) refuse(`${n} is out of range ${s.kind.min}..${s.kind.max}`);
        break;
      }
      case 'bool':
        if (value !== 'true' && value !== 'false') refuse(`${JSON.stringify(value)} is not true or false`);
        v = value === 'true';
        break;
      case 'enum':
        if (!s.kind.values.includes(value)) refuse(`${JSON.stringify(value)} is not one of ${s.kind.values.join(', ')}`);
        v = value;
        break;
      case 'path': {
        if (!isAbsolute(value)) refuse(`${JSON.stringify(value)} is not an absolute path`);
        const list = s.validList ? (q[s.validList] as string[]) : [];
        if (!list.includes(value)) {
          refuse(`${value} is not in [hypervisor.qemu] ${s.validList} of ${cfg.file} (allowed: ${list.length ? list.join(', ') : 'none'})`);
        }
        v = value;
        break;
      }
      case 'string':
        v = key === 'kernel_params' ? [qemu.kernel_params, value].filter((x) => x.trim() !== '').join(' ') : value;
        break;
      default:
        refuse('not overridable');
    }
    q[key] = v;
  }
  return { ...cfg, hypervisor: { qemu } };
}

function isTable(v: unknown): boolean {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function clone(v: unknown): unknown {
  return Array.isArray(v) ? [...v] : v;
}

function typeName(v: unknown): string {
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'bigint') return 'integer';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'float';
  if (v instanceof Date || (typeof v === 'object' && v !== null && 'toISOString' in v)) return 'datetime';
  if (isTable(v)) return 'table';
  return typeof v;
}

function convert(v: unknown, kind: Kind, where: string, base: string, fail: (m: string) => never): unknown {
  const want = (w: string): never => fail(`${where}: expected ${w}, got ${typeName(v)} ${JSON.stringify(v)}`);
  const path = (x: unknown, w: string): string => {
    if (typeof x !== 'string') return want(w);
    if (x === '') return '';
    return isAbsolute(x) ? x : resolve(base, x);
  };
  switch (kind.t) {
    case 'string':
      return typeof v === 'string' ? v : want('a string');
    case 'path':
      return path(v, 'a path string');
    case 'bool':
      return typeof v === 'boolean' ? v : want('a boolean (true or false)');
    case 'int': {
      const n = typeof v === 'bigint' ? Number(v) : v;
      if (typeof n !== 'number' || !Number.isInteger(n)) return want('an integer');
      if (n < kind.min || n > kind.max) fail(`${where}: ${n} is out of range (allowed: ${kind.min}..${kind.max})`);
      return n;
    }
    case 'strings':
      if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) return want('an array of strings');
      return [...(v as string[])];
    case 'paths':
      if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) return want('an array of path strings');
      return (v as string[]).map((x) => path(x, 'a path string'));
    case 'enum':
      if (typeof v !== 'string') return want(`one of ${kind.values.join(', ')}`);
      if (!kind.values.includes(v)) fail(`${where}: ${JSON.stringify(v)} is not allowed (allowed: ${kind.values.join(', ')})`);
      return v;
  }
}

/** "name [param[=value] ...]", as Kata's kernel_modules entries. */

/** [agent.kata] kernel_modules as (name, parameters) pairs. */
export function kernelModules(cfg: KataConfig): Array<{ name: string; parameters: string[] }> {
  return cfg.agent.kata.kernel_modules.map((m) => {
    const [name = '', ...parameters] = m.trim().split(/\s+/);
    return { name, parameters };
  });
}

/** The words of kernel_params. */
export function kernelParamWords(cfg: KataConfig): string[] {
  return cfg.hypervisor.qemu.kernel_params.split(/\s+/).filter(Boolean);
}

/** The effective config as plain data (for `env`): no file/source fields. */
export function configData(cfg: KataConfig): Record<string, unknown> {
  return { hypervisor: cfg.hypervisor, agent: cfg.agent, runtime: cfg.runtime, factory: cfg.factory };
}
