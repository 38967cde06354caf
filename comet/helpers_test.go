package comet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/pkg/api"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
	wirepb "github.com/msync/msync/pkg/protocol/pb"
)

const waitFor = 5 * time.Second

// eventually polls cond until it holds or waitFor passes (testutil.Eventually
// with a condition that only says whether it holds).
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, waitFor, 2*time.Millisecond, func() error {
		if !cond() {
			return fmt.Errorf("still waiting for %s", what)
		}
		return nil
	})
}

// ---- logging ----

// testHandler sends logs to t.Log and fails the test on error-level lines:
// comet logs errors only for bugs (panics, duplicate keys, encode failures).
type testHandler struct {
	t     testing.TB
	attrs string
	done  *atomic.Bool
}

func testLogger(t testing.TB) *slog.Logger {
	done := &atomic.Bool{}
	t.Cleanup(func() { done.Store(true) })
	return slog.New(&testHandler{t: t, done: done})
}

func (h *testHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *testHandler) Handle(_ context.Context, r slog.Record) error {
	if h.done.Load() {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s%s", r.Level, r.Message, h.attrs)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	if r.Level >= slog.LevelError {
		h.t.Errorf("error logged: %s", b.String())
	} else {
		h.t.Log(b.String())
	}
	return nil
}
func (h *testHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	for _, a := range as {
		n.attrs += fmt.Sprintf(" %s=%v", a.Key, a.Value)
	}
	return &n
}
func (h *testHandler) WithGroup(string) slog.Handler { return h }

// ---- fake logic ----

// fakeLogic is an in-memory pb.LogicServer: tokens "good-<user>" verify,
// "expired" is expired, anything else is invalid. Bizs "chat" (user channel)
// and "lock" (device channel) exist; others are rejected.
type fakeLogic struct {
	pb.UnimplementedLogicServer
	heartbeatMs uint32
	connectErr  error         // returned by Connect when set
	connectGate chan struct{} // when set, Connect waits for a receive
	syncGate    chan struct{} // when set, Sync waits for a receive
	open        chan struct{} // closed by release: gates stop waiting
	openOnce    sync.Once
	waiting     atomic.Int32 // calls parked in a gate
	now         atomic.Int64 // unix ms; 0 = wall clock

	mu struct {
		sync.Mutex
		logs        map[string][]*oplog.Oplog
		points      map[string]uint64 // device|channel -> acked
		connects    []*pb.ConnectReq
		disconnects []*pb.DisconnectReq
		syncs       []*pb.SyncReq
		renews      []*pb.RenewReq
		ackCalls    int
	}
}

func newFakeLogic() *fakeLogic {
	fl := &fakeLogic{open: make(chan struct{})}
	fl.mu.logs = make(map[string][]*oplog.Oplog)
	fl.mu.points = make(map[string]uint64)
	return fl
}

func (fl *fakeLogic) nowMs() int64 {
	if n := fl.now.Load(); n != 0 {
		return n
	}
	return time.Now().UnixMilli()
}

// add appends an oplog to channel, assigning the next id, and returns a copy.
func (fl *fakeLogic) add(channel string, op *oplog.Oplog) *oplog.Oplog {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	op = proto.Clone(op).(*oplog.Oplog)
	op.Channel = channel
	op.Biz, _, _, _ = oplog.ParseChannel(channel)
	op.Id = uint64(len(fl.mu.logs[channel]) + 1)
	if op.Payload == nil {
		op.Payload = []byte(fmt.Sprintf("%s#%d", channel, op.Id))
	}
	fl.mu.logs[channel] = append(fl.mu.logs[channel], op)
	return proto.Clone(op).(*oplog.Oplog)
}

func (fl *fakeLogic) addN(channel string, n int) []*oplog.Oplog {
	var ops []*oplog.Oplog
	for range n {
		ops = append(ops, fl.add(channel, &oplog.Oplog{}))
	}
	return ops
}

// release opens both gates for good.
func (fl *fakeLogic) release() { fl.openOnce.Do(func() { close(fl.open) }) }

