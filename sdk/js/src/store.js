// Sync point stores. A store keeps, per channel, the highest oplog id the app
// has processed; the client saves a point only after the handler succeeded
// and before it acknowledges, so a crash at worst replays (dropped as a
// duplicate), never loses.
//
// Interface (synchronous, like localStorage):
//   load(): Map<string, number>   every stored point
//   save(channel, id): void       store one point durably; may throw

/** MemoryStore keeps points in memory: they are gone when the page unloads. */
export class MemoryStore {
  constructor() {
    this.points = new Map();
  }

  load() {
    return new Map(this.points);
  }

  save(channel, id) {
    this.points.set(channel, id);
  }
}

/**
 * LocalStorageStore keeps each point under its own key
 * `${prefix}${channel}`, so every save is one atomic setItem and no
 * read-modify-write of a shared blob can lose another channel's point.
 * Use a prefix per device id if several devices share an origin.
 */
export class LocalStorageStore {
  /**
   * @param {string} prefix   key prefix, e.g. `msync:${device}:`
   * @param {Storage} storage defaults to globalThis.localStorage
   */
  constructor(prefix = 'msync:', storage = globalThis.localStorage) {
    if (!storage) throw new Error('msync: LocalStorageStore needs localStorage (not available here)');
    if (!prefix) throw new Error('msync: LocalStorageStore needs a non-empty prefix');
    this.prefix = prefix;
    this.storage = storage;
  }

  load() {
    const out = new Map();
    for (let i = 0; i < this.storage.length; i++) {
      const key = this.storage.key(i);
      if (key === null || !key.startsWith(this.prefix)) continue;
      const raw = this.storage.getItem(key);
      const id = Number(raw);
      // Never silently reset a point: a corrupt value is an error the app
      // must see (like the Go FileStore's ErrStoreFile).
      if (!Number.isSafeInteger(id) || id < 0 || raw === '' || raw === null) {
        throw new Error(`msync: bad sync point in localStorage key ${key}: ${JSON.stringify(raw)}; remove it to start over`);
      }
      out.set(key.slice(this.prefix.length), id);
    }
    return out;
  }

  save(channel, id) {
    this.storage.setItem(this.prefix + channel, String(id));
  }
}
