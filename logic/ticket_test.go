package logic_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/rpc"
)

// TestSyncAndAckNeedTheConnectTicket: Sync and Ack act only for a session
// Connect signed; bare user/device fields get nothing (the review's "read
// another user's oplogs" and "ack a device to 2^40").
func TestSyncAndAckNeedTheConnectTicket(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	e.publish(`{"biz":"chat","user":"victim","payload":"private"}`)
	reply, err := e.l.Connect(ctx, connectReq(e, "mallory", "m1", "c1", "k1", "chat"))
	if err != nil || len(reply.Ticket) == 0 {
		t.Fatalf("Connect = %v, %v (want a ticket)", reply, err)
	}
	own := reply.Ticket
	victim := []*pb.Cursor{{Channel: "chat/u/victim"}}
	// A ticket written by the attacker: the victim's session, any MAC.
	body, err := proto.Marshal(&pb.Ticket{Comet: "c1", Key: "k1", User: "victim", Device: "m1", Platform: "ios",
		Channels: []string{"chat/u/victim"}, ExpiresMs: time.Now().Add(time.Hour).UnixMilli()})
	if err != nil {
		t.Fatal(err)
	}
	forged := append(body, own[len(own)-32:]...)

	for name, req := range map[string]*pb.SyncReq{
		"no ticket":                       {Device: "m1", User: "victim", Platform: "ios", Cursors: victim},
		"forged ticket":                   {Device: "m1", User: "victim", Platform: "ios", Cursors: victim, Ticket: append([]byte("x"), own[1:]...)},
		"own ticket, victim":              {Device: "m1", User: "victim", Platform: "ios", Cursors: victim, Ticket: own},
		"own ticket, victim channel only": {Cursors: victim, Ticket: own},
	} {
		r, err := e.l.Sync(ctx, req)
		if err == nil || len(r.GetPages()) > 0 {
			t.Errorf("%s: Sync = %v, %v; want a refusal", name, r, err)
		}
	}
	wantSyncCode := func(req *pb.SyncReq, code protocol.Code) {
		t.Helper()
		_, err := e.l.Sync(ctx, req)
		wantCode(t, err, code)
	}
	wantSyncCode(&pb.SyncReq{Cursors: victim}, protocol.CodeUnavailable) // reconnect: a new Connect gives a ticket
	wantSyncCode(&pb.SyncReq{Cursors: victim, Ticket: own}, protocol.CodeStaleSession)
	if r, err := e.l.Sync(ctx, &pb.SyncReq{Cursors: []*pb.Cursor{{Channel: "chat/u/mallory"}}, Ticket: own}); err != nil || len(r.Pages) != 1 {
		t.Fatalf("own channel with own ticket: %v, %v", r, err)
	}

	// Acks: without a ticket, with a foreign device, or for a channel the
	// ticket does not hold, nothing is stored.
	_, err = e.l.Ack(ctx, &pb.AckReq{Items: []*pb.AckItem{
		{Device: "v1", User: "victim", Channel: "chat/u/victim", Id: 1 << 40},
		{Device: "v1", User: "victim", Channel: "chat/u/victim", Id: 1 << 40, Ticket: own},
		{Device: "m1", Channel: "chat/u/victim", Id: 1 << 40, Ticket: own},
		{Device: "m1", Channel: "chat/u/victim", Id: 1 << 40, Ticket: forged},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, dev := range []string{"v1", "m1"} {
		pts, err := e.st.SyncPoints(ctx, dev)
		if err != nil || len(pts) != 0 {
			t.Errorf("points of %s after forged acks: %v, %v", dev, pts, err)
		}
	}
	if got := e.metric("msync_logic_ticket_refusals_total", nil); got < 9 {
		t.Errorf("ticket_refusals_total = %v", got)
	}
	// The session's own ack is stored.
	if _, err := e.l.Ack(ctx, &pb.AckReq{Items: []*pb.AckItem{{Device: "m1", Channel: "chat/u/mallory", Id: 1, Ticket: own}}}); err != nil {
		t.Fatal(err)
	}
	if pts, _ := e.st.SyncPoints(ctx, "m1"); pts["chat/u/mallory"] != 1 {
		t.Errorf("own ack not stored: %v", pts)
	}
}

// TestTicketBoundToCometAndExpiry: under mutual TLS a ticket is accepted
// only from the comet it was issued to; it expires after TicketTTL unless
// Renew replaced it, which it does past half its life.
func TestTicketBoundToCometAndExpiry(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	asC1 := rpc.WithPeerIdentity(ctx, rpc.Identity{Roles: []string{rpc.RoleComet}, Comet: "c1"})
	asC2 := rpc.WithPeerIdentity(ctx, rpc.Identity{Roles: []string{rpc.RoleComet}, Comet: "c2"})
	if _, err := e.l.Connect(asC2, connectReq(e, "alice", "d1", "c1", "k1", "chat")); err == nil {
		t.Fatal("comet c2 opened a session as c1")
	}
	reply, err := e.l.Connect(asC1, connectReq(e, "alice", "d1", "c1", "k1", "chat"))
	if err != nil {
		t.Fatal(err)
	}
	sync := func(ctx context.Context, ticket []byte) error {
		_, err := e.l.Sync(ctx, &pb.SyncReq{Cursors: []*pb.Cursor{{Channel: "chat/u/alice"}}, Ticket: ticket})
		return err
	}
	if err := sync(asC1, reply.Ticket); err != nil {
		t.Fatal(err)
	}
	if err := sync(asC2, reply.Ticket); err == nil {
		t.Fatal("comet c2 used comet c1's ticket")
	}
	if _, err := e.l.Renew(asC2, &pb.RenewReq{Comet: "c1"}); err == nil {
		t.Fatal("comet c2 renewed as c1")
	}

	ref := []*pb.SessionRef{{Key: "k1", Device: "d1", User: "alice", Ticket: reply.Ticket}}
	r, err := e.l.Renew(asC1, &pb.RenewReq{Comet: "c1", Sessions: ref})
	if err != nil || len(r.Tickets) != 0 {
		t.Fatalf("fresh ticket renewed: %v, %v", r, err)
	}
	e.clk.Advance(13 * time.Hour) // past half of the 24h default
	r, err = e.l.Renew(asC1, &pb.RenewReq{Comet: "c1", Sessions: ref})
	if err != nil || len(r.Tickets) != 1 || r.Tickets[0].Key != "k1" {
		t.Fatalf("Renew past half-life = %v, %v", r, err)
	}
	fresh := r.Tickets[0].Ticket
	e.clk.Advance(12 * time.Hour) // the old one has expired
	if err := sync(asC1, reply.Ticket); err == nil {
		t.Fatal("expired ticket accepted")
	}
	if err := sync(asC1, fresh); err != nil {
		t.Fatalf("renewed ticket: %v", err)
	}
}
