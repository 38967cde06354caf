// msync browser SDK: see README.md and docs/protocol.md.
export { MsyncClient, MsyncError, backoff, DEFAULTS } from './client.js';
export { MemoryStore, LocalStorageStore } from './store.js';
export * as codec from './codec.js';
