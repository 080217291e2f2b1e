/**
 * iproute2's JSON output (`ip -d -j addr show`, `ip -j route show`,
 * `tc -j qdisc show`) as plain types. Pure: table-tested with captured
 * output. Unexpected shapes are INTERNAL errors naming the command.
 */
import { InternalError } from '../errors/index.js';

export type IpFamily = 4 | 6;

export interface LinkAddress {
  family: IpFamily;
  /** "10.88.0.2/24" */
  cidr: string;
  /** "global", "link", "host", … */
  scope: string;
}

export interface LinkInfo {
  index: number;
  name: string;
  /** Lower case; "" when the link has none. */
  mac: string;
  mtu: number;
  /** "ether", "loopback", "none", … */
  linkType: string;
  /** rtnetlink kind with -d: "veth", "tun", "bridge"… ("" for a physical NIC). */
  kind: string;
  flags: string[];
  up: boolean;
  addresses: LinkAddress[];
}

export interface RouteInfo {
  family: IpFamily;
  /** "default" or CIDR (a host route gets /32 or /128). */
  dest: string;
  gateway?: string;
  device?: string;
  /** The preferred source (prefsrc). */
  source?: string;
  /** "link", "host", … (absent: global). */
  scope?: string;
  metric?: number;
  /** "kernel", "boot", "static", "dhcp", … (absent: boot). */
  protocol?: string;
}

export interface QdiscInfo {
  kind: string;
  handle: string;
  parent?: string;
}

type Obj = Record<string, unknown>;

function parseArray(text: string, what: string): Obj[] {
  let v: unknown;
  try {
    v = JSON.parse(text.trim() === '' ? '[]' : text);
  } catch (err) {
    throw new InternalError(`${what}: output is not JSON: ${text.slice(0, 200)}`, { cause: err });
  }
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'object' && x !== null)) {
    throw new InternalError(`${what}: expected a JSON array of objects`);
  }
  return v as Obj[];
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/** `ip [-d] -j addr show` (links with their addresses). */
export function parseIpAddrJson(text: string): LinkInfo[] {
  return parseArray(text, 'ip -j addr show').flatMap((l): LinkInfo[] => {
    const name = str(l['ifname']);
    const index = num(l['ifindex']);
    if (name === undefined || index === undefined) return [];
    const flags = Array.isArray(l['flags']) ? (l['flags'] as unknown[]).filter((f): f is string => typeof f === 'string') : [];
    const linkinfo = l['linkinfo'] as Obj | undefined;
    const addrs = Array.isArray(l['addr_info']) ? (l['addr_info'] as Obj[]) : [];
    return [{
      index,
      name,
      mac: (str(l['address']) ?? '').toLowerCase(),
      mtu: num(l['mtu']) ?? 0,
      linkType: str(l['link_type']) ?? '',
      kind: str(linkinfo?.['info_kind']) ?? '',
      flags,
      up: flags.includes('UP'),
      addresses: addrs.flatMap((a): LinkAddress[] => {
        const fam = a['family'] === 'inet' ? 4 : a['family'] === 'inet6' ? 6 : undefined;
        const local = str(a['local']);
        const prefix = num(a['prefixlen']);
        if (fam === undefined || local === undefined || prefix === undefined) return [];
        // A point-to-point address (with a peer) is not something a pod NIC has.
        if (a['address'] !== undefined && a['address'] !== local) return [];
        return [{ family: fam, cidr: `${local}/${prefix}`, scope: str(a['scope']) ?? 'global' }];
      }),
    }];
  });
}

/** `ip -4|-6 -j route show` (the main table): unicast routes. */
export function parseIpRouteJson(text: string, family: IpFamily): RouteInfo[] {
  return parseArray(text, `ip -${family} -j route show`).flatMap((r): RouteInfo[] => {
    const type = str(r['type']);
    if (type !== undefined && type !== 'unicast') return [];
    let dest = str(r['dst']);
    if (dest === undefined) return [];
    if (dest !== 'default' && !dest.includes('/')) dest = `${dest}/${family === 4 ? 32 : 128}`;
    const out: RouteInfo = { family, dest };
    const gw = str(r['gateway']);
    if (gw !== undefined) out.gateway = gw;
    const dev = str(r['dev']);
    if (dev !== undefined) out.device = dev;
    const src = str(r['prefsrc']);
    if (src !== undefined) out.source = src;
    const scope = str(r['scope']);
    if (scope !== undefined && scope !== 'global' && scope !== 'universe') out.scope = scope;
    const metric = num(r['metric']);
    if (metric !== undefined) out.metric = metric;
    const proto = str(r['protocol']);
    if (proto !== undefined) out.protocol = proto;
    return [out];
  });
}

/** `tc -j qdisc show dev X`. */
export function parseQdiscJson(text: string): QdiscInfo[] {
  return parseArray(text, 'tc -j qdisc show').flatMap((q): QdiscInfo[] => {
    const kind = str(q['kind']);
    const handle = str(q['handle']);
    if (kind === undefined || handle === undefined) return [];
    const parent = str(q['parent']);
    return [{ kind, handle, ...(parent !== undefined ? { parent } : {}) }];
  });
}
