package rpc

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/pkg/api"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeLogic answers by device name, so one server covers every case.
type fakeLogic struct {
	pb.UnimplementedLogicServer
	name  string
	calls atomic.Int64
}

func (f *fakeLogic) Connect(ctx context.Context, req *pb.ConnectReq) (*pb.ConnectReply, error) {
	f.calls.Add(1)
	switch req.Device {
	case "expired":
		return nil, api.Error(protocol.CodeTokenExpired, "token expired")
	case "plain":
		return nil, errors.New("store on fire")
	case "panic":
		panic("handler bug")
	case "hang":
		<-ctx.Done()
		return nil, ctx.Err()
	case "big":
		return &pb.ConnectReply{User: strings.Repeat("x", 2<<20)}, nil
	}
	return &pb.ConnectReply{User: f.name}, nil
}

func startServer(t *testing.T, name string) (*Server, *fakeLogic) {
	t.Helper()
	s, err := NewServer(ServerConfig{Addr: "127.0.0.1:0", MaxMsgBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeLogic{name: name}
	s.Register(&pb.Logic_ServiceDesc, f)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdown(t, s.Shutdown) })
	return s, f
}

func shutdown(t *testing.T, f func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

func dialT(t *testing.T, cfg DialConfig, addrs ...string) pb.LogicClient {
	t.Helper()
	cc, err := Dial(addrs, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return pb.NewLogicClient(cc)
}

func TestErrorsCrossTheWire(t *testing.T) {
	s, _ := startServer(t, "s1")
	cl := dialT(t, DialConfig{CallTimeout: 300 * time.Millisecond, MaxMsgBytes: 1 << 20}, s.Addr().String())
	ctx := context.Background()

	if r, err := cl.Connect(ctx, &pb.ConnectReq{Device: "ok"}); err != nil || r.User != "s1" {
		t.Fatalf("Connect = %v, %v", r, err)
	}
	tests := []struct {
		device   string
		code     protocol.Code
		grpcCode codes.Code
		msg      string
	}{
		{"expired", protocol.CodeTokenExpired, codes.Unauthenticated, "token expired"},
		{"plain", protocol.CodeUnavailable, codes.Internal, "store on fire"},
		{"panic", protocol.CodeUnavailable, codes.Internal, "internal error"},
		{"hang", protocol.CodeUnavailable, codes.DeadlineExceeded, ""}, // the default call timeout
		{"big", protocol.CodeUnavailable, codes.ResourceExhausted, ""}, // reply over MaxMsgBytes
	}
	for _, tt := range tests {
		t.Run(tt.device, func(t *testing.T) {
			began := time.Now()
			_, err := cl.Connect(ctx, &pb.ConnectReq{Device: tt.device})
			if got := status.Code(err); got != tt.grpcCode {
				t.Fatalf("gRPC code %v (%v), want %v", got, err, tt.grpcCode)
			}
			code, msg := api.CodeOf(err)
			if code != tt.code || !strings.Contains(msg, tt.msg) {
				t.Fatalf("CodeOf = %d %q, want %d containing %q", code, msg, tt.code, tt.msg)
			}
			if time.Since(began) > 3*time.Second {
				t.Fatalf("call took %v", time.Since(began))
			}
		})
	}
	// The panic did not take the server down.
	if _, err := cl.Connect(ctx, &pb.ConnectReq{Device: "ok"}); err != nil {
		t.Fatalf("after panic: %v", err)
	}
}

func TestRoundRobinAndFailover(t *testing.T) {
	s1, f1 := startServer(t, "s1")
	s2, f2 := startServer(t, "s2")
	cl := dialT(t, DialConfig{}, s1.Addr().String(), s2.Addr().String())
	ctx := context.Background()
	// round_robin uses a backend once its connection is ready; the first
	// calls may all go to whichever connected first.
	for i := 0; f1.calls.Load() == 0 || f2.calls.Load() == 0; i++ {
		if i == 500 {
			t.Fatalf("calls s1=%d s2=%d: want both used", f1.calls.Load(), f2.calls.Load())
		}
		if _, err := cl.Connect(ctx, &pb.ConnectReq{Device: "ok"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // deliberate pacing: let the balancer connect to both
	}
	shutdown(t, s1.Shutdown)
	// Calls in flight when s1 went away may fail (no retries); after the
	// balancer noticed, every call goes to s2.
	deadline := time.Now().Add(5 * time.Second)
	ok := 0
	for ok < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d calls succeeded after s1 stopped", ok)
		}
		r, err := cl.Connect(ctx, &pb.ConnectReq{Device: "ok"})
		if err != nil {
			ok = 0
			time.Sleep(10 * time.Millisecond) // deliberate pacing between retries
			continue
		}
		if r.User != "s2" {
			t.Fatalf("answered by %s after s1 stopped", r.User)
		}
		ok++
	}
}

func TestServerLifecycle(t *testing.T) {
	if _, err := NewServer(ServerConfig{}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("NewServer without Addr = %v", err)
	}
	if _, err := Dial(nil, DialConfig{}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Dial without address = %v", err)
	}
	if _, err := Dial([]string{"a:1"}, DialConfig{CallTimeout: -1}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Dial with negative timeout = %v", err)
	}
	s, err := NewServer(ServerConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr() != nil {
		t.Fatal("Addr before Listen")
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	if err := s.Start(); err != nil || s.Addr().String() != addr.String() {
		t.Fatalf("Start = %v, addr %v then %v", err, addr, s.Addr())
	}
	if err := s.Start(); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start = %v", err)
	}
	for range 2 {
		shutdown(t, s.Shutdown)
	}
	if err := s.Start(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Shutdown = %v", err)
	}
	// A server never started shuts down too, releasing its listener.
	s2, _ := NewServer(ServerConfig{Addr: "127.0.0.1:0"})
	_ = s2.Listen()
	shutdown(t, s2.Shutdown)
}

// TestGracefulShutdownWaitsForCalls: an in-flight call finishes; the
// deadline cuts a call that does not.
func TestGracefulShutdownBounded(t *testing.T) {
	s, err := NewServer(ServerConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	fl := &fakeLogic{name: "s"}
	s.Register(&pb.Logic_ServiceDesc, fl)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	cl := dialT(t, DialConfig{CallTimeout: 10 * time.Second}, s.Addr().String())
	var wg sync.WaitGroup
	var callErr error
	wg.Go(func() { _, callErr = cl.Connect(context.Background(), &pb.ConnectReq{Device: "hang"}) })
	// Shutdown must find the call in its handler, however loaded the machine.
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, func() error {
		if fl.calls.Load() == 0 {
			return errors.New("the hung call has not reached the handler")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	began := time.Now()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a hung call = %v, want deadline exceeded", err)
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Fatalf("Shutdown took %v", d)
	}
	wg.Wait()
	if callErr == nil {
		t.Fatal("hung call succeeded")
	}
}
