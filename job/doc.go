// Package job is the job tier: it consumes the push stream (queue), resolves
// each oplog's online devices in the directory, and pushes to the comets
// holding them — one PushReq per comet per consumed batch, sent concurrently
// on a bounded ants pool — and delivers kicks.
//
// Delivery to comets is best effort by design: an unknown comet, a failed
// push or a directory error is logged and counted and the stream moves on,
// because devices recover by themselves (the comet's gap check on the next
// live push, or a sync on reconnect) while a stuck stream would delay every
// channel of the partition. A message job cannot decode is logged, counted
// and skipped; the handler never fails a batch, so nothing is redelivered
// because of one bad message.
//
// A *Job is safe for concurrent use.
package job
