// Package pebble is the embedded store backend, the default of the
// all-in-one mode: it implements store.Store on a local Pebble database.
//
// Appends go through one writer goroutine owned by the Store that collects
// the pending calls into a group, assigns ids, and writes the whole group in
// one synced Pebble batch, so many concurrent callers share one fsync. Reads
// are served only up to each channel's durable watermark: the highest id
// whose synced commit has returned (Pebble makes a batch visible to readers
// before its WAL sync finishes).
//
// A Store is safe for concurrent use. See keys.go for the on-disk layout.
package pebble
