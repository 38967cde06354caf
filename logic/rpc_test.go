package logic_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/msync/msync/logic"
	"github.com/msync/msync/pkg/api"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/protocol"
)

func connectReq(e *env, user, device, comet, key string, bizs ...string) *pb.ConnectReq {
	return &pb.ConnectReq{Comet: comet, Key: key, Token: e.token(user), Device: device, Platform: "ios", AppVersion: "1.5.0", Bizs: bizs}
}

func wantCode(t *testing.T, err error, code protocol.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error, want code %d", code)
	}
	if got, msg := api.CodeOf(err); got != code {
		t.Fatalf("code %d (%s), want %d", got, msg, code)
	}
}

func TestConnectRejectsBadAuth(t *testing.T) {
	e := newEnv(t, nil)
	cli := api.LocalLogic(e.l) // as a comet calls it in all-in-one mode
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		mod  func(*pb.ConnectReq)
		code protocol.Code
	}{
		{"garbage token", func(r *pb.ConnectReq) { r.Token = "x.y.z" }, protocol.CodeTokenInvalid},
		{"no token", func(r *pb.ConnectReq) { r.Token = "" }, protocol.CodeTokenInvalid},
		{"expired token", func(r *pb.ConnectReq) { r.Token = expiredToken(t, "alice") }, protocol.CodeTokenExpired},
		{"no device", func(r *pb.ConnectReq) { r.Device = "" }, protocol.CodeBadAuth},
		{"long device", func(r *pb.ConnectReq) { r.Device = strings.Repeat("d", 129) }, protocol.CodeBadAuth},
		{"no platform", func(r *pb.ConnectReq) { r.Platform = "" }, protocol.CodeBadAuth},
		{"bad platform", func(r *pb.ConnectReq) { r.Platform = "i/os" }, protocol.CodeBadAuth},
		{"bad version", func(r *pb.ConnectReq) { r.AppVersion = "1.beta" }, protocol.CodeBadAuth},
		{"no key", func(r *pb.ConnectReq) { r.Key = "" }, protocol.CodeBadAuth},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := connectReq(e, "alice", "d1", "c1", "k1", "chat")
			tt.mod(req)
			_, err := cli.Connect(ctx, req)
			wantCode(t, err, tt.code)
		})
	}
	if _, err := e.dir.ByDevice(ctx, "d1"); err == nil {
		t.Fatal("a rejected connect registered a session")
	}
	if got := e.metric("msync_logic_connects_total", map[string]string{"result": "bad_auth"}); got != 6 {
		t.Errorf("connects_total{bad_auth} = %v", got)
	}
}

