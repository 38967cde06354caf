// Package e2e tests msync's guarantees (README, docs/protocol.md) end to end: real netpoll
// sockets, real HTTP, a real Pebble directory, every tier in-process through
// internal/cluster, and a strict raw-protocol device that records duplicates
// and gaps instead of hiding them.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/internal/cluster"
	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/pkg/auth"
	"github.com/msync/msync/pkg/client"
	"github.com/msync/msync/pkg/config"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

const testSecret = "e2e-secret-0123456789"

// testConfig is the all-in-one config the tests start from: random ports,
// and comet deadlines far longer than a test on a loaded machine may take
// (test devices send no heartbeats), so only the tests of the deadlines
// trip them, with shortDeadlines.
const testConfig = `
secret: ` + testSecret + `
dev: true # short test keys
api_keys:
  - {key: test-key, bizs: ["*"]}
  - {key: demo-only, bizs: [demo]}
comet:
  addr: 127.0.0.1:0
  ws_addr: 127.0.0.1:0
  heartbeat: 10s
  auth_timeout: 5s
  ack_timeout: 30s
  page_limit: 50
  write_queue_bytes: 1048576
logic:
  http_addr: 127.0.0.1:0
bizs:
  - {name: demo, target: user, ttl: 7d}
  - {name: cmd, target: device, ttl: 1d}
  - {name: small, target: user, max_payload: 16}
`

// shortDeadlines is cfg (testConfig or one built like it) with the
// deadlines of docs/protocol.md short enough to watch expire: AUTH within
// 1s, heartbeats every 2s (the session is closed after 3 x 2s + 5s silence),
// pages acked within 3s.
func shortDeadlines(t testing.TB, cfg string) string {
	t.Helper()
	for _, r := range [][2]string{{"heartbeat: 10s", "heartbeat: 2s"}, {"auth_timeout: 5s", "auth_timeout: 1s"}, {"ack_timeout: 30s", "ack_timeout: 3s"}} {
		if !strings.Contains(cfg, "\n  "+r[0]+"\n") {
			t.Fatalf("config has no %q to shorten", r[0])
		}
		cfg = strings.Replace(cfg, "\n  "+r[0]+"\n", "\n  "+r[1]+"\n", 1)
	}
	return cfg
}

type node struct {
	*cluster.Node
	dir    string
	tokens *auth.Tokens
}

// startNode starts an all-in-one node with testConfig on dir (a new temp
// dir when empty).
func startNode(t testing.TB, dir string) *node {
	t.Helper()
	return startNodeWith(t, testConfig, dir)
}

