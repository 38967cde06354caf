package comet

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/oplog"
)

const newsGlobal = "news/g"

// A live push whose valid_from is ahead arms the channel's timer: the oplog
// arrives at valid_from without any other traffic on the channel.
func TestValidFromLivePushDeliveredAtValidFrom(t *testing.T) {
	e := newEnv(t, nil)
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "5.0", []string{"chat"})
	cl.expectQuiet()
	from := time.Now().Add(300 * time.Millisecond)
	op := e.logic.add(chatAlice, &oplog.Oplog{ValidFromMs: from.UnixMilli()})
	e.push(cl, op)
	cl.expectQuiet() // not before valid_from
	s := cl.expectSync()
	if time.Now().Before(from) {
		t.Fatalf("delivered %v before valid_from", time.Until(from))
	}
	if got := pagesString(s); got != "chat/u/alice(0,1][1] more=false live=false" {
		t.Fatalf("page: %s", got)
	}
	cl.ack(chatAlice, 1)
	cl.expectQuiet()
	if v := counterValue(t, e.c.metrics.resyncs.WithLabelValues(resyncValidFrom)); v != 1 {
		t.Fatalf("valid_from resyncs %v, want 1", v)
	}
}

// A backlog page that stops before a not-yet-valid oplog (next_valid_ms)
// arms the timer too; what follows that oplog waits behind it, in order.
func TestValidFromBacklogDeliveredAtValidFrom(t *testing.T) {
	e := newEnv(t, nil)
	e.logic.add(chatAlice, &oplog.Oplog{})
	from := time.Now().Add(300 * time.Millisecond)
	e.logic.add(chatAlice, &oplog.Oplog{ValidFromMs: from.UnixMilli()})
	e.logic.add(chatAlice, &oplog.Oplog{})
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "5.0", []string{"chat"})
	if got := pagesString(cl.expectSync()); got != "chat/u/alice(0,1][1] more=true live=false" {
		t.Fatalf("first page: %s", got)
	}
	cl.ack(chatAlice, 1)
	cl.expectQuiet()
	s := cl.expectSync()
	if time.Now().Before(from) {
		t.Fatal("delivered before valid_from")
	}
	if got := pagesString(s); got != "chat/u/alice(1,3][2 3] more=false live=false" {
		t.Fatalf("page at valid_from: %s", got)
	}
}

// Closing a session stops its valid_from timers: no logic call after close.
func TestValidFromTimerStoppedOnClose(t *testing.T) {
	e := newEnv(t, nil)
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "5.0", []string{"chat"})
	cl.expectQuiet()
	e.push(cl, e.logic.add(chatAlice, &oplog.Oplog{ValidFromMs: time.Now().Add(200 * time.Millisecond).UnixMilli()}))
	cl.expectQuiet()
	cl.conn.Close(nil, nil)
	eventually(t, "disconnect", func() bool { return len(e.logic.disconnectKeys()) == 1 })
	for _, ch := range cl.sess.chans.order {
		if ch.wake != nil {
			t.Fatalf("channel %s still has a timer after close", ch.name)
		}
	}
	syncs := e.logic.syncCount()
	time.Sleep(400 * time.Millisecond) // a deliberate gap past valid_from, waiting for nothing: a leaked timer would sync in it
	if n := e.logic.syncCount(); n != syncs {
		t.Fatalf("%d syncs after close", n-syncs)
	}
}

// Broadcast reaches exactly the sessions that sync the global channel; each
// applies its own filters and cursor; closed sessions leave the index.
func TestBroadcastGlobalChannel(t *testing.T) {
	e := newEnv(t, nil)
	ios := e.dial()
	ios.auth("good-alice", "dev1", "ios", "5.0", []string{"news", "chat"})
	web := e.dial()
	web.auth("good-bob", "dev2", "web", "5.0", []string{"news"})
	other := e.dial()
	other.auth("good-carol", "dev3", "ios", "5.0", []string{"chat"})
	for _, cl := range []*client{ios, web, other} {
		cl.expectQuiet()
	}
	bc := func(op *oplog.Oplog) uint32 {
		r, err := e.c.Broadcast(context.Background(), &pb.BroadcastReq{Oplog: op})
		if err != nil {
			t.Fatal(err)
		}
		return r.Delivered
	}
	if n := bc(e.logic.add(newsGlobal, &oplog.Oplog{})); n != 2 {
		t.Fatalf("delivered to %d sessions, want 2", n)
	}
	bc(e.logic.add(newsGlobal, &oplog.Oplog{Platforms: []string{"web"}}))
	bc(e.logic.add(newsGlobal, &oplog.Oplog{}))
	if got := ios.follow(newsGlobal, 0, 3); !slices.Equal(got, []uint64{1, 3}) {
		t.Fatalf("ios got %v, want [1 3] (2 is web only)", got)
	}
	if got := web.follow(newsGlobal, 0, 3); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("web got %v", got)
	}
	other.expectQuiet()
	if got := len(e.c.global.sessions(newsGlobal)); got != 2 {
		t.Fatalf("index holds %d sessions, want 2", got)
	}
	web.conn.Close(nil, nil)
	eventually(t, "index shrinks", func() bool { return len(e.c.global.sessions(newsGlobal)) == 1 })
	// A non-global oplog is refused: it would bypass the routing by owner.
	if _, err := e.c.Broadcast(context.Background(), &pb.BroadcastReq{Oplog: e.logic.add(chatAlice, &oplog.Oplog{})}); err == nil {
		t.Fatal("broadcast of a user-channel oplog accepted")
	}
}
