package logic

import (
	"sync"
	"time"
)

// sendOrder makes concurrent publish calls of this process hand their queue
// messages over in id order per channel.
//
// The store assigns a channel's ids in commit order, but the calls it
// answers run on their own goroutines: call B (id N+1) may reach Queue.Send
// before call A (id N) when the scheduler wakes B first. Downstream that is a
// gap — the comet holds B for its reorder window and, when A comes later
// than that (under load it is often a whole job batch behind), re-reads the
// channel from the store. Ordering at the source is cheap: a call hands over
// a channel's messages only when no other call of this process that may hold
// a lower id of that channel is still pending.
//
// A call is pending on a channel from before its Append until its messages
// are handed over (or it failed). Its first id per channel is unknown until
// Append returns; an unknown one may be lower, so it is waited for too. The
// waits are short (other calls of the same commit group being scheduled) and
// bounded by maxWait (Config.OrderWait); after that a call goes ahead, and
// the comet's reorder window and store resync keep delivery correct. Ids from other processes
// (several logic processes on one channel) are never waited for: only calls
// registered here are.
type sendOrder struct {
	maxWait time.Duration

	mu      sync.Mutex
	pending map[string][]*orderCall // channel -> its pending calls
	changed chan struct{}           // closed and replaced whenever a call leaves
}

// orderCall is one publish call's place in the order.
type orderCall struct {
	channels []string          // distinct channels of the call
	first    map[string]uint64 // lowest new id per channel; nil until resolved
}

func newSendOrder(maxWait time.Duration) *sendOrder {
	return &sendOrder{maxWait: maxWait, pending: make(map[string][]*orderCall), changed: make(chan struct{})}
}

// enter registers a call on channels before its Append.
func (o *sendOrder) enter(channels []string) *orderCall {
	c := &orderCall{channels: channels}
	o.mu.Lock()
	for _, ch := range channels {
		o.pending[ch] = append(o.pending[ch], c)
	}
	o.mu.Unlock()
	return c
}

// wait records the call's lowest new id per channel (absent: nothing new on
// that channel) and blocks, at most maxWait, until no other pending call may
// hold a lower id of any of them. It reports whether it gave up at maxWait.
func (o *sendOrder) wait(c *orderCall, first map[string]uint64) (timedOut bool) {
	if o.maxWait < 0 {
		return false
	}
	o.mu.Lock()
	c.first = first
	o.broadcastLocked() // calls waiting on c's unknown ids may go now
	var timer *time.Timer
	for !o.readyLocked(c) {
		if timer == nil {
			timer = time.NewTimer(o.maxWait)
			defer timer.Stop()
		}
		changed := o.changed
		o.mu.Unlock()
		select {
		case <-changed:
		case <-timer.C:
			return true
		}
		o.mu.Lock()
	}
	o.mu.Unlock()
	return false
}

func (o *sendOrder) readyLocked(c *orderCall) bool {
	for ch, id := range c.first {
		for _, p := range o.pending[ch] {
			if p == c {
				continue
			}
			if p.first == nil { // unresolved: may hold a lower id
				return false
			}
			if pid, ok := p.first[ch]; ok && pid < id {
				return false
			}
		}
	}
	return true
}

// leave removes the call (its messages are handed over, or it failed) and
// wakes the calls waiting on it. Call exactly once per enter.
func (o *sendOrder) leave(c *orderCall) {
	o.mu.Lock()
	for _, ch := range c.channels {
		calls := o.pending[ch]
		for i, p := range calls {
			if p == c {
				calls = append(calls[:i], calls[i+1:]...)
				break
			}
		}
		if len(calls) == 0 {
			delete(o.pending, ch)
		} else {
			o.pending[ch] = calls
		}
	}
	o.broadcastLocked()
	o.mu.Unlock()
}

// broadcastLocked wakes every waiting call to re-check. REQUIRES: o.mu.
func (o *sendOrder) broadcastLocked() {
	close(o.changed)
	o.changed = make(chan struct{})
}