func (fl *fakeLogic) gate(ctx context.Context, g chan struct{}) error {
	if g == nil {
		return nil
	}
	fl.waiting.Add(1)
	defer fl.waiting.Add(-1)
	select {
	case <-g:
		return nil
	case <-fl.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (fl *fakeLogic) Connect(ctx context.Context, in *pb.ConnectReq) (*pb.ConnectReply, error) {
	fl.mu.Lock()
	fl.mu.connects = append(fl.mu.connects, proto.Clone(in).(*pb.ConnectReq))
	fl.mu.Unlock()
	if err := fl.gate(ctx, fl.connectGate); err != nil {
		return nil, err
	}
	if fl.connectErr != nil {
		return nil, fl.connectErr
	}
	user, ok := strings.CutPrefix(in.Token, "good-")
	switch {
	case in.Token == "expired":
		return nil, api.Error(protocol.CodeTokenExpired, "token expired")
	case !ok:
		return nil, api.Error(protocol.CodeTokenInvalid, "token does not verify")
	case in.Device == "":
		return nil, api.Error(protocol.CodeBadAuth, "device is required")
	}
	reply := &pb.ConnectReply{User: user, HeartbeatMs: fl.heartbeatMs, Ticket: []byte("ticket:" + in.Key)}
	points := make(map[string]uint64)
	for _, p := range in.Points {
		points[p.Channel] = p.Id
	}
	fl.mu.Lock()
	defer fl.mu.Unlock()
	for _, b := range in.Bizs {
		var ch string
		switch b {
		case "chat":
			ch = oplog.UserChannel(b, user)
		case "lock":
			ch = oplog.DeviceChannel(b, in.Device)
		case "news": // global scope
			ch = oplog.GlobalChannel(b)
		default:
			reply.Rejected = append(reply.Rejected, &pb.Rejected{Biz: b, Reason: "unknown biz"})
			continue
		}
		from, ok := points[ch]
		if !ok {
			from = fl.mu.points[in.Device+"|"+ch]
		}
		reply.Channels = append(reply.Channels, &pb.ChannelStart{Biz: b, Channel: ch, From: from})
	}
	return reply, nil
}

func (fl *fakeLogic) Disconnect(_ context.Context, in *pb.DisconnectReq) (*pb.Empty, error) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	fl.mu.disconnects = append(fl.mu.disconnects, proto.Clone(in).(*pb.DisconnectReq))
	return &pb.Empty{}, nil
}

func (fl *fakeLogic) Renew(_ context.Context, in *pb.RenewReq) (*pb.RenewReply, error) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	fl.mu.renews = append(fl.mu.renews, proto.Clone(in).(*pb.RenewReq))
	return &pb.RenewReply{}, nil
}

// Sync pages like logic does: ids after the cursor, filters evaluated for the
// device, stopping before a not-yet-valid oplog.
func (fl *fakeLogic) Sync(ctx context.Context, in *pb.SyncReq) (*pb.SyncReply, error) {
	if err := fl.gate(ctx, fl.syncGate); err != nil {
		return nil, err
	}
	fl.mu.Lock()
	defer fl.mu.Unlock()
	fl.mu.syncs = append(fl.mu.syncs, proto.Clone(in).(*pb.SyncReq))
	limit := int(in.Limit)
	if limit == 0 {
		limit = 200
	}
	reply := &pb.SyncReply{}
	for _, cur := range in.Cursors {
		log := fl.mu.logs[cur.Channel]
		biz, _, _, _ := oplog.ParseChannel(cur.Channel)
		p := &pb.Page{Channel: cur.Channel, Biz: biz, After: cur.After, Upto: cur.After, MaxId: uint64(len(log))}
		for id := cur.After + 1; id <= uint64(len(log)) && len(p.Oplogs) < limit; id++ {
			op := log[id-1]
			v := oplog.Evaluate(op, in.Platform, in.AppVersion, fl.nowMs())
			if v == oplog.NotYet {
				p.NextValidMs = op.ValidFromMs
				break
			}
			if v == oplog.Deliver {
				p.Oplogs = append(p.Oplogs, proto.Clone(op).(*oplog.Oplog))
			}
			p.Upto = id
		}
		reply.Pages = append(reply.Pages, p)
	}
	return reply, nil
}

func (fl *fakeLogic) Ack(_ context.Context, in *pb.AckReq) (*pb.Empty, error) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	fl.mu.ackCalls++
	for _, it := range in.Items {
		k := it.Device + "|" + it.Channel
		fl.mu.points[k] = max(fl.mu.points[k], it.Id)
	}
	return &pb.Empty{}, nil
}

func (fl *fakeLogic) point(device, channel string) uint64 {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.mu.points[device+"|"+channel]
}

func (fl *fakeLogic) syncCount() int {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return len(fl.mu.syncs)
}

func (fl *fakeLogic) disconnectKeys() []string {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	var keys []string
	for _, d := range fl.mu.disconnects {
		keys = append(keys, d.Key)
	}
	return keys
}

