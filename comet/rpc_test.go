package comet

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msync/msync/pkg/api"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
	wirepb "github.com/msync/msync/pkg/protocol/pb"
)

// upstream is a real HTTP server on loopback: /echo answers with what it got
// (method, path, headers, body as JSON), /block waits until released or the
// request is cancelled, /huge answers more than any limit, /fail answers 500.
type upstream struct {
	srv     *httptest.Server
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	blocked int
}

type echoed struct {
	Method, Path string
	Headers      map[string]string
	Body         string
	Proto        string
}

func newUpstream(t *testing.T, h2c bool) *upstream {
	u := &upstream{release: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/echo/", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		hs := map[string]string{}
		for k := range r.Header {
			hs[k] = r.Header.Get(k)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Upstream", "yes")
		_ = json.NewEncoder(w).Encode(echoed{Method: r.Method, Path: r.URL.RequestURI(), Headers: hs, Body: string(b), Proto: r.Proto})
	})
	mux.HandleFunc("/block", func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.blocked++
		u.mu.Unlock()
		select {
		case <-u.release:
			_, _ = w.Write([]byte("released"))
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/huge", func(w http.ResponseWriter, _ *http.Request) {
		chunk := []byte(strings.Repeat("x", 64<<10))
		for range 64 { // 4 MiB, streamed without a length
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/fail", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	})
	u.srv = httptest.NewUnstartedServer(mux)
	if h2c {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		p.SetHTTP1(true)
		u.srv.Config.Protocols = &p
	}
	u.srv.Start()
	t.Cleanup(func() { u.unblock(); u.srv.Close() })
	return u
}

func (u *upstream) unblock() { u.once.Do(func() { close(u.release) }) }
func (u *upstream) blockedCalls() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.blocked
}

func (cl *client) request(r *wirepb.Request) uint32 {
	cl.t.Helper()
	return cl.sendMsg(protocol.OpRequest, r)
}

// expectResponse reads frames until a RESPONSE, returning the frames before it.
func (cl *client) expectResponse() (*wirepb.Response, uint32, []protocol.Frame) {
	cl.t.Helper()
	var before []protocol.Frame
	for {
		f := cl.next()
		if f.Op == protocol.OpResponse {
			var r wirepb.Response
			if err := protocol.Unmarshal(f, &r); err != nil {
				cl.t.Fatal(err)
			}
			return &r, f.Seq, before
		}
		if f.Op == protocol.OpError {
			cl.t.Fatalf("got %s while waiting for a RESPONSE", describe(f))
		}
		before = append(before, f)
	}
}

func rpcEnv(t *testing.T, ups []Upstream, mod func(*Config)) *testEnv {
	return newEnv(t, func(c *Config, _ *fakeLogic) {
		c.Upstreams = ups
		if mod != nil {
			mod(c)
		}
	})
}

func TestRPCEchoCarriesVerifiedIdentity(t *testing.T) {
	for _, h2c := range []bool{false, true} {
		name := map[bool]string{false: "http1", true: "h2c"}[h2c]
		t.Run(name, func(t *testing.T) {
			up := newUpstream(t, h2c)
			url := up.srv.URL + "/echo"
			if h2c {
				url = strings.Replace(url, "http://", "h2c://", 1)
			}
			e := rpcEnv(t, []Upstream{{Name: "svc", URL: url, PlatformHeader: "X-Plat"}}, nil)
			cl := e.dial()
			ar := cl.auth("good-alice", "dev1", "ios", "5.1.0", []string{"chat"})
			if ar.MaxRequests != defaultMaxRequests {
				t.Fatalf("AUTH_REPLY max_requests %d", ar.MaxRequests)
			}
			seq := cl.request(&wirepb.Request{Id: 42, Service: "svc", Method: "PUT", Path: "/a/b?q=1", Body: []byte("hello"),
				Headers: map[string]string{"X-Trace": "t1", "x-msync-user": "mallory", "X-MSYNC-DEVICE": "stolen", "x-plat": "fake"}})
			r, rseq, _ := cl.expectResponse()
			if r.Id != 42 || rseq != seq || r.Status != 200 {
				t.Fatalf("response id %d seq %d (want %d) status %d body %q", r.Id, rseq, seq, r.Status, r.Body)
			}
			if r.Headers["Content-Type"] != "application/json" || r.Headers["X-Upstream"] != "yes" {
				t.Fatalf("headers %v", r.Headers)
			}
			var got echoed
			if err := json.Unmarshal(r.Body, &got); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"X-Msync-User": "alice", "X-Msync-Device": "dev1", "X-Plat": "ios",
				"X-Msync-App-Version": "5.1.0", "X-Trace": "t1"}
			for k, v := range want {
				if got.Headers[k] != v {
					t.Errorf("upstream header %s = %q, want %q (all: %v)", k, got.Headers[k], v, got.Headers)
				}
			}
			if got.Method != "PUT" || got.Path != "/echo/a/b?q=1" || got.Body != "hello" {
				t.Fatalf("upstream got %+v", got)
			}
			if wantProto := map[bool]string{false: "HTTP/1.1", true: "HTTP/2.0"}[h2c]; got.Proto != wantProto {
				t.Fatalf("upstream proto %s, want %s", got.Proto, wantProto)
			}
			if v := counterValue(t, e.c.rpc.requests.WithLabelValues("svc", "2xx")); v != 1 {
				t.Fatalf("requests_total{svc,2xx} = %v", v)
			}
		})
	}
}

// Each refusal has its own status, and the connection stays up after it.
func TestRPCStatuses(t *testing.T) {
	up := newUpstream(t, false)
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "http://" + dead.Addr().String()
	dead.Close() // connection refused from now on
	e := rpcEnv(t, []Upstream{
		{Name: "svc", URL: up.srv.URL, MaxRequestBytes: 100, MaxResponseBytes: 1000},
		{Name: "slow", URL: up.srv.URL, Timeout: 50 * time.Millisecond},
		{Name: "down", URL: deadURL},
	}, nil)
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "1.0", nil)
	tests := []struct {
		name string
		r    *wirepb.Request
		want uint32
	}{
		{"upstream 500 passed through", &wirepb.Request{Service: "svc", Path: "/fail"}, 500},
		{"upstream 404 passed through", &wirepb.Request{Service: "svc", Path: "/nothing"}, 404},
		{"unknown service", &wirepb.Request{Service: "nope", Path: "/"}, 601},
		{"empty service", &wirepb.Request{Path: "/"}, 601},
		{"upstream down", &wirepb.Request{Service: "down", Path: "/"}, 602},
		{"upstream timeout", &wirepb.Request{Service: "slow", Path: "/block"}, 603},
		{"client timeout smaller", &wirepb.Request{Service: "svc", Path: "/block", TimeoutMs: 30}, 603},
		{"request too large", &wirepb.Request{Service: "svc", Path: "/echo/", Body: make([]byte, 101)}, 606},
		{"response too large", &wirepb.Request{Service: "svc", Path: "/huge"}, 607},
		{"bad path", &wirepb.Request{Service: "svc", Path: "/../admin"}, 608},
		{"bad method", &wirepb.Request{Service: "svc", Method: "CONNECT", Path: "/"}, 608},
		{"hop header", &wirepb.Request{Service: "svc", Path: "/", Headers: map[string]string{"Host": "evil"}}, 608},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.r.Id = uint32(i + 1)
			cl.request(tt.r)
			r, _, _ := cl.expectResponse()
			if r.Id != tt.r.Id || r.Status != tt.want {
				t.Fatalf("id %d status %d body %q, want id %d status %d", r.Id, r.Status, r.Body, tt.r.Id, tt.want)
			}
			if tt.want >= 600 && len(r.Body) == 0 {
				t.Fatal("msync status without a reason")
			}
			if tt.want == 602 && strings.Contains(string(r.Body), "127.0.0.1") {
				t.Fatalf("reason leaks the upstream address: %q", r.Body)
			}
			cl.expectQuiet() // still up: heartbeats answered
			if cl.conn.isClosed() {
				t.Fatal("connection closed")
			}
		})
	}
	if v := counterValue(t, e.c.rpc.errors.WithLabelValues(unknownServiceLabel, "unknown_service")); v != 2 {
		t.Fatalf("errors_total{_unknown} = %v", v)
	}
}

