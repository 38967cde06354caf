package comet

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
	wirepb "github.com/msync/msync/pkg/protocol/pb"
)

const (
	chatAlice = "chat/u/alice"
	lockDev1  = "lock/d/dev1"
)

func (e *testEnv) push(cl *client, ops ...*oplog.Oplog) uint32 {
	e.t.Helper()
	req := &pb.PushReq{}
	for _, op := range ops {
		req.Items = append(req.Items, &pb.PushItem{Keys: []string{cl.key}, Oplog: op})
	}
	reply, err := e.c.Push(context.Background(), req)
	if err != nil {
		e.t.Fatalf("Push: %v", err)
	}
	return reply.Delivered
}

func TestAuthOK(t *testing.T) {
	e := newEnv(t, nil)
	e.logic.addN(lockDev1, 7) // the point 7 below is the channel's end
	cl := e.dial()
	r := cl.auth("good-alice", "dev1", "ios", "5.1.0", []string{"chat", "lock", "nope"},
		&wirepb.ChannelPoint{Channel: lockDev1, Id: 7})
	if r.User != "alice" || r.Session != cl.key || r.HeartbeatMs != 10000 {
		t.Fatalf("AUTH_REPLY %v", r)
	}
	want := []*wirepb.ChannelInfo{{Biz: "chat", Channel: chatAlice, From: 0}, {Biz: "lock", Channel: lockDev1, From: 7}}
	if len(r.Channels) != 2 || r.Channels[0].String() != want[0].String() || r.Channels[1].String() != want[1].String() {
		t.Fatalf("channels %v, want %v", r.Channels, want)
	}
	if len(r.Rejected) != 1 || r.Rejected[0].Biz != "nope" {
		t.Fatalf("rejected %v", r.Rejected)
	}
	e.logic.mu.Lock()
	cr := e.logic.mu.connects[0]
	e.logic.mu.Unlock()
	if cr.Comet != "comet-test" || cr.Key != cl.key || cr.Device != "dev1" || cr.Platform != "ios" ||
		cr.AppVersion != "5.1.0" || len(cr.Points) != 1 || cr.Points[0].Id != 7 || cr.RemoteAddr == "" {
		t.Fatalf("ConnectReq %v", cr)
	}
	d, code, _ := cl.conn.deadline()
	if d != 3*10*time.Second+5*time.Second || code != protocol.CodeHeartbeatTimeout {
		t.Fatalf("deadline %v code %d", d, code)
	}
	// Empty channels: nothing to page, no ack deadline, both live.
	cl.expectQuiet()
	if cl.conn.ackDeadline() != 0 {
		t.Fatal("ack deadline armed without a page")
	}
	if n := e.logic.syncCount(); n != 1 {
		t.Fatalf("%d Logic.Sync calls, want 1 for both channels", n)
	}
	if g := gaugeValue(t, e.c.metrics.sessions); g != 1 {
		t.Fatalf("sessions gauge %v", g)
	}
}

