export * from './template-key.js';
export * from './template-store.js';
export * from './template-factory.js';
