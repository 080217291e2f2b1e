/**
 * The guest's network, configured for the pod: UpdateInterface,
 * UpdateRoutes, ListInterfaces, ListRoutes (docs/network.md).
 *
 * - Node has no netlink: every change is a child process of busybox `ip`
 *   (addr, route, link), run asynchronously with a timeout, so a wedged
 *   command cannot block the event loop. Listings are parsed from busybox's
 *   text output (`ip -o addr show`, `ip route show`) and /sys/class/net.
 *   busybox ignores `proto` filters (`ip route flush proto boot` flushes
 *   everything), so routes are deleted one by one, never by filter.
 * - The guest NIC is found by MAC in /sys/class/net/<name>/address (the host
 *   gives the guest NIC the pod veth's MAC), or by name.
 * - UpdateRoutes remembers the routes it added: a later call deletes those it
 *   no longer lists, and leaves the kernel's own routes alone.
 * - One operation at a time.
 */
import { execFile } from 'node:child_process';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AlreadyExistsError, DeadlineExceededError, FailedPreconditionError, InternalError, InvalidArgumentError, NotFoundError, StatusError,
} from '../errors/index.js';
import type { Logger } from '../log/index.js';
import { cidrText, isNetwork, isSpecialAddress, networkOf, parseCidr, parseIp, type Cidr, type IpFamily } from './ip.js';

/** Bound on one `ip` command. */
export const NETWORK_COMMAND_TIMEOUT_MS = 10_000;
/** Linux's IFNAMSIZ - 1. */
const MAX_IFNAME_BYTES = 15;
const IFF_UP = 0x1;
/** The kernel's default metric of an IPv6 route added without one. */
const IPV6_DEFAULT_METRIC = 1024;

// -----------------------------------------------------------------------------
// the model (plain objects; protobuf stays in service.ts)

/** What UpdateInterface asks for, checked. */
export interface InterfaceSpec {
  /** '' when not given. */
  name: string;
  /** Lower case, '' when not given. */
  hwAddr: string;
  addresses: Cidr[];
  /** 0: unchanged. */
  mtu: number;
  up: boolean;
}

export type RouteScope = 'global' | 'link' | 'host' | 'site';
const SCOPES: readonly RouteScope[] = ['global', 'link', 'host', 'site'];

/** What UpdateRoutes asks for, checked. */
export interface RouteSpec {
  family: IpFamily;
  /** undefined: the default route. */
  dest: Cidr | undefined;
  gateway?: string;
  device?: string;
  source?: string;
  scope?: RouteScope;
  /** 0: the kernel default. */
  metric: number;
}

/** An interface as ListInterfaces / UpdateInterface answer it. */
export interface InterfaceInfo {
  name: string;
  hwAddr: string;
  /** Global (non-link-local) addresses, CIDR. */
  addresses: string[];
  mtu: number;
  up: boolean;
}

/** A route as ListRoutes / UpdateRoutes answer it. */
export interface RouteInfo {
  /** "default" or CIDR. */
  dest: string;
  gateway: string;
  device: string;
  source: string;
  scope: string;
  metric: number;
}

// -----------------------------------------------------------------------------
// input checks (INVALID_ARGUMENT naming the field)

export function checkIfName(name: string, field: string): string {
  if (Buffer.byteLength(name) > MAX_IFNAME_BYTES || !/^[A-Za-z0-9_.:@-]+$/.test(name) || name === '.' || name === '..') {
    throw new InvalidArgumentError(`${field}: ${JSON.stringify(name)} is not an interface name (1-${MAX_IFNAME_BYTES} letters, digits, '_', '.', ':', '@', '-')`);
  }
  return name;
}

export function checkMac(mac: string, field: string): string {
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(mac)) {
    throw new InvalidArgumentError(`${field}: ${JSON.stringify(mac)} is not a MAC address (aa:bb:cc:dd:ee:ff)`);
  }
  return mac.toLowerCase();
}

/** UpdateInterface's request, as it comes off the wire. */
export interface InterfaceRequest {
  name: string;
  hwAddr: string;
  addresses: string[];
  mtu: number;
  up: boolean;
}

