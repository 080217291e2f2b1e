/**
 * The serving shim: one process per pod. Listens on the pod's socket, serves
 * containerd.task.v2.Task with the Pod, sends events to containerd, and ends
 * on Shutdown (no container left) or SIGTERM, stopping the VM and removing
 * the pod dir. It survives containerd: it ignores SIGHUP/SIGPIPE, and its
 * events wait in the queue while containerd is away.
 */
import { closeSync, existsSync, fstatSync, readdirSync, rmSync, writeSync } from 'node:fs';
import { createEventPublisher, EventQueue } from '../events/index.js';
import { Pod } from '../service/pod.js';
import { TASK_SERVICE, taskServiceHandlers } from '../service/task-service.js';
import { TtrpcServer } from '../ttrpc/index.js';
import { mountsUnder } from '../vm/index.js';
import type { ShimFlags } from './flags.js';
import { openShimLog } from './log.js';
import { bootSandboxFactory, cleanupCgroupState, loadShimConfig } from './pod-vm.js';
import { podPaths, runRoot } from './pod-paths.js';

/** Bound on the whole shutdown (VM stop, IO, events flush). */
const SHUTDOWN_TIMEOUT_MS = 30_000;
/** Time given to queued events (e.g. the last /tasks/delete) to reach containerd on shutdown. */
const EVENTS_FLUSH_TIMEOUT_MS = 3_000;
/** The readiness pipe from `start`. */
const READY_FD = 3;

function tellStarter(msg: string): void {
  try {
    const st = fstatSync(READY_FD);
    if (!st.isFIFO() && !st.isSocket()) return;
    writeSync(READY_FD, msg);
    closeSync(READY_FD);
  } catch {
    /* not started by `start` */
  }
}

export async function serve(flags: ShimFlags): Promise<void> {
  const bundle = process.cwd();
  const logger = openShimLog(bundle, flags.debug);
  const paths = podPaths(runRoot(), flags.address, flags.namespace, flags.id);
  // Before any child logger: [runtime] enable_debug sets the level they inherit.
  const config = loadShimConfig(logger);
  const log = logger.child({ pod: flags.id, namespace: flags.namespace });
  process.on('SIGHUP', () => {});
  process.on('SIGPIPE', () => {});
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'));

  const queue = new EventQueue({
    publisher: createEventPublisher({
      ttrpcAddress: process.env['TTRPC_ADDRESS'],
      publishBinary: flags.publishBinary,
      containerdAddress: flags.address,
      logger: log,
    }),
    namespace: flags.namespace,
    logger: log,
  });
  const pod = new Pod({
    podId: flags.id,
    namespace: flags.namespace,
    logger: log,
    sandboxFactory: bootSandboxFactory(log, paths.dir, config),
    events: { publish: (topic, typeName, value) => queue.publish(topic, { typeName, value }) },
  });
  const server = new TtrpcServer({ logger: log });

  let ending: Promise<void> | undefined;
  const shutdown = (why: string, code = 0): Promise<void> => {
    ending ??= (async () => {
      log.info({ why }, 'shim shutting down');
      const hard = setTimeout(() => {
        log.error('shutdown timed out');
        process.exit(1);
      }, SHUTDOWN_TIMEOUT_MS);
      hard.unref();
      await pod.close().catch((err: unknown) => log.error({ err }, 'closing the pod failed'));
      const left = await queue.flush(EVENTS_FLUSH_TIMEOUT_MS);
      if (left > 0) log.warn({ left }, 'events not delivered before exit');
      await queue.close();
      await server.close().catch(() => {});
      rmSync(paths.socket, { force: true });
      // A pod cgroup whose removal failed at stop (cgroup.json kept): once more before its record goes.
      await cleanupCgroupState(paths.dir, log);
      if (existsSync(paths.dir) && mountsUnder(paths.dir).length === 0) rmSync(paths.dir, { recursive: true, force: true });
      log.info('shim exiting');
      // Let pino write its last lines.
      setTimeout(() => process.exit(code), 50);
    })();
    return ending;
  };

  server.register(TASK_SERVICE, taskServiceHandlers(pod, {
    // After the answer is on its way: containerd does not mind the connection closing.
    onShutdown: () => setImmediate(() => void shutdown('Shutdown with no container left')),
  }, log));
  try {
    await server.listen(paths.socket);
  } catch (err) {
    tellStarter(`listen ${paths.socket}: ${(err as Error).message}\n`);
    throw err;
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  // `kill -USR1 <shim pid>`: what the pod holds, into the shim log (containerd's log).
  process.on('SIGUSR1', () => {
    const mem = process.memoryUsage();
    log.info({ dump: pod.debugState(), events: { pending: queue.pending, waiting: queue.waiting }, rss: mem.rss, heapUsed: mem.heapUsed,
      fds: (() => { try { return readdirSync('/proc/self/fd').length; } catch { return -1; } })() }, 'debug dump');
  });
  process.on('SIGINT', () => void shutdown('SIGINT'));
  log.info({ socket: paths.socket, bundle }, 'shim serving');
  tellStarter('OK\n');
}
