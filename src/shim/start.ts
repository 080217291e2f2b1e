/**
 * `containerd-shim-kata-v2 … start`: find or spawn the pod's serving shim,
 * write `<bundle>/address`, print the address, exit.
 *
 * containerd runs this with CombinedOutput(): it waits for our exit and for
 * EOF on the one pipe that is our stdout and stderr. So the serving shim gets
 * /dev/null for stdio (it logs into the bundle's `log` FIFO), its own session
 * (it must outlive containerd), and tells us it listens through a pipe on its
 * fd 3 that we then drop.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../log/index.js';
import { google, runtimeoptions } from '../proto/gen/containerd.js';
import { cleanupPodDir, socketAlive } from './cleanup.js';
import { serveArgs, type ShimFlags } from './flags.js';
import { bundleAnnotations, podIdOf, podPaths, runRoot } from './pod-paths.js';

/** How long the serving shim may take to listen (Node start + module load on a busy host). */
export const SERVE_READY_TIMEOUT_MS = 30_000;
/** containerd writes the options and closes our stdin at once. */
const STDIN_TIMEOUT_MS = 5_000;

/** Reads stdin (the runtime options Any) to EOF, bounded. */
async function drainStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, STDIN_TIMEOUT_MS);
    process.stdin.on('data', (c: Buffer) => chunks.push(c));
    process.stdin.once('end', () => { clearTimeout(timer); resolve(); });
    process.stdin.once('error', () => { clearTimeout(timer); resolve(); });
  });
  process.stdin.destroy();
  return Buffer.concat(chunks);
}

/** The env var through which `start` hands containerd's runtime option ConfigPath to the serving shim. */
export const CONFIG_PATH_ENV = 'KATA_TS_CONFIG_PATH';

/**
 * containerd's runtime options (what `start` gets on stdin): CRI sends
 * `runtimeoptions.v1.Options` with `config_path` (the runtime table's
 * `options.ConfigPath`); anything else carries no config path for us.
 */
export function configPathFromOptions(raw: Uint8Array): string | undefined {
  if (raw.length === 0) return undefined;
  try {
    const any = google.protobuf.Any.decode(raw);
    if (!any.type_url.endsWith('runtimeoptions.v1.Options')) return undefined;
    const p = runtimeoptions.v1.Options.decode(any.value).configPath;
    return p || undefined;
  } catch {
    return undefined;
  }
}

/** Writes `<bundle>/address` atomically (containerd reads it after a restart). */
export function writeAddressFile(bundle: string, address: string): void {
  const path = join(bundle, 'address');
  writeFileSync(`${path}.tmp`, address, { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}

/**
 * V8 flags of the serving shim (KATA_TS_SHIM_NODE_FLAGS, space-separated).
 * None by default: measured with a running pod, `--max-semi-space-size=1`
 * changed nothing (52.0 vs 51.8 MB RSS) and `--lite-mode` saved 2.3 MB at
 * the price of an interpreter-only shim; bare Node is ~40 MB of that.
 */
export const SERVE_NODE_FLAGS: string[] = [];

function serveNodeFlags(): string[] {
  const env = process.env['KATA_TS_SHIM_NODE_FLAGS'];
  return env !== undefined ? env.split(/\s+/).filter(Boolean) : SERVE_NODE_FLAGS;
}

/** Spawns `<node> <main.js> <flags>` detached and waits for "OK" on its fd 3. */
function spawnServer(flags: ShimFlags, bundle: string, mainScript: string, configPath: string | undefined): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...serveNodeFlags(), mainScript, ...serveArgs(flags)], {
      cwd: bundle,
      detached: true,
      stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
      env: configPath ? { ...process.env, [CONFIG_PATH_ENV]: configPath } : process.env,
    });
    const ready = child.stdio[3] as NodeJS.ReadableStream & { destroy(): void };
    let text = '';
    let settled = false;
    const finish = (err?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ready.destroy();
      child.unref();
      if (err) {
        if (child.exitCode === null && child.pid) {
          try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ }
        }
        reject(err);
      } else resolve(child.pid!);
    };
    const timer = setTimeout(() => finish(new Error(`shim did not listen within ${SERVE_READY_TIMEOUT_MS} ms`)), SERVE_READY_TIMEOUT_MS);
    child.once('error', (err) => finish(new Error(`spawn shim: ${err.message}`)));
    ready.on('data', (c: Buffer) => {
      text += c.toString();
      if (text.startsWith('OK\n')) finish();
    });
    ready.once('end', () => finish(new Error(text.startsWith('OK') ? '' : `shim failed to start: ${text.trim() || 'no reason given'}`)));
    child.once('exit', (code, sig) => finish(new Error(`shim exited during start (${sig ?? code}): ${text.trim()}`)));
  });
}

export async function startAction(flags: ShimFlags, mainScript: string, logger: Logger): Promise<string> {
  const configPath = configPathFromOptions(await drainStdin());
  const bundle = process.cwd();
  const podId = podIdOf(flags.id, await bundleAnnotations(bundle));
  const paths = podPaths(runRoot(), flags.address, flags.namespace, podId);
  if (!(await socketAlive(paths.socket))) {
    // A pod dir without a live shim is what a dead shim left: clean it first.
    const stale = await cleanupPodDir(paths.dir, logger);
    if (stale.leftMounts.length > 0) throw new Error(`pod dir ${paths.dir} still has mounts: ${stale.leftMounts.join(', ')}`);
    mkdirSync(runRoot(), { recursive: true, mode: 0o711 });
    mkdirSync(paths.dir, { mode: 0o700 });
    const pid = await spawnServer({ ...flags, id: podId }, bundle, mainScript, configPath);
    logger.info({ pid, pod: podId, address: paths.address, configPath }, 'shim started');
  }
  writeAddressFile(bundle, paths.address);
  return paths.address;
}
