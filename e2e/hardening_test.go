package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/pkg/client"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

// Regression tests for bursts and bad clients found from the outside: a big
// batch or a multi-channel backlog is paced to what the device reads instead
// of overflowing its write queue, pipelined frames get every reply or a limit
// code that says so, a point ahead of the channel is rewound, SYNC_REQ
// floods are rate limited, and connections are capped.

// bigPayload is payload i of size bytes, recognisable by its prefix.
func bigPayload(i uint64, size int) string {
	p := fmt.Sprintf("%05d-", i)
	return p + strings.Repeat("x", size-len(p))
}

// publishBatch posts items oplogs of size bytes for user on biz in one
// POST /v1/sync/batch and fails unless every item is stored.
func (n *node) publishBatch(t testing.TB, biz, user string, items, size int, first uint64) {
	t.Helper()
	var req struct {
		Items []map[string]any `json:"items"`
	}
	for i := range items {
		req.Items = append(req.Items, map[string]any{"biz": biz, "user": user, "payload": bigPayload(first+uint64(i), size)})
	}
	var res struct {
		Results []publishResult `json:"results"`
	}
	if code := call(t, "POST", n.api()+"/v1/sync/batch", "test-key", req, &res); code != 200 {
		t.Fatalf("batch: status %d", code)
	}
	for i, r := range res.Results {
		if r.Error != nil || r.ID == 0 {
			t.Fatalf("batch item %d: %+v", i, r)
		}
	}
}

// TestLargeBatchIsPacedNotDisconnected: one batch of 50 x 60 KiB (3 MB, three
// times the write queue) for a user whose device reads continuously reaches
// the device in order, without ERROR 1001 or any other close.
func TestLargeBatchIsPacedNotDisconnected(t *testing.T) {
	t.Parallel()
	n := startNode(t, "")
	const items, size = 50, 60 << 10
	for try := range 3 {
		user := fmt.Sprintf("bigbatch%d", try)
		d := dial(t, n)
		d.auth(n.token(t, user), user+"-phone", "demo")
		n.publishBatch(t, "demo", user, items, size, 1)
		d.waitGot(items, waitFor)
		d.mu.Lock()
		errs := d.errs
		d.mu.Unlock()
		if len(errs) > 0 {
			t.Fatalf("try %d: ERROR %d %q", try, errs[0].Code, errs[0].Message)
		}
		checkInOrder(t, d, oplog.UserChannel("demo", user), 1, items, func(id uint64) string { return bigPayload(id, size) })
		select {
		case <-d.done:
			t.Fatalf("try %d: connection closed: %v", try, d.closed)
		default:
		}
	}
}

