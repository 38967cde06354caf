// Package memory is the in-process queue backend used in all-in-one mode: P
// partitions chosen by a hash of the message key, each a bounded buffer
// drained by one goroutine that hands batches to the handler in order.
//
// Guarantees: messages with the same key are delivered in the order Send
// accepted them (one key always maps to one partition, and a partition has
// one delivery goroutine); a batch whose handler returned an error is handed
// over again, unchanged, after a capped exponential backoff, before anything
// later in its partition. Nothing survives the process: messages still
// buffered when Shutdown is called are dropped. That is acceptable for the
// push stream because every oplog is durable in the store before it is
// queued, and devices catch up by syncing.
//
// A *Queue is safe for concurrent use.
package memory
