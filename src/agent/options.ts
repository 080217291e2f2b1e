/**
 * The agent's command line. Pure: parseAgentArgs(argv) → options or a usage
 * error; main.ts does the rest.
 */
import { parseArgs } from 'node:util';
import type { TransportConfig } from './transport.js';

export interface AgentOptions {
  transport: TransportConfig;
  /** The OCI runtime binary. */
  runtime: string;
  /** The agent's state: bundles, console sockets, the runtime's --root. */
  stateDir: string;
  /** cgroupsPath parent for specs that have none. */
  cgroupParent: string;
  /** --no-pivot for `run`: auto (when / is an initramfs), always, never. */
  noPivot: 'auto' | 'always' | 'never';
  /** The tty-helper binary; undefined: look next to the agent. */
  ttyHelper?: string;
  debug: boolean;
}

export const USAGE = `usage: agent [--serial-port NAME | --listen unix:PATH | --vsock-port N]
             [--runtime /usr/bin/crun] [--state-dir /run/agent] [--cgroup-parent /kata-agent]
             [--no-pivot auto|always|never] [--tty-helper PATH] [--debug]`;

export class UsageError extends Error {}

export function parseAgentArgs(argv: string[]): AgentOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        'serial-port': { type: 'string' },
        listen: { type: 'string' },
        'vsock-port': { type: 'string' },
        runtime: { type: 'string', default: '/usr/bin/crun' },
        'state-dir': { type: 'string', default: '/run/agent' },
        'cgroup-parent': { type: 'string', default: '/kata-agent' },
        'no-pivot': { type: 'string', default: 'auto' },
        'tty-helper': { type: 'string' },
        debug: { type: 'boolean', default: false },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const v = parsed.values;
  const chosen = [v['serial-port'], v.listen, v['vsock-port']].filter((x) => x !== undefined);
  if (chosen.length > 1) throw new UsageError('choose one of --serial-port, --listen, --vsock-port');
  let transport: TransportConfig;
  if (v.listen !== undefined) {
    if (!v.listen.startsWith('unix:') || v.listen.length <= 5) throw new UsageError('--listen: expected unix:PATH');
    transport = { kind: 'unix', path: v.listen.slice(5) };
  } else if (v['vsock-port'] !== undefined) {
    const port = Number(v['vsock-port']);
    if (!Number.isInteger(port) || port < 1 || port > 0xffffffff) throw new UsageError('--vsock-port: expected a port number');
    transport = { kind: 'vsock', port };
  } else {
    const name = v['serial-port'] ?? 'agent.0';
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(name)) throw new UsageError('--serial-port: expected a port name such as agent.0');
    transport = { kind: 'serial', portName: name };
  }
  const noPivot = v['no-pivot'];
  if (noPivot !== 'auto' && noPivot !== 'always' && noPivot !== 'never') throw new UsageError('--no-pivot: expected auto, always or never');
  if (!v['state-dir'].startsWith('/')) throw new UsageError('--state-dir: expected an absolute path');
  if (!v['cgroup-parent'].startsWith('/')) throw new UsageError('--cgroup-parent: expected an absolute cgroup path');
  return {
    transport,
    runtime: v.runtime,
    stateDir: v['state-dir'],
    cgroupParent: v['cgroup-parent'],
    noPivot,
    ttyHelper: v['tty-helper'],
    debug: v.debug,
  };
}

/** True when the root mount is an initramfs (rootfs/ramfs), where pivot_root fails. */
export function rootIsInitramfs(mountinfo: string): boolean {
  let fstype: string | undefined;
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    if (left[4] === '/') fstype = line.slice(sep + 3).split(' ')[0]; // the last mount on / wins
  }
  return fstype === 'rootfs' || fstype === 'ramfs';
}