// ---- fake transport ----

var errHangup = errors.New("client hung up")

// fakeConn records what a session writes, decoded, and calls the session's
// onClose exactly once, like the gateway.
type fakeConn struct {
	id  uint64
	out chan protocol.Frame

	mu struct {
		sync.Mutex
		sess         *session
		closed       bool
		reason       error
		deadline     time.Duration
		deadlineCode protocol.Code
		deadlineSets int
		ackDeadline  time.Duration
	}
}

func newFakeConn(id uint64) *fakeConn {
	return &fakeConn{id: id, out: make(chan protocol.Frame, 1<<14)}
}

func (f *fakeConn) ID() uint64         { return f.id }
func (f *fakeConn) RemoteAddr() string { return fmt.Sprintf("10.0.0.1:%d", f.id) }

func (f *fakeConn) Write(b []byte) error {
	fr, n, err := protocol.Decode(b, 1<<30)
	if err != nil || n != len(b) {
		panic(fmt.Sprintf("session wrote a bad frame: n=%d len=%d err=%v", n, len(b), err))
	}
	f.mu.Lock()
	if f.mu.closed {
		f.mu.Unlock()
		return errors.New("fake: closed")
	}
	select {
	case f.out <- fr:
		f.mu.Unlock()
		return nil
	default:
		f.mu.Unlock()
		f.Close(nil, errors.New("fake: slow consumer"))
		return errors.New("fake: slow consumer")
	}
}

func (f *fakeConn) Close(final []byte, reason error) {
	f.mu.Lock()
	if f.mu.closed {
		f.mu.Unlock()
		return
	}
	f.mu.closed, f.mu.reason = true, reason
	if final != nil {
		fr, _, err := protocol.Decode(final, 1<<30)
		if err != nil {
			panic(err)
		}
		select {
		case f.out <- fr:
		default:
		}
	}
	s := f.mu.sess
	f.mu.Unlock()
	if s != nil {
		s.onClose(reason)
	}
}

func (f *fakeConn) SetDeadline(d time.Duration, code protocol.Code) {
	f.mu.Lock()
	f.mu.deadline, f.mu.deadlineCode = d, code
	f.mu.deadlineSets++
	f.mu.Unlock()
}

// Queued is 0: the fake hands every frame to out at once.
func (f *fakeConn) Queued() int { return 0 }

// NotifyDrained calls back at once, as the gateway does for an empty queue.
func (f *fakeConn) NotifyDrained() {
	f.mu.Lock()
	s, closed := f.mu.sess, f.mu.closed
	f.mu.Unlock()
	if s != nil && !closed {
		s.onDrained()
	}
}

func (f *fakeConn) SetAckDeadline(d time.Duration) {
	f.mu.Lock()
	f.mu.ackDeadline = d
	f.mu.Unlock()
}

func (f *fakeConn) attach(s *session) {
	f.mu.Lock()
	f.mu.sess = s
	closed, reason := f.mu.closed, f.mu.reason
	f.mu.Unlock()
	if closed {
		s.onClose(reason)
	}
}

func (f *fakeConn) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mu.closed
}

func (f *fakeConn) closeReason() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mu.reason
}

func (f *fakeConn) ackDeadline() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mu.ackDeadline
}

func (f *fakeConn) deadline() (time.Duration, protocol.Code, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mu.deadline, f.mu.deadlineCode, f.mu.deadlineSets
}

// ---- test comet and client ----

type testEnv struct {
	t     testing.TB
	c     *Comet
	logic *fakeLogic
	reg   *prometheus.Registry
	next  uint64
}

