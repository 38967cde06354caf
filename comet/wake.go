package comet

import (
	"time"
)

// resyncValidFrom labels resyncs triggered by a valid_from timer.
const resyncValidFrom = "valid_from"

// wakeSlack is added to valid_from timers: the comet's and logic's clocks
// may differ a little, and a timer that fires before logic thinks the oplog
// is valid only costs one more empty sync (and a new timer).
const wakeSlack = 5 * time.Millisecond

// scheduleWake arms the channel's valid_from timer for atMs (unix ms): when
// it fires the channel syncs again, so an online device gets an oplog at its
// valid_from without any other traffic on the channel. One timer per channel
// at most: an earlier one already armed covers a later time (the sync it
// triggers stops before the next not-yet-valid oplog and arms the next
// timer). Timers are stopped by finish. Drain task only.
func (s *session) scheduleWake(ch *channel, atMs int64) {
	if atMs <= 0 || (ch.wake != nil && ch.wakeAt <= atMs) {
		return
	}
	if ch.wake != nil {
		ch.wake.Stop()
	}
	d := max(time.Duration(atMs-s.c.now().UnixMilli())*time.Millisecond, 0) + wakeSlack
	name := ch.name
	ch.wakeAt = atMs
	ch.wake = time.AfterFunc(d, func() { s.onWake(name) })
}

// onWake queues a valid_from wake-up of channel name (timer goroutine).
func (s *session) onWake(name string) {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return
	}
	s.mu.events = append(s.mu.events, event{kind: evWake, channel: name})
	submit := s.scheduleLocked()
	s.mu.Unlock()
	if submit {
		s.c.submit(s)
	}
}

// handleWake re-syncs a channel whose valid_from timer fired.
func (s *session) handleWake(name string) {
	ch := s.chans.get(name)
	if ch == nil {
		return
	}
	ch.wake, ch.wakeAt = nil, 0
	if ch.reqDeferred {
		// A SYNC_REQ held back by its rate limit: serve it if the bucket
		// allows by now (it re-arms the timer otherwise). Its sync also
		// re-arms any valid_from timer this one replaced.
		s.syncReq(ch, ch.reqPoint, true)
		if !ch.reqDeferred {
			return
		}
	}
	s.c.metrics.resyncs.WithLabelValues(resyncValidFrom).Inc()
	if ch.syncing() {
		// A sync is under way; make the channel sync once more after its
		// page is acked, which reads from the (now valid) oplog on.
		ch.raisePending(ch.sent + 1)
		return
	}
	ch.st = chNeedSync
}

// stopWakes stops every valid_from timer of the session (finish).
func (s *session) stopWakes() {
	for _, ch := range s.chans.order {
		if ch.wake != nil {
			ch.wake.Stop()
			ch.wake, ch.wakeAt = nil, 0
		}
	}
}