func TestAuthErrors(t *testing.T) {
	garbage := []byte{0xff, 0xff, 0xff} // truncated varint: not a valid Auth
	tests := []struct {
		name string
		run  func(cl *client)
		mod  func(*Config, *fakeLogic)
		code protocol.Code
	}{
		{name: "bad token", code: protocol.CodeTokenInvalid, run: func(cl *client) {
			cl.sendMsg(protocol.OpAuth, &wirepb.Auth{Token: "forged", Device: "d"})
		}},
		{name: "expired token", code: protocol.CodeTokenExpired, run: func(cl *client) {
			cl.sendMsg(protocol.OpAuth, &wirepb.Auth{Token: "expired", Device: "d"})
		}},
		{name: "bad fields", code: protocol.CodeBadAuth, run: func(cl *client) {
			cl.sendMsg(protocol.OpAuth, &wirepb.Auth{Token: "good-bob"})
		}},
		{name: "logic unavailable", code: protocol.CodeUnavailable,
			mod: func(_ *Config, fl *fakeLogic) { fl.connectErr = errors.New("connection refused") },
			run: func(cl *client) { cl.sendMsg(protocol.OpAuth, &wirepb.Auth{Token: "good-bob", Device: "d"}) }},
		{name: "logic timeout", code: protocol.CodeUnavailable,
			mod: func(cfg *Config, fl *fakeLogic) {
				cfg.CallTimeout = 20 * time.Millisecond
				fl.connectGate = make(chan struct{})
			},
			run: func(cl *client) { cl.sendMsg(protocol.OpAuth, &wirepb.Auth{Token: "good-bob", Device: "d"}) }},
		{name: "op before auth", code: protocol.CodeNotAuthed, run: func(cl *client) {
			cl.sendMsg(protocol.OpHeartbeat, &wirepb.Heartbeat{})
		}},
		{name: "ack before auth", code: protocol.CodeNotAuthed, run: func(cl *client) {
			cl.sendMsg(protocol.OpAck, &wirepb.Ack{})
		}},
		{name: "unknown op", code: protocol.CodeUnknownOp, run: func(cl *client) { cl.sendRaw(99, nil) }},
		{name: "server op from client", code: protocol.CodeUnknownOp, run: func(cl *client) {
			cl.auth("good-bob", "d", "ios", "1", nil)
			cl.sendMsg(protocol.OpSync, &wirepb.Sync{})
		}},
		{name: "undecodable auth", code: protocol.CodeBadFrame, run: func(cl *client) { cl.sendRaw(protocol.OpAuth, garbage) }},
		{name: "undecodable ack", code: protocol.CodeBadFrame, run: func(cl *client) {
			cl.auth("good-bob", "d", "ios", "1", nil)
			cl.sendRaw(protocol.OpAck, garbage)
		}},
		{name: "undecodable heartbeat", code: protocol.CodeBadFrame, run: func(cl *client) {
			cl.auth("good-bob", "d", "ios", "1", nil)
			cl.sendRaw(protocol.OpHeartbeat, garbage)
		}},
		{name: "second auth", code: protocol.CodeOutOfOrder, run: func(cl *client) {
			cl.auth("good-bob", "d", "ios", "1", []string{"chat"})
			cl.sendMsg(protocol.OpAuth, &wirepb.Auth{Token: "good-bob", Device: "d"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.mod)
			cl := e.dial()
			tt.run(cl)
			cl.expectError(tt.code)
			if !errors.Is(cl.conn.closeReason(), ErrProtocol) && !errors.Is(cl.conn.closeReason(), ErrRejected) {
				t.Fatalf("close reason %v", cl.conn.closeReason())
			}
			eventually(t, "session finished", func() bool { return e.c.lookup(cl.key) == nil && e.c.live.Load() == 0 })
			// Logic hears of authenticated sessions and of a Connect that may
			// have registered (unavailable, timed out); of no other.
			withdrawn := slices.Contains(e.logic.disconnectKeys(), cl.key)
			if withdrawn != (tt.code == protocol.CodeUnavailable || cl.sess.ident.Load() != nil) {
				t.Fatalf("Logic.Disconnect sent=%v for code %d", withdrawn, tt.code)
			}
			if v := counterValue(t, e.c.metrics.errors.WithLabelValues(itoa(tt.code))); v != 1 {
				t.Fatalf("errors{code=%d} = %v", tt.code, v)
			}
		})
	}
}

func itoa(c protocol.Code) string { return strconv.FormatUint(uint64(c), 10) }

func TestBacklogFlowControl(t *testing.T) {
	e := newEnv(t, func(cfg *Config, _ *fakeLogic) { cfg.PageLimit = 2; cfg.AckTimeout = 7 * time.Second })
	e.logic.addN(chatAlice, 5)
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})

	s := cl.expectSync()
	if got := pagesString(s); got != "chat/u/alice(0,2][1 2] more=true live=false" {
		t.Fatalf("page 1: %s", got)
	}
	if s.Pages[0].Biz != "chat" || string(s.Pages[0].Oplogs[0].Payload) != "chat/u/alice#1" {
		t.Fatalf("page fields %v", s.Pages[0])
	}
	if d := cl.conn.ackDeadline(); d != 7*time.Second {
		t.Fatalf("ack deadline %v, want 7s", d)
	}
	// An ack below upto does not release the next page.
	cl.ack(chatAlice, 1)
	cl.expectQuiet()
	cl.ack(chatAlice, 2)
	if got := pagesString(cl.expectSync()); got != "chat/u/alice(2,4][3 4] more=true live=false" {
		t.Fatalf("page 2: %s", got)
	}
	cl.ack(chatAlice, 4)
	if got := pagesString(cl.expectSync()); got != "chat/u/alice(4,5][5] more=false live=false" {
		t.Fatalf("page 3: %s", got)
	}
	if cl.conn.ackDeadline() == 0 {
		t.Fatal("ack deadline cleared while the last page is unacked")
	}
	cl.ack(chatAlice, 5)
	cl.expectQuiet()
	if d := cl.conn.ackDeadline(); d != 0 {
		t.Fatalf("ack deadline %v after the last ack, want cleared", d)
	}
	eventually(t, "acks forwarded to logic", func() bool { return e.logic.point("dev1", chatAlice) == 5 })

	// Live now.
	op := e.logic.add(chatAlice, &oplog.Oplog{})
	if n := e.push(cl, op); n != 1 {
		t.Fatalf("delivered %d", n)
	}
	if got := pagesString(cl.expectSync()); got != "chat/u/alice(5,6][6] more=false live=true" {
		t.Fatalf("live page: %s", got)
	}
}

