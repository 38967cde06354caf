package client

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

func TestDeliversInOrderPerChannelAndAcks(t *testing.T) {
	srv := newFakeServer(t)
	rec := &recorder{}
	c := startClient(t, srv, rec, nil, nil)
	// A second biz registered after Start must be refused.
	if err := c.RegisterBiz("lock", rec.handler); !errors.Is(err, ErrStarted) {
		t.Fatalf("RegisterBiz after Start: %v, want ErrStarted", err)
	}
	fc := srv.accept()
	a := fc.handshake(0)
	if a.Token != "tok" || a.Device != "dev1" || a.Platform != "android" || a.AppVersion != "1.2.3" ||
		!slices.Equal(a.Bizs, []string{testBiz}) || len(a.Points) != 0 {
		t.Fatalf("AUTH = %v", a)
	}
	eventually(t, c.Connected, "Connected()")
	if e := rec.event(t, EventConnected, 1); e.User != "alice" || e.Session != "s1" {
		t.Fatalf("connected event %+v", e)
	}

	fc.sync(page(testChan, 0, 3, 1, 2, 3))
	fc.expectAck(testChan, 3)
	// Live pages back to back in one frame and in separate frames.
	fc.sync(page(testChan, 3, 4, 4), page(testChan, 4, 5, 5))
	fc.sync(page(testChan, 5, 6, 6))
	fc.expectAck(testChan, 4)
	fc.expectAck(testChan, 5)
	fc.expectAck(testChan, 6)
	waitIDs(t, rec, testChan, 1, 2, 3, 4, 5, 6)
	if got := c.SyncPoint(testChan); got != 6 {
		t.Fatalf("SyncPoint = %d, want 6", got)
	}
	rec.mu.Lock()
	op := rec.ops[0]
	rec.mu.Unlock()
	if op.Biz != testBiz || string(op.Payload) != "p1" || op.Created.UnixMilli() != 1700000000001 || !op.ValidUntil.IsZero() {
		t.Fatalf("oplog = %+v", op)
	}
}

