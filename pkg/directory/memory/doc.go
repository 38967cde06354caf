// Package memory is the in-process online directory (all-in-one mode and
// tests): sessions in sharded maps keyed by device, plus a per-user index.
//
// Expiry: an entry not renewed within the TTL is treated as absent by every
// read (checked on read, so correctness never depends on the sweeper), and
// an owned sweeper goroutine removes expired entries periodically so memory
// does not grow with devices that vanished without a disconnect. Shutdown
// (or Close) stops the sweeper.
//
// It is also the comet registry (directory.Comets, comets.go) of the mixed
// local cluster: comets registered with the same TTL, pruned on register.
//
// Lock order: a device shard's lock, then a user shard's lock. Index updates
// happen under the device shard lock, so operations on one device are
// serialised with their index changes.
//
// A *Directory is safe for concurrent use.
package memory