func TestBacklogMergesChannels(t *testing.T) {
	e := newEnv(t, nil)
	e.logic.addN(chatAlice, 3)
	e.logic.addN(lockDev1, 2)
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat", "lock"})
	s := cl.expectSync()
	if got := pagesString(s); got != "chat/u/alice(0,3][1 2 3] more=false live=false lock/d/dev1(0,2][1 2] more=false live=false" {
		t.Fatalf("merged frame: %s", got)
	}
	if n := e.logic.syncCount(); n != 1 {
		t.Fatalf("%d Logic.Sync calls, want 1", n)
	}
	e.logic.mu.Lock()
	cursors := e.logic.mu.syncs[0].Cursors
	e.logic.mu.Unlock()
	if len(cursors) != 2 {
		t.Fatalf("cursors %v", cursors)
	}
}

func TestLiveInOrderAndDuplicates(t *testing.T) {
	e := newEnv(t, nil)
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
	cl.expectQuiet() // empty backlog: live
	ops := e.logic.addN(chatAlice, 3)
	for i, op := range ops {
		e.push(cl, op)
		s := cl.expectSync()
		p := s.Pages[0]
		if !p.Live || p.After != uint64(i) || p.Upto != op.Id || len(p.Oplogs) != 1 || p.Oplogs[0].Id != op.Id {
			t.Fatalf("live page %d: %s", i, pagesString(s))
		}
	}
	// The same oplog again (job retry): dropped.
	if n := e.push(cl, ops[1]); n != 1 {
		t.Fatalf("delivered %d", n)
	}
	cl.expectQuiet()
	if v := counterValue(t, e.c.metrics.pushDuplicate); v != 1 {
		t.Fatalf("duplicates %v", v)
	}
	// Several pushes handled in one round go out as one contiguous page.
	more := e.logic.addN(chatAlice, 2)
	e.push(cl, more...)
	ids := cl.follow(chatAlice, 3, 5)
	if !slices.Equal(ids, []uint64{4, 5}) {
		t.Fatalf("ids %v", ids)
	}
}

