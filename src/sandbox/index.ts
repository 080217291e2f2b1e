export * from './guest-image.js';
export * from './sandbox-vm.js';
export * from './warm-up.js';