// startNodeWith starts an all-in-one node with the given config on dir (a
// new temp dir when empty); the config's secret must be testSecret.
func startNodeWith(t testing.TB, yaml, dir string) *node {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	f, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	n, err := cluster.Start(cluster.Config{File: f, DataDir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.NewTokens(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	nd := &node{Node: n, dir: dir, tokens: tokens}
	t.Cleanup(func() { nd.stop(t) })
	return nd
}

func (n *node) stop(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

func (n *node) token(t testing.TB, user string) string {
	t.Helper()
	return n.deviceToken(t, user)
}

// deviceToken signs a token for user whose dev claim names devices: what a
// business mints at login to hand a device over to another user.
func (n *node) deviceToken(t testing.TB, user string, devices ...string) string {
	t.Helper()
	tok, err := n.tokens.Sign(user, time.Hour, devices...)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (n *node) api() string { return "http://" + n.Logic.HTTPAddr().String() }

// testLogger sends logs to t.Log at warn level and above, so a failing test
// shows what the server complained about.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// ---- HTTP ----

type publishResult struct {
	ID        uint64 `json:"id"`
	Channel   string `json:"channel"`
	Duplicate bool   `json:"duplicate"`
	Error     *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// call sends a JSON request and decodes the JSON answer into out (when not
// nil), failing the test on transport errors.
func call(t testing.TB, method, url, key string, body any, out any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, err := do(ctx, method, url, key, body, out)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return code
}

// postJSON is call without a test: for callers that expect the server to die.
func postJSON(ctx context.Context, url, key string, body any, out any) (int, error) {
	return do(ctx, "POST", url, key, body, out)
}

func do(ctx context.Context, method, url, key string, body any, out any) (int, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("status %d, body %q: %w", resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode, nil
}

// publish posts one oplog and fails the test unless it is acknowledged.
func (n *node) publish(t testing.TB, req map[string]any) publishResult {
	t.Helper()
	var res publishResult
	if code := call(t, "POST", n.api()+"/v1/sync", "test-key", req, &res); code != 200 {
		t.Fatalf("publish %v: status %d, %+v", req, code, res.Error)
	}
	return res
}

func toUser(user, payload string) map[string]any {
	return map[string]any{"biz": "demo", "user": user, "payload": payload}
}

// ---- raw protocol device ----

// received is one oplog as the device got it.
type received struct {
	Channel string
	ID      uint64
	Payload string
}

// device is a strict raw-protocol client: it applies the client rules of
// docs/protocol.md (pages, acks, gaps) and records every violation.
type device struct {
	t    testing.TB
	conn net.Conn
	done chan struct{} // closed when readLoop returns
	seq  uint32

	mu     sync.Mutex
	points map[string]uint64 // channel -> sync point
	got    []received
	dups   int // oplogs at or below the point (the server sent one twice)
	gaps   int // pages whose after was above the point
	errs   []*pb.Error
	kicks  []*pb.Kick
	other  []protocol.Frame // AUTH_REPLY, HEARTBEAT_REPLY ... for expect
	closed error

	// skipped sums ChannelPage.skipped (backlog latest:N) per channel, of
	// pages that moved the point.
	skipped map[string]uint64
	// rewinds counts rewind pages (upto < after: the point was ahead of
	// the channel) per channel.
	rewinds map[string]int
}

func dial(t testing.TB, n *node) *device {
	t.Helper()
	return dialAddr(t, n.Comet.Addr().String())
}

func dialAddr(t testing.TB, addr string) *device {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	d := newDevice(t, c)
	go d.readLoop()
	return d
}

func newDevice(t testing.TB, c net.Conn) *device {
	d := &device{t: t, conn: c, done: make(chan struct{}), points: map[string]uint64{}, skipped: map[string]uint64{}, rewinds: map[string]int{}}
	t.Cleanup(d.close)
	return d
}

func (d *device) close() {
	d.conn.Close()
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		d.t.Errorf("device reader did not stop")
	}
}

func (d *device) readLoop() {
	defer close(d.done)
	var buf []byte
	tmp := make([]byte, 64<<10)
	for {
		n, err := d.conn.Read(tmp)
		buf = append(buf, tmp[:n]...)
		for {
			f, used, derr := protocol.Decode(buf, 8<<20)
			if derr != nil {
				break
			}
			f.Body = bytes.Clone(f.Body)
			buf = buf[used:]
			d.handle(f)
		}
		if err != nil {
			d.mu.Lock()
			d.closed = err
			d.mu.Unlock()
			return
		}
	}
}

// handle applies the client rules to SYNC pages and acks them, like an SDK
// whose handler always succeeds.
func (d *device) handle(f protocol.Frame) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch f.Op {
	case protocol.OpSync:
		var s pb.Sync
		if err := protocol.Unmarshal(f, &s); err != nil {
			d.t.Errorf("bad SYNC body: %v", err)
			return
		}
		var acks []*pb.ChannelPoint
		for _, p := range s.Pages {
			point := d.points[p.Channel]
			if p.Upto < p.After && p.After == point {
				// Rewind: the server has nothing above upto; adopt it.
				d.rewinds[p.Channel]++
				d.points[p.Channel] = p.Upto
				acks = append(acks, &pb.ChannelPoint{Channel: p.Channel, Id: p.Upto})
				continue
			}
			if p.After > point {
				d.gaps++
				acks = nil
				d.sendLocked(protocol.OpSyncReq, &pb.SyncReq{Points: []*pb.ChannelPoint{{Channel: p.Channel, Id: point}}})
				continue
			}
			for _, op := range p.Oplogs {
				if op.Id <= point {
					d.dups++
					continue
				}
				d.got = append(d.got, received{Channel: p.Channel, ID: op.Id, Payload: string(op.Payload)})
				point = op.Id
			}
			if p.Skipped > 0 && p.Upto > d.points[p.Channel] {
				d.skipped[p.Channel] += p.Skipped
			}
			point = max(point, p.Upto)
			d.points[p.Channel] = point
			acks = append(acks, &pb.ChannelPoint{Channel: p.Channel, Id: point})
		}
		if len(acks) > 0 {
			d.sendLocked(protocol.OpAck, &pb.Ack{Points: acks})
		}
	case protocol.OpError:
		var e pb.Error
		_ = protocol.Unmarshal(f, &e)
		d.errs = append(d.errs, &e)
	case protocol.OpKick:
		var k pb.Kick
		_ = protocol.Unmarshal(f, &k)
		d.kicks = append(d.kicks, &k)
	default:
		d.other = append(d.other, f)
	}
}

// sendLocked encodes and writes m; d.mu must be held.
func (d *device) sendLocked(op protocol.Op, m proto.Message) {
	d.seq++
	b, err := protocol.Encode(op, d.seq, m)
	if err != nil {
		d.t.Errorf("encode %s: %v", op, err)
		return
	}
	_ = d.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := d.conn.Write(b); err != nil && d.closed == nil {
		d.t.Logf("send %s: %v", op, err)
	}
}

// send writes one frame with a raw body.
func (d *device) send(op protocol.Op, body []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	if _, err := d.conn.Write(protocol.AppendFrame(nil, op, d.seq, body)); err != nil {
		d.t.Logf("send %s: %v", op, err)
	}
}

// sendMsg writes one frame with m as its body.
func (d *device) sendMsg(op protocol.Op, m proto.Message) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.sendLocked(op, m)
}

// auth authenticates with the device's current points and waits for the reply.
func (d *device) auth(token, id string, bizs ...string) *pb.AuthReply {
	d.t.Helper()
	d.mu.Lock()
	req := &pb.Auth{Token: token, Device: id, Platform: "ios", AppVersion: "1.0.0", Bizs: bizs}
	for ch, p := range d.points {
		req.Points = append(req.Points, &pb.ChannelPoint{Channel: ch, Id: p})
	}
	d.sendLocked(protocol.OpAuth, req)
	d.mu.Unlock()
	f := d.expect(protocol.OpAuthReply, 5*time.Second)
	var r pb.AuthReply
	if err := protocol.Unmarshal(f, &r); err != nil {
		d.t.Fatal(err)
	}
	return &r
}

// expect waits for the next non-SYNC frame of op.
func (d *device) expect(op protocol.Op, timeout time.Duration) protocol.Frame {
	d.t.Helper()
	var f protocol.Frame
	eventually(d.t, timeout, "frame "+op.String(), func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		if len(d.errs) > 0 && op != protocol.OpError {
			d.t.Fatalf("waiting for %s: got ERROR %d %s", op, d.errs[0].Code, d.errs[0].Message)
		}
		for i, o := range d.other {
			if o.Op == op {
				f = o
				d.other = append(d.other[:i], d.other[i+1:]...)
				return true
			}
		}
		return false
	})
	return f
}

// expectError waits for an ERROR frame with code and then for the close.
func (d *device) expectError(code protocol.Code, timeout time.Duration) {
	d.t.Helper()
	eventually(d.t, timeout, fmt.Sprintf("ERROR %d", code), func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return len(d.errs) > 0
	})
	d.mu.Lock()
	e := d.errs[0]
	d.mu.Unlock()
	if protocol.Code(e.Code) != code {
		d.t.Fatalf("ERROR %d %q, want code %d", e.Code, e.Message, code)
	}
	d.expectClosed(timeout)
}

// heartbeatEvery sends HEARTBEAT every interval until the test ends, as an
// app does: the device stays alive however long the test waits.
func (d *device) heartbeatEvery(interval time.Duration) {
	stop := make(chan struct{})
	done := make(chan struct{})
	d.t.Cleanup(func() { close(stop); <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-d.done:
				return
			case <-tick.C:
				d.sendMsg(protocol.OpHeartbeat, &pb.Heartbeat{}) // no wish: the interval stays
			}
		}
	}()
}

// expectClosed waits until the server closed the connection.
func (d *device) expectClosed(timeout time.Duration) {
	d.t.Helper()
	select {
	case <-d.done:
	case <-time.After(timeout):
		d.t.Fatalf("connection still open after %v", timeout)
	}
}

// waitGot waits until the device received at least n oplogs.
func (d *device) waitGot(n int, timeout time.Duration) []received {
	d.t.Helper()
	var got []received
	testutil.Eventually(d.t, timeout, 5*time.Millisecond, func() error {
		if got = d.received(); len(got) >= n {
			return nil
		}
		var last []received
		if len(got) > 0 {
			last = got[max(0, len(got)-3):]
		}
		d.mu.Lock()
		points, gaps, dups := fmt.Sprint(d.points), d.gaps, d.dups
		d.mu.Unlock()
		return fmt.Errorf("waiting for %d oplogs: got %d (last %v), points %s, gaps %d, dups %d", n, len(got), last, points, gaps, dups)
	})
	return got
}

func (d *device) received() []received {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]received(nil), d.got...)
}

