package logic_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/protocol"
)

func pageIDs(p *pb.Page) []uint64 {
	var ids []uint64
	for _, op := range p.Oplogs {
		ids = append(ids, op.Id)
	}
	return ids
}

// multi_device false: acks raise the user's shared point; a device without
// a point starts there, a device with a lower point gets pages that cover
// the shared range without listing it.
func TestSharedSyncPoint(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	for i := range 6 {
		e.publish(fmt.Sprintf(`{"biz":"solo","user":"alice","payload":"m%d"}`, i))
	}
	if _, err := e.l.Ack(ctx, e.ackTicketed(&pb.AckReq{Items: []*pb.AckItem{{Device: "d1", User: "alice", Channel: "solo/u/alice", Id: 4}}})); err != nil {
		t.Fatal(err)
	}
	reply, err := e.l.Connect(ctx, connectReq(e, "alice", "d2", "c1", "k2", "solo", "chat"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range reply.Channels {
		want := uint64(0)
		if c.Biz == "solo" {
			want = 4
		}
		if c.From != want {
			t.Fatalf("%s from %d, want %d", c.Channel, c.From, want)
		}
	}
	req := connectReq(e, "alice", "d3", "c1", "k3", "solo")
	req.Points = []*pb.Point{{Channel: "solo/u/alice", Id: 1}}
	if reply, err = e.l.Connect(ctx, req); err != nil || reply.Channels[0].From != 1 {
		t.Fatalf("client point kept: %v %v", reply.GetChannels(), err)
	}
	sr, err := e.l.Sync(ctx, e.ticketed(&pb.SyncReq{Device: "d3", User: "alice", Platform: "ios",
		Cursors: []*pb.Cursor{{Channel: "solo/u/alice", After: 1}}}))
	if err != nil {
		t.Fatal(err)
	}
	p := sr.Pages[0]
	if p.After != 1 || p.Upto != 6 || fmt.Sprint(pageIDs(p)) != "[5 6]" || p.Skipped != 0 {
		t.Fatalf("page (%d,%d] %v skipped %d, want (1,6] [5 6] 0", p.After, p.Upto, pageIDs(p), p.Skipped)
	}
	// Another user's devices and multi-device bizs are untouched.
	e.publish(`{"biz":"chat","user":"alice","payload":"c"}`)
	if _, err := e.l.Ack(ctx, e.ackTicketed(&pb.AckReq{Items: []*pb.AckItem{{Device: "d1", User: "alice", Channel: "chat/u/alice", Id: 1}}})); err != nil {
		t.Fatal(err)
	}
	sr, err = e.l.Sync(ctx, e.ticketed(&pb.SyncReq{Device: "d2", User: "alice", Platform: "ios", Cursors: []*pb.Cursor{{Channel: "chat/u/alice"}}}))
	if err != nil || fmt.Sprint(pageIDs(sr.Pages[0])) != "[1]" {
		t.Fatalf("multi-device chat: %v %v", sr, err)
	}
}

// consistency true: a session whose device was since logged in by another
// user may not sync the old user's channel of a consistency biz.
func TestConsistencyRefusesStaleSession(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	e.publish(`{"biz":"acct","user":"alice","payload":"a"}`)
	if _, err := e.l.Connect(ctx, connectReq(e, "alice", "tab", "c1", "k1", "acct", "chat")); err != nil {
		t.Fatal(err)
	}
	sync := func(user, ch string) error {
		_, err := e.l.Sync(ctx, e.ticketed(&pb.SyncReq{Device: "tab", User: user, Platform: "ios", Cursors: []*pb.Cursor{{Channel: ch}}}))
		return err
	}
	if err := sync("alice", "acct/u/alice"); err != nil {
		t.Fatalf("current user: %v", err)
	}
	// bob logs in on alice's tablet: the business hands it over with a
	// token naming the device (principals.go).
	handover := connectReq(e, "bob", "tab", "c2", "k2", "acct")
	_, err := e.l.Connect(ctx, handover)
	wantCode(t, err, protocol.CodeDeviceNotAllowed)
	handover.Token = e.deviceToken("bob", "tab")
	if _, err := e.l.Connect(ctx, handover); err != nil {
		t.Fatal(err)
	}
	wantCode(t, sync("alice", "acct/u/alice"), protocol.CodeReplaced)
	if err := sync("bob", "acct/u/bob"); err != nil {
		t.Fatalf("new user: %v", err)
	}
	// Without consistency the stale session still syncs (multi-device user data).
	if err := sync("alice", "chat/u/alice"); err != nil {
		t.Fatalf("chat: %v", err)
	}
}

// A page stops before a not-yet-valid oplog and says when it becomes valid.
func TestPageNextValidMs(t *testing.T) {
	e := newEnv(t, nil)
	from := e.clk.Now().Add(time.Hour).Truncate(time.Millisecond)
	e.publish(`{"biz":"chat","user":"alice","payload":"a"}`)
	e.publish(`{"biz":"chat","user":"alice","payload":"b","valid_from":"` + from.UTC().Format(time.RFC3339Nano) + `"}`)
	e.publish(`{"biz":"chat","user":"alice","payload":"c"}`)
	sync := func() *pb.Page {
		sr, err := e.l.Sync(context.Background(), e.ticketed(&pb.SyncReq{Device: "d1", User: "alice", Platform: "ios",
			Cursors: []*pb.Cursor{{Channel: "chat/u/alice"}}}))
		if err != nil {
			t.Fatal(err)
		}
		return sr.Pages[0]
	}
	p := sync()
	if p.Upto != 1 || p.NextValidMs != from.UnixMilli() || fmt.Sprint(pageIDs(p)) != "[1]" {
		t.Fatalf("page (%d,%d] %v next %d, want (0,1] [1] next %d", p.After, p.Upto, pageIDs(p), p.NextValidMs, from.UnixMilli())
	}
	e.clk.Advance(time.Hour)
	if p = sync(); p.Upto != 3 || p.NextValidMs != 0 || fmt.Sprint(pageIDs(p)) != "[1 2 3]" {
		t.Fatalf("after valid_from: (%d,%d] %v next %d", p.After, p.Upto, pageIDs(p), p.NextValidMs)
	}
}

// persistent false: POST /v1/sync queues a push carrying the biz to the
// owner's online devices and stores nothing.
func TestNonPersistentPublish(t *testing.T) {
	e := newEnv(t, nil)
	id, dup := e.publish(`{"biz":"ephemeral","user":"alice","payload":"hi"}`)
	if id != 0 || dup {
		t.Fatalf("id %d dup %v, want 0 false", id, dup)
	}
	msgs, keys := e.waitQueued(1)
	push := msgs[0].GetPush()
	if push == nil || push.User != "alice" || push.Msg.GetBiz() != "ephemeral" || string(push.Msg.GetPayload()) != "hi" || keys[0] != "ephemeral/u/alice" {
		t.Fatalf("queued %v key %q", msgs[0], keys[0])
	}
	if max, err := e.st.MaxID(context.Background(), "ephemeral/u/alice"); err != nil || max != 0 {
		t.Fatalf("stored: max id %d, %v", max, err)
	}
	// In a batch with persistent items, results stay in order.
	status, out := e.do("POST", "/v1/sync/batch", "all-key", `{"items":[{"biz":"chat","user":"alice","payload":"a"},{"biz":"ephemeral","user":"alice","payload":"b"},{"biz":"chat","user":"alice","payload":"c"}]}`)
	if status != 200 {
		t.Fatalf("batch: %d %v", status, out)
	}
	var ids []float64
	for _, r := range out["results"].([]any) {
		ids = append(ids, r.(map[string]any)["id"].(float64))
	}
	if fmt.Sprint(ids) != "[1 0 2]" {
		t.Fatalf("batch ids %v, want [1 0 2]", ids)
	}
}