func TestRPCInFlightLimits(t *testing.T) {
	up := newUpstream(t, false)
	e := rpcEnv(t, []Upstream{{Name: "svc", URL: up.srv.URL, MaxInFlight: 3}}, func(c *Config) { c.MaxRequests = 2 })
	a, b := e.dial(), e.dial()
	if ar := a.auth("good-alice", "dev1", "ios", "1.0", nil); ar.MaxRequests != 2 {
		t.Fatalf("max_requests %d", ar.MaxRequests)
	}
	b.auth("good-bob", "dev2", "ios", "1.0", nil)
	a.request(&wirepb.Request{Id: 1, Service: "svc", Path: "/block"})
	a.request(&wirepb.Request{Id: 2, Service: "svc", Path: "/block"})
	a.request(&wirepb.Request{Id: 3, Service: "svc", Path: "/block"}) // session limit
	if r, _, _ := a.expectResponse(); r.Id != 3 || r.Status != uint32(protocol.StatusTooManyRequests) {
		t.Fatalf("third request: id %d status %d", r.Id, r.Status)
	}
	b.request(&wirepb.Request{Id: 1, Service: "svc", Path: "/block"}) // service's third
	eventually(t, "3 calls at the upstream", func() bool { return up.blockedCalls() == 3 })
	b.request(&wirepb.Request{Id: 2, Service: "svc", Path: "/block"}) // service limit
	if r, _, _ := b.expectResponse(); r.Id != 2 || r.Status != uint32(protocol.StatusServiceBusy) {
		t.Fatalf("fourth call: id %d status %d", r.Id, r.Status)
	}
	up.unblock()
	got := map[uint32]uint32{}
	for range 2 {
		r, _, _ := a.expectResponse()
		got[r.Id] = r.Status
	}
	if got[1] != 200 || got[2] != 200 {
		t.Fatalf("a's answers %v", got)
	}
	if r, _, _ := b.expectResponse(); r.Id != 1 || r.Status != 200 || string(r.Body) != "released" {
		t.Fatalf("b's answer id %d status %d", r.Id, r.Status)
	}
	// Slots are free again.
	a.request(&wirepb.Request{Id: 1, Service: "svc", Path: "/block"})
	if r, _, _ := a.expectResponse(); r.Status != 200 {
		t.Fatalf("after release: %d", r.Status)
	}
	eventually(t, "in-flight gauge back to 0", func() bool {
		return gaugeValue(t, e.c.rpc.inFlight.WithLabelValues("svc")) == 0
	})
}