// violations reports duplicates and gaps the device saw.
func (d *device) violations() (dups, gaps int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dups, d.gaps
}

// reconnect dials again keeping the sync points (a device coming back).
func (d *device) reconnect(n *node) *device {
	d.t.Helper()
	d.close()
	nd := dial(d.t, n)
	d.mu.Lock()
	for ch, p := range d.points {
		nd.points[ch] = p
	}
	d.mu.Unlock()
	return nd
}

// checkInOrder fails unless got holds exactly ids first..last of channel in
// order with the payloads payload(id), and the device saw no violation.
func checkInOrder(t testing.TB, d *device, channel string, first, last uint64, payload func(uint64) string) {
	t.Helper()
	var ids []uint64
	for _, r := range d.received() {
		if r.Channel != channel {
			continue
		}
		ids = append(ids, r.ID)
		if payload != nil && r.Payload != payload(r.ID) {
			t.Fatalf("%s id %d: payload %q, want %q", channel, r.ID, r.Payload, payload(r.ID))
		}
	}
	want := int(last - first + 1)
	if last < first {
		want = 0
	}
	if len(ids) != want {
		t.Fatalf("%s: got %d oplogs, want %d (ids %v)", channel, len(ids), want, head(ids))
	}
	for i, id := range ids {
		if id != first+uint64(i) {
			t.Fatalf("%s: position %d has id %d, want %d (ids %v)", channel, i, id, first+uint64(i), head(ids))
		}
	}
	if dups, gaps := d.violations(); dups != 0 {
		t.Fatalf("%s: device received %d duplicates (gaps %d)", channel, dups, gaps)
	}
}

