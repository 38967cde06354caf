package comet

import (
	"cmp"
	"slices"
	"time"
)

// Live pushes of one channel can reach a session out of id order: logic
// appends concurrent publish calls in one group commit and then each call
// sends its own queue message, so call B's id n+1 may be enqueued (and
// pushed by job) before call A's id n. Written as-is that is a gap, and a gap
// costs a Logic.Sync (a store read) plus a backlog-page ACK round trip before
// the channel is live again (docs/benchmarks.md: 8.5 % of live pushes, 13 % of
// server CPU, at 20,000 oplogs/s).
//
// Why a reorder window here and not a sequencer in logic: only the comet sees
// the order a session actually receives, whatever reordered it (concurrent
// HTTP calls in one logic, several logic processes publishing to one channel
// in cluster mode, or a queue that redelivers); a logic-side sequencer would
// have to know each channel's last sent id (which it does not keep), would
// make HTTP handlers wait for each other, and still would not order across
// logic processes. The window costs nothing when pushes arrive in order and
// gives up no guarantee: a push that never arrives (its queue send failed) is
// waited for at most ReorderWindow, then the channel falls back to the store
// exactly as before, and a held oplog is also in the store, so dropping the
// hold never loses it.
//
// A push with id > sent+1 is held (at most maxHeld per channel) for up to
// ReorderWindow; when the missing ids arrive, the held ones follow them into
// the same round's live page in id order. On timeout, overflow of the hold,
// or any move of the channel to syncing, the held ids become pendingMax and
// the channel syncs from the store as before.

const (
	// defaultReorderWindow is Config.ReorderWindow's zero value. The lag
	// between two publish calls that left one group commit is well under a
	// millisecond on an idle server, but under saturation the missing push
	// can be one job batch behind. Measured at 25,000 oplogs/s (batch 100,
	// docs/benchmarks.md): of the held pushes, a 5 ms window still timed out
	// ~23-24 % into a resync, 20 ms ~10-21 %. The window only costs time when
	// a push really is lost (a failed queue send), where the resync it then
	// does costs a store read and an ACK round trip anyway.
	defaultReorderWindow = 20 * time.Millisecond
	// maxHeld bounds the out-of-order pushes one channel holds; beyond it the
	// channel resyncs at once, so a session holds at most this many oplogs
	// per channel (they are shared, read-only, with the other sessions).
	maxHeld = 64
)

// pushHeld is the live-push outcome of a push held for reordering (label
// "result"); it is counted again with its final outcome when released.
const pushHeld = "held"

// heldPushes is a channel's reorder state while it holds pushes.
type heldPushes struct {
	ops   []*liveOp   // sorted by id, all > sent+1
	at    time.Time   // when the hold began (monotonic)
	timer *time.Timer // fires onReorder at at+ReorderWindow
}

// hold keeps op (id > ch.sent+1, channel live) until the ids before it arrive.
// It reports false when the window is disabled or full: the caller resyncs.
// Drain task only.
func (s *session) hold(ch *channel, op *liveOp) bool {
	window := s.c.cfg.ReorderWindow
	if window <= 0 {
		return false
	}
	h := ch.held
	if h == nil {
		h = &heldPushes{}
	}
	i, found := slices.BinarySearchFunc(h.ops, op.op.Id, func(o *liveOp, id uint64) int {
		return cmp.Compare(o.op.Id, id)
	})
	if found {
		s.c.metrics.pushDuplicate.Inc()
		return true
	}
	if len(h.ops) >= maxHeld {
		return false
	}
	h.ops = slices.Insert(h.ops, i, op)
	s.c.metrics.pushes.WithLabelValues(pushHeld).Inc()
	if ch.held == nil {
		// The timer only queues an event; handleReorder checks the hold's
		// start, so a timer of an earlier hold that fires late is a no-op.
		ch.held = h
		h.at = time.Now()
		name := ch.name
		h.timer = time.AfterFunc(window, func() { s.onReorder(name) })
	}
	return true
}

// releaseHeld applies the held pushes that are now in order, after ch.sent
// advanced. Drain task only.
func (s *session) releaseHeld(ch *channel) {
	for ch.held != nil && !ch.syncing() {
		h := ch.held
		op := h.ops[0]
		if op.op.Id > ch.sent+1 {
			return // still a hole before it: keep waiting (same deadline)
		}
		h.ops[0] = nil
		h.ops = h.ops[1:]
		if len(h.ops) == 0 {
			s.dropHeld(ch)
		}
		if op.op.Id <= ch.sent {
			s.c.metrics.pushDuplicate.Inc()
			continue
		}
		if !s.applyLive(ch, op) {
			// Not covered (valid_from in the future): the channel stays live
			// below it, so the rest is a gap that no push will fill; sync
			// now, as the next push would have made it.
			if ch.held != nil {
				s.foldHeld(ch)
				ch.st = chNeedSync
				s.c.metrics.resyncs.WithLabelValues(resyncGap).Inc()
			}
			return
		}
	}
}

// foldHeld drops the channel's held pushes into pendingMax: the backlog sync
// that follows reads them from the store. Drain task only.
func (s *session) foldHeld(ch *channel) {
	if ch.held == nil {
		return
	}
	ch.raisePending(ch.held.ops[len(ch.held.ops)-1].op.Id)
	s.dropHeld(ch)
}

// dropHeld ends the channel's hold and stops its timer.
func (s *session) dropHeld(ch *channel) {
	if ch.held == nil {
		return
	}
	ch.held.timer.Stop()
	clear(ch.held.ops)
	ch.held = nil
}

// onReorder queues the end of a channel's reorder window (timer goroutine).
func (s *session) onReorder(name string) {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return
	}
	s.mu.events = append(s.mu.events, event{kind: evReorder, channel: name})
	submit := s.scheduleLocked()
	s.mu.Unlock()
	if submit {
		s.c.submit(s)
	}
}

// handleReorder: the window of the channel's hold is over and the hole is
// still there; fall back to the store, as for any gap.
func (s *session) handleReorder(name string) {
	ch := s.chans.get(name)
	if ch == nil || ch.held == nil || time.Since(ch.held.at) < s.c.cfg.ReorderWindow {
		return
	}
	s.foldHeld(ch)
	if !ch.syncing() {
		ch.st = chNeedSync
	}
	s.c.metrics.pushResync.Inc()
	s.c.metrics.resyncs.WithLabelValues(resyncGap).Inc() // a gap, only later
}

// stopReorders ends every hold of the session (finish).
func (s *session) stopReorders() {
	for _, ch := range s.chans.order {
		s.dropHeld(ch)
	}
}