// A call parked at a slow upstream must not hold up the session: heartbeats
// are answered and live SYNC pages written while it waits.
func TestRPCSlowUpstreamDoesNotDelaySync(t *testing.T) {
	up := newUpstream(t, false)
	e := rpcEnv(t, []Upstream{{Name: "svc", URL: up.srv.URL, Timeout: time.Minute}}, nil)
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "1.0", []string{"chat"})
	cl.expectQuiet()
	cl.request(&wirepb.Request{Id: 1, Service: "svc", Path: "/block"})
	eventually(t, "call at the upstream", func() bool { return up.blockedCalls() == 1 })
	for i := range 3 {
		op := e.logic.add(chatAlice, &oplog.Oplog{Payload: []byte("live")})
		if _, err := e.c.Push(context.Background(), &pb.PushReq{Items: []*pb.PushItem{{Keys: []string{cl.key}, Oplog: op}}}); err != nil {
			t.Fatal(err)
		}
		s := cl.expectSync()
		if p := s.Pages[0]; p.Upto != uint64(i+1) || !p.Live {
			t.Fatalf("page %s", pagesString(s))
		}
		cl.ack(chatAlice, uint64(i+1))
	}
	cl.expectQuiet()
	up.unblock()
	if r, _, before := cl.expectResponse(); r.Id != 1 || r.Status != 200 || len(before) != 0 {
		t.Fatalf("response %d %d after %d frames", r.Id, r.Status, len(before))
	}
}

