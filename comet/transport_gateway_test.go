package comet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/msync/msync/gateway"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
	wirepb "github.com/msync/msync/pkg/protocol/pb"
)

// newGatewayEnv starts a comet on the real netpoll gateway on a free port.
func newGatewayEnv(t *testing.T, mod func(*Config, *fakeLogic)) *testEnv {
	t.Helper()
	e := newEnv(t, func(cfg *Config, fl *fakeLogic) {
		cfg.Gateway = gateway.Config{Addr: "127.0.0.1:0", Tick: 10 * time.Millisecond}
		if mod != nil {
			mod(cfg, fl)
		}
	})
	if err := e.c.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := e.c.Start(); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start: %v", err)
	}
	return e
}

// dialTCP is the tiny raw-protocol client over a real socket, with read
// deadlines (NATS setupConn style).
func (e *testEnv) dialTCP() *client {
	e.t.Helper()
	nc, err := net.Dial("tcp", e.c.Addr().String())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { nc.Close() })
	var buf []byte
	rd := make([]byte, 64<<10)
	cl := &client{t: e.t}
	cl.send = func(b []byte) {
		if _, err := nc.Write(b); err != nil {
			e.t.Fatalf("write: %v", err)
		}
	}
	cl.recv = func(timeout time.Duration) (protocol.Frame, error) {
		deadline := time.Now().Add(timeout)
		for {
			f, n, err := protocol.Decode(buf, 16<<20)
			if err == nil {
				body := append([]byte(nil), f.Body...)
				buf = buf[n:]
				return protocol.Frame{Op: f.Op, Seq: f.Seq, Body: body}, nil
			}
			if !errors.Is(err, protocol.ErrShortFrame) {
				return protocol.Frame{}, err
			}
			_ = nc.SetReadDeadline(deadline)
			m, err := nc.Read(rd)
			buf = append(buf, rd[:m]...)
			if err != nil && m == 0 {
				return protocol.Frame{}, err
			}
		}
	}
	return cl
}

// expectEOF waits for the server to close the socket.
func (cl *client) expectEOF() {
	cl.t.Helper()
	f, err := cl.recv(waitFor)
	if err == nil {
		cl.t.Fatalf("got %s, want the connection closed", describe(f))
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			cl.t.Fatalf("connection still open: %v", err)
		}
	}
}

// sessionKey finds the key of the only authenticated session of device.
func (e *testEnv) sessionKey(device string) string {
	e.t.Helper()
	for _, s := range e.c.snapshot() {
		if id := s.ident.Load(); id != nil && id.device == device {
			return s.key
		}
	}
	e.t.Fatalf("no session of %s", device)
	return ""
}

func TestGatewayAuthBacklogLive(t *testing.T) {
	e := newGatewayEnv(t, func(cfg *Config, _ *fakeLogic) { cfg.PageLimit = 2 })
	e.logic.addN(chatAlice, 5)
	cl := e.dialTCP()
	r := cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
	cl.key = e.sessionKey("dev1")
	if r.Session != cl.key || r.User != "alice" {
		t.Fatalf("AUTH_REPLY %v", r)
	}
	if ids := cl.follow(chatAlice, 0, 5); !slices.Equal(ids, seq(1, 5)) {
		t.Fatalf("backlog ids %v", ids)
	}
	cl.expectQuiet()
	e.push(cl, e.logic.add(chatAlice, &oplog.Oplog{Payload: []byte("live!")}))
	s := cl.expectSync()
	if got := pagesString(s); got != "chat/u/alice(5,6][6] more=false live=true" || string(s.Pages[0].Oplogs[0].Payload) != "live!" {
		t.Fatalf("live page %s", got)
	}
	cl.ack(chatAlice, 6)
	eventually(t, "acks in logic", func() bool { return e.logic.point("dev1", chatAlice) == 6 })
}

func TestGatewayErrors(t *testing.T) {
	e := newGatewayEnv(t, nil)
	t.Run("op before auth", func(t *testing.T) {
		cl := e.dialTCP()
		cl.t = t
		cl.sendMsg(protocol.OpAck, &wirepb.Ack{})
		cl.expectError(protocol.CodeNotAuthed)
		cl.expectEOF()
	})
	t.Run("unknown op", func(t *testing.T) {
		cl := e.dialTCP()
		cl.t = t
		cl.auth("good-alice", "dev1", "ios", "1.0", nil)
		cl.sendRaw(77, nil)
		cl.expectError(protocol.CodeUnknownOp)
		cl.expectEOF()
	})
	t.Run("bad token", func(t *testing.T) {
		cl := e.dialTCP()
		cl.t = t
		cl.sendMsg(protocol.OpAuth, &wirepb.Auth{Token: "nope", Device: "d"})
		cl.expectError(protocol.CodeTokenInvalid)
		cl.expectEOF()
	})
	eventually(t, "sessions finished", func() bool { return e.c.live.Load() == 0 })
}

