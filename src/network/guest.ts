/**
 * The guest's network configuration from what discover() found: the guest
 * NIC takes the pod veth's MAC, addresses and MTU (the veth keeps its own
 * address; docs/network.md explains why that is safe with mirred redirect),
 * and the guest gets the routes through the veth that are not the kernel's.
 *
 * The shapes match the agent client's InterfaceConfig / RouteConfig, so the
 * results go straight to `agent.updateInterface` / `agent.updateRoutes`.
 */
import type { PodNetwork } from './discover.js';
import type { RouteInfo } from './iproute.js';

export interface GuestInterfaceConfig {
  name: string;
  hwAddr: string;
  addresses: string[];
  mtu: number;
  up: boolean;
}

export interface GuestRouteConfig {
  dest: string;
  gateway?: string;
  device: string;
  source?: string;
  scope?: string;
  metric?: number;
}

/** The guest NIC's configuration: found by the veth's MAC, named like the veth. */
export function guestInterface(net: PodNetwork, name = net.iface.name): GuestInterfaceConfig {
  return { name, hwAddr: net.iface.mac, addresses: [...net.iface.addresses], mtu: net.iface.mtu, up: true };
}

/** Routes the guest kernel makes by itself when the addresses are added. */
export function isKernelRoute(r: RouteInfo): boolean {
  if (r.protocol === 'kernel') return true;
  // IPv6 link-local and multicast: every interface gets them.
  return r.family === 6 && (r.dest.startsWith('fe80::/') || r.dest.startsWith('ff00::/'));
}

/** The routes to give the guest (UpdateRoutes), on the guest NIC `device`. */
export function guestRoutes(net: PodNetwork, device = net.iface.name): GuestRouteConfig[] {
  return net.routes.filter((r) => !isKernelRoute(r)).map((r) => ({
    dest: r.dest,
    ...(r.gateway !== undefined ? { gateway: r.gateway } : {}),
    device,
    ...(r.source !== undefined ? { source: r.source } : {}),
    ...(r.scope !== undefined ? { scope: r.scope } : {}),
    // The IPv6 default metric (1024) is what the guest kernel uses anyway.
    ...(r.metric !== undefined && r.metric !== 0 && !(r.family === 6 && r.metric === 1024) ? { metric: r.metric } : {}),
  }));
}
