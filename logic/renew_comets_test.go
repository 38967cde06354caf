package logic_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/msync/msync/pkg/api"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/protocol"
)

// TestRenewRegistersComet: a Renew carrying grpc_addr (cluster mode)
// registers the comet, sessions or not, with the directory's TTL; one
// without it (all-in-one) registers nothing.
func TestRenewRegistersComet(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	list := func() string {
		t.Helper()
		cs, err := e.dir.Comets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range cs {
			out = append(out, c.ID+"@"+c.Addr)
		}
		return fmt.Sprint(out)
	}
	if _, err := e.l.Renew(ctx, &pb.RenewReq{Comet: "c0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.l.Renew(ctx, &pb.RenewReq{Comet: "c1", GrpcAddr: "10.0.0.1:3102"}); err != nil {
		t.Fatal(err)
	}
	if got := list(); got != "[c1@10.0.0.1:3102]" {
		t.Fatalf("registry = %s", got)
	}
	e.clk.Advance(2 * time.Minute)
	if _, err := e.l.Renew(ctx, &pb.RenewReq{Comet: "c2", GrpcAddr: "10.0.0.2:3102",
		Sessions: []*pb.SessionRef{{Key: "k", Device: "d", User: "u"}}}); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(2 * time.Minute) // c1 is past the 3m TTL
	if got := list(); got != "[c2@10.0.0.2:3102]" {
		t.Fatalf("registry after c1's TTL = %s", got)
	}
	// A registry that fails answers "unavailable" with the wire code.
	if err := e.dir.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := e.l.Renew(ctx, &pb.RenewReq{Comet: "c2", GrpcAddr: "10.0.0.2:3102"})
	if code, _ := api.CodeOf(err); err == nil || code != protocol.CodeUnavailable {
		t.Fatalf("Renew on a closed directory = %v (code %d), want CodeUnavailable", err, code)
	}
}