export function checkInterface(req: InterfaceRequest): InterfaceSpec {
  if (req.name === '' && req.hwAddr === '') throw new InvalidArgumentError('hw_addr: required (or name) to find the interface');
  const name = req.name === '' ? '' : checkIfName(req.name, 'name');
  if (name === 'lo') throw new InvalidArgumentError('name: lo is not configurable (the agent brings it up)');
  const hwAddr = req.hwAddr === '' ? '' : checkMac(req.hwAddr, 'hw_addr');
  if (req.mtu !== 0 && (!Number.isInteger(req.mtu) || req.mtu < 68 || req.mtu > 65535)) {
    throw new InvalidArgumentError(`mtu: ${req.mtu} out of range 68-65535 (0: unchanged)`);
  }
  const seen = new Map<string, number>();
  const addresses = req.addresses.map((text, i) => {
    const f = `addresses[${i}]`;
    const c = parseCidr(text, f);
    if (isSpecialAddress(c)) throw new InvalidArgumentError(`${f}: ${JSON.stringify(text)} is an unspecified, loopback or multicast address`);
    if (c.family === 6 && c.prefix === 0) throw new InvalidArgumentError(`${f}: ${JSON.stringify(text)}: prefix length must be 1-128`);
    if (c.family === 4 && c.prefix === 0) throw new InvalidArgumentError(`${f}: ${JSON.stringify(text)}: prefix length must be 1-32`);
    const key = cidrText(c);
    const prev = seen.get(key);
    if (prev !== undefined) throw new InvalidArgumentError(`${f}: ${key} repeats addresses[${prev}]`);
    seen.set(key, i);
    return c;
  });
  return { name, hwAddr, addresses, mtu: req.mtu, up: req.up };
}

/** One route of UpdateRoutes' request, as it comes off the wire. */
export interface RouteRequest {
  dest: string;
  gateway: string;
  device: string;
  source: string;
  scope: string;
  metric: number;
}

function checkRoute(r: RouteRequest, f: string): RouteSpec {
  const gateway = r.gateway === '' ? undefined : parseIp(r.gateway, `${f}.gateway`);
  const source = r.source === '' ? undefined : parseIp(r.source, `${f}.source`);
  let dest: Cidr | undefined;
  let destFamily: IpFamily | undefined;
  if (r.dest !== '' && r.dest !== 'default') {
    dest = parseCidr(r.dest, `${f}.dest`, { bareIsHost: true });
    destFamily = dest.family;
    if (!isNetwork(dest)) {
      throw new InvalidArgumentError(`${f}.dest: ${JSON.stringify(r.dest)} has host bits set (the network is ${cidrText(networkOf(dest))})`);
    }
    if (dest.prefix === 0) dest = undefined; // 0.0.0.0/0, ::/0: the default route
    else if (dest.family === 6 && dest.value >> 118n === 0x3fan && dest.prefix >= 10) {
      // fe80::/10 routes are the kernel's (every interface has one).
      throw new InvalidArgumentError(`${f}.dest: ${JSON.stringify(r.dest)} is link-local: the kernel manages those routes`);
    }
  }
  const family: IpFamily = destFamily ?? gateway?.family ?? source?.family ?? 4;
  if (gateway && gateway.family !== family) throw new InvalidArgumentError(`${f}.gateway: ${r.gateway} is IPv${gateway.family}, the destination IPv${family}`);
  if (source && source.family !== family) throw new InvalidArgumentError(`${f}.source: ${r.source} is IPv${source.family}, the destination IPv${family}`);
  const device = r.device === '' ? undefined : checkIfName(r.device, `${f}.device`);
  if (!gateway && !device) throw new InvalidArgumentError(`${f}: needs a gateway or a device`);
  let scope: RouteScope | undefined;
  if (r.scope !== '') {
    const s = r.scope === 'universe' ? 'global' : r.scope;
    if (!(SCOPES as readonly string[]).includes(s)) throw new InvalidArgumentError(`${f}.scope: ${JSON.stringify(r.scope)} must be one of ${SCOPES.join(', ')}`);
    scope = s as RouteScope;
  }
  if (!Number.isInteger(r.metric) || r.metric < 0 || r.metric > 0xffffffff) throw new InvalidArgumentError(`${f}.metric: ${r.metric} out of range`);
  return {
    family,
    dest,
    ...(gateway ? { gateway: gateway.address } : {}),
    ...(device ? { device } : {}),
    ...(source ? { source: source.address } : {}),
    ...(scope ? { scope } : {}),
    metric: r.metric,
  };
}