// TestStoppedReaderIsStillCutOff: pacing must not keep a device that reads
// nothing: it is closed (and loses nothing, see
// TestSlowReaderIsDisconnectedAndLosesNothing).
func TestStoppedReaderIsStillCutOff(t *testing.T) {
	t.Parallel()
	n := startNodeWith(t, shortDeadlines(t, testConfig), "")
	c, err := net.DialTimeout("tcp", n.Comet.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	d := newDevice(t, c) // reads nothing until the end
	d.sendMsg(protocol.OpAuth, &pb.Auth{Token: n.token(t, "stopper"), Device: "stopped", Platform: "ios", AppVersion: "1.0", Bizs: []string{"demo"}})
	n.publishBatch(t, "demo", "stopper", 50, 60<<10, 1)
	// The backlog page written after the live burst is never acked (ack
	// timeout 3s), or the flush times out: either way the server closes.
	go d.readLoop()
	// Bound: heartbeat deadline (11 s) plus the closing flush (10 s).
	d.expectClosed(40 * time.Second)
}

// throttledConn reads at most rate bytes per second, in small reads, after
// an initial delay: a device on a slow link.
type throttledConn struct {
	net.Conn
	rate  int
	delay time.Duration
	once  sync.Once
}

func (c *throttledConn) Read(p []byte) (int, error) {
	c.once.Do(func() { time.Sleep(c.delay) })
	const chunk = 4 << 10
	if len(p) > chunk {
		p = p[:chunk]
	}
	n, err := c.Conn.Read(p)
	time.Sleep(time.Duration(n) * time.Second / time.Duration(c.rate))
	return n, err
}

const sixBizConfig = `
secret: ` + testSecret + `
dev: true # short test keys
api_keys:
  - {key: test-key, bizs: ["*"]}
comet:
  addr: 127.0.0.1:0
  ws_addr: ""
  heartbeat: 5s
  auth_timeout: 5s
  ack_timeout: 20s
  write_queue_bytes: 1048576
logic:
  http_addr: 127.0.0.1:0
bizs:
  - {name: b1, target: user}
  - {name: b2, target: user}
  - {name: b3, target: user}
  - {name: b4, target: user}
  - {name: b5, target: user}
  - {name: b6, target: user}
`

// TestThrottledReaderSyncsBacklogOfSeveralChannels: 6 channels x 5 x 60 KB of
// backlog (1.8 MB) and a device that reads 200 KB/s through a 64 KiB receive
// buffer, starting 2 s late: it syncs everything, in order, with no ERROR.
func TestThrottledReaderSyncsBacklogOfSeveralChannels(t *testing.T) {
	t.Parallel()
	n := startNodeWith(t, sixBizConfig, "")
	const perBiz, size = 5, 60_000
	bizs := []string{"b1", "b2", "b3", "b4", "b5", "b6"}
	for _, b := range bizs {
		for i := uint64(1); i <= perBiz; i++ {
			n.publish(t, map[string]any{"biz": b, "user": "carol", "payload": bigPayload(i, size)})
		}
	}
	c, err := net.DialTimeout("tcp", n.Comet.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).SetReadBuffer(64 << 10)
	d := newDevice(t, &throttledConn{Conn: c, rate: 200 << 10, delay: 2 * time.Second})
	go d.readLoop()
	d.auth(n.token(t, "carol"), "slowlink", bizs...)
	d.waitGot(perBiz*len(bizs), 60*time.Second)
	d.mu.Lock()
	errs := d.errs
	d.mu.Unlock()
	if len(errs) > 0 {
		t.Fatalf("ERROR %d %q", errs[0].Code, errs[0].Message)
	}
	for _, b := range bizs {
		checkInOrder(t, d, oplog.UserChannel(b, "carol"), 1, perBiz, func(id uint64) string { return bigPayload(id, size) })
	}
}

// rawSession is a connection authenticated by hand, for frame-level tests.
type rawSession struct {
	t testing.TB
	c net.Conn
	r *frameReader
}

func rawAuth(t testing.TB, n *node, user string, points ...*pb.ChannelPoint) *rawSession {
	t.Helper()
	c, err := net.DialTimeout("tcp", n.Comet.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rs := &rawSession{t: t, c: c, r: &frameReader{c: c}}
	b, _ := protocol.Encode(protocol.OpAuth, 1, &pb.Auth{Token: n.token(t, user), Device: user + "-dev", Platform: "ios", AppVersion: "1.0", Bizs: []string{"demo"}, Points: points})
	rs.write(b)
	f := rs.next(5 * time.Second)
	if f.Op != protocol.OpAuthReply {
		t.Fatalf("got %s after AUTH, want AUTH_REPLY", describeFrame(f))
	}
	return rs
}

func (rs *rawSession) write(b []byte) {
	rs.t.Helper()
	_ = rs.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := rs.c.Write(b); err != nil {
		rs.t.Fatal(err)
	}
}

// next returns the next frame, failing the test on timeout or EOF.
func (rs *rawSession) next(timeout time.Duration) protocol.Frame {
	rs.t.Helper()
	f, err := rs.r.next(timeout)
	if err != nil {
		rs.t.Fatalf("read: %v", err)
	}
	return f
}

type frameReader struct {
	c   net.Conn
	buf []byte
}

func (fr *frameReader) next(timeout time.Duration) (protocol.Frame, error) {
	_ = fr.c.SetReadDeadline(time.Now().Add(timeout))
	tmp := make([]byte, 64<<10)
	for {
		if f, used, err := protocol.Decode(fr.buf, 8<<20); err == nil {
			f.Body = bytes.Clone(f.Body)
			fr.buf = fr.buf[used:]
			return f, nil
		}
		n, err := fr.c.Read(tmp)
		fr.buf = append(fr.buf, tmp[:n]...)
		if err != nil && n == 0 {
			return protocol.Frame{}, err
		}
	}
}

func describeFrame(f protocol.Frame) string {
	if f.Op == protocol.OpError {
		var e pb.Error
		_ = protocol.Unmarshal(f, &e)
		return fmt.Sprintf("ERROR %d %q", e.Code, e.Message)
	}
	return f.Op.String()
}

// errorCode reads frames until an ERROR and returns its code, counting the
// HEARTBEAT_REPLYs before it; it fails if the connection ends without one.
func (rs *rawSession) errorCode(timeout time.Duration) (code protocol.Code, replies int) {
	rs.t.Helper()
	for {
		f, err := rs.r.next(timeout)
		if err != nil {
			rs.t.Fatalf("no ERROR after %d heartbeat replies: %v", replies, err)
		}
		switch f.Op {
		case protocol.OpHeartbeatReply:
			replies++
		case protocol.OpError:
			var e pb.Error
			_ = protocol.Unmarshal(f, &e)
			return protocol.Code(e.Code), replies
		}
	}
}

func heartbeats(b []byte, n int, seq uint32) []byte {
	for i := range n {
		b = protocol.AppendFrame(b, protocol.OpHeartbeat, seq+uint32(i), nil)
	}
	return b
}

// TestPipelinedFramesGetRepliesOrALimitCode: an unknown op followed by 500
// HEARTBEATs in one write is answered 4002 (the first fault wins); 256
// pipelined HEARTBEATs (the documented in-flight limit) all get replies and
// the session stays; 600 get replies up to where the limit was passed and
// then ERROR 1010, never the "dependency failed" 1004.
func TestPipelinedFramesGetRepliesOrALimitCode(t *testing.T) {
	t.Parallel()
	n := startNode(t, "")

	t.Run("unknown op first", func(t *testing.T) {
		rs := rawAuth(t, n, "pipe1")
		b := protocol.AppendFrame(nil, protocol.Op(99), 2, nil)
		rs.write(heartbeats(b, 500, 3))
		if code, _ := rs.errorCode(5 * time.Second); code != protocol.CodeUnknownOp {
			t.Fatalf("ERROR %d, want %d (unknown op)", code, protocol.CodeUnknownOp)
		}
	})
	t.Run("within the limit", func(t *testing.T) {
		rs := rawAuth(t, n, "pipe2")
		for round := range 3 {
			rs.write(heartbeats(nil, protocol.MaxInFlightFrames, 2))
			for i := range protocol.MaxInFlightFrames {
				if f := rs.next(5 * time.Second); f.Op != protocol.OpHeartbeatReply {
					t.Fatalf("round %d reply %d: %s", round, i, describeFrame(f))
				}
			}
		}
	})
	t.Run("over the limit", func(t *testing.T) {
		rs := rawAuth(t, n, "pipe3")
		rs.write(heartbeats(nil, 600, 2))
		code, replies := rs.errorCode(5 * time.Second)
		if code != protocol.CodeTooManyInFlight {
			t.Fatalf("ERROR %d after %d replies, want %d", code, replies, protocol.CodeTooManyInFlight)
		}
		if replies < protocol.MaxInFlightFrames {
			t.Fatalf("%d replies before the limit code, want at least %d", replies, protocol.MaxInFlightFrames)
		}
	})
}

// TestPointAheadOfChannelIsRewound: AUTH with point 1000 on a channel whose
// max id is 3 gets a rewind page (after 1000, upto 3); the device adopts 3
// and receives the next publishes 4 and 5.
func TestPointAheadOfChannelIsRewound(t *testing.T) {
	t.Parallel()
	n := startNode(t, "")
	ch := oplog.UserChannel("demo", "ahead")
	for i := 1; i <= 3; i++ {
		n.publish(t, toUser("ahead", fmt.Sprint("old", i)))
	}
	d := dial(t, n)
	d.points[ch] = 1000
	d.auth(n.token(t, "ahead"), "ahead-dev", "demo")
	eventually(t, waitFor, "rewind to 3", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.points[ch] == 3 && d.rewinds[ch] == 1
	})
	n.publish(t, toUser("ahead", "new4"))
	n.publish(t, toUser("ahead", "new5"))
	got := d.waitGot(2, waitFor)
	if got[0].ID != 4 || got[0].Payload != "new4" || got[1].ID != 5 || got[1].Payload != "new5" {
		t.Fatalf("got %+v, want ids 4, 5", got)
	}
}

// TestSyncReqFloodIsRateLimited: a client that answers every page with
// another SYNC_REQ{0} (and the ACK that releases the next page) for a channel
// with a 30 KB backlog gets a handful of pages in 1.5 s (the token bucket's
// burst and rate), not one per round trip; the session stays usable.
func TestSyncReqFloodIsRateLimited(t *testing.T) {
	t.Parallel()
	n := startNode(t, "")
	ch := oplog.UserChannel("demo", "flood")
	n.publish(t, toUser("flood", strings.Repeat("y", 30_000)))
	rs := rawAuth(t, n, "flood")
	if f := rs.next(5 * time.Second); f.Op != protocol.OpSync {
		t.Fatalf("want the backlog SYNC, got %s", describeFrame(f))
	}
	req := func(seq uint32) []byte {
		b, _ := protocol.Encode(protocol.OpSyncReq, seq, &pb.SyncReq{Points: []*pb.ChannelPoint{{Channel: ch, Id: 0}}})
		a, _ := protocol.Encode(protocol.OpAck, seq, &pb.Ack{Points: []*pb.ChannelPoint{{Channel: ch, Id: 1}}})
		return append(a, b...)
	}
	pages, reqs, bytesIn := 0, 0, 0
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		reqs++
		rs.write(req(uint32(10 + reqs)))
		f, err := rs.r.next(50 * time.Millisecond)
		if err != nil {
			continue // nothing yet: ask again, as a flood would
		}
		if f.Op == protocol.OpError {
			t.Fatalf("%s", describeFrame(f))
		}
		if f.Op == protocol.OpSync {
			pages++
			bytesIn += len(f.Body)
		}
	}
	t.Logf("%d SYNC_REQ -> %d pages, %d bytes in 1.5 s", reqs, pages, bytesIn)
	if pages > 8 {
		t.Fatalf("%d SYNC_REQ brought back %d pages (%d bytes) in 1.5 s: not rate limited", reqs, pages, bytesIn)
	}
	if pages == 0 {
		t.Fatal("no page at all: SYNC_REQ must still be served")
	}
	// The bucket is empty now: of four more requests at least three wait,
	// and are served (merged) later, not dropped.
	for i := range 4 {
		rs.write(req(uint32(5000 + i)))
	}
	for served := false; !served; {
		f := rs.next(5 * time.Second)
		if f.Op == protocol.OpError {
			t.Fatalf("%s", describeFrame(f))
		}
		served = f.Op == protocol.OpSync
	}
	// Still alive and answering.
	rs.write(protocol.AppendFrame(nil, protocol.OpHeartbeat, 9999, nil))
	for {
		f := rs.next(5 * time.Second)
		if f.Op == protocol.OpHeartbeatReply {
			break
		}
		if f.Op == protocol.OpError {
			t.Fatalf("%s", describeFrame(f))
		}
	}
}

