package comet

import (
	"sync"
	"time"

	"github.com/msync/msync/pkg/api/pb"
)

const (
	// ackFlushInterval bounds how stale the server-side sync point may be;
	// it is only a fallback for clients that reconnect without their points,
	// so coalescing for a few tens of ms is cheap and saves logic calls.
	ackFlushInterval = 50 * time.Millisecond
	// ackFlushItems triggers an early flush, and is the most items per call.
	ackFlushItems = 512
)

type ackKey struct{ device, channel string }

// ackBatcher coalesces acks of all sessions into batched Logic.Ack calls.
// Pending acks are keyed by (device, channel) and keep the highest id, so
// memory is bounded by the active channels even while logic is down.
type ackBatcher struct {
	mu struct {
		sync.Mutex
		pending map[ackKey]*pb.AckItem
	}
	kick chan struct{} // capacity 1: "a batch is full"
}

func (b *ackBatcher) init() {
	b.mu.pending = make(map[ackKey]*pb.AckItem)
	b.kick = make(chan struct{}, 1)
}

func (b *ackBatcher) add(device, user, channel string, id uint64, ticket []byte) {
	b.mu.Lock()
	k := ackKey{device, channel}
	if it, ok := b.mu.pending[k]; ok {
		it.Id = max(it.Id, id)
		it.Ticket = ticket // a renewed ticket replaces an older one
	} else {
		b.mu.pending[k] = &pb.AckItem{Device: device, User: user, Channel: channel, Id: id, Ticket: ticket}
	}
	full := len(b.mu.pending) >= ackFlushItems
	b.mu.Unlock()
	if full {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
}

// take removes and returns everything pending.
func (b *ackBatcher) take() []*pb.AckItem {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.mu.pending) == 0 {
		return nil
	}
	items := make([]*pb.AckItem, 0, len(b.mu.pending))
	for _, it := range b.mu.pending {
		items = append(items, it)
	}
	clear(b.mu.pending)
	return items
}

// putBack re-queues items a failed call did not deliver, unless a newer ack
// of the same channel arrived meanwhile.
func (b *ackBatcher) putBack(items []*pb.AckItem) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, it := range items {
		k := ackKey{it.Device, it.Channel}
		if cur, ok := b.mu.pending[k]; !ok || cur.Id < it.Id {
			b.mu.pending[k] = it
		}
	}
}

// runAcks is the flusher goroutine; it flushes a last time when quit closes.
func (c *Comet) runAcks() {
	defer c.wg.Done()
	t := time.NewTicker(ackFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-c.quit:
			c.flushAcks(false)
			return
		case <-t.C:
		case <-c.acks.kick:
		}
		c.flushAcks(true)
	}
}

// flushAcks sends pending acks in calls of at most ackFlushItems. With retry,
// a failed batch is put back for the next tick; without (shutdown) it is
// dropped: logic's points are a fallback, clients keep their own.
func (c *Comet) flushAcks(retry bool) {
	items := c.acks.take()
	for len(items) > 0 {
		n := min(len(items), ackFlushItems)
		ctx, cancel := c.callCtx()
		_, err := c.cfg.Logic.Ack(ctx, &pb.AckReq{Items: items[:n]})
		cancel()
		if err != nil {
			c.metrics.logicErrs.WithLabelValues("ack").Inc()
			c.log.Warn("logic ack failed", "items", len(items), "retry", retry, "err", err)
			if retry {
				c.acks.putBack(items)
			}
			return
		}
		items = items[n:]
	}
}