func TestChannelsAreIndependentAndOrdered(t *testing.T) {
	srv := newFakeServer(t)
	rec := &recorder{}
	const other = "lock/d/dev1"
	release := make(chan struct{})
	blockChat := func(ctx context.Context, op Oplog) error {
		if op.Channel == testChan && op.ID == 1 {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return rec.handler(ctx, op)
	}
	opts := Options{TokenProvider: staticToken("tok"), Device: "dev1", Logger: testLogger(t), BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond}
	c, err := New(srv.addr(), opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{testBiz, "lock"} {
		if err := c.RegisterBiz(b, blockChat); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fc := srv.accept()
	a := fc.auth()
	if !slices.Equal(a.Bizs, []string{testBiz, "lock"}) || a.Platform != DefaultPlatform {
		t.Fatalf("AUTH bizs %v platform %q", a.Bizs, a.Platform)
	}
	fc.send(protocol.OpAuthReply, fc.seq, &pb.AuthReply{User: "alice", HeartbeatMs: 60000, Channels: []*pb.ChannelInfo{
		{Biz: testBiz, Channel: testChan}, {Biz: "lock", Channel: other},
	}})
	// One frame, two channels. chat is blocked on id 1; lock must not wait.
	lp := page(other, 0, 2, 1, 2)
	lp.Biz = "lock"
	fc.sync(page(testChan, 0, 2, 1, 2), lp)
	fc.expectAck(other, 2)
	waitIDs(t, rec, other, 1, 2)
	if ids := rec.ids(testChan); len(ids) != 0 {
		t.Fatalf("chat delivered %v while its handler is blocked", ids)
	}
	fc.sync(page(testChan, 2, 3, 3))
	close(release)
	fc.expectAck(testChan, 2)
	fc.expectAck(testChan, 3)
	waitIDs(t, rec, testChan, 1, 2, 3)
}

func TestDuplicatesDropped(t *testing.T) {
	srv := newFakeServer(t)
	rec := &recorder{}
	startClient(t, srv, rec, nil, nil)
	fc := srv.accept()
	fc.handshake(0)
	fc.sync(page(testChan, 0, 3, 1, 2, 3))
	fc.expectAck(testChan, 3)
	// Overlapping page: 2 and 3 are duplicates, 4 is new.
	fc.sync(page(testChan, 1, 4, 2, 3, 4))
	fc.expectAck(testChan, 4)
	// An old page entirely at or below the point: acked with its own upto
	// (never beyond what the server sent), nothing reaches the app.
	fc.sync(page(testChan, 0, 2, 1, 2))
	fc.expectAck(testChan, 2)
	fc.sync(page(testChan, 4, 5, 5))
	fc.expectAck(testChan, 5)
	waitIDs(t, rec, testChan, 1, 2, 3, 4, 5)
}

func TestGapSendsSyncReqFromPoint(t *testing.T) {
	srv := newFakeServer(t)
	rec := &recorder{}
	c := startClient(t, srv, rec, nil, nil)
	fc := srv.accept()
	fc.handshake(0)
	fc.sync(page(testChan, 0, 2, 1, 2))
	fc.expectAck(testChan, 2)
	// A missed push: the page starts after 4 but the client is at 2.
	fc.sync(page(testChan, 4, 5, 5))
	fc.expectSyncReq(testChan, 2)
	// More live pages already in flight are gaps too: no second request
	// within the quiet period, no ACK, nothing to the app.
	fc.sync(page(testChan, 5, 6, 6))
	fc.expectSilence(150 * time.Millisecond)
	if got := c.SyncPoint(testChan); got != 2 {
		t.Fatalf("SyncPoint = %d after a gap, want 2", got)
	}
	fc.sync(page(testChan, 2, 6, 3, 4, 5, 6))
	fc.expectAck(testChan, 6)
	waitIDs(t, rec, testChan, 1, 2, 3, 4, 5, 6)
}

func TestAckOnlyAfterHandlerSuccess(t *testing.T) {
	srv := newFakeServer(t)
	rec := &recorder{}
	entered := make(chan struct{})
	release := make(chan struct{})
	h := func(ctx context.Context, op Oplog) error {
		if op.ID == 1 {
			close(entered)
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return rec.handler(ctx, op)
	}
	c := startClient(t, srv, rec, h, nil)
	fc := srv.accept()
	fc.handshake(0)
	fc.sync(page(testChan, 0, 1, 1))
	select {
	case <-entered:
	case <-time.After(waitFor):
		t.Fatal("handler not called")
	}
	fc.expectSilence(200 * time.Millisecond)
	if got := c.SyncPoint(testChan); got != 0 {
		t.Fatalf("SyncPoint = %d while the handler runs, want 0", got)
	}
	close(release)
	fc.expectAck(testChan, 1)
	if got := c.SyncPoint(testChan); got != 1 {
		t.Fatalf("SyncPoint = %d after ACK, want 1", got)
	}
}

func TestHandlerErrorRetriedThenAcked(t *testing.T) {
	srv := newFakeServer(t)
	rec := &recorder{}
	var mu sync.Mutex
	var calls []uint64
	h := func(ctx context.Context, op Oplog) error {
		mu.Lock()
		calls = append(calls, op.ID)
		n := len(calls)
		mu.Unlock()
		if n <= 2 {
			return errors.New("db busy")
		}
		if n == 3 {
			panic("handler bug") // recovered and retried like an error
		}
		return rec.handler(ctx, op)
	}
	startClient(t, srv, rec, h, nil)
	fc := srv.accept()
	fc.handshake(0)
	fc.sync(page(testChan, 0, 2, 1, 2))
	// No SYNC_REQ and no partial ACK: the retries in place succeed.
	fc.expectAck(testChan, 2)
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(calls, []uint64{1, 1, 1, 1, 2}) {
		t.Fatalf("handler calls %v, want 1 four times then 2", calls)
	}
}

func TestHandlerRetriesExhaustedResyncs(t *testing.T) {
	srv := newFakeServer(t)
	rec := &recorder{}
	var fails atomic.Int32
	h := func(ctx context.Context, op Oplog) error {
		if op.ID == 2 && fails.Add(1) <= 3 {
			return errors.New("not yet")
		}
		return rec.handler(ctx, op)
	}
	c := startClient(t, srv, rec, h, func(o *Options) { o.HandlerRetries = 1 })
	fc := srv.accept()
	fc.handshake(0)
	fc.sync(page(testChan, 0, 3, 1, 2, 3))
	// 1 succeeded: acked. 2 failed twice (1 try + 1 retry): resync from 1.
	fc.expectAck(testChan, 1)
	fc.expectSyncReq(testChan, 1)
	if got := c.SyncPoint(testChan); got != 1 {
		t.Fatalf("SyncPoint = %d, want 1", got)
	}
	fc.sync(page(testChan, 1, 3, 2, 3))
	fc.expectAck(testChan, 3)
	waitIDs(t, rec, testChan, 1, 2, 3)
	if n := fails.Load(); n != 4 {
		t.Fatalf("oplog 2 tried %d times, want 4", n)
	}
}

func TestFilteredIDsAdvancePoint(t *testing.T) {
	srv := newFakeServer(t)
	rec := &recorder{}
	c := startClient(t, srv, rec, nil, nil)
	fc := srv.accept()
	fc.handshake(0)
	// 1, 3, 5 were filtered out for this device.
	fc.sync(page(testChan, 0, 5, 2, 4))
	fc.expectAck(testChan, 5)
	// A page with nothing for this device still moves the point.
	fc.sync(page(testChan, 5, 8))
	fc.expectAck(testChan, 8)
	// The next live page after 8 is not a gap.
	fc.sync(page(testChan, 8, 9, 9))
	fc.expectAck(testChan, 9)
	waitIDs(t, rec, testChan, 2, 4, 9)
	if got := c.SyncPoint(testChan); got != 9 {
		t.Fatalf("SyncPoint = %d, want 9", got)
	}
}

func TestSkippedEvent(t *testing.T) {
	srv := newFakeServer(t)
	rec := &recorder{}
	startClient(t, srv, rec, nil, nil)
	fc := srv.accept()
	fc.handshake(0)
	p := page(testChan, 0, 10, 8, 9, 10)
	p.Skipped = 7
	fc.sync(p)
	fc.expectAck(testChan, 10)
	e := rec.event(t, EventSkipped, 1)
	if e.Channel != testChan || e.Biz != testBiz || e.Count != 7 {
		t.Fatalf("skipped event %+v", e)
	}
	waitIDs(t, rec, testChan, 8, 9, 10)
}

func TestAuthReplyFromAdoptedWithoutLocalPoint(t *testing.T) {
	srv := newFakeServer(t)
	rec := &recorder{}
	c := startClient(t, srv, rec, nil, nil)
	fc := srv.accept()
	fc.handshake(40) // the server's stored point
	fc.sync(page(testChan, 40, 41, 41))
	fc.expectAck(testChan, 41) // not a gap
	waitIDs(t, rec, testChan, 41)
	_ = c
}

func TestReconnectAfterRetryableErrorResendsPoints(t *testing.T) {
	srv := newFakeServer(t)
	rec := &recorder{}
	var tokens atomic.Int32
	startClient(t, srv, rec, nil, func(o *Options) {
		o.TokenProvider = func(context.Context) (string, error) { tokens.Add(1); return "tok", nil }
	})
	fc := srv.accept()
	fc.handshake(0)
	fc.sync(page(testChan, 0, 2, 1, 2))
	fc.expectAck(testChan, 2)
	fc.send(protocol.OpError, 0, &pb.Error{Code: uint32(protocol.CodeUnavailable), Message: "logic down"})
	_ = fc.c.Close()

	e := rec.event(t, EventDisconnected, 1)
	var we *protocol.WireError
	if !errors.As(e.Err, &we) || we.Code != protocol.CodeUnavailable || !errors.Is(e.Err, ErrServer) {
		t.Fatalf("disconnect err %v, want ERROR 1004", e.Err)
	}
	if e.RetryIn < 0 || e.RetryIn > 50*time.Millisecond {
		t.Fatalf("RetryIn %s outside [0, BackoffMax]", e.RetryIn)
	}
	fc2 := srv.accept()
	a := fc2.handshake(2)
	if len(a.Points) != 1 || a.Points[0].Channel != testChan || a.Points[0].Id != 2 {
		t.Fatalf("reconnect AUTH points %v, want %s=2", a.Points, testChan)
	}
	if n := tokens.Load(); n != 1 {
		t.Fatalf("token provider called %d times, want 1 (1xxx keeps the token)", n)
	}
	fc2.sync(page(testChan, 2, 3, 3))
	fc2.expectAck(testChan, 3)
	waitIDs(t, rec, testChan, 1, 2, 3)
}

func TestBackoffGrowsWhileConnectsFail(t *testing.T) {
	srv := newFakeServer(t)
	rec := &recorder{}
	startClient(t, srv, rec, nil, func(o *Options) {
		o.BackoffMin, o.BackoffMax = 20*time.Millisecond, 80*time.Millisecond
	})
	// Refuse five sessions right after AUTH; every RetryIn stays within
	// the cap for its attempt: 20, 40, 80, 80, 80 ms.
	caps := []time.Duration{20, 40, 80, 80, 80}
	for i, cp := range caps {
		fc := srv.accept()
		fc.auth()
		fc.send(protocol.OpError, fc.seq, &pb.Error{Code: uint32(protocol.CodeUnavailable)})
		_ = fc.c.Close()
		e := rec.event(t, EventDisconnected, i+1)
		if e.RetryIn > cp*time.Millisecond {
			t.Fatalf("attempt %d: RetryIn %s over cap %dms", i+1, e.RetryIn, cp)
		}
	}
	srv.accept().handshake(0)
}

func TestStopOn4xxxUntilUpdateUser(t *testing.T) {
	srv := newFakeServer(t)
	rec := &recorder{}
	c := startClient(t, srv, rec, nil, nil)
	fc := srv.accept()
	fc.auth()
	fc.send(protocol.OpError, fc.seq, &pb.Error{Code: uint32(protocol.CodeBadAuth), Message: "bad app_version"})
	_ = fc.c.Close()
	e := rec.event(t, EventStopped, 1)
	if e.Code != protocol.CodeBadAuth {
		t.Fatalf("stopped event %+v", e)
	}
	if d := rec.event(t, EventDisconnected, 1); d.RetryIn != 0 {
		t.Fatalf("disconnect RetryIn %s, want 0 (no retry)", d.RetryIn)
	}
	srv.expectNoConn(300 * time.Millisecond) // 30x BackoffMax
	// Foreground does not override a stop; UpdateUser does.
	c.Foreground()
	srv.expectNoConn(100 * time.Millisecond)
	if err := c.UpdateUser(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.accept().handshake(0)
	eventually(t, c.Connected, "Connected() after UpdateUser")
}

func TestKickForGoodStops(t *testing.T) {
	srv := newFakeServer(t)
	rec := &recorder{}
	startClient(t, srv, rec, nil, nil)
	fc := srv.accept()
	fc.handshake(0)
	fc.send(protocol.OpKick, 0, &pb.Kick{Code: uint32(protocol.CodeForbidden), Reason: "banned"})
	_ = fc.c.Close()
	if e := rec.event(t, EventKicked, 1); e.Code != protocol.CodeForbidden || e.Reason != "banned" {
		t.Fatalf("kicked event %+v", e)
	}
	rec.event(t, EventStopped, 1)
	srv.expectNoConn(300 * time.Millisecond)
}

func TestNewTokenOn2xxx(t *testing.T) {
	srv := newFakeServer(t)
	rec := &recorder{}
	var n atomic.Int32
	startClient(t, srv, rec, nil, func(o *Options) {
		o.TokenProvider = func(context.Context) (string, error) {
			switch n.Add(1) {
			case 1:
				return "old", nil
			case 2:
				return "", errors.New("auth server down") // retried with backoff
			}
			return "new", nil
		}
	})
	fc := srv.accept()
	if a := fc.auth(); a.Token != "old" {
		t.Fatalf("token %q, want old", a.Token)
	}
	fc.send(protocol.OpError, fc.seq, &pb.Error{Code: uint32(protocol.CodeTokenExpired), Message: "expired"})
	_ = fc.c.Close()
	fc2 := srv.accept()
	if a := fc2.handshake(0); a.Token != "new" {
		t.Fatalf("token %q after 2001, want new", a.Token)
	}
	if d := rec.event(t, EventDisconnected, 2); !errors.Is(d.Err, ErrToken) {
		t.Fatalf("second disconnect %v, want ErrToken", d.Err)
	}
}

func TestKickEventAndReconnect(t *testing.T) {
	srv := newFakeServer(t)
	rec := &recorder{}
	c := startClient(t, srv, rec, nil, nil)
	fc := srv.accept()
	fc.handshake(0)
	eventually(t, c.Connected, "Connected()")
	fc.send(protocol.OpKick, 0, &pb.Kick{Code: uint32(protocol.CodeKicked), Reason: "by business"})
	_ = fc.c.Close()
	if e := rec.event(t, EventKicked, 1); e.Code != protocol.CodeKicked || e.Reason != "by business" {
		t.Fatalf("kicked event %+v", e)
	}
	d := rec.event(t, EventDisconnected, 1)
	if !errors.Is(d.Err, ErrKicked) {
		t.Fatalf("disconnect err %v, want ErrKicked", d.Err)
	}
	srv.accept().handshake(0) // 1007 allows reconnecting
	eventually(t, c.Connected, "Connected() after kick")
}

func TestHeartbeatAtServerInterval(t *testing.T) {
	srv := newFakeServer(t)
	rec := &recorder{}
	startClient(t, srv, rec, nil, nil)
	fc := srv.accept()
	fc.auth()
	fc.send(protocol.OpAuthReply, fc.seq, &pb.AuthReply{User: "alice", HeartbeatMs: 100,
		Channels: []*pb.ChannelInfo{{Biz: testBiz, Channel: testChan}}})

	// gaps returns the time between n consecutive heartbeats, answering
	// each with interval ms.
	gaps := func(n int, interval uint32) []time.Duration {
		var out []time.Duration
		last := time.Now()
		for len(out) < n {
			f, err := fc.read(waitFor)
			if err != nil {
				t.Fatal(err)
			}
			if f.Op != protocol.OpHeartbeat {
				t.Fatalf("got %s, want HEARTBEAT", f.Op)
			}
			now := time.Now()
			out = append(out, now.Sub(last))
			last = now
			fc.send(protocol.OpHeartbeatReply, f.Seq, &pb.HeartbeatReply{IntervalMs: interval})
		}
		return out
	}
	for _, g := range gaps(4, 100)[1:] { // the first gap started before AUTH_REPLY
		if g < 80*time.Millisecond || g > 400*time.Millisecond {
			t.Fatalf("heartbeat gap %s, want about 100ms", g)
		}
	}
	// The server asks for 300ms; the reply restarts the wait.
	fc.send(protocol.OpHeartbeatReply, 0, &pb.HeartbeatReply{IntervalMs: 300})
	for _, g := range gaps(3, 300)[1:] {
		if g < 250*time.Millisecond || g > 800*time.Millisecond {
			t.Fatalf("heartbeat gap %s, want about 300ms", g)
		}
	}
}

func TestReadDeadlineDetectsDeadServer(t *testing.T) {
	if readGrace > 10*time.Second {
		t.Fatalf("readGrace %s makes this test too slow", readGrace)
	}
	// A server that accepts, answers AUTH and then says nothing, not even
	// heartbeat replies: the client must give up after 2 intervals + grace.
	srv := newFakeServer(t)
	rec := &recorder{}
	startClient(t, srv, rec, nil, nil)
	fc := srv.accept()
	fc.auth()
	fc.send(protocol.OpAuthReply, fc.seq, &pb.AuthReply{HeartbeatMs: 100,
		Channels: []*pb.ChannelInfo{{Biz: testBiz, Channel: testChan}}})
	start := time.Now()
	select {
	case fc2 := <-srv.conns:
		fc2.auth()
	case <-time.After(readGrace + 3*time.Second):
		t.Fatal("client did not notice the silent server")
	}
	if d := time.Since(start); d < readGrace {
		t.Fatalf("gave up after %s, before the deadline", d)
	}
}

func TestOversizedFrameReconnects(t *testing.T) {
	srv := newFakeServer(t)
	rec := &recorder{}
	startClient(t, srv, rec, nil, func(o *Options) { o.MaxFrame = 1024 })
	fc := srv.accept()
	fc.handshake(0)
	big := page(testChan, 0, 1, 1)
	big.Oplogs[0].Payload = make([]byte, 2048)
	fc.sync(big)
	d := rec.event(t, EventDisconnected, 1)
	if !errors.Is(d.Err, protocol.ErrFrameTooLarge) {
		t.Fatalf("disconnect err %v, want ErrFrameTooLarge", d.Err)
	}
	srv.accept().handshake(0)
	if ids := rec.ids(testChan); len(ids) != 0 {
		t.Fatalf("delivered %v from an oversized frame", ids)
	}
}

func TestAuthRejectedEvent(t *testing.T) {
	srv := newFakeServer(t)
	rec := &recorder{}
	startClient(t, srv, rec, nil, nil)
	fc := srv.accept()
	fc.auth()
	fc.send(protocol.OpAuthReply, fc.seq, &pb.AuthReply{HeartbeatMs: 60000,
		Rejected: []*pb.RejectedBiz{{Biz: testBiz, Reason: "unknown biz"}}})
	e := rec.event(t, EventAuthRejected, 1)
	if !slices.Equal(e.Rejected, []RejectedBiz{{Biz: testBiz, Reason: "unknown biz"}}) {
		t.Fatalf("rejected %+v", e.Rejected)
	}
	// A page for a channel the session does not have is ignored.
	fc.sync(page(testChan, 0, 1, 1))
	fc.expectSilence(100 * time.Millisecond)
}

func TestBackgroundForeground(t *testing.T) {
	srv := newFakeServer(t)
	rec := &recorder{}
	c := startClient(t, srv, rec, nil, nil)
	fc := srv.accept()
	fc.handshake(0)
	fc.sync(page(testChan, 0, 4, 4))
	fc.expectAck(testChan, 4)
	eventually(t, c.Connected, "Connected()")

	c.Background()
	fc.expectClosed()
	eventually(t, func() bool { return !c.Connected() }, "not Connected() in background")
	if e := rec.event(t, EventDisconnected, 1); !errors.Is(e.Err, ErrBackground) || e.RetryIn != 0 {
		t.Fatalf("disconnect %+v, want ErrBackground without retry", e)
	}
	srv.expectNoConn(200 * time.Millisecond)

	c.Foreground()
	a := srv.accept().handshake(4)
	if len(a.Points) != 1 || a.Points[0].Id != 4 {
		t.Fatalf("AUTH points after foreground %v, want %s=4", a.Points, testChan)
	}
	eventually(t, c.Connected, "Connected() after Foreground")
}

func TestClearUserAndUpdateUser(t *testing.T) {
	srv := newFakeServer(t)
	rec := &recorder{}
	var n atomic.Int32
	c := startClient(t, srv, rec, nil, func(o *Options) {
		o.TokenProvider = func(context.Context) (string, error) {
			if n.Add(1) == 1 {
				return "alice-token", nil
			}
			return "bob-token", nil
		}
	})
	fc := srv.accept()
	if a := fc.handshake(0); a.Token != "alice-token" {
		t.Fatalf("token %q", a.Token)
	}
	c.ClearUser()
	fc.expectClosed()
	if e := rec.event(t, EventDisconnected, 1); !errors.Is(e.Err, ErrUserCleared) {
		t.Fatalf("disconnect %v, want ErrUserCleared", e.Err)
	}
	srv.expectNoConn(200 * time.Millisecond)
	if err := c.UpdateUser(context.Background()); err != nil {
		t.Fatal(err)
	}
	fc2 := srv.accept()
	if a := fc2.handshake(0); a.Token != "bob-token" {
		t.Fatalf("token %q after UpdateUser, want bob-token", a.Token)
	}
	// UpdateUser while connected reconnects with a fresh token too.
	eventually(t, c.Connected, "Connected()")
	if err := c.UpdateUser(context.Background()); err != nil {
		t.Fatal(err)
	}
	fc2.expectClosed()
	srv.accept().handshake(0)
	if got := n.Load(); got != 3 {
		t.Fatalf("token provider calls %d, want 3", got)
	}
}

func TestPointsSurviveRestartWithFileStore(t *testing.T) {
	srv := newFakeServer(t)
	path := t.TempDir() + "/points.json"
	run := func(wantPoint uint64, send uint64) {
		st, err := NewFileStore(path)
		if err != nil {
			t.Fatal(err)
		}
		rec := &recorder{}
		c, err := New(srv.addr(), Options{TokenProvider: staticToken("t"), Device: "dev1", Store: st, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.RegisterBiz(testBiz, rec.handler); err != nil {
			t.Fatal(err)
		}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		fc := srv.accept()
		a := fc.handshake(wantPoint)
		var got uint64
		for _, p := range a.Points {
			if p.Channel == testChan {
				got = p.Id
			}
		}
		if got != wantPoint {
			t.Fatalf("AUTH point %d, want %d", got, wantPoint)
		}
		fc.sync(page(testChan, wantPoint, send, send))
		fc.expectAck(testChan, send)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	run(0, 3)
	run(3, 5)
}

func TestShutdownIdempotentNoLeaks(t *testing.T) {
	srv := newFakeServer(t) // its accept loop stops at cleanup, after the check
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	rec := &recorder{}
	stuck := make(chan struct{})
	h := func(ctx context.Context, op Oplog) error {
		close(stuck)
		<-ctx.Done() // a handler that honours ctx
		return ctx.Err()
	}
	c, err := New(srv.addr(), Options{TokenProvider: staticToken("t"), Device: "dev1", OnEvent: rec.onEvent})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RegisterBiz(testBiz, h); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start: %v", err)
	}
	fc := srv.accept()
	fc.handshake(0)
	fc.sync(page(testChan, 0, 1, 1))
	<-stuck
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if err := c.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		})
	}
	wg.Wait()
	if err := c.Close(); err != nil {
		t.Fatalf("Close after Shutdown: %v", err)
	}
	if c.Connected() {
		t.Fatal("Connected() after Shutdown")
	}
	if err := c.Start(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close: %v, want ErrClosed", err)
	}
	if err := c.UpdateUser(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("UpdateUser after Close: %v, want ErrClosed", err)
	}
	if c.SyncPoint(testChan) != 0 {
		t.Fatal("point advanced for a cancelled handler")
	}
	fc.expectClosed()
}

func TestShutdownHonoursContext(t *testing.T) {
	srv := newFakeServer(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	h := func(ctx context.Context, op Oplog) error {
		close(entered)
		<-release // ignores ctx: Shutdown must not wait past its deadline
		return nil
	}
	c, err := New(srv.addr(), Options{TokenProvider: staticToken("t"), Device: "dev1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RegisterBiz(testBiz, h); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	fc := srv.accept()
	fc.handshake(0)
	fc.sync(page(testChan, 0, 1, 1))
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a stuck handler: %v, want DeadlineExceeded", err)
	}
	close(release)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestShutdownBeforeStart(t *testing.T) {
	c, err := New("127.0.0.1:1", Options{TokenProvider: staticToken("t"), Device: "d"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.RegisterBiz(testBiz, (&recorder{}).handler); !errors.Is(err, ErrClosed) {
		t.Fatalf("RegisterBiz after Close: %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	tok := staticToken("t")
	tests := []struct {
		name string
		addr string
		opts Options
		want error
	}{
		{"ok", "127.0.0.1:3101", Options{TokenProvider: tok, Device: "d"}, nil},
		{"tcp scheme", "tcp://127.0.0.1:3101", Options{TokenProvider: tok, Device: "d"}, nil},
		{"no token provider", "127.0.0.1:3101", Options{Device: "d"}, ErrBadOptions},
		{"no device", "127.0.0.1:3101", Options{TokenProvider: tok}, ErrBadOptions},
		{"bad version", "127.0.0.1:3101", Options{TokenProvider: tok, Device: "d", AppVersion: "v1"}, ErrBadOptions},
		{"bad platform", "127.0.0.1:3101", Options{TokenProvider: tok, Device: "d", Platform: "i os"}, ErrBadOptions},
		{"backoff inverted", "127.0.0.1:3101", Options{TokenProvider: tok, Device: "d", BackoffMin: time.Second, BackoffMax: time.Millisecond}, ErrBadOptions},
		{"no port", "127.0.0.1", Options{TokenProvider: tok, Device: "d"}, ErrBadOptions},
		{"websocket", "ws://127.0.0.1:3102/sub", Options{TokenProvider: tok, Device: "d"}, nil},
		{"websocket default path", "ws://127.0.0.1:3102", Options{TokenProvider: tok, Device: "d"}, nil},
		{"wss", "wss://localhost:3102/sub", Options{TokenProvider: tok, Device: "d"}, nil},
		{"tls", "tls://localhost:3443", Options{TokenProvider: tok, Device: "d"}, nil},
		{"tls with path", "tls://localhost:3443/sub", Options{TokenProvider: tok, Device: "d"}, ErrBadOptions},
		{"unknown scheme", "quic://127.0.0.1:3101", Options{TokenProvider: tok, Device: "d"}, ErrUnsupportedTransport},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.addr, tt.opts)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if c.opts.Platform != DefaultPlatform || c.opts.BackoffMin != DefaultBackoffMin || c.opts.MaxFrame != DefaultMaxFrame {
					t.Fatalf("defaults not applied: %+v", c.opts)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("New: %v, want %v", err, tt.want)
			}
		})
	}
	c, _ := New("127.0.0.1:1", Options{TokenProvider: tok, Device: "d"})
	if err := c.RegisterBiz("bad/biz", (&recorder{}).handler); err == nil {
		t.Fatal("RegisterBiz accepted a bad name")
	}
	if err := c.RegisterBiz(testBiz, (&recorder{}).handler); err != nil {
		t.Fatal(err)
	}
	if err := c.RegisterBiz(testBiz, (&recorder{}).handler); !errors.Is(err, ErrDuplicateBiz) {
		t.Fatalf("duplicate RegisterBiz: %v", err)
	}
	c2, _ := New("127.0.0.1:1", Options{TokenProvider: tok, Device: "d"})
	if err := c2.Start(); !errors.Is(err, ErrNoBiz) {
		t.Fatalf("Start without biz: %v", err)
	}
}