func TestConnectChannelsAndFrom(t *testing.T) {
	e := newEnv(t, func(c *logic.Config) { c.HeartbeatInterval = 25 * time.Second })
	ctx := context.Background()
	// The server's stored points: chat 2 and lock 5.
	if _, err := e.l.Ack(ctx, e.ackTicketed(&pb.AckReq{Items: []*pb.AckItem{
		{Device: "d1", User: "alice", Channel: "chat/u/alice", Id: 2},
		{Device: "d1", Channel: "lock/d/d1", Id: 5},
	}})); err != nil {
		t.Fatal(err)
	}
	req := connectReq(e, "alice", "d1", "c1", "k1", "chat", "lock", "news", "nope", "ephemeral", "chat")
	req.Points = []*pb.Point{{Channel: "chat/u/alice", Id: 7}, {Channel: "chat/u/bob", Id: 99}}
	reply, err := e.l.Connect(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if reply.User != "alice" || reply.HeartbeatMs != 25000 {
		t.Fatalf("reply user %q heartbeat %d", reply.User, reply.HeartbeatMs)
	}
	var chans, rejected []string
	for _, c := range reply.Channels {
		chans = append(chans, fmt.Sprintf("%s:%s@%d", c.Biz, c.Channel, c.From))
	}
	for _, r := range reply.Rejected {
		rejected = append(rejected, r.Biz)
	}
	// chat: the client's point wins over the stored one; lock: stored; news: 0.
	if got := strings.Join(chans, " "); got != "chat:chat/u/alice@7 lock:lock/d/d1@5 news:news/g@0" {
		t.Fatalf("channels %q", got)
	}
	// ephemeral (non-persistent) is neither a channel nor rejected: its
	// oplogs come as PUSH frames.
	if got := strings.Join(rejected, " "); got != "nope" {
		t.Fatalf("rejected %q", got)
	}
	s, err := e.dir.ByDevice(ctx, "d1")
	if err != nil || s.User != "alice" || s.Comet != "c1" || s.Key != "k1" || s.Platform != "ios" || s.AppVersion != "1.5.0" {
		t.Fatalf("directory session = %+v, %v", s, err)
	}

	// A store failure fails the connect (retryable) without registering.
	e.st.fail.Store(true)
	_, err = e.l.Connect(ctx, connectReq(e, "bob", "d2", "c1", "k2", "chat"))
	wantCode(t, err, protocol.CodeUnavailable)
	e.st.fail.Store(false)
	if _, err := e.dir.ByDevice(ctx, "d2"); err == nil {
		t.Fatal("failed connect registered a session")
	}
}

func TestConnectKicksPreviousSession(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	if _, err := e.l.Connect(ctx, connectReq(e, "alice", "d1", "c1", "k1", "chat")); err != nil {
		t.Fatal(err)
	}
	// The same session registering again (same comet and key) kicks nobody.
	if _, err := e.l.Connect(ctx, connectReq(e, "alice", "d1", "c1", "k1", "chat")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.l.Connect(ctx, connectReq(e, "alice", "d1", "c2", "k2", "chat")); err != nil {
		t.Fatal(err)
	}
	// A sentinel publish after the kick: one partition, so anything queued by
	// the connects arrives before it.
	e.publish(`{"biz":"chat","user":"sentinel","payload":"x"}`)
	msgs, keys := e.waitQueued(2)
	k := msgs[0].GetKick()
	if len(msgs) != 2 || keys[0] != "d1" || k.GetComet() != "c1" || k.GetKey() != "k1" || k.GetCode() != uint32(protocol.CodeReplaced) {
		t.Fatalf("queued %v (keys %v), want one kick of c1/k1 keyed d1", msgs, keys)
	}
	if got := e.metric("msync_logic_sessions_replaced_total", nil); got != 1 {
		t.Errorf("sessions_replaced_total = %v", got)
	}

	// A late disconnect of the replaced session leaves its successor.
	if _, err := e.l.Disconnect(ctx, &pb.DisconnectReq{Comet: "c1", Key: "k1", Device: "d1", User: "alice"}); err != nil {
		t.Fatal(err)
	}
	if s, err := e.dir.ByDevice(ctx, "d1"); err != nil || s.Key != "k2" {
		t.Fatalf("after stale disconnect: %+v, %v", s, err)
	}
	if _, err := e.l.Disconnect(ctx, &pb.DisconnectReq{Comet: "c2", Key: "k2", Device: "d1", User: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.dir.ByDevice(ctx, "d1"); err == nil {
		t.Fatal("session still registered after its disconnect")
	}
}

func TestRenew(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	for _, d := range []string{"d1", "d2"} {
		if _, err := e.l.Connect(ctx, connectReq(e, "alice", d, "c1", "k-"+d, "chat")); err != nil {
			t.Fatal(err)
		}
	}
	e.clk.Advance(2 * time.Minute)
	if _, err := e.l.Renew(ctx, &pb.RenewReq{Comet: "c1", Sessions: []*pb.SessionRef{{Key: "k-d1", Device: "d1", User: "alice"}}}); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(2 * time.Minute) // past the directory's 3m TTL for d2 only
	ss, err := e.dir.ByUser(ctx, "alice")
	if err != nil || len(ss) != 1 || ss[0].Device != "d1" {
		t.Fatalf("ByUser after renew = %+v, %v; want only d1", ss, err)
	}
}

// page fetches one page for alice's ios 1.5.0 device d1.
func (e *env) page(channel string, after uint64, limit uint32) *pb.Page {
	e.t.Helper()
	reply, err := e.l.Sync(context.Background(), e.ticketed(&pb.SyncReq{Device: "d1", User: "alice", Platform: "ios", AppVersion: "1.5.0",
		Cursors: []*pb.Cursor{{Channel: channel, After: after}}, Limit: limit}))
	if err != nil {
		e.t.Fatalf("Sync(%s, %d): %v", channel, after, err)
	}
	if len(reply.Pages) != 1 {
		e.t.Fatalf("%d pages", len(reply.Pages))
	}
	return reply.Pages[0]
}

func ids(p *pb.Page) string {
	var s []string
	for _, op := range p.Oplogs {
		s = append(s, fmt.Sprint(op.Id))
	}
	return fmt.Sprintf("(%d,%d] %v max %d skipped %d", p.After, p.Upto, s, p.MaxId, p.Skipped)
}

func TestSyncFiltersAndPages(t *testing.T) {
	e := newEnv(t, nil)
	future := e.clk.Now().Add(time.Hour).Format(time.RFC3339Nano)
	for _, extra := range []string{
		``,                                       // 1
		`,"filters":{"platforms":["android"]}`,   // 2: other platform
		`,"filters":{"platforms":["web","IOS"]}`, // 3: matches case-insensitively
		`,"filters":{"min_version":"2.0"}`,       // 4: device too old
		`,"filters":{"max_version":"1.5"}`,       // 5: inclusive bound
		`,"ttl":"1h"`,                            // 6: expires below
		`,"valid_from":"` + future + `"`,         // 7: not yet
		``,                                       // 8
	} {
		e.publish(`{"biz":"chat","user":"alice","payload":"x"` + extra + `}`)
	}
	for _, tt := range []struct {
		name    string
		after   uint64
		limit   uint32
		advance time.Duration
		want    string
	}{
		{"filters skip, stops before not-yet", 0, 0, 0, "(0,6] [1 3 5 6] max 8 skipped 0"},
		{"limit ends the page at the last scanned", 0, 2, 0, "(0,2] [1] max 8 skipped 0"},
		{"limit counts filtered oplogs", 1, 3, 0, "(1,4] [3] max 8 skipped 0"},
		{"from the not-yet one", 6, 0, 0, "(6,6] [] max 8 skipped 0"},
		{"after valid_from, expired skipped", 0, 0, 2 * time.Hour, "(0,8] [1 3 5 7 8] max 8 skipped 0"},
		{"caught up", 8, 0, 0, "(8,8] [] max 8 skipped 0"},
		{"client ahead of the store", 20, 0, 0, "(20,20] [] max 8 skipped 0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e.clk.Advance(tt.advance)
			if got := ids(e.page("chat/u/alice", tt.after, tt.limit)); got != tt.want {
				t.Fatalf("page %s, want %s", got, tt.want)
			}
		})
	}
	if got := e.metric("msync_logic_syncs_total", nil); got != 7 {
		t.Errorf("syncs_total = %v", got)
	}
}

func TestSyncLatestN(t *testing.T) {
	e := newEnv(t, nil)
	for range 5 {
		e.publish(`{"biz":"latest","user":"alice","payload":"x"}`)
	}
	if got := ids(e.page("latest/u/alice", 0, 0)); got != "(0,5] [4 5] max 5 skipped 3" {
		t.Fatalf("latest:2 from 0: %s", got)
	}
	if got := ids(e.page("latest/u/alice", 3, 0)); got != "(3,5] [4 5] max 5 skipped 0" {
		t.Fatalf("latest:2 within N: %s", got)
	}
}

func TestSyncChannelOwnership(t *testing.T) {
	e := newEnv(t, nil)
	e.publish(`{"biz":"news","global":true,"payload":"x"}`)
	e.publish(`{"biz":"lock","device":"d1","payload":"x"}`)
	ctx := context.Background()
	sync := func(chans ...string) error {
		var cs []*pb.Cursor
		for _, c := range chans {
			cs = append(cs, &pb.Cursor{Channel: c})
		}
		_, err := e.l.Sync(ctx, e.ticketed(&pb.SyncReq{Device: "d1", User: "alice", Platform: "ios", Cursors: cs}))
		return err
	}
	reply, err := e.l.Sync(ctx, e.ticketed(&pb.SyncReq{Device: "d1", User: "alice", Platform: "ios",
		Cursors: []*pb.Cursor{{Channel: "chat/u/alice"}, {Channel: "lock/d/d1"}, {Channel: "news/g"}}}))
	if err != nil || len(reply.Pages) != 3 || reply.Pages[1].Biz != "lock" || len(reply.Pages[1].Oplogs) != 1 || len(reply.Pages[2].Oplogs) != 1 {
		t.Fatalf("own channels: %v, %v", reply, err)
	}
	for _, ch := range []string{
		"chat/u/bob",   // another user's
		"lock/d/d2",    // another device's
		"chat/d/d1",    // user biz as a device channel
		"lock/u/alice", // device biz as a user channel
		"chat/g",       // not a global biz
		"news/u/alice", // global biz as a user channel
		"nope/u/alice", // unknown biz
		"ephemeral/u/alice",
		"garbage",
		"",
	} {
		t.Run(ch, func(t *testing.T) {
			wantCode(t, sync("chat/u/alice", ch), protocol.CodeStaleSession)
		})
	}
	e.st.fail.Store(true)
	wantCode(t, sync("chat/u/alice"), protocol.CodeUnavailable)
}

func TestAck(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	if _, err := e.l.Ack(ctx, e.ackTicketed(&pb.AckReq{Items: []*pb.AckItem{
		{Device: "d1", User: "alice", Channel: "chat/u/alice", Id: 4},
		{Device: "d1", Channel: "lock/d/d1", Id: 2},
		{Device: "", Channel: "chat/u/alice", Id: 9}, // dropped: no device
		{Device: "d1", Channel: "garbage", Id: 9},    // dropped: bad channel
		{Device: "d1", Channel: "news/g", Id: 0},     // dropped: no id
	}})); err != nil {
		t.Fatal(err)
	}
	// Points never go back.
	if _, err := e.l.Ack(ctx, e.ackTicketed(&pb.AckReq{Items: []*pb.AckItem{{Device: "d1", Channel: "chat/u/alice", Id: 3}}})); err != nil {
		t.Fatal(err)
	}
	pts, err := e.st.SyncPoints(ctx, "d1")
	if err != nil || fmt.Sprint(pts) != "map[chat/u/alice:4 lock/d/d1:2]" {
		t.Fatalf("sync points = %v, %v", pts, err)
	}
	if got := e.metric("msync_logic_acks_total", nil); got != 3 {
		t.Errorf("acks_total = %v", got)
	}
	e.st.fail.Store(true)
	_, err = e.l.Ack(ctx, e.ackTicketed(&pb.AckReq{Items: []*pb.AckItem{{Device: "d1", Channel: "chat/u/alice", Id: 5}}}))
	wantCode(t, err, protocol.CodeUnavailable)
}

func TestJanitorDeletesExpired(t *testing.T) {
	e := newEnv(t, func(c *logic.Config) { c.JanitorInterval = 5 * time.Millisecond })
	e.publish(`{"biz":"chat","user":"alice","payload":"x","ttl":"1h"}`)
	e.publish(`{"biz":"chat","user":"alice","payload":"x"}`)
	e.clk.Advance(2 * time.Hour)
	waitFor(t, "the janitor to delete the expired oplog", func() bool {
		ops, _, err := e.st.Read(context.Background(), "chat/u/alice", 0, 10)
		return err == nil && len(ops) == 1 && ops[0].Id == 2
	})
	if got := e.metric("msync_logic_expired_deleted_total", nil); got != 1 {
		t.Errorf("expired_deleted_total = %v", got)
	}
}

func TestLifecycle(t *testing.T) {
	if _, err := logic.New(logic.Config{PageLimit: -1}); !errors.Is(err, logic.ErrInvalidConfig) ||
		!strings.Contains(err.Error(), "Store is required") || !strings.Contains(err.Error(), "APIKeys is required") ||
		!strings.Contains(err.Error(), "PageLimit") {
		t.Fatalf("New(empty) = %v, want every problem listed", err)
	}
	e := newEnv(t, nil)
	if err := e.l.Start(); err == nil {
		t.Fatal("second Start succeeded")
	}
	// Shutdown from several goroutines at once.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	errs := make(chan error, 3)
	for range 3 {
		go func() { errs <- e.l.Shutdown(ctx) }()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent Shutdown: %v", err)
		}
	}
}

// A client that sends a point for every channel needs none of the stored
// ones: connect does not read them (it still succeeds with the store down),
// and a client missing one point makes it read them again.
func TestConnectWithAllPointsSkipsStoredPoints(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	req := connectReq(e, "alice", "d1", "c1", "k1", "chat", "lock")
	req.Points = []*pb.Point{{Channel: "chat/u/alice", Id: 3}, {Channel: "lock/d/d1", Id: 4}}
	e.st.fail.Store(true)
	reply, err := e.l.Connect(ctx, req)
	if err != nil {
		t.Fatalf("connect with every point and the store down: %v", err)
	}
	var chans []string
	for _, c := range reply.Channels {
		chans = append(chans, fmt.Sprintf("%s@%d", c.Channel, c.From))
	}
	if got := strings.Join(chans, " "); got != "chat/u/alice@3 lock/d/d1@4" {
		t.Fatalf("channels %q", got)
	}
	req.Points = req.Points[:1]
	_, err = e.l.Connect(ctx, req)
	wantCode(t, err, protocol.CodeUnavailable)
}