const limitsConfig = `
secret: ` + testSecret + `
dev: true # short test keys
api_keys:
  - {key: test-key, bizs: ["*"]}
comet:
  addr: 127.0.0.1:0
  ws_addr: ""
  auth_timeout: 5s
  limits:
    max_conns: 6
    max_conns_per_ip: 3
    auth_rate_per_ip: 0.01
    auth_burst_per_ip: 4
    frame_rate: 50
    frame_burst: 400
logic:
  http_addr: 127.0.0.1:0
bizs:
  - {name: demo, target: user}
`

// expectRefused reads a fresh connection until EOF and returns the code of
// its ERROR frame (0 if none).
func expectRefused(t *testing.T, c net.Conn) protocol.Code {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	raw, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("refused connection: %v (want ERROR then EOF)", err)
	}
	f, _, derr := protocol.Decode(raw, 1<<20)
	if derr != nil || f.Op != protocol.OpError {
		t.Fatalf("refused connection sent %q, want one ERROR frame", raw)
	}
	var e pb.Error
	_ = protocol.Unmarshal(f, &e)
	return protocol.Code(e.Code)
}

// TestConnectionCapsAndRates: per-address and total connection caps, AUTH
// attempts per address and frames per second each answer their own code,
// configured from the YAML, and show in the metrics.
func TestConnectionCapsAndRates(t *testing.T) {
	n := startNodeWith(t, limitsConfig, "")
	addr := n.Comet.Addr().String()
	dialOK := func(local string) net.Conn {
		t.Helper()
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	var held []net.Conn
	for range 3 {
		held = append(held, dialOK("127.0.0.1"))
	}
	eventually(t, waitFor, "3 connections open", func() bool { return n.metric(t, "msync_comet_connections", nil) == 3 })
	if code := expectRefused(t, dialOK("127.0.0.1")); code != protocol.CodeTooManyConnsPerIP {
		t.Fatalf("4th connection from one address: ERROR %d, want %d", code, protocol.CodeTooManyConnsPerIP)
	}
	for range 3 {
		held = append(held, dialOK("127.0.0.2"))
	}
	eventually(t, waitFor, "6 connections open", func() bool { return n.metric(t, "msync_comet_connections", nil) == 6 })
	if code := expectRefused(t, dialOK("127.0.0.3")); code != protocol.CodeTooManyConns {
		t.Fatalf("7th connection: ERROR %d, want %d", code, protocol.CodeTooManyConns)
	}
	for _, c := range held {
		c.Close()
	}
	eventually(t, waitFor, "connections gone", func() bool { return n.metric(t, "msync_comet_connections", nil) == 0 })

	// AUTH attempts per address: a burst of 4, then refused.
	var codes []protocol.Code
	for i := range 6 {
		eventually(t, waitFor, "previous connection gone", func() bool { return n.metric(t, "msync_comet_connections", nil) == 0 })
		c := dialOK("127.0.0.4")
		b, _ := protocol.Encode(protocol.OpAuth, 1, &pb.Auth{Token: "not-a-token", Device: fmt.Sprint("d", i), Platform: "ios", AppVersion: "1.0", Bizs: []string{"demo"}})
		_, _ = c.Write(b)
		codes = append(codes, expectRefused(t, c))
	}
	want := []protocol.Code{2002, 2002, 2002, 2002, protocol.CodeAuthRateLimited, protocol.CodeAuthRateLimited}
	if fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Fatalf("AUTH codes %v, want %v", codes, want)
	}

	// Frames per second: 300 pipelined heartbeats (in writes of 100) are
	// within the burst of 400; a
	// client that keeps sending faster than 50/s is refused with 1011.
	rs := rawAuth(t, n, "rater")
	code := protocol.Code(0)
	for i := 0; code == 0 && i < 20; i++ {
		rs.write(heartbeats(nil, 100, uint32(2+100*i)))
		for j := 0; j < 100; j++ {
			f, err := rs.r.next(5 * time.Second)
			if err != nil {
				t.Fatalf("after %d frames: %v", 100*i+j, err)
			}
			if f.Op == protocol.OpError {
				var e pb.Error
				_ = protocol.Unmarshal(f, &e)
				code = protocol.Code(e.Code)
				if i < 3 {
					t.Fatalf("refused at write %d, within the burst of 400", i)
				}
				break
			}
		}
	}
	if code != protocol.CodeRateLimited {
		t.Fatalf("frame flood: ERROR %d, want %d", code, protocol.CodeRateLimited)
	}
	for _, l := range []string{"conns_per_ip", "conns", "auth_per_ip", "frame_rate"} {
		if v := n.metric(t, "msync_comet_limited_total", map[string]string{"limit": l}); v < 1 {
			t.Errorf("msync_comet_limited_total{limit=%q} = %v, want >= 1", l, v)
		}
	}
}