func TestLiveGapResyncs(t *testing.T) {
	e := newEnv(t, nil)
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
	cl.expectQuiet()
	ops := e.logic.addN(chatAlice, 3)
	e.push(cl, ops[2]) // 1 and 2 were never pushed
	s := cl.expectSync()
	if got := pagesString(s); got != "chat/u/alice(0,3][1 2 3] more=false live=false" {
		t.Fatalf("resync page: %s", got)
	}
	if v := counterValue(t, e.c.metrics.resyncs.WithLabelValues(resyncGap)); v != 1 {
		t.Fatalf("gap resyncs %v", v)
	}
	cl.ack(chatAlice, 3)
	e.push(cl, e.logic.add(chatAlice, &oplog.Oplog{}))
	if got := pagesString(cl.expectSync()); got != "chat/u/alice(3,4][4] more=false live=true" {
		t.Fatalf("live after resync: %s", got)
	}
}

func TestPushDuringSyncResyncsAfterLastPage(t *testing.T) {
	e := newEnv(t, nil)
	e.logic.addN(chatAlice, 3)
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
	if got := pagesString(cl.expectSync()); got != "chat/u/alice(0,3][1 2 3] more=false live=false" {
		t.Fatalf("backlog: %s", got)
	}
	// While the page is unacked the channel is syncing: no live frame.
	op4 := e.logic.add(chatAlice, &oplog.Oplog{})
	e.push(cl, op4)
	cl.expectQuiet()
	if v := counterValue(t, e.c.metrics.pushDeferred); v != 1 {
		t.Fatalf("deferred %v", v)
	}
	cl.ack(chatAlice, 3)
	if got := pagesString(cl.expectSync()); got != "chat/u/alice(3,4][4] more=false live=false" {
		t.Fatalf("pending resync: %s", got)
	}
	if v := counterValue(t, e.c.metrics.resyncs.WithLabelValues(resyncPending)); v != 1 {
		t.Fatalf("pending resyncs %v", v)
	}
}

// A push that arrives while Logic.Sync is running is queued; after the page
// it is either covered (duplicate) or next in line.
func TestPushDuringFetch(t *testing.T) {
	e := newEnv(t, func(_ *Config, fl *fakeLogic) { fl.syncGate = make(chan struct{}) })
	e.logic.addN(chatAlice, 2)
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
	op3 := e.logic.add(chatAlice, &oplog.Oplog{}) // stored before the fetch reads
	e.push(cl, op3)
	e.logic.syncGate <- struct{}{}
	ids := cl.follow(chatAlice, 0, 3)
	if !slices.Equal(ids, []uint64{1, 2, 3}) {
		t.Fatalf("ids %v", ids)
	}
	cl.expectQuiet() // op3 came in the page; its push is a duplicate
}

func TestFilteredLivePushSkipped(t *testing.T) {
	e := newEnv(t, nil)
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "5.0", []string{"chat"})
	cl.expectQuiet()
	android := e.logic.add(chatAlice, &oplog.Oplog{Platforms: []string{"android"}})
	old := e.logic.add(chatAlice, &oplog.Oplog{MaxVersion: "4.9"})
	e.push(cl, android, old)
	cl.expectQuiet()
	if v := counterValue(t, e.c.metrics.pushSkipped); v != 2 {
		t.Fatalf("skipped %v", v)
	}
	e.push(cl, e.logic.add(chatAlice, &oplog.Oplog{Platforms: []string{"iOS"}}))
	// after=0: the page covers the two skipped ids the client never saw.
	if got := pagesString(cl.expectSync()); got != "chat/u/alice(0,3][3] more=false live=true" {
		t.Fatalf("page after skips: %s", got)
	}
	// Acking 3 is valid: 3 was told.
	cl.ack(chatAlice, 3)
	cl.expectQuiet()
}

func TestFilteredSkipThenGapPageCoversIt(t *testing.T) {
	e := newEnv(t, nil)
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "5.0", []string{"chat"})
	cl.expectQuiet()
	e.push(cl, e.logic.add(chatAlice, &oplog.Oplog{Platforms: []string{"web"}})) // 1 skipped
	ops := e.logic.addN(chatAlice, 2)
	e.push(cl, ops[1]) // 3: gap after 1 -> backlog from sent=1, after=told=0
	if got := pagesString(cl.expectSync()); got != "chat/u/alice(0,3][2 3] more=false live=false" {
		t.Fatalf("page: %s", got)
	}
}

