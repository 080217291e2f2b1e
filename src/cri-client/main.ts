#!/usr/bin/env node
// kata-crictl entry point (bin/kata-crictl runs the compiled file): wires
// run() to the process. The exit code is set, never forced, so buffered
// output to a pipe is written in full before Node exits.

import { run } from './cli.js';

function writer(stream: NodeJS.WriteStream): (data: string | Uint8Array) => Promise<void> {
  return (data) =>
    new Promise<void>((resolve) => {
      // A reader that went away (`| head`) is not an error of ours.
      if (stream.destroyed) return resolve();
      stream.write(data, () => resolve());
    });
}

for (const s of [process.stdout, process.stderr]) {
  s.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') throw e;
  });
}

process.exitCode = await run(process.argv.slice(2), {
  env: process.env,
  out: writer(process.stdout),
  err: writer(process.stderr),
});