// TestSDKRewindsPointAheadOfChannel: the Go SDK with a stored point 1000
// for a channel whose max id is 3 reports EventRewound 1000 -> 3, stores 3,
// and hands the next publishes 4 and 5 to its handler.
func TestSDKRewindsPointAheadOfChannel(t *testing.T) {
	t.Parallel()
	n := startNode(t, "")
	ch := oplog.UserChannel("demo", "sdkahead")
	for i := 1; i <= 3; i++ {
		n.publish(t, toUser("sdkahead", fmt.Sprint("old", i)))
	}
	store := client.NewMemoryStore()
	if err := store.Save(ch, 1000); err != nil {
		t.Fatal(err)
	}
	var got recorder[client.Oplog]
	var rewoundEvents recorder[client.Event]
	c := startSDK(t, n.Comet.Addr().String(), client.Options{
		TokenProvider: func(context.Context) (string, error) { return n.token(t, "sdkahead"), nil },
		Device:        "sdk-ahead",
		Store:         store,
		OnEvent: func(e client.Event) {
			if e.Kind == client.EventRewound {
				rewoundEvents.add(e)
			}
		},
	}, map[string]client.Handler{"demo": oplogs(&got)})
	testutil.Eventually(t, waitFor, 5*time.Millisecond, func() error {
		if ev := rewoundEvents.all(); len(ev) != 1 {
			return fmt.Errorf("%d rewound events, want 1: %+v", len(ev), ev)
		}
		return nil
	})
	rewound := rewoundEvents.all()
	if e := rewound[0]; e.Channel != ch || e.From != 1000 || e.To != 3 {
		t.Fatalf("rewound event %+v", e)
	}
	if p := c.SyncPoint(ch); p != 3 {
		t.Fatalf("SyncPoint %d after the rewind, want 3", p)
	}
	n.publish(t, toUser("sdkahead", "new4"))
	n.publish(t, toUser("sdkahead", "new5"))
	testutil.Eventually(t, waitFor, 5*time.Millisecond, func() error {
		if ids := idsOf(got.all()); fmt.Sprint(ids) != "[4 5]" {
			return fmt.Errorf("handler got ids %v, want [4 5]", ids)
		}
		return nil
	})
}