func TestNotYetValidWaitsForNextSync(t *testing.T) {
	start := time.Now()
	e := newEnv(t, func(_ *Config, fl *fakeLogic) { fl.now.Store(start.UnixMilli()) })
	e.c.now = func() time.Time { return time.UnixMilli(e.logic.now.Load()) }
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "5.0", []string{"chat"})
	cl.expectQuiet()
	later := e.logic.add(chatAlice, &oplog.Oplog{ValidFromMs: start.Add(time.Minute).UnixMilli()})
	e.push(cl, later)
	cl.expectQuiet()
	// valid_from passes; the next push of the channel is a gap and syncs.
	e.logic.now.Store(start.Add(2 * time.Minute).UnixMilli())
	e.push(cl, e.logic.add(chatAlice, &oplog.Oplog{}))
	if got := pagesString(cl.expectSync()); got != "chat/u/alice(0,2][1 2] more=false live=false" {
		t.Fatalf("page: %s", got)
	}
}

func TestAckBeyondTold(t *testing.T) {
	e := newEnv(t, nil)
	e.logic.addN(chatAlice, 2)
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
	cl.expectSync()
	cl.ack(chatAlice, 3)
	cl.expectError(protocol.CodeOutOfOrder)
	eventually(t, "logic told", func() bool { return slices.Contains(e.logic.disconnectKeys(), cl.key) })
}

func TestAckUnknownChannel(t *testing.T) {
	e := newEnv(t, nil)
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
	cl.ack("chat/u/mallory", 1)
	cl.expectError(protocol.CodeOutOfOrder)
}

func TestSyncReq(t *testing.T) {
	e := newEnv(t, nil)
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
	cl.expectQuiet()
	ops := e.logic.addN(chatAlice, 3)
	for _, op := range ops {
		e.push(cl, op)
	}
	cl.follow(chatAlice, 0, 3)
	// The app failed on 2: the SDK asks again from 1.
	cl.sendMsg(protocol.OpSyncReq, &wirepb.SyncReq{Points: []*wirepb.ChannelPoint{{Channel: chatAlice, Id: 1}}})
	if got := pagesString(cl.expectSync()); got != "chat/u/alice(1,3][2 3] more=false live=false" {
		t.Fatalf("page: %s", got)
	}
	cl.ack(chatAlice, 3)
	cl.expectQuiet()
	if v := counterValue(t, e.c.metrics.resyncs.WithLabelValues(resyncSyncReq)); v != 1 {
		t.Fatalf("sync_req resyncs %v", v)
	}

	t.Run("unknown channel", func(t *testing.T) {
		cl.sendMsg(protocol.OpSyncReq, &wirepb.SyncReq{Points: []*wirepb.ChannelPoint{{Channel: "x/g", Id: 0}}})
		cl.expectError(protocol.CodeOutOfOrder)
	})
}

func TestHeartbeat(t *testing.T) {
	e := newEnv(t, func(_ *Config, fl *fakeLogic) { fl.heartbeatMs = 2500 })
	cl := e.dial()
	r := cl.auth("good-alice", "dev1", "ios", "1.0", nil)
	if r.HeartbeatMs != 2500 {
		t.Fatalf("heartbeat_ms %d, want logic's 2500", r.HeartbeatMs)
	}
	_, _, before := cl.conn.deadline()
	cl.seq = 76
	seq := cl.sendMsg(protocol.OpHeartbeat, &wirepb.Heartbeat{})
	var hr wirepb.HeartbeatReply
	f := cl.expect(protocol.OpHeartbeatReply, &hr)
	if f.Seq != seq || hr.IntervalMs != 2500 {
		t.Fatalf("reply seq %d interval %d", f.Seq, hr.IntervalMs)
	}
	d, code, after := cl.conn.deadline()
	if d != 3*2500*time.Millisecond+5*time.Second || code != protocol.CodeHeartbeatTimeout || after <= before {
		t.Fatalf("deadline %v code %d sets %d->%d", d, code, before, after)
	}
}

