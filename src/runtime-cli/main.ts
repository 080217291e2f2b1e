/**
 * kata-ts-runtime: the operator's companion CLI of containerd-shim-kata-v2,
 * in the manner of `kata-runtime`.
 *
 *   kata-ts-runtime check [--json] [--config FILE]   can this host run pods, and why not
 *   kata-ts-runtime env   [--json] [--config FILE]   effective configuration + versions
 *   kata-ts-runtime containerd-config [--file F] [--handler H] [--runtime-config PATH] [--dry-run]
 *                                                     add the runtime to containerd's config (CRI)
 *
 * The config is found as the shim finds it (src/config: --config, then
 * KATA_CONF_FILE, /etc/kata-containers/configuration.toml, the installed
 * default /usr/share/defaults/kata-containers/configuration.toml). `check`
 * exits 0 only when a pod can run.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'smol-toml';
import { configData, findConfig, loadConfig, type KataConfig } from '../config/index.js';
import { addRuntime } from '../install/containerd-config.js';
import {
  bootProbe, probeCgroup2, probeContainerd, probeDevice, probeGuestFiles, probeJail, probeMirred, probeQemu, probeVirtiofsd, qemuVersion,
  type ProbeLine,
} from './probes.js';

import { factoryDestroy, factoryInit, factoryStatus, printFactoryStatus } from './factory.js';
import { hostCapacity, hotplugRoom } from '../shim/pod-vm.js';
import { qemuHardening } from '../shim/qemu-hardening.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

const USAGE = `usage: kata-ts-runtime <command> [--json] [--config FILE]

commands:
  check   probe this host (KVM, TCG, vsock, tun, tc mirred, virtiofsd, guest image,
          containerd, cgroup v2); exit 0 only when a pod can run
  env     print the effective configuration and versions (TOML, or JSON with --json)
  factory init      make the VM templates this configuration's pods clone ([factory])
  factory status    the templates under template_path: current, stale, broken, last failures
  factory destroy   remove every template (running clones keep their memory)
  containerd-config add the CRI runtime table (runtime_type, pod_annotations, ConfigPath) to
          containerd's config: --file (default /etc/containerd/config.toml), --handler (default
          kata), --runtime-config (default: the configuration.toml in use), --dry-run (print it);
          idempotent, keeps a backup, refuses a file it cannot parse or a different table
`;

interface Args {
  cmd: string;
  sub?: string;
  json: boolean;
  config?: string;
  /** containerd-config's options. */
  file?: string;
  handler?: string;
  runtimeConfig?: string;
  dryRun?: boolean;
}

class UsageError extends Error {}

function parseArgs(argv: readonly string[]): Args {
  let cmd: string | undefined;
  let sub: string | undefined;
  let json = false;
  let config: string | undefined;
  const more: Pick<Args, 'file' | 'handler' | 'runtimeConfig' | 'dryRun'> = {};
  const value = (i: number, flag: string): string => {
    const v = argv[i];
    if (!v) throw new UsageError(`${flag} needs a value`);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--json') json = true;
    else if (a === '--file') more.file = value(++i, a);
    else if (a === '--handler') more.handler = value(++i, a);
    else if (a === '--runtime-config') more.runtimeConfig = value(++i, a);
    else if (a === '--dry-run') more.dryRun = true;
    else if (a === '--config') {
      config = argv[++i];
      if (!config) throw new UsageError('--config needs a file');
    } else if (a.startsWith('--config=')) config = a.slice('--config='.length);
    else if (a === '-h' || a === '--help' || a === 'help') cmd = 'help';
    else if (!a.startsWith('-') && cmd === undefined) cmd = a;
    else if (!a.startsWith('-') && cmd === 'factory' && sub === undefined) sub = a;
    else throw new UsageError(`unexpected argument ${a}`);
  }
  if (!cmd) throw new UsageError('no command');
  if (cmd === 'factory' && !['init', 'status', 'destroy'].includes(sub ?? '')) throw new UsageError('factory needs init, status or destroy');
  return { cmd, json, ...(sub ? { sub } : {}), ...(config ? { config } : {}), ...more };
}