func TestGatewayKick(t *testing.T) {
	e := newGatewayEnv(t, nil)
	cl := e.dialTCP()
	cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
	key := e.sessionKey("dev1")
	e.c.Kick(context.Background(), &pb.KickReq{Keys: []string{key}, Code: uint32(protocol.CodeForbidden), Reason: "banned"})
	var k wirepb.Kick
	cl.expect(protocol.OpKick, &k)
	if k.Code != uint32(protocol.CodeForbidden) || k.Reason != "banned" {
		t.Fatalf("kick %v", &k)
	}
	cl.expectEOF()
	eventually(t, "logic told", func() bool { return slices.Contains(e.logic.disconnectKeys(), key) })
}

func TestGatewayShutdownClosesSessions(t *testing.T) {
	e := newGatewayEnv(t, nil)
	a, b := e.dialTCP(), e.dialTCP()
	a.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
	b.auth("good-bob", "dev2", "ios", "1.0", []string{"chat"})
	ka, kb := e.sessionKey("dev1"), e.sessionKey("dev2")
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := e.c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, cl := range []*client{a, b} {
		cl.expectError(protocol.CodeServerShutdown)
		cl.expectEOF()
	}
	keys := e.logic.disconnectKeys()
	slices.Sort(keys)
	want := []string{ka, kb}
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("Logic.Disconnect for %v, want %v", keys, want)
	}
}

// Sixteen goroutines push two channels' oplogs to one session, in no
// particular order, while the client reads and acks. Pushes that arrive out
// of order are gaps and fall back to syncing, so the client must still see
// every id of each channel exactly once, in order. netpoll hides concurrent
// writer bugs under -race, so this test matters without -race too.
func TestGatewayConcurrentPush(t *testing.T) {
	e := newGatewayEnv(t, nil)
	cl := e.dialTCP()
	cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat", "lock"})
	cl.key = e.sessionKey("dev1")
	cl.expectQuiet()

	const perChannel = 2000
	const pushers = 16
	chat := e.logic.addN(chatAlice, perChannel)
	lock := e.logic.addN(lockDev1, perChannel)
	var wg sync.WaitGroup
	errs := make(chan error, pushers)
	for g := range pushers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < perChannel; i += pushers {
				req := &pb.PushReq{Items: []*pb.PushItem{
					{Keys: []string{cl.key}, Oplog: chat[i]},
					{Keys: []string{cl.key}, Oplog: lock[i]},
				}}
				if _, err := e.c.Push(context.Background(), req); err != nil {
					errs <- fmt.Errorf("pusher %d: %w", g, err)
					return
				}
			}
		}()
	}
	got := cl.followAll(map[string]uint64{chatAlice: 0, lockDev1: 0},
		map[string]uint64{chatAlice: perChannel, lockDev1: perChannel})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, ch := range []string{chatAlice, lockDev1} {
		if !slices.Equal(got[ch], seq(1, perChannel)) {
			t.Fatalf("%s: %d ids, want 1..%d in order", ch, len(got[ch]), perChannel)
		}
	}
	// The session is still healthy and live afterwards.
	e.push(cl, e.logic.add(chatAlice, &oplog.Oplog{}))
	if ids := cl.follow(chatAlice, perChannel, perChannel+1); !slices.Equal(ids, []uint64{perChannel + 1}) {
		t.Fatalf("after the storm: %v", ids)
	}
	t.Logf("delivered live %v, deferred %v, resync %v, gap resyncs %v",
		counterValue(t, e.c.metrics.pushDelivered), counterValue(t, e.c.metrics.pushDeferred),
		counterValue(t, e.c.metrics.pushResync), counterValue(t, e.c.metrics.resyncs.WithLabelValues(resyncGap)))
}

func TestGatewayAckTimeout(t *testing.T) {
	e := newGatewayEnv(t, func(cfg *Config, _ *fakeLogic) { cfg.AckTimeout = 50 * time.Millisecond })
	e.logic.addN(chatAlice, 3)
	cl := e.dialTCP()
	cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
	cl.expectSync() // and never ack it
	cl.expectError(protocol.CodeAckTimeout)
	cl.expectEOF()
	eventually(t, "session finished", func() bool { return e.c.live.Load() == 0 })
}

func TestGatewayAckClearsDeadline(t *testing.T) {
	e := newGatewayEnv(t, func(cfg *Config, _ *fakeLogic) { cfg.AckTimeout = 100 * time.Millisecond })
	e.logic.addN(chatAlice, 3)
	cl := e.dialTCP()
	cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
	cl.follow(chatAlice, 0, 3)
	// Well past the ack timeout: still open, answering heartbeats.
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		cl.expectQuiet()
	}
}
