export * from './guest-image.js';
export * from './sandbox-vm.js';