function shimVersion(): string {
  // An installed version (scripts/install.sh) says which it is; a checkout reads its package.json.
  if (process.env['KATA_TS_VERSION']) return process.env['KATA_TS_VERSION'];
  try {
    return (JSON.parse(readFileSync(resolve(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

function guestManifest(cfg: KataConfig): Record<string, unknown> | undefined {
  try {
    return JSON.parse(readFileSync(resolve(dirname(cfg.hypervisor.qemu.kernel), 'manifest.json'), 'utf8')) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

export interface CheckReport {
  config: string | undefined;
  canRunPods: boolean;
  accelerator: 'kvm' | 'tcg' | undefined;
  verdict: string;
  probes: ProbeLine[];
}

export async function check(configPath: string | undefined): Promise<CheckReport> {
  let cfg: KataConfig;
  try {
    cfg = loadConfig({ explicit: configPath });
  } catch (err) {
    const line: ProbeLine = { name: 'config', status: 'fail', detail: (err as Error).message, required: true };
    return { config: configPath, canRunPods: false, accelerator: undefined, verdict: 'no pod can run: the configuration is invalid', probes: [line] };
  }
  const q = cfg.hypervisor.qemu;
  const tcfilter = cfg.runtime.internetworking_model === 'tcfilter';
  const [qemu, kvm, tcg, mirred, vfsd, ctrd, jail] = await Promise.all([
    probeQemu(cfg),
    q.machine_accelerators === 'tcg' ? Promise.resolve<ProbeLine>({ name: 'KVM', status: 'warn', detail: 'not probed (machine_accelerators = "tcg")', required: false }) : bootProbe(cfg, 'kvm'),
    q.machine_accelerators === 'kvm' ? Promise.resolve<ProbeLine>({ name: 'TCG', status: 'warn', detail: 'not probed (machine_accelerators = "kvm")', required: false }) : bootProbe(cfg, 'tcg'),
    probeMirred(tcfilter),
    probeVirtiofsd(cfg),
    probeContainerd(),
    probeJail(cfg),
  ]);
  const probes: ProbeLine[] = [
    { name: 'config', status: 'ok', detail: `${cfg.file} (${cfg.source})`, required: true },
    qemu,
    ...probeGuestFiles(cfg),
    kvm,
    tcg,
    probeDevice('/dev/vhost-vsock', false, 'vsock agent transport; the agent uses virtio-serial without it'),
    probeDevice('/dev/net/tun', tcfilter, 'pod network tap'),
    mirred,
    vfsd,
    ctrd,
    probeCgroup2(),
    ...jail,
  ];
  let accelerator: 'kvm' | 'tcg' | undefined;
  if (kvm.status === 'ok' && q.machine_accelerators !== 'tcg') accelerator = 'kvm';
  else if (tcg.status === 'ok' && q.machine_accelerators !== 'kvm') accelerator = 'tcg';
  // With `auto`, either accelerator will do: KVM failing is only a warning then.
  if (q.machine_accelerators === 'auto') {
    if (kvm.status === 'fail' && accelerator) kvm.status = 'warn';
  }
  const blocking = probes.filter((p) => p.required && p.status === 'fail');
  const canRunPods = blocking.length === 0 && accelerator !== undefined;
  const verdict = canRunPods
    ? `a pod can run: accelerator ${accelerator}${accelerator === 'tcg' ? ' (software emulation: slower boot and CPU)' : ''}`
    : `no pod can run: ${[...blocking.map((p) => `${p.name}: ${p.detail}`), ...(accelerator ? [] : ['neither KVM nor TCG usable'])].join('; ')}`;
  return { config: cfg.file, canRunPods, accelerator, verdict, probes };
}

function printCheck(r: CheckReport): void {
  const tag = { ok: 'ok  ', warn: 'warn', fail: 'FAIL' } as const;
  const w = Math.max(...r.probes.map((p) => p.name.length));
  const lines = r.probes.map((p) => `  ${tag[p.status]}  ${p.name.padEnd(w)}  ${p.detail}`);
  process.stdout.write(`${lines.join('\n')}\n${r.verdict}\n`);
}

export async function env(configPath: string | undefined): Promise<Record<string, unknown>> {
  const cfg = loadConfig({ explicit: configPath });
  const manifest = guestManifest(cfg);
  const kernel = manifest?.['kernel'] as { release?: string; packageVersion?: string } | undefined;
  return {
    meta: { version: shimVersion(), node: process.version, config: cfg.file, config_source: cfg.source },
    versions: {
      shim: shimVersion(),
      qemu: (await qemuVersion(cfg)) ?? 'unavailable',
      guest_kernel: kernel?.release ?? 'unknown (no manifest.json next to the kernel)',
      guest_image_hash: typeof manifest?.['hash'] === 'string' ? manifest['hash'] : 'unknown',
      // The agent ships inside the guest image, built from this checkout.
      agent: shimVersion(),
    },
    paths: {
      shim: process.env['KATA_TS_SHIM'] ?? resolve(ROOT, 'bin/containerd-shim-kata-v2'),
      qemu: cfg.hypervisor.qemu.path,
      kernel: cfg.hypervisor.qemu.kernel,
      initrd: cfg.hypervisor.qemu.initrd,
      image: cfg.hypervisor.qemu.image,
      virtiofsd: cfg.hypervisor.qemu.virtio_fs_daemon,
    },
    // What the sizing keys come to on this host (docs/sizing.md).
    sizing: podSizing(cfg),
    // How each pod's QEMU is confined, and every setting that weakens it (docs/security.md).
    security: qemuHardening(cfg),
    ...configData(cfg),
  };
}

/** A pod VM's bounds on this host, and whether it grows after boot (q35 hot-plug) or keeps its boot size (microvm). */
function podSizing(cfg: KataConfig): Record<string, unknown> {
  const q = cfg.hypervisor.qemu;
  const room = hotplugRoom(q, hostCapacity());
  return {
    boot: `default_vcpus + the first container's CPU quotas, default_memory + its memory limit`,
    grows_by_hotplug: q.machine_type === 'q35',
    max_vcpus: room.maxVcpus,
    max_memory_mib: room.maxMemoryMiB,
    ...(q.machine_type === 'q35' ? { memory_slots: room.memorySlots } : { note: 'microvm has no hot-plug: a pod VM keeps its boot size (machine_type = "q35" grows)' }),
  };
}

/** containerd-config: adds the runtime to a containerd config file (src/install/containerd-config.ts). */
async function containerdConfig(args: Args): Promise<number> {
  const file = resolve(args.file ?? '/etc/containerd/config.toml');
  const entry = { handler: args.handler ?? 'kata', configPath: resolve(args.runtimeConfig ?? findConfig({ explicit: args.config }).file) };
  const old = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const r = addRuntime(old, entry, file);
  if (args.dryRun) {
    process.stdout.write(r.changed ? r.text : `${file}: unchanged (${r.why})\n`);
    return 0;
  }
  if (!r.changed) {
    process.stdout.write(`${file}: unchanged (${r.why})\n`);
    return 0;
  }
  const mode = existsSync(file) ? statSync(file).mode & 0o777 : 0o644;
  let backup = '';
  if (existsSync(file)) {
    backup = `${file}.bak-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    copyFileSync(file, backup);
  } else {
    mkdirSync(dirname(file), { recursive: true, mode: 0o755 });
  }
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, r.text, { mode });
  renameSync(tmp, file);
  process.stdout.write(`${file}: added the ${entry.handler} runtime (ConfigPath ${entry.configPath})${backup ? `; the old file is ${backup}` : ''}; restart containerd to use it\n`);
  return 0;
}

export async function main(argv: readonly string[]): Promise<number> {
  let args: Args;
  try {
    args = parseArgs(argv);
  } catch (err) {
    process.stderr.write(`kata-ts-runtime: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  switch (args.cmd) {
    case 'help':
      process.stdout.write(USAGE);
      return 0;
    case 'check': {
      const r = await check(args.config);
      if (args.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
      else printCheck(r);
      return r.canRunPods ? 0 : 1;
    }
    case 'env': {
      try {
        const e = await env(args.config);
        process.stdout.write(args.json ? `${JSON.stringify(e, null, 2)}\n` : `${stringify(e)}\n`);
        return 0;
      } catch (err) {
        process.stderr.write(`kata-ts-runtime env: ${(err as Error).message}\n`);
        return 1;
      }
    }
    case 'factory': {
      const print = (l: string): void => void process.stdout.write(`${l}\n`);
      try {
        if (args.sub === 'init') await factoryInit(args.config, print);
        else if (args.sub === 'destroy') await factoryDestroy(args.config, print);
        else {
          const st = await factoryStatus(args.config);
          if (args.json) print(JSON.stringify(st, null, 2));
          else printFactoryStatus(st, print);
        }
        return 0;
      } catch (err) {
        process.stderr.write(`kata-ts-runtime factory ${args.sub}: ${(err as Error).message}\n`);
        return 1;
      }
    }
    case 'containerd-config':
      try {
        return await containerdConfig(args);
      } catch (err) {
        process.stderr.write(`kata-ts-runtime containerd-config: ${(err as Error).message}\n`);
        return 1;
      }
    default:
      process.stderr.write(`kata-ts-runtime: unknown command ${args.cmd}\n${USAGE}`);
      return 2;
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  }, (err: unknown) => {
    process.stderr.write(`kata-ts-runtime: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  });
}
