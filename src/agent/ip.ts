/**
 * IP addresses and CIDR prefixes as the agent's network calls take them:
 * parsed strictly, normalized (IPv6 in RFC 5952 form), with the host-bits
 * check route destinations need. Pure; every failure names the field.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { InvalidArgumentError } from '../errors/index.js';

export type IpFamily = 4 | 6;

export interface IpAddr {
  family: IpFamily;
  /** Normalized text: dotted quad, or RFC 5952 IPv6. */
  address: string;
  /** The address as a 32- or 128-bit number. */
  value: bigint;
}

export interface Cidr extends IpAddr {
  prefix: number;
}

const bits = (f: IpFamily): number => (f === 4 ? 32 : 128);

function ipv4Value(text: string): bigint {
  return text.split('.').reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n);
}

function ipv6Value(text: string): bigint {
  let s = text;
  // An embedded IPv4 tail (::ffff:10.0.0.1) becomes two hextets.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const n = ipv4Value(v4[1]!);
    s = `${s.slice(0, v4.index)}${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
  }
  const [head, tail] = s.includes('::') ? s.split('::') as [string, string] : [s, undefined];
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

export function formatIp(family: IpFamily, value: bigint): string {
  if (family === 4) return [24n, 16n, 8n, 0n].map((s) => String((value >> s) & 0xffn)).join('.');
  const g = Array.from({ length: 8 }, (_, i) => Number((value >> BigInt((7 - i) * 16)) & 0xffffn));
  // RFC 5952: the longest run (>= 2) of zero groups, the first on a tie, becomes "::".
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (a: number[]) => a.map((x) => x.toString(16)).join(':');
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

/** A single IP address (no prefix). */
export function parseIp(text: string, field: string): IpAddr {
  if (typeof text !== 'string' || text === '') throw new InvalidArgumentError(`${field}: required`);
  let family: IpFamily;
  let value: bigint;
  if (isIPv4(text)) {
    family = 4;
    value = ipv4Value(text);
  } else if (isIPv6(text) && !text.includes('%')) {
    family = 6;
    value = ipv6Value(text);
  } else {
    throw new InvalidArgumentError(`${field}: ${JSON.stringify(text)} is not an IP address`);
  }
  return { family, value, address: formatIp(family, value) };
}

/**
 * "address/prefix". A bare address is a host prefix (/32, /128) only when
 * `bareIsHost` is set; otherwise the prefix is required.
 */
export function parseCidr(text: string, field: string, opts: { bareIsHost?: boolean } = {}): Cidr {
  if (typeof text !== 'string' || text === '') throw new InvalidArgumentError(`${field}: required`);
  const slash = text.indexOf('/');
  if (slash < 0 && !opts.bareIsHost) {
    throw new InvalidArgumentError(`${field}: ${JSON.stringify(text)} is not in CIDR form (address/prefix, e.g. 10.88.0.2/24)`);
  }
  const addrText = slash < 0 ? text : text.slice(0, slash);
  let ip: IpAddr;
  try {
    ip = parseIp(addrText, field);
  } catch {
    throw new InvalidArgumentError(`${field}: ${JSON.stringify(text)} is not in CIDR form: ${JSON.stringify(addrText)} is not an IP address`);
  }
  const max = bits(ip.family);
  let prefix = max;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > max) {
      throw new InvalidArgumentError(`${field}: ${JSON.stringify(text)}: prefix length must be 0-${max} for IPv${ip.family}`);
    }
    prefix = Number(p);
  }
  return { ...ip, prefix };
}

export function cidrText(c: Cidr): string {
  return `${c.address}/${c.prefix}`;
}

/** The network of a prefix (host bits cleared). */
export function networkOf(c: Cidr): Cidr {
  const total = BigInt(bits(c.family));
  const hostBits = total - BigInt(c.prefix);
  const value = (c.value >> hostBits) << hostBits;
  return { family: c.family, prefix: c.prefix, value, address: formatIp(c.family, value) };
}

/** True when `c` has no host bits set (what a route destination must be). */
export function isNetwork(c: Cidr): boolean {
  return networkOf(c).value === c.value;
}

/** Unspecified, loopback or multicast: never an interface's configured address. */
export function isSpecialAddress(a: IpAddr): boolean {
  if (a.family === 4) {
    const first = Number(a.value >> 24n);
    return a.value === 0n || first === 127 || (first >= 224 && first <= 239) || a.value === 0xffffffffn;
  }
  return a.value === 0n || a.value === 1n || a.value >> 120n === 0xffn;
}
