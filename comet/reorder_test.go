package comet

import (
	"slices"
	"testing"
	"time"

	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
	wirepb "github.com/msync/msync/pkg/protocol/pb"
)

// liveIDs collects the frames written before a barrier and returns the ids
// of their pages in order; every page must be live and continue the one
// before it (after == previous upto), starting at from.
func liveIDs(t *testing.T, cl *client, from uint64) []uint64 {
	t.Helper()
	var ids []uint64
	told := from
	for _, f := range cl.barrier() {
		if f.Op != protocol.OpSync {
			t.Fatalf("unexpected frame %s", describe(f))
		}
		var s wirepb.Sync
		if err := protocol.Unmarshal(f, &s); err != nil {
			t.Fatal(err)
		}
		for _, p := range s.Pages {
			if !p.Live || p.After != told {
				t.Fatalf("page %s: want a live page after %d", pagesString(&s), told)
			}
			for _, op := range p.Oplogs {
				ids = append(ids, op.Id)
			}
			told = p.Upto
		}
	}
	return ids
}

func longWindow(c *Config, _ *fakeLogic) { c.ReorderWindow = time.Minute }

// Pushes reaching the session as 3, 1, 2 (separate Push calls, as from two
// job batches) are written live in id order without a store read.
func TestReorderWindowOrdersLivePushes(t *testing.T) {
	for _, name := range []string{"separate calls", "one call"} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, longWindow)
			cl := e.dial()
			cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
			cl.expectQuiet()
			syncs := e.logic.syncCount()
			ops := e.logic.addN(chatAlice, 3)
			if name == "one call" {
				e.push(cl, ops[2], ops[0], ops[1])
			} else {
				e.push(cl, ops[2])
				e.push(cl, ops[0])
				e.push(cl, ops[1])
			}
			if ids := liveIDs(t, cl, 0); !slices.Equal(ids, []uint64{1, 2, 3}) {
				t.Fatalf("live ids %v, want [1 2 3]", ids)
			}
			if n := e.logic.syncCount(); n != syncs {
				t.Fatalf("%d Logic.Sync calls after the pushes, want none", n-syncs)
			}
			if v := counterValue(t, e.c.metrics.resyncs.WithLabelValues(resyncGap)); v != 0 {
				t.Fatalf("gap resyncs %v", v)
			}
			if v := counterValue(t, e.c.metrics.pushes.WithLabelValues(pushHeld)); v != 1 {
				t.Fatalf("held %v, want 1", v)
			}
			if v := counterValue(t, e.c.metrics.pushDelivered); v != 3 {
				t.Fatalf("delivered %v, want 3", v)
			}
			// The channel is live and in order afterwards; a duplicate of a
			// held id is dropped.
			e.push(cl, ops[2])
			e.push(cl, e.logic.add(chatAlice, &oplog.Oplog{}))
			if ids := liveIDs(t, cl, 3); !slices.Equal(ids, []uint64{4}) {
				t.Fatalf("ids after %v", ids)
			}
		})
	}
}

// A hole nobody fills (the queue send of id 1-2 failed) is waited for at
// most the window, then the channel syncs from the store: nothing is lost.
func TestReorderWindowTimeoutResyncs(t *testing.T) {
	const window = 30 * time.Millisecond
	e := newEnv(t, func(c *Config, _ *fakeLogic) { c.ReorderWindow = window })
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
	cl.expectQuiet()
	ops := e.logic.addN(chatAlice, 4)
	began := time.Now()
	e.push(cl, ops[3], ops[2])
	if got := pagesString(cl.expectSync()); got != "chat/u/alice(0,4][1 2 3 4] more=false live=false" {
		t.Fatalf("resync page: %s", got)
	}
	if d := time.Since(began); d < window {
		t.Fatalf("resynced after %v, before the %v window", d, window)
	}
	if v := counterValue(t, e.c.metrics.resyncs.WithLabelValues(resyncGap)); v != 1 {
		t.Fatalf("gap resyncs %v", v)
	}
	if v := counterValue(t, e.c.metrics.pushes.WithLabelValues(pushHeld)); v != 2 {
		t.Fatalf("held %v, want 2", v)
	}
	cl.ack(chatAlice, 4)
	// The late pushes are duplicates now; the channel is live again.
	e.push(cl, ops[0], ops[1])
	e.push(cl, e.logic.add(chatAlice, &oplog.Oplog{}))
	if ids := liveIDs(t, cl, 4); !slices.Equal(ids, []uint64{5}) {
		t.Fatalf("ids after resync %v", ids)
	}
}

// The hold is bounded: one past maxHeld resyncs at once, window or not.
func TestReorderHoldBounded(t *testing.T) {
	e := newEnv(t, longWindow)
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
	cl.expectQuiet()
	ops := e.logic.addN(chatAlice, maxHeld+2)
	e.push(cl, ops[1:]...) // ids 2..maxHeld+2: one more than the hold takes
	s := cl.expectSync()
	p := s.Pages[0]
	if p.Live || p.After != 0 || p.Upto != uint64(maxHeld+2) || len(p.Oplogs) != maxHeld+2 {
		t.Fatalf("resync page: %s", pagesString(s))
	}
}

// A negative window turns the hold off: a gap resyncs at once.
func TestReorderWindowDisabled(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *fakeLogic) { c.ReorderWindow = -1 })
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
	cl.expectQuiet()
	ops := e.logic.addN(chatAlice, 2)
	e.push(cl, ops[1])
	if got := pagesString(cl.expectSync()); got != "chat/u/alice(0,2][1 2] more=false live=false" {
		t.Fatalf("resync page: %s", got)
	}
	if v := counterValue(t, e.c.metrics.pushes.WithLabelValues(pushHeld)); v != 0 {
		t.Fatalf("held %v with the window off", v)
	}
}

// A SYNC_REQ while pushes are held rewinds the channel; the held ids come
// from the store in the backlog, not twice.
func TestReorderHeldThenSyncReq(t *testing.T) {
	e := newEnv(t, longWindow)
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
	cl.expectQuiet()
	ops := e.logic.addN(chatAlice, 3)
	e.push(cl, ops[0])
	if ids := liveIDs(t, cl, 0); !slices.Equal(ids, []uint64{1}) {
		t.Fatalf("ids %v", ids)
	}
	e.push(cl, ops[2]) // held: 2 missing
	cl.sendMsg(protocol.OpSyncReq, &wirepb.SyncReq{Points: []*wirepb.ChannelPoint{{Channel: chatAlice, Id: 0}}})
	if got := pagesString(cl.expectSync()); got != "chat/u/alice(0,3][1 2 3] more=false live=false" {
		t.Fatalf("page after SYNC_REQ: %s", got)
	}
	cl.ack(chatAlice, 3)
	e.push(cl, ops[1]) // late: covered
	cl.expectQuiet()
}