/** The kernel's identity of a route in the main table: family, destination, metric. */
export function routeKey(r: Pick<RouteSpec, 'family' | 'dest' | 'metric'>): string {
  const metric = r.metric === 0 && r.family === 6 ? IPV6_DEFAULT_METRIC : r.metric;
  return `${r.family} ${r.dest ? cidrText(r.dest) : 'default'} ${metric}`;
}

export function checkRoutes(routes: readonly RouteRequest[]): RouteSpec[] {
  const seen = new Map<string, number>();
  return routes.map((r, i) => {
    const spec = checkRoute(r, `routes[${i}]`);
    const key = routeKey(spec);
    const prev = seen.get(key);
    if (prev !== undefined) throw new InvalidArgumentError(`routes[${i}]: same destination and metric as routes[${prev}]`);
    seen.set(key, i);
    return spec;
  });
}

// -----------------------------------------------------------------------------
// argv (pure)

export function routeDestText(r: Pick<RouteSpec, 'dest'>): string {
  return r.dest ? cidrText(r.dest) : 'default';
}

/** `ip -4|-6 route replace|del …` for a route. */
export function routeArgs(verb: 'replace' | 'del', r: RouteSpec): string[] {
  const a = [`-${r.family}`, 'route', verb, routeDestText(r)];
  if (verb === 'del') {
    // The kernel finds the route by destination and metric (+ device when given).
    if (r.device) a.push('dev', r.device);
    if (r.metric) a.push('metric', String(r.metric));
    return a;
  }
  if (r.gateway) a.push('via', r.gateway);
  if (r.device) a.push('dev', r.device);
  if (r.source) a.push('src', r.source);
  if (r.scope) a.push('scope', r.scope);
  if (r.metric) a.push('metric', String(r.metric));
  return a;
}

/** `ip addr add|del …` for an address (IPv4 gets its broadcast address). */
export function addrArgs(verb: 'add' | 'del', c: Cidr, dev: string): string[] {
  const a = ['addr', verb, cidrText(c)];
  if (verb === 'add' && c.family === 4 && c.prefix < 31) a.push('brd', '+');
  a.push('dev', dev);
  return a;
}

/** Link routes first (a gateway must be reachable when its route is added), the request's order otherwise. */
export function routeOrder(routes: readonly RouteSpec[]): RouteSpec[] {
  return [...routes.filter((r) => !r.gateway), ...routes.filter((r) => r.gateway)];
}

// -----------------------------------------------------------------------------
// busybox output parsing (pure)

export interface ParsedAddress {
  ifname: string;
  family: IpFamily;
  cidr: string;
  scope: string;
}

/** `ip -o addr show` (busybox or iproute2 one-line form). */
export function parseAddrLines(text: string): ParsedAddress[] {
  const out: ParsedAddress[] = [];
  for (const line of text.split('\n')) {
    const m = /^\d+:\s+(\S+?)(?:@\S+)?\s+(inet6?)\s+(\S+)(.*)$/.exec(line.trim());
    if (!m) continue;
    const rest = m[4]!;
    if (/\bpeer\b/.test(rest)) continue;
    let c: Cidr;
    try {
      c = parseCidr(m[3]!, 'address', { bareIsHost: true });
    } catch {
      continue;
    }
    out.push({ ifname: m[1]!, family: m[2] === 'inet6' ? 6 : 4, cidr: cidrText(c), scope: /\bscope\s+(\S+)/.exec(rest)?.[1] ?? 'global' });
  }
  return out;
}