func TestRPCProtocolErrors(t *testing.T) {
	up := newUpstream(t, false)
	tests := []struct {
		name string
		send func(cl *client)
		code protocol.Code
	}{
		{"before auth", func(cl *client) { cl.request(&wirepb.Request{Id: 1, Service: "svc", Path: "/"}) }, protocol.CodeNotAuthed},
		{"undecodable", func(cl *client) {
			cl.auth("good-a", "d", "ios", "1", nil)
			cl.sendRaw(protocol.OpRequest, []byte{0xff, 0xff})
		}, protocol.CodeBadFrame},
		{"id zero", func(cl *client) {
			cl.auth("good-a", "d", "ios", "1", nil)
			cl.request(&wirepb.Request{Service: "svc", Path: "/"})
		}, protocol.CodeBadFrame},
		{"duplicate id in flight", func(cl *client) {
			cl.auth("good-a", "d", "ios", "1", nil)
			cl.request(&wirepb.Request{Id: 5, Service: "svc", Path: "/block"})
			cl.request(&wirepb.Request{Id: 5, Service: "svc", Path: "/block"})
		}, protocol.CodeOutOfOrder},
		{"response from client", func(cl *client) {
			cl.auth("good-a", "d", "ios", "1", nil)
			cl.sendMsg(protocol.OpResponse, &wirepb.Response{Id: 1})
		}, protocol.CodeUnknownOp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := rpcEnv(t, []Upstream{{Name: "svc", URL: up.srv.URL}}, nil)
			cl := e.dial()
			tt.send(cl)
			cl.expectError(tt.code)
		})
	}
}

// Closing a session cancels its calls at the upstream.
func TestRPCSessionCloseCancelsCalls(t *testing.T) {
	up := newUpstream(t, false)
	e := rpcEnv(t, []Upstream{{Name: "svc", URL: up.srv.URL, Timeout: time.Minute}}, nil)
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "1.0", nil)
	cl.request(&wirepb.Request{Id: 1, Service: "svc", Path: "/block"})
	eventually(t, "call at the upstream", func() bool { return up.blockedCalls() == 1 })
	cl.conn.Close(nil, errors.New("client went away"))
	eventually(t, "call cancelled", func() bool {
		return gaugeValue(t, e.c.rpc.inFlight.WithLabelValues("svc")) == 0
	})
}

func TestSetUpstreams(t *testing.T) {
	up := newUpstream(t, false)
	e := rpcEnv(t, nil, nil)
	cl := e.dial()
	cl.auth("good-alice", "dev1", "ios", "1.0", nil)
	cl.request(&wirepb.Request{Id: 1, Service: "svc", Path: "/echo/"})
	if r, _, _ := cl.expectResponse(); r.Status != 601 {
		t.Fatalf("before reload: %d", r.Status)
	}
	err := e.c.SetUpstreams([]Upstream{{Name: "svc", URL: "ftp://x"}, {Name: "bad name", URL: up.srv.URL}, {Name: "a", URL: up.srv.URL, MaxResponseBytes: 1 << 30}})
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "ftp://x") || !strings.Contains(err.Error(), "bad name") || !strings.Contains(err.Error(), "max_response_bytes") {
		t.Fatalf("bad set: %v", err)
	}
	if got := e.c.Upstreams(); len(got) != 0 {
		t.Fatalf("a refused set was applied: %v", got)
	}
	if err := e.c.SetUpstreams([]Upstream{{Name: "svc", URL: up.srv.URL}}); err != nil {
		t.Fatal(err)
	}
	cl.request(&wirepb.Request{Id: 2, Service: "svc", Path: "/echo/"})
	if r, _, _ := cl.expectResponse(); r.Status != 200 || r.Id != 2 {
		t.Fatalf("after reload: %d", r.Status)
	}
}

func TestUpstreamConfig(t *testing.T) {
	fl := newFakeLogic()
	for _, bad := range []Config{
		{MaxRequests: 1000},
		{Upstreams: []Upstream{{Name: "x", URL: "http://h", MaxRequestBytes: 64 << 10}}},
		{Upstreams: []Upstream{{Name: "x", URL: "http://h?q=1"}}},
		{Upstreams: []Upstream{{Name: "x", URL: "http://h", UserHeader: "Host"}}},
		{Upstreams: []Upstream{{Name: "x", URL: "http://h", UserHeader: "X-A", DeviceHeader: "x-a"}}},
		{Upstreams: []Upstream{{Name: "x", URL: "http://h"}, {Name: "x", URL: "http://h"}}},
	} {
		bad.Logic = api.LocalLogic(fl)
		if _, err := New(bad); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("New(%+v) = %v, want ErrInvalidConfig", bad.Upstreams, err)
		}
	}
}
