package comet

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/msync/msync/gateway"
	"github.com/msync/msync/pkg/api"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
	wirepb "github.com/msync/msync/pkg/protocol/pb"
)

func TestConfigDefaults(t *testing.T) {
	cfg, err := Config{Logic: api.LocalLogic(newFakeLogic())}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ID != "comet-1" || cfg.Gateway.Addr != ":3101" || cfg.Buckets != 64 || cfg.HeartbeatInterval != 30*time.Second ||
		cfg.PageLimit != 200 || cfg.AckTimeout != 30*time.Second || cfg.RenewInterval != time.Minute ||
		cfg.CallTimeout != 5*time.Second || cfg.Workers != 4096 || cfg.Logger == nil || cfg.Registerer == nil {
		t.Fatalf("defaults %+v", cfg)
	}
	if _, err := New(Config{}); !errors.Is(err, ErrNoLogic) {
		t.Fatalf("no logic: %v", err)
	}
	if _, err := New(Config{Logic: api.LocalLogic(newFakeLogic()), Buckets: -1}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("bad buckets: %v", err)
	}
}

// New reports every problem of a Config at once, each an ErrInvalidConfig.
func TestConfigReportsEveryProblem(t *testing.T) {
	_, err := New(Config{Buckets: -1, Workers: -1, MaxRooms: -2, MaxRequests: -1, AckTimeout: -time.Second,
		Gateway: gateway.Config{Addr: "no-port"}})
	if !errors.Is(err, ErrInvalidConfig) || !errors.Is(err, ErrNoLogic) || !errors.Is(err, gateway.ErrInvalidConfig) {
		t.Fatalf("err %v: want ErrInvalidConfig, ErrNoLogic and gateway.ErrInvalidConfig", err)
	}
	for _, want := range []string{"Logic is required", "Buckets -1", "Workers -1", "MaxRooms -2", "MaxRequests -1", "durations must not be negative", `Gateway: gateway: invalid config: Addr "no-port"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err %q does not report %q", err, want)
		}
	}
}

// New starts nothing: no goroutine, no listener, no call to logic (in
// cluster mode the first Renew); Start does, and Shutdown without Start is
// fine, twice.
func TestNewStartsNothing(t *testing.T) {
	before := goleak.IgnoreCurrent()
	fl := newFakeLogic()
	c, err := New(Config{Logic: api.LocalLogic(fl), Logger: testLogger(t), GRPCAddr: "127.0.0.1:1",
		Gateway: gateway.Config{Addr: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := goleak.Find(before); err != nil {
		t.Fatalf("New started goroutines: %v", err)
	}
	if c.Addr() != nil {
		t.Fatalf("New bound %v", c.Addr())
	}
	fl.mu.Lock()
	renews := len(fl.mu.renews)
	fl.mu.Unlock()
	if renews != 0 {
		t.Fatalf("New called Logic.Renew %d times", renews)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	for i := range 2 {
		if err := c.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown %d without Start: %v", i+1, err)
		}
	}
	if err := goleak.Find(before); err != nil {
		t.Fatalf("after Shutdown: %v", err)
	}
}

// Start starts what New did not: the renewer registers the comet at once.
func TestStartRegistersWithLogic(t *testing.T) {
	fl := newFakeLogic()
	c, err := New(Config{Logic: api.LocalLogic(fl), Logger: testLogger(t), GRPCAddr: "127.0.0.1:1",
		Gateway: gateway.Config{Addr: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	defer func() {
		if err := c.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}()
	if c.Addr() == nil {
		t.Fatal("no listener after Start")
	}
	eventually(t, "the first Renew", func() bool {
		fl.mu.Lock()
		defer fl.mu.Unlock()
		return len(fl.mu.renews) > 0
	})
}

func TestSameRegistererTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(cfg *Config, _ *fakeLogic) { cfg.Registerer = reg })
	_, err := New(Config{ID: e.c.ID(), Logic: api.LocalLogic(e.logic), Registerer: reg})
	if err == nil {
		t.Fatal("second comet with the same id registered its metrics")
	}
	other := newEnv(t, func(cfg *Config, _ *fakeLogic) { cfg.Registerer = reg; cfg.ID = "comet-other" })
	if other.c.ID() != "comet-other" {
		t.Fatal(other.c.ID())
	}
}

func TestKick(t *testing.T) {
	e := newEnv(t, nil)
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
	other := e.dial()
	other.auth("good-bob", "dev2", "ios", "1.0", []string{"chat"})
	if _, err := e.c.Kick(context.Background(), &pb.KickReq{Keys: []string{cl.key, "nope"}, Code: uint32(protocol.CodeReplaced), Reason: "replaced"}); err != nil {
		t.Fatal(err)
	}
	var k wirepb.Kick
	cl.expect(protocol.OpKick, &k)
	if k.Code != uint32(protocol.CodeReplaced) || k.Reason != "replaced" || !cl.conn.isClosed() {
		t.Fatalf("kick %v closed=%v", &k, cl.conn.isClosed())
	}
	if !errors.Is(cl.conn.closeReason(), ErrKicked) {
		t.Fatalf("reason %v", cl.conn.closeReason())
	}
	eventually(t, "logic told", func() bool { return slices.Contains(e.logic.disconnectKeys(), cl.key) })
	if v := counterValue(t, e.c.metrics.kicks); v != 1 {
		t.Fatalf("kicks %v", v)
	}
	// Code zero means 1007.
	e.c.Kick(context.Background(), &pb.KickReq{Keys: []string{other.key}})
	other.expect(protocol.OpKick, &k)
	if k.Code != uint32(protocol.CodeKicked) {
		t.Fatalf("default kick code %d", k.Code)
	}
}

func TestPushUnknownKeysAndChannels(t *testing.T) {
	e := newEnv(t, nil)
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
	cl.expectQuiet()
	op := e.logic.add("chat/u/bob", &oplog.Oplog{})
	reply, err := e.c.Push(context.Background(), &pb.PushReq{Items: []*pb.PushItem{
		{Keys: []string{"123456", "", "x"}, Oplog: op},
		{Keys: []string{cl.key}, Oplog: op}, // not a channel of this session
		{Keys: []string{cl.key}},            // no oplog
	}})
	if err != nil || reply.Delivered != 0 {
		t.Fatalf("reply %v err %v", reply, err)
	}
	cl.expectQuiet()
}

// Push must copy what it keeps: in-process callers may reuse the request.
func TestPushDoesNotKeepRequest(t *testing.T) {
	e := newEnv(t, func(_ *Config, fl *fakeLogic) { fl.syncGate = make(chan struct{}) })
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat", "lock"})
	e.logic.syncGate <- struct{}{} // initial sync: both channels empty, live
	cl.expectQuiet()
	// Park the drain task in a Logic.Sync for lock, then push to chat.
	cl.sendMsg(protocol.OpSyncReq, &wirepb.SyncReq{Points: []*wirepb.ChannelPoint{{Channel: lockDev1, Id: 0}}})
	eventually(t, "drain parked in Sync", func() bool { return e.logic.waiting.Load() == 1 })
	op := e.logic.add(chatAlice, &oplog.Oplog{Payload: []byte("hello")})
	req := &pb.PushReq{Items: []*pb.PushItem{{Keys: []string{cl.key}, Oplog: op}}}
	e.c.Push(context.Background(), req)
	op.Id, op.Payload[0] = 99, 'j' // the caller reuses its message
	e.logic.syncGate <- struct{}{}
	s := cl.expectSync()
	if got := pagesString(s); got != "chat/u/alice(0,1][1] more=false live=true" || string(s.Pages[0].Oplogs[0].Payload) != "hello" {
		t.Fatalf("page %s payload %q", got, s.Pages[0].Oplogs[0].Payload)
	}
}

func TestAcksBatchedAcrossSessions(t *testing.T) {
	e := newEnv(t, nil)
	var cls []*client
	for i, u := range []string{"alice", "bob", "carol"} {
		e.logic.addN("chat/u/"+u, 2)
		cl := e.dial()
		cl.auth("good-"+u, "dev"+itoa(protocol.Code(i)), "ios", "1.0", []string{"chat"})
		cl.expectSync()
		cls = append(cls, cl)
	}
	for i, cl := range cls {
		cl.ack("chat/u/"+[]string{"alice", "bob", "carol"}[i], 1)
		cl.ack("chat/u/"+[]string{"alice", "bob", "carol"}[i], 2)
	}
	eventually(t, "acks in logic", func() bool {
		return e.logic.point("dev0", "chat/u/alice") == 2 && e.logic.point("dev1", "chat/u/bob") == 2 &&
			e.logic.point("dev2", "chat/u/carol") == 2
	})
	e.logic.mu.Lock()
	calls := e.logic.mu.ackCalls
	e.logic.mu.Unlock()
	if calls >= 6 {
		t.Fatalf("%d Logic.Ack calls for 6 acks: not batched", calls)
	}
}

func TestRenew(t *testing.T) {
	e := newEnv(t, func(cfg *Config, _ *fakeLogic) { cfg.RenewInterval = 10 * time.Millisecond })
	a, b := e.dial(), e.dial()
	a.auth("good-alice", "dev1", "ios", "1.0", nil)
	b.auth("good-bob", "dev2", "ios", "1.0", nil)
	e.dial() // not authenticated: not renewed
	eventually(t, "renew of both sessions", func() bool {
		e.logic.mu.Lock()
		defer e.logic.mu.Unlock()
		for _, r := range e.logic.mu.renews {
			if r.Comet == "comet-test" && len(r.Sessions) == 2 {
				return true
			}
		}
		return false
	})
}

func TestShutdownIdempotent(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	fl := newFakeLogic()
	c, err := New(Config{Logic: api.LocalLogic(fl), Logger: testLogger(t), Workers: 8})
	if err != nil {
		t.Fatal(err)
	}
	runBackground(t, c)
	e := &testEnv{t: t, c: c, logic: fl, next: 1}
	authed := e.dial()
	authed.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
	authed.ack("chat/u/alice", 0) // nothing to forward, but exercises the path
	pending := e.dial()           // never authenticates

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	authed.expectError(protocol.CodeServerShutdown)
	pending.expectError(protocol.CodeServerShutdown)
	if keys := fl.disconnectKeys(); !slices.Equal(keys, []string{authed.key}) {
		t.Fatalf("Logic.Disconnect for %v, want only the authenticated %s", keys, authed.key)
	}
	if err := c.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if _, err := c.Push(ctx, &pb.PushReq{}); !errors.Is(err, ErrShutdown) {
		t.Fatalf("Push after Shutdown: %v", err)
	}
	if err := c.Start(); !errors.Is(err, ErrShutdown) {
		t.Fatalf("Start after Shutdown: %v", err)
	}
	// A connection arriving after Shutdown is turned away.
	late := e.dial()
	late.expectError(protocol.CodeServerShutdown)
}

func TestShutdownHonoursContext(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	fl := newFakeLogic()
	fl.connectGate = make(chan struct{}) // Connect hangs until its ctx ends
	c, err := New(Config{Logic: api.LocalLogic(fl), Logger: testLogger(t), CallTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	runBackground(t, c)
	e := &testEnv{t: t, c: c, logic: fl, next: 1}
	cl := e.dial()
	cl.sendMsg(protocol.OpAuth, &wirepb.Auth{Token: "good-alice", Device: "d"})
	eventually(t, "Connect called", func() bool {
		fl.mu.Lock()
		defer fl.mu.Unlock()
		return len(fl.mu.connects) == 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a stuck logic call: %v", err)
	}
	// A later call reports the same outcome.
	if err := c.Shutdown(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Shutdown: %v", err)
	}
}
