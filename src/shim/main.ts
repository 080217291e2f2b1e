#!/usr/bin/env node
/**
 * containerd-shim-kata-v2: containerd's entry point for runtime
 * "io.containerd.kata.v2". `start` and `delete` are short commands (see
 * start.ts, delete.ts); no action serves (serve.ts). Each path loads only
 * what it needs: `start` runs on every container create and must be quick.
 */
import { fileURLToPath } from 'node:url';
import { parseShimArgs, UsageError, type ShimFlags } from './flags.js';
import { SHIM_VERSION } from '../service/version.js';

async function main(): Promise<void> {
  let flags: ShimFlags;
  try {
    flags = parseShimArgs(process.argv.slice(2));
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`containerd-shim-kata-v2: ${err.message}\nusage: containerd-shim-kata-v2 -namespace NS -address ADDR -publish-binary BIN -id ID [-bundle DIR] [-debug] [start|delete]\n`);
      process.exit(2);
    }
    throw err;
  }
  if (flags.version) {
    process.stdout.write(`containerd-shim-kata-v2:\n  Version: ${SHIM_VERSION}\n  Runtime: node ${process.version}\n`);
    return;
  }
  switch (flags.action) {
    case 'start': {
      // containerd reads our stdout and stderr as ONE pipe and dials what is
      // on it: logs go to the bundle's log FIFO (containerd opened it before
      // running us); stderr only carries a fatal error.
      const { openShimLog } = await import('./log.js');
      const logger = openShimLog(process.cwd(), flags.debug, { fallbackToStderr: false });
      const { startAction } = await import('./start.js');
      const address = await startAction(flags, fileURLToPath(import.meta.url), logger);
      process.stdout.write(address);
      await new Promise<void>((r) => logger.flush(() => r()));
      return;
    }
    case 'delete': {
      // stderr is what containerd logs as "cleanup warnings".
      const { createLogger } = await import('../log/index.js');
      const logger = createLogger({ debug: flags.debug, name: 'containerd-shim-kata-v2', destination: 2 });
      logger.level = flags.debug ? 'debug' : 'warn';
      const { deleteAction } = await import('./delete.js');
      const out = await deleteAction(flags, logger);
      await new Promise<void>((r) => process.stdout.write(out, () => r()));
      return;
    }
    case 'serve': {
      const { serve } = await import('./serve.js');
      await serve(flags);
      return;
    }
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`containerd-shim-kata-v2: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
