// Package dedupe wraps any queue.Consumer so its handler never sees an oplog
// message it has already processed successfully: queues deliver at least once
// (a producer retry after a timeout, a consumer rebalance or a crash before
// the offset was committed all redeliver), and oplog ids are strictly
// increasing per channel, so a message whose id is <= the highest id handled
// for its channel is a repeat.
//
// Only oplog messages carry (channel, id); every other message (kicks,
// pushes, room changes) passes through unchanged. The state is a bounded LRU
// of channels in memory: a channel evicted, or a process restarted, simply
// lets repeats through again, which is still correct (at least once).
//
// Dropping a late message with a lower id is also safe when it is not a
// repeat: with several logic instances publishing to one channel, id 6 can
// reach the queue before id 5. A comet that gets 6 while it has sent 4 sees
// a gap and syncs from the store, where 5 is already durable (it was stored
// before it was queued), so 5 arrives anyway.
//
// A *Consumer is safe for concurrent use; the wrapped handler is called
// concurrently exactly as the inner consumer calls it.
package dedupe
