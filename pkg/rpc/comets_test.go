package rpc

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/directory"
	dirmem "github.com/msync/msync/pkg/directory/memory"
)

// fakeComet answers Push with its name in Delivered's place (a number).
type fakeComet struct {
	pb.UnimplementedCometServer
	n      uint32
	pushes atomic.Int64
}

func (f *fakeComet) Push(context.Context, *pb.PushReq) (*pb.PushReply, error) {
	f.pushes.Add(1)
	return &pb.PushReply{Delivered: f.n}, nil
}

func startComet(t *testing.T, n uint32) (*Server, *fakeComet) {
	t.Helper()
	s, err := NewServer(ServerConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeComet{n: n}
	s.Register(&pb.Comet_ServiceDesc, f)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdown(t, s.Shutdown) })
	return s, f
}

type testClock struct{ ns atomic.Int64 }

func (c *testClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *testClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func newRegistry(t *testing.T, clk *testClock) *dirmem.Directory {
	t.Helper()
	clk.ns.Store(time.Unix(1_700_000_000, 0).UnixNano())
	d, err := dirmem.New(dirmem.Config{TTL: time.Minute, SweepInterval: -1, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdown(t, d.Shutdown) })
	return d
}

func newComets(t *testing.T, reg directory.Comets, refresh time.Duration) *Comets {
	t.Helper()
	c, err := NewComets(CometsConfig{Registry: reg, Refresh: refresh, MinRefresh: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdown(t, c.Shutdown) })
	return c
}

// pushTo calls Push on comet id and returns the answering comet's number.
func pushTo(t *testing.T, c *Comets, id string) (uint32, error) {
	t.Helper()
	cl, ok := c.Comet(id)
	if !ok {
		t.Fatalf("Comet(%q) = false", id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	r, err := cl.Push(ctx, &pb.PushReq{})
	return r.GetDelivered(), err
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, func() error {
		if !cond() {
			return fmt.Errorf("still waiting for %s", what)
		}
		return nil
	})
}

func TestCometsJoinMoveDepart(t *testing.T) {
	ctx := context.Background()
	clk := &testClock{}
	reg := newRegistry(t, clk)
	s1, _ := startComet(t, 1)
	s2, _ := startComet(t, 2)
	if err := reg.RegisterComet(ctx, "c1", s1.Addr().String()); err != nil {
		t.Fatal(err)
	}
	// A long period: everything below is driven by misses and Refresh.
	c := newComets(t, reg, time.Hour)
	if got := fmt.Sprint(c.IDs()); got != "[c1]" {
		t.Fatalf("after Start: IDs = %s", got)
	}
	if n, err := pushTo(t, c, "c1"); err != nil || n != 1 {
		t.Fatalf("push c1 = %d, %v", n, err)
	}

	// Join: c2 registers after the last refresh; the first push to it waits
	// for the refresh its miss asked for, instead of being dropped.
	if err := reg.RegisterComet(ctx, "c2", s2.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if n, err := pushTo(t, c, "c2"); err != nil || n != 2 {
		t.Fatalf("push to joining c2 = %d, %v", n, err)
	}
	if got := fmt.Sprint(c.IDs()); got != "[c1 c2]" {
		t.Fatalf("after join: IDs = %s", got)
	}

	// Move: c1 restarts on s3's address; the old connection is closed.
	s3, _ := startComet(t, 3)
	old := (*c.snap.Load())["c1"].conn
	if err := reg.RegisterComet(ctx, "c1", s3.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := pushTo(t, c, "c1"); err != nil || n != 3 {
		t.Fatalf("push to moved c1 = %d, %v", n, err)
	}
	if st := old.GetState(); st != connectivity.Shutdown {
		t.Fatalf("old c1 connection state %v, want Shutdown", st)
	}

	// Depart: c2 stops renewing; after the TTL it is gone and closed.
	c2conn := (*c.snap.Load())["c2"].conn
	clk.Advance(45 * time.Second)
	_ = reg.RegisterComet(ctx, "c1", s3.Addr().String())
	clk.Advance(30 * time.Second)
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(c.IDs()); got != "[c1]" {
		t.Fatalf("after c2's TTL: IDs = %s", got)
	}
	if st := c2conn.GetState(); st != connectivity.Shutdown {
		t.Fatalf("departed c2 connection state %v, want Shutdown", st)
	}
	// A push to a comet that never registers fails after a refresh or two,
	// well before the caller's deadline.
	began := time.Now()
	_, err := pushTo(t, c, "nobody")
	if status.Code(err) != codes.Unavailable || time.Since(began) > 2*time.Second {
		t.Fatalf("push to unknown comet = %v after %v, want Unavailable quickly", err, time.Since(began))
	}
}

// TestCometsPeriodicRefresh: without any miss, the refresher alone notices
// joins and departures.
func TestCometsPeriodicRefresh(t *testing.T) {
	ctx := context.Background()
	clk := &testClock{}
	reg := newRegistry(t, clk)
	s1, f1 := startComet(t, 1)
	c := newComets(t, reg, 20*time.Millisecond)
	if len(c.IDs()) != 0 {
		t.Fatalf("IDs = %v, want none", c.IDs())
	}
	_ = reg.RegisterComet(ctx, "c1", s1.Addr().String())
	waitFor(t, "c1 to be discovered", func() bool { return c.Addr("c1") == s1.Addr().String() })
	if n, err := pushTo(t, c, "c1"); err != nil || n != 1 || f1.pushes.Load() != 1 {
		t.Fatalf("push = %d, %v", n, err)
	}
	clk.Advance(2 * time.Minute)
	waitFor(t, "c1 to depart", func() bool { return len(c.IDs()) == 0 })
}

// failingRegistry fails every listing.
type failingRegistry struct{ comets []directory.CometInfo }

func (f *failingRegistry) RegisterComet(context.Context, string, string) error { return nil }
func (f *failingRegistry) Comets(context.Context) ([]directory.CometInfo, error) {
	if f.comets != nil {
		return f.comets, nil
	}
	return nil, errors.New("registry down")
}

func TestCometsKeepListOnRegistryError(t *testing.T) {
	s1, _ := startComet(t, 1)
	reg := &failingRegistry{comets: []directory.CometInfo{{ID: "c1", Addr: s1.Addr().String()}}}
	c := newComets(t, reg, time.Hour)
	reg.comets = nil
	if err := c.Refresh(context.Background()); err == nil {
		t.Fatal("Refresh with a failing registry succeeded")
	}
	if n, err := pushTo(t, c, "c1"); err != nil || n != 1 {
		t.Fatalf("push after a failed refresh = %d, %v (the last list must be kept)", n, err)
	}
}

func TestCometsLifecycle(t *testing.T) {
	if _, err := NewComets(CometsConfig{}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("NewComets without registry = %v", err)
	}
	clk := &testClock{}
	c, err := NewComets(CometsConfig{Registry: newRegistry(t, clk)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start = %v", err)
	}
	for range 2 {
		shutdown(t, c.Shutdown)
	}
	if err := c.Refresh(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Refresh after Shutdown = %v", err)
	}
	if err := c.Start(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Shutdown = %v", err)
	}
}
