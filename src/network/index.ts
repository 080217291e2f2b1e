/**
 * Pod networking on the host (docs/network.md): find what CNI made in the
 * pod's network namespace, join a tap to it for QEMU, and undo that. Knows
 * nothing of containerd, QEMU or the agent.
 */
export * from './command.js';
export * from './discover.js';
export * from './guest.js';
export * from './iproute.js';
export * from './tap.js';