func newEnv(t testing.TB, mod func(*Config, *fakeLogic)) *testEnv {
	t.Helper()
	fl := newFakeLogic()
	reg := prometheus.NewRegistry()
	cfg := Config{
		ID:                "comet-test",
		Logic:             api.LocalLogic(fl),
		HeartbeatInterval: 10 * time.Second,
		PageLimit:         200,
		Workers:           64,
		ClientRooms:       []string{"*"},
		Logger:            testLogger(t),
		Registerer:        reg,
		// Tests ping-pong heartbeats as fast as the machine allows
		// (barrier); the tests of the frame limits set their own.
		Limits: Limits{FrameRate: -1},
	}
	if mod != nil {
		mod(&cfg, fl)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	runBackground(t, c)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		fl.release() // drain tasks blocked in logic can finish
		if err := c.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return &testEnv{t: t, c: c, logic: fl, reg: reg, next: 100}
}

// runBackground starts what Start starts besides the listener: sessions on
// fake connections need the pool and the comet's goroutines.
func runBackground(t testing.TB, c *Comet) {
	t.Helper()
	c.life.Lock()
	err := c.startBackgroundLocked()
	c.life.Unlock()
	if err != nil {
		t.Fatalf("starting the background: %v", err)
	}
}

// client is a raw-protocol test client over a frame transport.
type client struct {
	t    testing.TB
	send func(b []byte)
	recv func(timeout time.Duration) (protocol.Frame, error)
	seq  uint32
	// For fake connections:
	conn *fakeConn
	sess *session
	key  string
}

func (e *testEnv) dial() *client {
	e.next++
	fc := newFakeConn(e.next)
	s := e.c.open(fc)
	fc.attach(s)
	cl := &client{t: e.t, conn: fc, sess: s, key: s.key}
	cl.send = func(b []byte) {
		f, _, err := protocol.Decode(b, 0)
		if err != nil {
			e.t.Fatalf("client encoded a bad frame: %v", err)
		}
		s.onFrame(f)
	}
	cl.recv = func(timeout time.Duration) (protocol.Frame, error) {
		select {
		case f := <-fc.out:
			return f, nil
		case <-time.After(timeout):
			return protocol.Frame{}, errors.New("timeout")
		}
	}
	return cl
}

func (cl *client) sendMsg(op protocol.Op, m proto.Message) uint32 {
	cl.t.Helper()
	cl.seq++
	b, err := protocol.Encode(op, cl.seq, m)
	if err != nil {
		cl.t.Fatal(err)
	}
	cl.send(b)
	return cl.seq
}

func (cl *client) sendRaw(op protocol.Op, body []byte) uint32 {
	cl.seq++
	cl.send(protocol.AppendFrame(nil, op, cl.seq, body))
	return cl.seq
}

func (cl *client) next() protocol.Frame {
	cl.t.Helper()
	f, err := cl.recv(waitFor)
	if err != nil {
		cl.t.Fatalf("waiting for a frame: %v", err)
	}
	return f
}

func describe(f protocol.Frame) string {
	switch f.Op {
	case protocol.OpError:
		var e wirepb.Error
		_ = protocol.Unmarshal(f, &e)
		return fmt.Sprintf("ERROR %d %q", e.Code, e.Message)
	case protocol.OpKick:
		var k wirepb.Kick
		_ = protocol.Unmarshal(f, &k)
		return fmt.Sprintf("KICK %d %q", k.Code, k.Reason)
	case protocol.OpSync:
		var s wirepb.Sync
		_ = protocol.Unmarshal(f, &s)
		return "SYNC " + pagesString(&s)
	}
	return f.Op.String()
}

func pagesString(s *wirepb.Sync) string {
	var parts []string
	for _, p := range s.Pages {
		ids := make([]uint64, len(p.Oplogs))
		for i, op := range p.Oplogs {
			ids[i] = op.Id
		}
		parts = append(parts, fmt.Sprintf("%s(%d,%d]%v more=%v live=%v", p.Channel, p.After, p.Upto, ids, p.More, p.Live))
	}
	return strings.Join(parts, " ")
}

func (cl *client) expect(op protocol.Op, m proto.Message) protocol.Frame {
	cl.t.Helper()
	f := cl.next()
	if f.Op != op {
		cl.t.Fatalf("got %s, want %s", describe(f), op)
	}
	if m != nil {
		if err := protocol.Unmarshal(f, m); err != nil {
			cl.t.Fatal(err)
		}
	}
	return f
}

func (cl *client) expectSync() *wirepb.Sync {
	cl.t.Helper()
	var s wirepb.Sync
	cl.expect(protocol.OpSync, &s)
	return &s
}

// expectError waits for ERROR{code} and, on a fake conn, for the close.
func (cl *client) expectError(code protocol.Code) {
	cl.t.Helper()
	var e wirepb.Error
	cl.expect(protocol.OpError, &e)
	if protocol.Code(e.Code) != code {
		cl.t.Fatalf("ERROR %d %q, want code %d", e.Code, e.Message, code)
	}
	if cl.conn != nil && !cl.conn.isClosed() {
		cl.t.Fatal("ERROR sent but connection not closed")
	}
}

// barrier returns the frames other than heartbeat replies that the session
// wrote before it answered two heartbeats. Frames of one connection are
// handled in order, so anything an earlier frame caused is in the result.
func (cl *client) barrier() []protocol.Frame {
	cl.t.Helper()
	var got []protocol.Frame
	for range 2 {
		seq := cl.sendMsg(protocol.OpHeartbeat, &wirepb.Heartbeat{})
		for {
			f := cl.next()
			if f.Op == protocol.OpHeartbeatReply && f.Seq == seq {
				break
			}
			got = append(got, f)
		}
	}
	return got
}

// expectQuiet asserts the session wrote nothing before answering heartbeats.
func (cl *client) expectQuiet() {
	cl.t.Helper()
	if got := cl.barrier(); len(got) > 0 {
		cl.t.Fatalf("unexpected frame: %s", describe(got[0]))
	}
}

func (cl *client) auth(token, device, platform, version string, bizs []string, points ...*wirepb.ChannelPoint) *wirepb.AuthReply {
	cl.t.Helper()
	seq := cl.sendMsg(protocol.OpAuth, &wirepb.Auth{Token: token, Device: device, Platform: platform,
		AppVersion: version, Bizs: bizs, Points: points})
	var r wirepb.AuthReply
	f := cl.expect(protocol.OpAuthReply, &r)
	if f.Seq != seq {
		cl.t.Fatalf("AUTH_REPLY seq %d, want %d", f.Seq, seq)
	}
	// The session takes PUSH frames only once AUTH_REPLY is written, a
	// moment after the client can read it: a push sent in between is not
	// delivered (best effort), which a test pushing right away would see.
	if cl.sess != nil { // nil: a real-socket client, whose tests do not push right away
		eventually(cl.t, "session ready for PUSH after AUTH_REPLY", cl.sess.rooms.ready.Load)
	}
	return &r
}

func (cl *client) ack(channel string, id uint64) {
	cl.sendMsg(protocol.OpAck, &wirepb.Ack{Points: []*wirepb.ChannelPoint{{Channel: channel, Id: id}}})
}

// follow plays a correct SDK for one channel: it applies pages in order from
// point p, acks each, and returns the ids it handed to the app, until the
// point reaches upto.
func (cl *client) follow(channel string, p, upto uint64) []uint64 {
	cl.t.Helper()
	return cl.followAll(map[string]uint64{channel: p}, map[string]uint64{channel: upto})[channel]
}

// followAll is follow for several channels: points holds each channel's
// starting point, want the point to reach. Every SYNC frame is answered by
// one ACK of the channels it touched; any gap, duplicate or unknown channel
// fails the test.
func (cl *client) followAll(points, want map[string]uint64) map[string][]uint64 {
	cl.t.Helper()
	got := make(map[string][]uint64)
	done := func() bool {
		for ch, w := range want {
			if points[ch] < w {
				return false
			}
		}
		return true
	}
	for !done() {
		f := cl.next()
		if f.Op == protocol.OpHeartbeatReply {
			continue
		}
		if f.Op != protocol.OpSync {
			cl.t.Fatalf("got %s while following %v", describe(f), points)
		}
		var s wirepb.Sync
		if err := protocol.Unmarshal(f, &s); err != nil {
			cl.t.Fatal(err)
		}
		ack := &wirepb.Ack{}
		for _, pg := range s.Pages {
			p, ok := points[pg.Channel]
			if !ok {
				cl.t.Fatalf("page of unexpected channel %q", pg.Channel)
			}
			if pg.After > p {
				cl.t.Fatalf("gap: %s page (%d,%d] at point %d", pg.Channel, pg.After, pg.Upto, p)
			}
			for _, op := range pg.Oplogs {
				if op.Id <= p {
					cl.t.Fatalf("duplicate: %s id %d at point %d", pg.Channel, op.Id, p)
				}
				if op.Id > pg.Upto {
					cl.t.Fatalf("%s id %d beyond page upto %d", pg.Channel, op.Id, pg.Upto)
				}
				got[pg.Channel] = append(got[pg.Channel], op.Id)
				p = op.Id
			}
			p = max(p, pg.Upto)
			points[pg.Channel] = p
			ack.Points = append(ack.Points, &wirepb.ChannelPoint{Channel: pg.Channel, Id: p})
		}
		cl.sendMsg(protocol.OpAck, ack)
	}
	return got
}

// counterValue reads a counter's current value.
func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func gaugeValue(t testing.TB, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

func seq(from, to uint64) []uint64 {
	var ids []uint64
	for i := from; i <= to; i++ {
		ids = append(ids, i)
	}
	return ids
}
