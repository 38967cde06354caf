package client

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

// rpcHandshake answers AUTH with max_requests n.
func (fc *fakeConn) rpcHandshake(n uint32) {
	fc.t.Helper()
	fc.auth()
	fc.send(protocol.OpAuthReply, fc.seq, &pb.AuthReply{User: "alice", Session: "s1", HeartbeatMs: 60000, MaxRequests: n,
		Channels: []*pb.ChannelInfo{{Biz: testBiz, Channel: testChan}}})
}

// expectRequest reads frames until a REQUEST (skipping heartbeats).
func (fc *fakeConn) expectRequest() (*pb.Request, uint32) {
	fc.t.Helper()
	for {
		f := fc.next()
		if f.Op == protocol.OpHeartbeat {
			continue
		}
		if f.Op != protocol.OpRequest {
			fc.t.Fatalf("got %s, want REQUEST", f.Op)
		}
		var r pb.Request
		if err := protocol.Unmarshal(f, &r); err != nil {
			fc.t.Fatal(err)
		}
		return &r, f.Seq
	}
}

type callResult struct {
	resp *Response
	err  error
}

func goCall(c *Client, ctx context.Context, path string) chan callResult {
	ch := make(chan callResult, 1)
	go func() {
		r, err := c.Call(ctx, "svc", path, []byte(path))
		ch <- callResult{r, err}
	}()
	return ch
}

func TestCallOutOfOrderWithinLimit(t *testing.T) {
	srv := newFakeServer(t)
	c := startClient(t, srv, &recorder{}, nil, nil)
	fc := srv.accept()
	fc.rpcHandshake(2)
	ctx := context.Background()
	a, b := goCall(c, ctx, "/a"), goCall(c, ctx, "/b")
	got := map[string]*pb.Request{}
	seqs := map[string]uint32{}
	for range 2 {
		r, seq := fc.expectRequest()
		got[r.Path], seqs[r.Path] = r, seq
	}
	third := goCall(c, ctx, "/c")
	fc.expectSilence(100 * time.Millisecond) // the third waits for a slot: max_requests 2
	first := "/a"
	if got[first] == nil {
		first = "/b"
	}
	var other string
	for p := range got {
		if p != first {
			other = p
		}
	}
	// Answer the later one first, then the other; ids route them.
	fc.send(protocol.OpResponse, seqs[other], &pb.Response{Id: got[other].Id, Status: 201, Body: []byte("re" + other)})
	r, _ := fc.expectRequest() // the freed slot lets the third go
	fc.send(protocol.OpResponse, 99, &pb.Response{Id: r.Id, Status: uint32(protocol.StatusTimeout), Body: []byte("upstream timeout")})
	fc.send(protocol.OpResponse, seqs[first], &pb.Response{Id: got[first].Id, Status: 200, Body: []byte("re" + first),
		Headers: map[string]string{"Content-Type": "text/plain"}})
	results := map[string]callResult{"/a": <-a, "/b": <-b, "/c": <-third}
	for _, p := range []string{"/a", "/b"} {
		res := results[p]
		if res.err != nil || string(res.resp.Body) != "re"+p {
			t.Fatalf("%s: %+v %v", p, res.resp, res.err)
		}
	}
	if results[first].resp.Status != 200 || results[first].resp.Headers["Content-Type"] != "text/plain" || results[other].resp.Status != 201 {
		t.Fatalf("statuses %+v %+v", results[first].resp, results[other].resp)
	}
	var ce *CallError
	if err := results["/c"].err; !errors.As(err, &ce) || ce.Status != protocol.StatusTimeout || !ce.Retryable() || ce.Reason != "upstream timeout" {
		t.Fatalf("third: %v", err)
	}
	if got["/a"].Id == got["/b"].Id || got["/a"].Id == 0 || string(got["/a"].Body) != "/a" || got["/a"].Service != "svc" {
		t.Fatalf("requests %v %v", got["/a"], got["/b"])
	}
}

func TestCallDeadlineAndLoss(t *testing.T) {
	srv := newFakeServer(t)
	c := startClient(t, srv, &recorder{}, nil, nil)
	fc := srv.accept()
	fc.rpcHandshake(4)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	ch := goCall(c, ctx, "/slow")
	r, _ := fc.expectRequest()
	if r.TimeoutMs == 0 || r.TimeoutMs > 300 {
		t.Fatalf("timeout_ms %d, want the deadline's remaining time", r.TimeoutMs)
	}
	if res := <-ch; !errors.Is(res.err, context.DeadlineExceeded) {
		t.Fatalf("unanswered call: %v", res.err)
	}
	// A late answer is dropped and frees the slot.
	fc.send(protocol.OpResponse, 0, &pb.Response{Id: r.Id, Status: 200})

	ch = goCall(c, context.Background(), "/lost")
	fc.expectRequest()
	fc.c.Close()
	if res := <-ch; !errors.Is(res.err, ErrCallLost) {
		t.Fatalf("call on a closed connection: %v", res.err)
	}
}

func TestCallRefusedLocally(t *testing.T) {
	srv := newFakeServer(t)
	c := startClient(t, srv, &recorder{}, nil, nil)
	if _, err := c.Call(context.Background(), "svc", "no-slash", nil); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("bad path: %v", err)
	}
	if _, err := c.Call(context.Background(), "svc", "/", make([]byte, protocol.DefaultMaxFrame)); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("huge body: %v", err)
	}
	// Not connected yet: the call waits for a session until its deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Call(ctx, "svc", "/", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("no session: %v", err)
	}
	fc := srv.accept()
	fc.rpcHandshake(0) // an older server
	eventually(t, c.Connected, "connected")
	if _, err := c.Call(context.Background(), "svc", "/", nil); !errors.Is(err, ErrRPCUnsupported) {
		t.Fatalf("server without RPC: %v", err)
	}
}
