package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msync/msync/pkg/client"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

// RPC over the connection (docs/protocol.md §17) against a real HTTP
// upstream the test starts: echo, slow, failing and huge answers.

type rpcUpstream struct {
	srv     *httptest.Server
	release chan struct{}
	once    sync.Once
	slow    atomic.Int32 // calls parked in /slow
}

type echoAnswer struct {
	User, Device, Platform, Version string
	Method, Path, Body              string
}

func startRPCUpstream(t *testing.T) *rpcUpstream {
	u := &rpcUpstream{release: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/echo/", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(echoAnswer{User: r.Header.Get("X-Msync-User"), Device: r.Header.Get("X-Msync-Device"),
			Platform: r.Header.Get("X-Msync-Platform"), Version: r.Header.Get("X-Msync-App-Version"),
			Method: r.Method, Path: r.URL.RequestURI(), Body: string(b)})
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		u.slow.Add(1)
		select {
		case <-u.release:
			_, _ = w.Write([]byte("finally"))
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/fail", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "upstream broke", http.StatusBadGateway)
	})
	mux.HandleFunc("/huge", func(w http.ResponseWriter, _ *http.Request) {
		chunk := []byte(strings.Repeat("h", 64<<10))
		for range 128 { // 8 MiB
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	u.srv = httptest.NewServer(mux)
	t.Cleanup(func() { u.unblock(); u.srv.Close() })
	return u
}

func (u *rpcUpstream) unblock() { u.once.Do(func() { close(u.release) }) }

// startRPCNode starts msync all with upstreams on u: echo (HTTP/1.1), echo2
// (h2c), slow (1 minute timeout), quick (100 ms timeout) and down.
func startRPCNode(t *testing.T, u *rpcUpstream) *node {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	host := strings.TrimPrefix(u.srv.URL, "http://")
	cfg := testConfig + fmt.Sprintf(`upstreams:
  echo: {url: "http://%[1]s/echo", max_in_flight: 1024, max_request_bytes: 4096}
  slow: {url: "http://%[1]s", timeout: 1m}
  quick: {url: "http://%[1]s", timeout: 100ms}
  down: {url: "http://%[2]s"}
`, host, deadAddr)
	return startNodeWith(t, cfg, "")
}

// expectResponse waits for the RESPONSE of request id.
func (d *device) expectResponse(id uint32, timeout time.Duration) *pb.Response {
	d.t.Helper()
	var r *pb.Response
	eventually(d.t, timeout, fmt.Sprintf("RESPONSE %d", id), func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		if len(d.errs) > 0 {
			d.t.Fatalf("waiting for RESPONSE %d: got ERROR %d %s", id, d.errs[0].Code, d.errs[0].Message)
		}
		for i, o := range d.other {
			var m pb.Response
			if o.Op == protocol.OpResponse && protocol.Unmarshal(o, &m) == nil && m.Id == id {
				r = &m
				d.other = append(d.other[:i], d.other[i+1:]...)
				return true
			}
		}
		return false
	})
	return r
}

// 50 devices, 10 calls each in flight at once: every call is answered with
// its own body and its own device's verified identity.
func TestRPCConcurrentCallsFromManyDevices(t *testing.T) {
	u := startRPCUpstream(t)
	n := startRPCNode(t, u)
	const devices, perDevice = 50, 10
	clients := make([]*client.Client, devices)
	for i := range clients {
		user := fmt.Sprintf("user%d", i%10) // several devices per user
		clients[i] = startSDK(t, n.Comet.Addr().String(), client.Options{
			TokenProvider: func(context.Context) (string, error) { return n.token(t, user), nil },
			Device:        fmt.Sprintf("rpc-dev-%d", i), Platform: "android", AppVersion: "3.1.4",
			BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
		}, map[string]client.Handler{"demo": ignore})
	}
	var wg sync.WaitGroup
	errs := make(chan error, devices*perDevice)
	for i, c := range clients {
		for k := range perDevice {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				body := fmt.Sprintf("d%d-c%d", i, k)
				resp, err := c.Call(ctx, "echo", fmt.Sprintf("/call/%d/%d", i, k), []byte(body))
				if err != nil {
					errs <- fmt.Errorf("device %d call %d: %w", i, k, err)
					return
				}
				var got echoAnswer
				if err := json.Unmarshal(resp.Body, &got); err != nil || resp.Status != 200 {
					errs <- fmt.Errorf("device %d call %d: status %d body %q", i, k, resp.Status, resp.Body)
					return
				}
				want := echoAnswer{User: fmt.Sprintf("user%d", i%10), Device: fmt.Sprintf("rpc-dev-%d", i), Platform: "android",
					Version: "3.1.4", Method: "POST", Path: fmt.Sprintf("/echo/call/%d/%d", i, k), Body: body}
				if got != want {
					errs <- fmt.Errorf("device %d call %d: answer %+v, want %+v", i, k, got, want)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed++; failed <= 5 {
			t.Error(err)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d calls failed", failed, devices*perDevice)
	}
	// /metrics counts them per service.
	mfs, err := n.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var answered float64
	var histogram uint64
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			svc := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "service" {
					svc = l.GetValue()
				}
			}
			if svc != "echo" {
				continue
			}
			switch mf.GetName() {
			case "msync_comet_rpc_requests_total":
				answered += m.GetCounter().GetValue()
			case "msync_comet_rpc_duration_seconds":
				histogram += m.GetHistogram().GetSampleCount()
			}
		}
	}
	if answered != devices*perDevice || histogram != devices*perDevice {
		t.Fatalf("metrics: requests_total{echo} %v, duration count %d, want %d", answered, histogram, devices*perDevice)
	}
}

// A call parked at a slow upstream does not delay SYNC frames on the same
// connection: oplogs published meanwhile arrive while it waits.
func TestRPCSlowUpstreamDoesNotDelaySync(t *testing.T) {
	u := startRPCUpstream(t)
	n := startRPCNode(t, u)
	d := dial(t, n)
	if ar := d.auth(n.token(t, "alice"), "slow-dev", "demo"); ar.MaxRequests != 16 {
		t.Fatalf("max_requests %d", ar.MaxRequests)
	}
	d.sendMsg(protocol.OpRequest, &pb.Request{Id: 1, Service: "slow", Method: "GET", Path: "/slow"})
	eventually(t, 5*time.Second, "call at the upstream", func() bool { return u.slow.Load() == 1 })
	for i := range 5 {
		n.publish(t, toUser("alice", fmt.Sprintf("while-waiting-%d", i)))
	}
	got := d.waitGot(5, 5*time.Second)
	for i, r := range got {
		if r.Payload != fmt.Sprintf("while-waiting-%d", i) {
			t.Fatalf("oplog %d: %+v", i, r)
		}
	}
	d.mu.Lock()
	for _, o := range d.other {
		if o.Op == protocol.OpResponse {
			t.Fatal("RESPONSE before the upstream answered")
		}
	}
	d.mu.Unlock()
	u.unblock()
	if r := d.expectResponse(1, 5*time.Second); r.Status != 200 || string(r.Body) != "finally" {
		t.Fatalf("slow answer: %d %q", r.Status, r.Body)
	}
}

// Every failure has its own status and the connection stays up.
func TestRPCStatusesEndToEnd(t *testing.T) {
	u := startRPCUpstream(t)
	n := startRPCNode(t, u)
	d := dial(t, n)
	d.auth(n.token(t, "bob"), "status-dev", "demo")
	tests := []struct {
		name string
		r    *pb.Request
		want uint32
	}{
		{"echo", &pb.Request{Service: "echo", Path: "/x", Headers: map[string]string{"X-Msync-User": "mallory"}}, 200},
		{"upstream error passed through", &pb.Request{Service: "slow", Path: "/fail"}, 502},
		{"unknown service", &pb.Request{Service: "billing", Path: "/"}, 601},
		{"upstream down", &pb.Request{Service: "down", Path: "/"}, 602},
		{"upstream timeout", &pb.Request{Service: "quick", Path: "/slow"}, 603},
		{"request too large", &pb.Request{Service: "echo", Path: "/x", Body: make([]byte, 4097)}, 606},
		{"huge answer", &pb.Request{Service: "slow", Path: "/huge"}, 607},
		{"bad path", &pb.Request{Service: "echo", Path: "/x/../../admin"}, 608},
	}
	for i, tt := range tests {
		tt.r.Id = uint32(100 + i)
		d.sendMsg(protocol.OpRequest, tt.r)
		r := d.expectResponse(tt.r.Id, 10*time.Second)
		if r.Status != tt.want {
			t.Fatalf("%s: status %d %q, want %d", tt.name, r.Status, r.Body, tt.want)
		}
		if tt.name == "echo" {
			var got echoAnswer
			if err := json.Unmarshal(r.Body, &got); err != nil || got.User != "bob" || got.Device != "status-dev" {
				t.Fatalf("identity at the upstream: %+v %v (the client claimed mallory)", got, err)
			}
		}
	}
	// Still the same connection: a publish is delivered on it.
	n.publish(t, toUser("bob", "still-up"))
	if got := d.waitGot(1, 5*time.Second); got[0].Payload != "still-up" {
		t.Fatalf("got %+v", got)
	}
}

// Bad input closes the connection with the documented ERROR code.
func TestRPCBadInput(t *testing.T) {
	u := startRPCUpstream(t)
	n := startRPCNode(t, u)
	tests := []struct {
		name string
		run  func(d *device)
		code protocol.Code
	}{
		{"REQUEST before AUTH", func(d *device) {
			d.sendMsg(protocol.OpRequest, &pb.Request{Id: 1, Service: "echo", Path: "/"})
		}, protocol.CodeNotAuthed},
		{"malformed REQUEST", func(d *device) {
			d.auth(n.token(t, "carol"), "bad-1", "demo")
			d.send(protocol.OpRequest, []byte{0x0a, 0xff, 0x01})
		}, protocol.CodeBadFrame},
		{"REQUEST over the frame limit", func(d *device) {
			d.auth(n.token(t, "carol"), "bad-2", "demo")
			d.sendMsg(protocol.OpRequest, &pb.Request{Id: 1, Service: "echo", Path: "/", Body: make([]byte, 70<<10)})
		}, protocol.CodeFrameTooLarge},
		{"id reused while in flight", func(d *device) {
			d.auth(n.token(t, "carol"), "bad-3", "demo")
			d.sendMsg(protocol.OpRequest, &pb.Request{Id: 9, Service: "slow", Path: "/slow"})
			d.sendMsg(protocol.OpRequest, &pb.Request{Id: 9, Service: "slow", Path: "/slow"})
		}, protocol.CodeOutOfOrder},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := dial(t, n)
			tt.run(d)
			d.expectError(tt.code, 5*time.Second)
		})
	}
}