const ROUTE_TYPES = new Set(['unicast', 'local', 'broadcast', 'multicast', 'throw', 'unreachable', 'prohibit', 'blackhole', 'nat', 'anycast']);
const ROUTE_KEYS = new Set(['via', 'dev', 'proto', 'scope', 'src', 'metric', 'table', 'mtu', 'advmss', 'expires', 'error', 'pref', 'realm',
  'realms', 'from', 'tos', 'hoplimit', 'rtt', 'rttvar', 'window', 'cwnd', 'initcwnd', 'initrwnd', 'ssthresh', 'reordering', 'features',
  'quickack', 'congctl', 'fastopen_no_cookie', 'nexthop', 'weight', 'nhid']);

/** `ip route show` lines: unicast routes only (multicast, local, … are the kernel's). */
export function parseRouteLines(text: string, family: IpFamily): RouteInfo[] {
  const out: RouteInfo[] = [];
  for (const line of text.split('\n')) {
    const tok = line.trim().split(/\s+/).filter(Boolean);
    if (tok.length === 0) continue;
    let i = 0;
    if (ROUTE_TYPES.has(tok[0]!)) {
      if (tok[0] !== 'unicast') continue;
      i++;
    }
    const destTok = tok[i++];
    if (destTok === undefined) continue;
    let dest = 'default';
    if (destTok !== 'default') {
      try {
        const c = parseCidr(destTok, 'dest', { bareIsHost: true });
        if (c.family !== family) continue;
        dest = cidrText(c);
      } catch {
        continue;
      }
    }
    const kv: Record<string, string> = {};
    while (i < tok.length) {
      const k = tok[i++]!;
      if (ROUTE_KEYS.has(k) && i < tok.length) kv[k] = tok[i++]!;
    }
    out.push({
      dest,
      gateway: kv['via'] ?? '',
      device: kv['dev'] ?? '',
      source: kv['src'] ?? '',
      scope: kv['scope'] ?? '',
      metric: kv['metric'] !== undefined && /^\d+$/.test(kv['metric']) ? Number(kv['metric']) : 0,
    });
  }
  return out;
}

// -----------------------------------------------------------------------------
// commands

export interface CommandResult {
  stdout: string;
  stderr: string;
}

/** Runs a command to completion; rejects with an error carrying `stderr` and `killed`. */
export type NetCommandRunner = (cmd: string, args: string[], timeoutMs: number) => Promise<CommandResult>;

export interface CommandFailure extends Error {
  stderr?: string;
  killed?: boolean;
  code?: number | string;
}

function defaultRun(cmd: string, args: string[], timeoutMs: number): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      if (!err) {
        resolve({ stdout: String(stdout), stderr: String(stderr) });
        return;
      }
      const e = err as CommandFailure;
      e.stderr = String(stderr);
      reject(e);
    });
  });
}

