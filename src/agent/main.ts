/**
 * The guest agent's entry point: parse flags, build the Sandbox, serve the
 * AgentService over the chosen transport until SIGTERM.
 *
 *   UV_THREADPOOL_SIZE=16 node --max-semi-space-size=16 boot.cjs \
 *     --serial-port agent.0 --runtime /usr/bin/crun --state-dir /run/agent
 *
 * UV_THREADPOOL_SIZE must be in the environment before Node starts: the
 * serial read loop holds one pool thread for good, and libuv sizes the pool
 * once, when it is first used (before this code runs).
 */
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger, type Logger } from '../log/index.js';
import { TtrpcServer } from '../ttrpc/index.js';
import { parseAgentArgs, rootIsInitramfs, UsageError, USAGE, type AgentOptions } from './options.js';
import { OciRuntime } from './runtime.js';
import { Sandbox } from './sandbox.js';
import { CloneIdentity } from './clone-identity.js';
import { agentServiceHandlers } from './service.js';
import { startTransport } from './transport.js';
import { AGENT_SERVICE, AGENT_VERSION } from './version.js';

async function findHelper(name: string, explicit: string | undefined, logger: Logger, without: string): Promise<string | undefined> {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = explicit ? [explicit] : [join(here, name), `/usr/libexec/kata-agent/${name}`];
  for (const c of candidates) {
    try {
      await access(c, fsConstants.X_OK);
      return c;
    } catch {
      /* next */
    }
  }
  logger.warn({ candidates }, `${name} not found: ${without}`);
  return undefined;
}

async function decideNoPivot(mode: AgentOptions['noPivot']): Promise<boolean> {
  if (mode !== 'auto') return mode === 'always';
  return rootIsInitramfs(await readFile('/proc/self/mountinfo', 'utf8').catch(() => ''));
}

async function main(): Promise<void> {
  let opts: AgentOptions;
  try {
    opts = parseAgentArgs(process.argv.slice(2));
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`agent: ${err.message}\n${USAGE}\n`);
      process.exit(2);
    }
    throw err;
  }
  const logger = createLogger({ debug: opts.debug, name: 'kata-agent' });
  if (!process.env.UV_THREADPOOL_SIZE && opts.transport.kind === 'serial') {
    logger.warn('UV_THREADPOOL_SIZE is not set: the serial port read loop holds one of the 4 default pool threads');
  }
  await mkdir(opts.stateDir, { recursive: true, mode: 0o700 });

  const runtimeRoot = join(opts.stateDir, 'crun');
  await mkdir(runtimeRoot, { recursive: true, mode: 0o700 });
  const noPivot = await decideNoPivot(opts.noPivot);
  const runtime = new OciRuntime({ path: opts.runtime, root: runtimeRoot, noPivot, logger: logger.child({ module: 'runtime' }) });
  // Never the guest OOM killer's choice: a container that runs out of memory is what must die, not
  // the agent (which would take the pod). The runtime is started through `sys-helper oom-exec 0`, so
  // that containers start from 0 (or their spec's value) instead of inheriting -1000.
  const sysHelper = await findHelper('sys-helper', undefined, logger, 'no OOM protection of the agent; a VM restored from a template cannot be reseeded or have its clock set');
  let launchPrefix: string[] | undefined;
  if (sysHelper) {
    try {
      await writeFile('/proc/self/oom_score_adj', '-1000');
      launchPrefix = [sysHelper, 'oom-exec', '0', '--'];
    } catch (err) {
      logger.warn({ err }, 'cannot protect the agent from the OOM killer');
    }
  }
  const sandbox = new Sandbox({
    ...(launchPrefix ? { launchPrefix } : {}),
    runtime,
    stateDir: opts.stateDir,
    ttyHelper: await findHelper('tty-helper', opts.ttyHelper, logger, 'terminal containers will be refused'),
    cgroupParent: opts.cgroupParent,
    logger,
  });
  await sandbox.init();

  const server = new TtrpcServer({ logger: logger.child({ module: 'ttrpc' }), drainTimeoutMs: 1_000 });
  const identity = new CloneIdentity(sysHelper);
  server.register(AGENT_SERVICE, agentServiceHandlers({ sandbox, runtime, logger, identity }));
  const transport = await startTransport(opts.transport, (conn) => server.serve(conn), logger.child({ module: 'transport' }));
  logger.info({ version: AGENT_VERSION, runtime: opts.runtime, stateDir: opts.stateDir, noPivot, pid: process.pid }, 'agent ready');

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'agent stopping');
    // Containers are left as they are: the VM is going away with us.
    sandbox.close();
    void Promise.allSettled([transport.close(), server.close()]).then(() => {
      logger.flush();
      process.exit(0);
    });
    setTimeout(() => process.exit(0), 3_000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('uncaughtException', (err) => {
    logger.fatal({ err }, 'uncaught exception');
    logger.flush();
    process.exit(1);
  });
}

// Set only while scripts/bundle-agent.mjs loads the bundle to make its V8 code cache (scripts/agent-boot.cjs).
if (process.env['KATA_AGENT_CODE_CACHE_ONLY'] !== '1') {
  main().catch((err: unknown) => {
    process.stderr.write(`agent: fatal: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  });
}
