/**
 * `kata-ts-runtime factory init | status | destroy`, as Kata's
 * `kata-runtime factory`: make the VM templates the configured pods would
 * clone (one without a NIC, as for `ctr run`, one with, as for CRI pods),
 * show what is under `[factory] template_path` (which templates match the
 * configuration, which are stale or broken, the last failure of each), and
 * remove all of it.
 */
import { loadConfig, type KataConfig } from '../config/index.js';
import { FailedPreconditionError } from '../errors/index.js';
import { createLogger } from '../log/index.js';
import { destroyTemplates, listTemplates, TemplateFactory, templateKey, type TemplateStatus } from '../factory/index.js';
import { sandboxBootOptions, warmUpGuest } from '../sandbox/index.js';
import { podVmSettings } from '../shim/pod-vm.js';
import { DEFAULT_RESOURCES } from '../sandbox/index.js';

export interface FactoryTemplateLine {
  key: string;
  /** Which configured pod shape it serves (current keys only). */
  serves?: 'pods without a network' | 'pods with a network';
  state: TemplateStatus['state'] | 'absent';
  current: boolean;
  reason?: string;
  createdAt?: string;
  qemuVersion?: string;
  memoryMiB?: number;
  memoryOnDiskMiB?: number;
  bootMs?: number;
  lastFailure?: { at: string; reason: string };
}

export interface FactoryStatus {
  config: string;
  enabled: boolean;
  templatePath: string;
  templates: FactoryTemplateLine[];
}

/** Warnings and errors on stderr (a template that cannot be made says why). */
function cliLogger() {
  const l = createLogger({ name: 'kata-ts-runtime' });
  l.level = 'warn';
  return l;
}

function enabledConfig(configPath: string | undefined): KataConfig {
  const cfg = loadConfig({ explicit: configPath });
  if (!cfg.factory.enable_template) {
    throw new FailedPreconditionError(`${cfg.file}: [factory] enable_template is false: the VM factory is not enabled`);
  }
  return cfg;
}

/** The two shapes a pod VM takes under this configuration (no annotations): without and with a NIC. */
async function currentShapes(cfg: KataConfig, factory: TemplateFactory) {
  const settings = podVmSettings(cfg);
  const boot = sandboxBootOptions(settings.image, settings.vm);
  const resources = settings.vm.resources ?? DEFAULT_RESOURCES;
  const logger = cliLogger();
  const shapes = [];
  for (const nic of [false, true]) {
    const req = { resources, logger, ...(nic ? { tapNets: [{ kind: 'tap-net' as const, id: 'net0' }] } : {}) };
    const id = await factory.spec(boot, req);
    shapes.push({ nic, id, key: templateKey(id), boot, req });
  }
  return shapes;
}

export async function factoryInit(configPath: string | undefined, print: (line: string) => void): Promise<void> {
  const cfg = enabledConfig(configPath);
  const logger = cliLogger();
  const factory = new TemplateFactory({ root: cfg.factory.template_path, logger, buildTimeoutMs: cfg.agent.kata.dial_timeout * 1000, warmUp: warmUpGuest });
  for (const s of await currentShapes(cfg, factory)) {
    const t0 = Date.now();
    const tpl = await factory.ensure(s.key, s.id, s.boot, s.req);
    print(`template ${tpl.key} (${s.nic ? 'pods with a network' : 'pods without a network'}): ready in ${tpl.dir} (${Date.now() - t0} ms)`);
  }
}

export async function factoryStatus(configPath: string | undefined): Promise<FactoryStatus> {
  const cfg = loadConfig({ explicit: configPath });
  const root = cfg.factory.template_path;
  const logger = cliLogger();
  const current = new Map<string, boolean>();
  if (cfg.factory.enable_template) {
    for (const s of await currentShapes(cfg, new TemplateFactory({ root, logger }))) current.set(s.key, s.nic);
  }
  const lines: FactoryTemplateLine[] = [];
  const seen = new Set<string>();
  for (const t of await listTemplates(root)) {
    seen.add(t.key);
    const nic = current.get(t.key);
    lines.push({
      key: t.key,
      ...(nic !== undefined ? { serves: nic ? 'pods with a network' as const : 'pods without a network' as const } : {}),
      state: t.state,
      current: nic !== undefined,
      ...(t.reason ? { reason: t.reason } : {}),
      ...(t.meta ? { createdAt: t.meta.createdAt, qemuVersion: t.meta.qemuVersion, memoryMiB: t.meta.identity.spec.memoryMiB, bootMs: t.meta.bootMs } : {}),
      ...(t.memoryDiskBytes !== undefined ? { memoryOnDiskMiB: Math.round(t.memoryDiskBytes / 1048576) } : {}),
      ...(t.lastFailure ? { lastFailure: t.lastFailure } : {}),
    });
  }
  for (const [key, nic] of current) {
    if (!seen.has(key)) lines.push({ key, serves: nic ? 'pods with a network' : 'pods without a network', state: 'absent', current: true });
  }
  return { config: cfg.file, enabled: cfg.factory.enable_template, templatePath: root, templates: lines };
}

export function printFactoryStatus(s: FactoryStatus, print: (line: string) => void): void {
  print(`config: ${s.config}`);
  print(`[factory] enable_template = ${s.enabled}, template_path = ${s.templatePath}`);
  if (s.templates.length === 0) print('no templates');
  for (const t of s.templates) {
    const what = t.current ? `current, ${t.serves}` : 'stale: no pod of this configuration uses it';
    let line = `${t.key}  ${t.state}  (${what})`;
    if (t.state === 'ready') line += `  made ${t.createdAt}, ${t.memoryMiB} MiB guest RAM (${t.memoryOnDiskMiB} MiB in the file), boot ${t.bootMs} ms, QEMU ${t.qemuVersion}`;
    if (t.reason) line += `  why: ${t.reason}`;
    print(line);
    if (t.lastFailure) print(`    last failure ${t.lastFailure.at}: ${t.lastFailure.reason}`);
  }
}

export async function factoryDestroy(configPath: string | undefined, print: (line: string) => void): Promise<void> {
  const cfg = loadConfig({ explicit: configPath });
  const removed = await destroyTemplates(cfg.factory.template_path);
  print(removed.length === 0 ? `nothing under ${cfg.factory.template_path}` : `removed ${removed.join(', ')}`);
}
