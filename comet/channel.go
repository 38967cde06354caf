package comet

import (
	"time"
)

// chanState is where one channel of a session is in its sync cycle.
//
//	needSync --(batched Logic.Sync)--> fetching --page with progress--> awaitAck
//	   ^                                   |                              |
//	   |                                   +--no progress---------> live  |
//	   +-- ACK>=upto and (more or pendingMax>sent) <----------------------+
//	   +-- gap / queue overflow / SYNC_REQ          live <-- ACK>=upto, nothing pending
//
// fetching exists only inside one drain round (the Logic.Sync call runs in
// the session's drain task), so events never observe it.
type chanState uint8

const (
	chLive     chanState = iota // live pushes with id == sent+1 are written
	chNeedSync                  // waits for the next batched Logic.Sync
	chFetching                  // its cursor is in the Logic.Sync being made
	chAwaitAck                  // a backlog page is written; waits for ACK >= inflight
)

func (s chanState) String() string {
	switch s {
	case chLive:
		return "live"
	case chNeedSync:
		return "need_sync"
	case chFetching:
		return "fetching"
	case chAwaitAck:
		return "await_ack"
	}
	return "?"
}

// channel is the sync state of one channel of one session. It is owned by the
// session's drain task.
type channel struct {
	biz, name string
	st        chanState
	// inRound: the channel is in its session's liveRound (at most once).
	inRound bool
	// reqDeferred: a SYNC_REQ waits for its rate bucket (reqPoint below).
	reqDeferred bool
	// wrote: a page of this channel was written in this session (cover);
	// until then a store max below sent means the AUTH point is ahead.
	wrote bool
	// pageBytes is the estimated size of the inflight page (syncNeeded's
	// pacing); int32 beside the flags keeps the struct small.
	pageBytes int32

	// sent is the highest id covered for this device: written in a frame or
	// skipped (filtered, expired). Backlog cursors start after it.
	sent uint64
	// told is the highest upto written in a frame since the last SYNC_REQ: the
	// `after` of the next page, so the client sees the pages as contiguous
	// even across skipped ids.
	told uint64
	// toldMax is the highest upto ever written (or the starting point): an ACK
	// or SYNC_REQ beyond it is a client bug. Unlike told it never goes back, so
	// an ACK racing a SYNC_REQ is not mistaken for one.
	toldMax uint64
	// acked is the highest id the client acknowledged (forwarded to logic).
	acked uint64
	// inflight is the upto of the backlog page awaiting ACK (chAwaitAck).
	inflight uint64
	// more: the inflight page said the backlog continues.
	more bool
	// pendingMax is the highest live id seen while the channel could not take
	// it (syncing, or not yet valid); after the last backlog page is acked, a
	// pendingMax above sent triggers another sync.
	pendingMax uint64

	// live is the live page being built in the current drain round (nil if
	// none): consecutive live pushes of one round go out as one page
	// (live.go).
	live *livePage

	// wake is the valid_from timer (wake.go), armed for wakeAt (unix ms);
	// nil when none.
	wake   *time.Timer
	wakeAt int64

	// reqTat is the channel's SYNC_REQ rate bucket (limits.go); reqPoint
	// the lowest point of SYNC_REQs held back by it (reqDeferred), served
	// by the wake timer.
	reqTat   int64
	reqPoint uint64

	// held are live pushes that arrived past sent+1, waiting for the ids
	// before them (reorder.go); nil when none, so an in-order channel pays
	// one pointer.
	held *heldPushes
}

func newChannel(biz, name string, from uint64) *channel {
	return &channel{biz: biz, name: name, st: chNeedSync, sent: from, told: from, toldMax: from, acked: from}
}

// syncing reports whether live pushes must be deferred to a backlog page.
func (ch *channel) syncing() bool { return ch.st != chLive }

func (ch *channel) raisePending(id uint64) {
	if id > ch.pendingMax {
		ch.pendingMax = id
	}
}

// cover records that ids up to upto were written in a frame.
func (ch *channel) cover(upto uint64) {
	ch.sent, ch.told, ch.wrote = upto, upto, true
	if upto > ch.toldMax {
		ch.toldMax = upto
	}
}

// pageAcked moves a channel whose backlog page was acked on. It reports the
// resync reason when the channel must sync again because of pushes that
// arrived meanwhile ("" otherwise).
func (ch *channel) pageAcked() (resync string) {
	ch.inflight = 0
	switch {
	case ch.more:
		ch.more = false
		ch.st = chNeedSync
	case ch.pendingMax > ch.sent:
		ch.st = chNeedSync
		return resyncPending
	default:
		ch.st = chLive
	}
	return ""
}

// resetTo restarts the channel's backlog after id (SYNC_REQ).
func (ch *channel) resetTo(id uint64) {
	ch.live = nil // its after no longer matches what the client holds
	ch.sent, ch.told = id, id
	ch.inflight, ch.more = 0, false
	ch.st = chNeedSync
}

// smallChannelSet is the most channels a channelSet finds by scanning.
const smallChannelSet = 8

// channelSet is a session's channels in AUTH_REPLY order (so batches are
// deterministic), found by name with a scan while there are few: sessions
// usually sync a handful of channels, and a map per session costs ~250 B of
// every idle connection. Past smallChannelSet (AUTH allows 256 bizs) a map
// indexes them.
type channelSet struct {
	order []*channel
	index map[string]*channel // nil up to smallChannelSet channels
}

// get returns the channel called name, or nil.
func (cs *channelSet) get(name string) *channel {
	if cs.index != nil {
		return cs.index[name]
	}
	for _, ch := range cs.order {
		if ch.name == name {
			return ch
		}
	}
	return nil
}

// add appends ch unless a channel of that name is there; it reports whether
// it added.
func (cs *channelSet) add(ch *channel) bool {
	if cs.get(ch.name) != nil {
		return false
	}
	cs.order = append(cs.order, ch)
	if cs.index != nil {
		cs.index[ch.name] = ch
	} else if len(cs.order) > smallChannelSet {
		cs.index = make(map[string]*channel, len(cs.order))
		for _, c := range cs.order {
			cs.index[c.name] = c
		}
	}
	return true
}