func head(ids []uint64) []uint64 {
	if len(ids) > 20 {
		return ids[:20]
	}
	return ids
}

// eventually polls cond (testutil.Eventually with a condition that only
// says whether it holds; prefer testutil.Eventually with an error saying
// what was seen where the state is worth printing).
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, timeout, 5*time.Millisecond, func() error {
		if !cond() {
			return fmt.Errorf("still waiting for %s", what)
		}
		return nil
	})
}

// ---- Go SDK clients ----

// recorder collects what an SDK client hands the test (oplogs, events,
// pushes), from the client's goroutines.
type recorder[T any] struct {
	mu  sync.Mutex
	got []T
}

func (r *recorder[T]) add(v T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, v)
}

// all is a copy of what was recorded so far.
func (r *recorder[T]) all() []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]T(nil), r.got...)
}

// oplogs is a biz handler recording every oplog into r.
func oplogs(r *recorder[client.Oplog]) client.Handler {
	return func(_ context.Context, op client.Oplog) error { r.add(op); return nil }
}

// idsOf lists the ids of ops.
func idsOf(ops []client.Oplog) []uint64 {
	out := make([]uint64, len(ops))
	for i, op := range ops {
		out[i] = op.ID
	}
	return out
}

// newSDK builds a Go SDK client of addr with opts and bizs registered, not
// started; it is shut down (bounded) when the test ends.
func newSDK(t testing.TB, addr string, opts client.Options, bizs map[string]client.Handler) *client.Client {
	t.Helper()
	c, err := client.New(addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	for name, h := range bizs {
		if err := c.RegisterBiz(name, h); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Shutdown(ctx); err != nil {
			t.Errorf("SDK client %s: shutdown: %v", opts.Device, err)
		}
	})
	return c
}

// startSDK is newSDK, started.
func startSDK(t testing.TB, addr string, opts client.Options, bizs map[string]client.Handler) *client.Client {
	t.Helper()
	c := newSDK(t, addr, opts, bizs)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	return c
}

// ignore is a biz handler that takes every oplog and keeps nothing.
func ignore(context.Context, client.Oplog) error { return nil }

func protocolMarshal(m proto.Message) ([]byte, error) { return proto.Marshal(m) }