func TestQueueOverflowResyncsWithoutLoss(t *testing.T) {
	e := newEnv(t, func(_ *Config, fl *fakeLogic) { fl.syncGate = make(chan struct{}) })
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
	// The drain task is now blocked in the first Logic.Sync. Pile up more
	// pushes than the queue holds.
	const n = maxQueuedPushes + 100
	for _, op := range e.logic.addN(chatAlice, n) {
		if d := e.push(cl, op); d != 1 {
			t.Fatalf("push %d delivered %d", op.Id, d)
		}
	}
	e.logic.release()
	ids := cl.follow(chatAlice, 0, n)
	if !slices.Equal(ids, seq(1, n)) {
		t.Fatalf("got %d ids, first %v", len(ids), ids[:min(5, len(ids))])
	}
	if v := counterValue(t, e.c.metrics.pushResync); v < 100 {
		t.Fatalf("dropped_to_resync %v, want >= 100", v)
	}
}

func TestClientFloodCloses(t *testing.T) {
	e := newEnv(t, func(_ *Config, fl *fakeLogic) { fl.connectGate = make(chan struct{}) })
	cl := e.dial()
	cl.sendMsg(protocol.OpAuth, &wirepb.Auth{Token: "good-alice", Device: "dev1"})
	eventually(t, "Connect called", func() bool {
		e.logic.mu.Lock()
		defer e.logic.mu.Unlock()
		return len(e.logic.mu.connects) == 1
	})
	for range maxQueuedFrames + 1 {
		cl.sendMsg(protocol.OpHeartbeat, &wirepb.Heartbeat{})
	}
	// The frames before the limit are handled in order (AUTH first, once
	// logic answers), then the limit's own code closes the session.
	e.logic.release()
	cl.expect(protocol.OpAuthReply, nil)
	for range maxQueuedFrames {
		cl.expect(protocol.OpHeartbeatReply, nil)
	}
	cl.expectError(protocol.CodeTooManyInFlight)
	if !errors.Is(cl.conn.closeReason(), ErrOverload) {
		t.Fatalf("reason %v", cl.conn.closeReason())
	}
}

func TestPoolOverloadReschedules(t *testing.T) {
	e := newEnv(t, func(cfg *Config, fl *fakeLogic) { cfg.Workers = 1; fl.connectGate = make(chan struct{}) })
	a, b := e.dial(), e.dial()
	a.sendMsg(protocol.OpAuth, &wirepb.Auth{Token: "good-alice", Device: "a"})
	eventually(t, "a in Connect", func() bool {
		e.logic.mu.Lock()
		defer e.logic.mu.Unlock()
		return len(e.logic.mu.connects) == 1
	})
	// The only worker is busy: b's drain task is refused and rescheduled.
	b.sendMsg(protocol.OpAuth, &wirepb.Auth{Token: "good-bob", Device: "b"})
	e.logic.connectGate <- struct{}{}
	a.expect(protocol.OpAuthReply, nil)
	e.logic.connectGate <- struct{}{}
	b.expect(protocol.OpAuthReply, nil)
}

func TestClientHangupDisconnects(t *testing.T) {
	e := newEnv(t, nil)
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
	cl.conn.Close(nil, errHangup)
	eventually(t, "logic told", func() bool { return slices.Contains(e.logic.disconnectKeys(), cl.key) })
	if e.c.lookup(cl.key) != nil {
		t.Fatal("session still in its bucket")
	}
	if g := gaugeValue(t, e.c.metrics.sessions); g != 0 {
		t.Fatalf("sessions gauge %v", g)
	}
	if n := e.push(cl, e.logic.add(chatAlice, &oplog.Oplog{})); n != 0 {
		t.Fatalf("push to a closed session delivered %d", n)
	}
}