// The Go SDK reports msync's statuses as *client.CallError.
func TestRPCSDKCallError(t *testing.T) {
	u := startRPCUpstream(t)
	n := startRPCNode(t, u)
	c := startSDK(t, n.Comet.Addr().String(), client.Options{
		TokenProvider: func(context.Context) (string, error) { return n.token(t, "dave"), nil }, Device: "sdk-err",
	}, map[string]client.Handler{"demo": ignore})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var ce *client.CallError
	if _, err := c.Call(ctx, "down", "/", nil); !errors.As(err, &ce) || ce.Status != protocol.StatusUnavailable || !ce.Retryable() {
		t.Fatalf("down: %v", err)
	}
	// The client's deadline is smaller than the service's timeout: the
	// server gives up then too (timeout_ms): the SDK returns ctx's error, or
	// the server's 603 when that arrives first.
	short, cancel2 := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel2()
	// Both give up at about the same time: either answer is right.
	if _, err := c.Call(short, "slow", "/slow", nil); !errors.Is(err, context.DeadlineExceeded) &&
		!(errors.As(err, &ce) && ce.Status == protocol.StatusTimeout) {
		t.Fatalf("deadline: %v", err)
	}
	resp, err := c.Call(ctx, "slow", "/fail", nil)
	if err != nil || resp.Status != 502 || !strings.Contains(string(resp.Body), "upstream broke") {
		t.Fatalf("failing upstream: %+v %v", resp, err)
	}
}
