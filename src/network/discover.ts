/**
 * What CNI made in the pod's network namespace: the pod's interface (the
 * veth, usually eth0: the non-loopback link with a global address), its MAC,
 * MTU and addresses, and the routes through it.
 */
import { existsSync } from 'node:fs';
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from '../errors/index.js';
import { defaultRunner, NETWORK_COMMAND_TIMEOUT_MS, runIn, type CommandRunner, type Exec } from './command.js';
import { parseIpAddrJson, parseIpRouteJson, type LinkInfo, type RouteInfo } from './iproute.js';

/** The pod's interface as CNI left it. */
export interface PodInterface {
  name: string;
  index: number;
  /** Lower case. */
  mac: string;
  mtu: number;
  /** "veth" for the usual CNI plugins. */
  kind: string;
  /** Global-scope addresses, CIDR, IPv4 first ("10.88.0.2/24", "fd00::2/64"). */
  addresses: string[];
}

export interface PodNetwork {
  netnsPath: string;
  iface: PodInterface;
  /** Main-table routes through `iface`, IPv4 then IPv6, with their protocol. */
  routes: RouteInfo[];
}

export interface NetworkCallOptions {
  runner?: CommandRunner;
  /** Per command (default NETWORK_COMMAND_TIMEOUT_MS). */
  timeoutMs?: number;
}

export interface DiscoverOptions extends NetworkCallOptions {
  /** The interface to take (default: eth0, else the first veth, else the first, with a global address). */
  iface?: string;
  /** Links never taken (e.g. our own tap). */
  exclude?: readonly string[];
}

export function execOf(o: NetworkCallOptions): Exec {
  return { runner: o.runner ?? defaultRunner, timeoutMs: o.timeoutMs ?? NETWORK_COMMAND_TIMEOUT_MS };
}

export function checkNetnsPath(netnsPath: string): void {
  if (typeof netnsPath !== 'string' || !netnsPath.startsWith('/') || /[\0\n]/.test(netnsPath)) {
    throw new InvalidArgumentError(`netns: ${JSON.stringify(netnsPath)} must be an absolute path`);
  }
}

/** Picks the pod's interface among the namespace's links (pure). */
export function selectInterface(links: readonly LinkInfo[], opts: { iface?: string; exclude?: readonly string[] } = {}): PodInterface {
  const global = (l: LinkInfo) => l.addresses.filter((a) => a.scope === 'global');
  let pick: LinkInfo | undefined;
  if (opts.iface !== undefined) {
    pick = links.find((l) => l.name === opts.iface);
    if (!pick) throw new NotFoundError(`network: no interface ${opts.iface} in the pod's namespace (have ${links.map((l) => l.name).join(', ') || 'none'})`);
  } else {
    const cands = links.filter((l) => l.linkType !== 'loopback' && !l.flags.includes('LOOPBACK') && l.mac !== '' &&
      !(opts.exclude ?? []).includes(l.name) && global(l).length > 0);
    pick = cands.find((l) => l.name === 'eth0') ?? cands.find((l) => l.kind === 'veth') ?? [...cands].sort((a, b) => a.index - b.index)[0];
    if (!pick) {
      throw new FailedPreconditionError(`network: no interface with an IP address in the pod's namespace (links: ${links.map((l) => l.name).join(', ') || 'none'}; has CNI run?)`);
    }
  }
  if (pick.mac === '') throw new FailedPreconditionError(`network: interface ${pick.name} has no MAC address (${pick.linkType}): not an Ethernet link`);
  const addrs = global(pick);
  return {
    name: pick.name,
    index: pick.index,
    mac: pick.mac,
    mtu: pick.mtu,
    kind: pick.kind,
    addresses: [...addrs.filter((a) => a.family === 4), ...addrs.filter((a) => a.family === 6)].map((a) => a.cidr),
  };
}

/**
 * Reads the pod's interface and its routes from the namespace at
 * `netnsPath` (`nsenter --net=… ip -d -j addr show`, `ip -4|-6 -j route show`).
 * NOT_FOUND when the namespace does not exist; FAILED_PRECONDITION when it
 * has no interface with an address.
 */
export async function discover(netnsPath: string, opts: DiscoverOptions = {}): Promise<PodNetwork> {
  checkNetnsPath(netnsPath);
  if (!existsSync(netnsPath)) throw new NotFoundError(`network: network namespace ${netnsPath} does not exist`);
  const ex = execOf(opts);
  const what = `network: discover ${netnsPath}`;
  const links = parseIpAddrJson((await runIn(ex, netnsPath, 'ip', ['-d', '-j', 'addr', 'show'], what)).stdout);
  const iface = selectInterface(links, opts);
  const routes: RouteInfo[] = [];
  for (const fam of [4, 6] as const) {
    const out = (await runIn(ex, netnsPath, 'ip', [`-${fam}`, '-j', 'route', 'show'], what)).stdout;
    routes.push(...parseIpRouteJson(out, fam).filter((r) => r.device === iface.name));
  }
  return { netnsPath, iface, routes };
}