/** A failed `ip` command as a status error: what it was for, the command, and its words. */
export function commandError(err: unknown, what: string, cmdline: string, timeoutMs: number): StatusError {
  if (err instanceof StatusError) return err;
  const e = err as CommandFailure;
  if (e.killed) return new DeadlineExceededError(`${what}: ${cmdline}: timed out after ${timeoutMs} ms`);
  const words = (e.stderr ?? '').trim().split('\n').filter(Boolean).join('; ') || e.message;
  const msg = `${what}: ${cmdline}: ${words}`;
  if (/no such device|can't find device|cannot find device/i.test(words)) return new NotFoundError(msg, { cause: err });
  if (/file exists/i.test(words)) return new AlreadyExistsError(msg, { cause: err });
  if (/network is unreachable|no such process|cannot assign requested address|invalid argument|numerical result out of range|invalid prefix/i.test(words)) {
    return new FailedPreconditionError(msg, { cause: err });
  }
  return new InternalError(msg, { cause: err });
}

// -----------------------------------------------------------------------------
// the manager

export interface NetworkOptions {
  logger: Logger;
  run?: NetCommandRunner;
  /** Default `ip` from PATH (busybox in the guest). */
  ipBinary?: string;
  /** Default /sys/class/net. */
  sysClassNet?: string;
  timeoutMs?: number;
}

export class Network {
  private readonly run: NetCommandRunner;
  private readonly ipBin: string;
  private readonly sys: string;
  private readonly timeoutMs: number;
  private readonly log: Logger;
  private chain: Promise<unknown> = Promise.resolve();
  /** Routes UpdateRoutes added, by routeKey. */
  private installed = new Map<string, RouteSpec>();

  constructor(opts: NetworkOptions) {
    this.run = opts.run ?? defaultRun;
    this.ipBin = opts.ipBinary ?? 'ip';
    this.sys = opts.sysClassNet ?? '/sys/class/net';
    this.timeoutMs = opts.timeoutMs ?? NETWORK_COMMAND_TIMEOUT_MS;
    this.log = opts.logger.child({ module: 'network' });
  }

  updateInterface(spec: InterfaceSpec): Promise<InterfaceInfo> {
    return this.serialize(async () => {
      const t0 = Date.now();
      let name = await this.findInterface(spec);
      // Each `ip` is a process start (50-100 ms under TCG): skip what is already so.
      if (!(await this.isUp('lo'))) await this.ip(['link', 'set', 'dev', 'lo', 'up'], 'lo');
      if (spec.hwAddr !== '' && (await this.sysAttr(name, 'address')).toLowerCase() !== spec.hwAddr) {
        // Found by name: a VM restored from a template, whose NIC still has the template's MAC.
        await this.ip(['link', 'set', 'dev', name, 'down'], `address of ${name}`);
        await this.ip(['link', 'set', 'dev', name, 'address', spec.hwAddr], `hw_addr of ${name}`);
      }
      if (spec.name !== '' && spec.name !== name) {
        if (await this.exists(spec.name)) {
          throw new FailedPreconditionError(`name: cannot rename ${name} (${spec.hwAddr}) to ${spec.name}: another interface has that name`);
        }
        // A link must be down to be renamed.
        await this.ip(['link', 'set', 'dev', name, 'down'], `rename ${name}`);
        await this.ip(['link', 'set', 'dev', name, 'name', spec.name], `rename ${name}`);
        name = spec.name;
      }
      if (spec.mtu !== 0 && Number(await this.sysAttr(name, 'mtu')) !== spec.mtu) {
        await this.ip(['link', 'set', 'dev', name, 'mtu', String(spec.mtu)], 'mtu');
      }
      const want = new Map(spec.addresses.map((c) => [cidrText(c), c]));
      const have = (await this.addresses(name)).filter((a) => a.scope !== 'link' && a.scope !== 'host');
      for (const a of have) {
        if (want.has(a.cidr)) continue;
        await this.ip(addrArgs('del', parseCidr(a.cidr, 'address'), name), `remove address ${a.cidr}`);
      }
      const haveSet = new Set(have.map((a) => a.cidr));
      let i = 0;
      for (const [text, c] of want) {
        if (!haveSet.has(text)) await this.ip(addrArgs('add', c, name), `addresses[${i}]`);
        i++;
      }
      if ((await this.isUp(name)) !== spec.up) await this.ip(['link', 'set', 'dev', name, spec.up ? 'up' : 'down'], spec.up ? 'up' : 'down');
      const info = await this.readInterface(name);
      this.log.info({ iface: info, ms: Date.now() - t0 }, 'interface updated');
      return info;
    });
  }

  updateRoutes(routes: readonly RouteSpec[]): Promise<RouteInfo[]> {
    return this.serialize(async () => {
      const t0 = Date.now();
      // Add first, delete after: a route that fails (an unreachable gateway)
      // leaves the routes of the earlier call in place.
      const index = new Map(routes.map((r, i) => [r, i]));
      for (const r of routeOrder(routes)) {
        const desc = `${routeDestText(r)}${r.gateway ? ` via ${r.gateway}` : ''}${r.device ? ` dev ${r.device}` : ''}`;
        await this.ip(routeArgs('replace', r), `routes[${index.get(r)}] (${desc})`);
        this.installed.set(routeKey(r), r);
      }
      const keys = new Map(routes.map((r) => [routeKey(r), r]));
      for (const [key, old] of [...this.installed]) {
        if (keys.has(key)) continue;
        try {
          await this.ip(routeArgs('del', old), `remove route ${routeDestText(old)}`);
        } catch (err) {
          // Gone already (its device went down, or someone removed it).
          if (!(err instanceof StatusError) || !/no such process|can't find device|cannot find device|no such device/i.test(err.message)) throw err;
        }
        this.installed.delete(key);
      }
      const now = await this.listRoutesNow();
      this.log.info({ routes: routes.length, ms: Date.now() - t0 }, 'routes updated');
      return now;
    });
  }

  listInterfaces(): Promise<InterfaceInfo[]> {
    return this.serialize(async () => {
      const names = (await readdir(this.sys)).filter((n) => n !== 'lo').sort();
      const addrs = parseAddrLines((await this.ip(['-o', 'addr', 'show'], 'list addresses')).stdout);
      const out: InterfaceInfo[] = [];
      for (const n of names) {
        const info = await this.readInterface(n, addrs).catch(() => undefined);
        if (info) out.push(info);
      }
      return out;
    });
  }

  listRoutes(): Promise<RouteInfo[]> {
    return this.serialize(() => this.listRoutesNow());
  }

  // ---------------------------------------------------------------------------

  private async listRoutesNow(): Promise<RouteInfo[]> {
    const v4 = (await this.ip(['-4', 'route', 'show'], 'list routes')).stdout;
    const v6 = (await this.ip(['-6', 'route', 'show'], 'list routes')).stdout;
    return [...parseRouteLines(v4, 4), ...parseRouteLines(v6, 6)];
  }

  /**
   * The interface's current name: by MAC; when no NIC has it, by name (a
   * device-backed NIC, which updateInterface then gives the MAC: a VM restored
   * from a template has the template's); NOT_FOUND when neither matches.
   */
  private async findInterface(spec: InterfaceSpec): Promise<string> {
    if (spec.hwAddr === '') {
      if (!(await this.exists(spec.name))) throw new NotFoundError(`name: no interface ${spec.name}`);
      return spec.name;
    }
    const matches: string[] = [];
    for (const n of await readdir(this.sys)) {
      const mac = await this.sysAttr(n, 'address').catch(() => '');
      if (mac.toLowerCase() === spec.hwAddr) matches.push(n);
    }
    if (matches.length === 0) {
      if (spec.name !== '' && (await this.exists(join(spec.name, 'device')))) return spec.name;
      throw new NotFoundError(`hw_addr: no interface has MAC ${spec.hwAddr}${spec.name !== '' ? ` and no NIC is named ${spec.name}` : ''}`);
    }
    if (matches.length === 1) return matches[0]!;
    // Several (a VLAN or bond on top of the NIC): the one backed by a device.
    for (const n of matches) if (await this.exists(join(n, 'device'))) return n;
    return matches.sort()[0]!;
  }

  private async readInterface(name: string, all?: ParsedAddress[]): Promise<InterfaceInfo> {
    const [mac, mtu, flags] = await Promise.all([this.sysAttr(name, 'address'), this.sysAttr(name, 'mtu'), this.sysAttr(name, 'flags')]);
    const addrs = all ? all.filter((a) => a.ifname === name) : await this.addresses(name);
    return {
      name,
      hwAddr: mac.toLowerCase(),
      addresses: addrs.filter((a) => a.scope !== 'link' && a.scope !== 'host').sort((a, b) => a.family - b.family).map((a) => a.cidr),
      mtu: Number(mtu),
      up: (Number(flags) & IFF_UP) !== 0,
    };
  }

  private async addresses(name: string): Promise<ParsedAddress[]> {
    return parseAddrLines((await this.ip(['-o', 'addr', 'show', 'dev', name], `addresses of ${name}`)).stdout).filter((a) => a.ifname === name);
  }

  private async sysAttr(name: string, attr: string): Promise<string> {
    return (await readFile(join(this.sys, name, attr), 'utf8')).trim();
  }

  private async isUp(name: string): Promise<boolean> {
    return (Number(await this.sysAttr(name, 'flags').catch(() => '0')) & IFF_UP) !== 0;
  }

  private async exists(rel: string): Promise<boolean> {
    return stat(join(this.sys, rel)).then(() => true, () => false);
  }

  private async ip(args: string[], what: string): Promise<CommandResult> {
    try {
      return await this.run(this.ipBin, args, this.timeoutMs);
    } catch (err) {
      throw commandError(err, what, `ip ${args.join(' ')}`, this.timeoutMs);
    }
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn, fn);
    this.chain = p.catch(() => {});
    return p;
  }
}
