export * from './types.js';
export * from './device.js';
export * from './agent-channel.js';
export * from './shared-fs.js';
export * from './shared-9p.js';
export * from './block-device.js';
export * from './tap-net.js';
