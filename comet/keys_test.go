package comet

import (
	"context"
	"encoding/hex"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/protocol"
	wirepb "github.com/msync/msync/pkg/protocol/pb"
)

// TestConnectionKeysAreRandom: a key is all a Push or Kick names, so keys
// must be unguessable (128 random bits), not the transport's 1, 2, 3...
func TestConnectionKeysAreRandom(t *testing.T) {
	e := newEnv(t, nil)
	seen := map[string]bool{}
	for i := range 20 {
		r := e.dial().auth("good-alice", "dev"+string(rune('a'+i)), "ios", "1.0", nil)
		if b, err := hex.DecodeString(r.Session); err != nil || len(b) != 16 {
			t.Fatalf("session key %q: want 32 hex digits", r.Session)
		}
		if seen[r.Session] {
			t.Fatalf("key %q handed out twice", r.Session)
		}
		seen[r.Session] = true
	}
}

// TestTicketGoesBackToLogic: the ticket Connect returned rides on every
// Sync and Renew of the session, and a renewed one replaces it.
func TestTicketGoesBackToLogic(t *testing.T) {
	e := newEnv(t, func(cfg *Config, _ *fakeLogic) {
		cfg.RenewInterval = 10 * time.Millisecond
		cfg.Logic = renewingLogic{cfg.Logic}
	})
	e.logic.addN("chat/u/alice", 1)
	cl := e.dial()
	r := cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
	cl.expectSync()
	want := "ticket:" + r.Session
	e.logic.mu.Lock()
	syncs := append(e.logic.mu.syncs[:0:0], e.logic.mu.syncs...)
	e.logic.mu.Unlock()
	if len(syncs) == 0 || string(syncs[0].Ticket) != want {
		t.Fatalf("Sync carried ticket %q, want %q", syncs[0].GetTicket(), want)
	}
	eventually(t, "a Renew carrying the ticket", func() bool {
		e.logic.mu.Lock()
		defer e.logic.mu.Unlock()
		for _, rn := range e.logic.mu.renews {
			for _, s := range rn.Sessions {
				if s.Key == r.Session && string(s.Ticket) == want {
					return true
				}
			}
		}
		return false
	})
	// The renewed ticket is what the next Sync carries.
	eventually(t, "the renewed ticket in place", func() bool { return string(e.c.lookup(r.Session).ticketBytes()) == "renewed" })
	cl.sendMsg(protocol.OpSyncReq, &wirepb.SyncReq{Points: []*wirepb.ChannelPoint{{Channel: "chat/u/alice", Id: 0}}})
	cl.expectSync()
	e.logic.mu.Lock()
	last := e.logic.mu.syncs[len(e.logic.mu.syncs)-1]
	e.logic.mu.Unlock()
	if string(last.Ticket) != "renewed" {
		t.Fatalf("Sync after renewal carried %q", last.Ticket)
	}
}

// renewingLogic answers every Renew with a fresh ticket per session, as
// logic does for tickets past half their life.
type renewingLogic struct{ pb.LogicClient }

func (r renewingLogic) Renew(ctx context.Context, in *pb.RenewReq, opts ...grpc.CallOption) (*pb.RenewReply, error) {
	rep, err := r.LogicClient.Renew(ctx, in, opts...)
	if err != nil {
		return nil, err
	}
	for _, s := range in.Sessions {
		rep.Tickets = append(rep.Tickets, &pb.RenewedTicket{Key: s.Key, Ticket: []byte("renewed")})
	}
	return rep, nil
}
