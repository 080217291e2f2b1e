// A network of the test's own for CRI pods: a network namespace that the
// test makes (containerd runs in it: startContainerd({ netns: net.ns })), and a
// CNI conflist (bridge + host-local + loopback) in a conf dir of its own, so
// that CNI's bridge, the pods' veths and every packet stay out of the
// machine's real network.
//
//   const net = createTestNetwork('kata-cri');
//   const c = await startContainerd({ cri: { cniConfDir: net.confDir }, netns: net.ns, … });
//   … net.exec('busybox', ['wget', …]) runs a client in that namespace …
//   await c.stop(); net.close();   // removes the namespace, the conf dir and our CNI state
//
// libcni caches results under /var/lib/cni/results whatever the config says,
// and host-local keeps its leases under /var/lib/cni/networks/<network name>:
// close() removes only the entries of this network's (unique) name.

import { spawnSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestNetwork {
  /** Name under /var/run/netns (also the CNI network's name). */
  readonly ns: string;
  readonly nsPath: string;
  /** CNI bridge in `ns` (≤ 15 characters). */
  readonly bridge: string;
  /** e.g. 10.99.R.0/24 */
  readonly subnet: string;
  /** The bridge's address (CNI isGateway): 10.99.R.1 */
  readonly gateway: string;
  /** Regex source matching an address of the subnet. */
  readonly addressPattern: string;
  /** CNI conf dir holding the conflist (the CRI plugin's cni.conf_dir). */
  readonly confDir: string;
  /** Runs a command in the namespace (`nsenter --net` only: same mounts), bounded. */
  exec(cmd: string, args: string[], timeoutMs?: number): { status: number | null; stdout: string; out: string };
  /** Files of libcni's result cache and host-local's leases that belong to this network. */
  cniState(): string[];
  /** Removes the namespace, the conf dir and this network's CNI state (idempotent). */
  close(): void;
}

function entries(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}

function run(cmd: string, args: string[], timeoutMs = 20_000): { status: number | null; stdout: string; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL' });
  return { status: r.status, stdout: r.stdout ?? '', out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

/** Makes the namespace (lo up) and the conflist. `prefix`: at most 8 characters. */
export function createTestNetwork(prefix = 'kata-cri'): TestNetwork {
  const tag = randomBytes(3).toString('hex');
  const ns = `${prefix.slice(0, 8)}-${tag}`;
  const nsPath = `/var/run/netns/${ns}`;
  const R = randomInt(1, 255);
  const subnet = `10.99.${R}.0/24`;
  const gateway = `10.99.${R}.1`;
  const bridge = `kcni-${tag}`;
  const mk = run('ip', ['netns', 'add', ns]);
  if (mk.status !== 0) throw new Error(`ip netns add ${ns}: ${mk.out}`);
  let confDir = '';
  try {
    const lo = run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    if (lo.status !== 0) throw new Error(`ip -n ${ns} link set lo up: ${lo.out}`);
    confDir = mkdtempSync(join(tmpdir(), `${prefix}-cni-`));
    writeFileSync(join(confDir, '10-test.conflist'), JSON.stringify({
      cniVersion: '1.0.0',
      name: ns,
      plugins: [
        {
          type: 'bridge', bridge, isGateway: true, ipMasq: false, hairpinMode: true,
          ipam: { type: 'host-local', ranges: [[{ subnet, gateway }]], routes: [{ dst: '0.0.0.0/0' }] },
        },
        { type: 'loopback' },
      ],
    }, null, 2));
  } catch (e) {
    run('ip', ['netns', 'del', ns]);
    if (confDir) rmSync(confDir, { recursive: true, force: true });
    throw e;
  }
  const cniState = (): string[] => {
    const out: string[] = [];
    for (const f of entries('/var/lib/cni/results')) if (f.startsWith(`${ns}-`)) out.push(join('/var/lib/cni/results', f));
    const leases = join('/var/lib/cni/networks', ns);
    for (const f of entries(leases)) if (/^\d+\.\d+\.\d+\.\d+$/.test(f)) out.push(join(leases, f));
    return out;
  };
  let closed = false;
  return {
    ns, nsPath, bridge, subnet, gateway, confDir,
    addressPattern: `10\\.99\\.${R}\\.\\d+`,
    exec: (cmd, args, timeoutMs) => run('nsenter', [`--net=${nsPath}`, '--', cmd, ...args], timeoutMs),
    cniState,
    close() {
      if (closed) return;
      closed = true;
      for (const f of cniState()) rmSync(f, { force: true });
      rmSync(join('/var/lib/cni/networks', ns), { recursive: true, force: true });
      run('ip', ['netns', 'del', ns]);
      rmSync(confDir, { recursive: true, force: true });
    },
  };
}
