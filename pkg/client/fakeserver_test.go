package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testBiz  = "chat"
	testChan = "chat/u/alice"
	// waitFor bounds every wait in these tests; generous for -race on a
	// busy machine, and only reached when a test is failing.
	waitFor = 5 * time.Second
)

// fakeServer is a scripted comet: the test goroutine accepts connections
// and speaks frames on them step by step.
type fakeServer struct {
	t     *testing.T
	ln    net.Listener
	conns chan *fakeConn
	wg    sync.WaitGroup
	mu    sync.Mutex
	all   []net.Conn
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{t: t, ln: ln, conns: make(chan *fakeConn, 16)}
	s.wg.Go(s.acceptLoop)
	t.Cleanup(func() {
		_ = ln.Close()
		s.wg.Wait()
		s.mu.Lock()
		for _, c := range s.all {
			_ = c.Close()
		}
		s.mu.Unlock()
	})
	return s
}

func (s *fakeServer) addr() string { return s.ln.Addr().String() }

func (s *fakeServer) acceptLoop() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.all = append(s.all, c)
		s.mu.Unlock()
		select {
		case s.conns <- &fakeConn{t: s.t, c: c, r: bufio.NewReader(c)}:
		default:
			_ = c.Close()
		}
	}
}

// accept returns the next connection the client made.
func (s *fakeServer) accept() *fakeConn {
	s.t.Helper()
	select {
	case fc := <-s.conns:
		return fc
	case <-time.After(waitFor):
		s.t.Fatal("client did not connect")
		return nil
	}
}

// expectNoConn fails if the client connects within d.
func (s *fakeServer) expectNoConn(d time.Duration) {
	s.t.Helper()
	select {
	case <-s.conns:
		s.t.Fatalf("client connected, want no connection for %s", d)
	case <-time.After(d):
	}
}

type fakeConn struct {
	t   *testing.T
	c   net.Conn
	r   *bufio.Reader
	seq uint32
}

func (fc *fakeConn) read(timeout time.Duration) (protocol.Frame, error) {
	_ = fc.c.SetReadDeadline(time.Now().Add(timeout))
	var hdr [protocol.HeaderSize]byte
	if _, err := io.ReadFull(fc.r, hdr[:]); err != nil {
		return protocol.Frame{}, err
	}
	h, err := protocol.ParseHeader(hdr[:], protocol.DefaultMaxFrame)
	if err != nil {
		return protocol.Frame{}, err
	}
	buf := make([]byte, h.Length)
	copy(buf, hdr[:])
	if _, err := io.ReadFull(fc.r, buf[protocol.HeaderSize:]); err != nil {
		return protocol.Frame{}, err
	}
	f, _, err := protocol.Decode(buf, protocol.DefaultMaxFrame)
	return f, err
}

// next returns the next frame that is not a HEARTBEAT.
func (fc *fakeConn) next() protocol.Frame {
	fc.t.Helper()
	for {
		f, err := fc.read(waitFor)
		if err != nil {
			fc.t.Fatalf("read: %v", err)
		}
		if f.Op != protocol.OpHeartbeat {
			return f
		}
	}
}

func (fc *fakeConn) expect(op protocol.Op, m proto.Message) {
	fc.t.Helper()
	f := fc.next()
	if f.Op != op {
		fc.t.Fatalf("got %s, want %s", f.Op, op)
	}
	if err := protocol.Unmarshal(f, m); err != nil {
		fc.t.Fatal(err)
	}
}

// expectSilence fails if anything but a HEARTBEAT arrives within d.
func (fc *fakeConn) expectSilence(d time.Duration) {
	fc.t.Helper()
	end := time.Now().Add(d)
	for {
		left := time.Until(end)
		if left <= 0 {
			return
		}
		f, err := fc.read(left)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return
		}
		if err != nil {
			fc.t.Fatalf("read: %v", err)
		}
		if f.Op != protocol.OpHeartbeat {
			fc.t.Fatalf("got %s, want nothing for %s", f.Op, d)
		}
	}
}

// expectClosed fails unless the client closes the connection within waitFor.
func (fc *fakeConn) expectClosed() {
	fc.t.Helper()
	for {
		f, err := fc.read(waitFor)
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || (err != nil && strings.Contains(err.Error(), "reset")) {
			return
		}
		if err != nil {
			fc.t.Fatalf("want EOF, got %v", err)
		}
		if f.Op != protocol.OpHeartbeat && f.Op != protocol.OpAck {
			fc.t.Fatalf("got %s, want the connection closed", f.Op)
		}
	}
}

func (fc *fakeConn) send(op protocol.Op, seq uint32, m proto.Message) {
	fc.t.Helper()
	b, err := protocol.Encode(op, seq, m)
	if err != nil {
		fc.t.Fatal(err)
	}
	_ = fc.c.SetWriteDeadline(time.Now().Add(waitFor))
	if _, err := fc.c.Write(b); err != nil {
		fc.t.Fatalf("write %s: %v", op, err)
	}
}

func (fc *fakeConn) auth() *pb.Auth {
	fc.t.Helper()
	f := fc.next()
	if f.Op != protocol.OpAuth {
		fc.t.Fatalf("got %s, want AUTH", f.Op)
	}
	var a pb.Auth
	if err := protocol.Unmarshal(f, &a); err != nil {
		fc.t.Fatal(err)
	}
	fc.seq = f.Seq
	return &a
}

// handshake reads AUTH and answers with testChan (biz chat) starting at
// from, heartbeat 60s so heartbeats stay out of the way.
func (fc *fakeConn) handshake(from uint64) *pb.Auth {
	fc.t.Helper()
	a := fc.auth()
	fc.send(protocol.OpAuthReply, fc.seq, &pb.AuthReply{
		User: "alice", Session: "s1", HeartbeatMs: 60000,
		Channels: []*pb.ChannelInfo{{Biz: testBiz, Channel: testChan, From: from}},
	})
	return a
}

// page builds a page of ch (biz chat) covering (after, upto] with ids.
func page(ch string, after, upto uint64, ids ...uint64) *pb.ChannelPage {
	p := &pb.ChannelPage{Channel: ch, Biz: testBiz, After: after, Upto: upto}
	for _, id := range ids {
		p.Oplogs = append(p.Oplogs, &pb.Oplog{Id: id, Payload: fmt.Appendf(nil, "p%d", id), CreatedMs: 1700000000000 + int64(id)})
	}
	return p
}

func (fc *fakeConn) sync(pages ...*pb.ChannelPage) {
	fc.t.Helper()
	fc.send(protocol.OpSync, 0, &pb.Sync{Pages: pages})
}

func (fc *fakeConn) expectAck(ch string, id uint64) {
	fc.t.Helper()
	var a pb.Ack
	fc.expect(protocol.OpAck, &a)
	if len(a.Points) != 1 || a.Points[0].Channel != ch || a.Points[0].Id != id {
		fc.t.Fatalf("ACK %v, want %s=%d", a.Points, ch, id)
	}
}

func (fc *fakeConn) expectSyncReq(ch string, id uint64) {
	fc.t.Helper()
	var r pb.SyncReq
	fc.expect(protocol.OpSyncReq, &r)
	if len(r.Points) != 1 || r.Points[0].Channel != ch || r.Points[0].Id != id {
		fc.t.Fatalf("SYNC_REQ %v, want %s=%d", r.Points, ch, id)
	}
}

// recorder collects what the client hands to the app.
type recorder struct {
	mu     sync.Mutex
	ops    []Oplog
	events []Event
}

func (r *recorder) handler(ctx context.Context, op Oplog) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, op)
	return nil
}

func (r *recorder) onEvent(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) ids(channel string) []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []uint64
	for _, op := range r.ops {
		if op.Channel == channel {
			ids = append(ids, op.ID)
		}
	}
	return ids
}

// event waits for the n-th (1-based) event of kind and returns it.
func (r *recorder) event(t *testing.T, kind EventKind, n int) Event {
	t.Helper()
	var got Event
	eventually(t, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		seen := 0
		for _, e := range r.events {
			if e.Kind == kind {
				seen++
				if seen == n {
					got = e
					return true
				}
			}
		}
		return false
	}, "event %s #%d", kind, n)
	return got
}

// eventually polls cond until it holds or waitFor passes.
func eventually(t *testing.T, cond func() bool, format string, args ...any) {
	t.Helper()
	testutil.Eventually(t, waitFor, 5*time.Millisecond, func() error {
		if !cond() {
			return fmt.Errorf("still waiting for "+format, args...)
		}
		return nil
	})
}

func waitIDs(t *testing.T, r *recorder, ch string, want ...uint64) {
	t.Helper()
	eventually(t, func() bool { return len(r.ids(ch)) >= len(want) }, "%d oplogs on %s", len(want), ch)
	if got := r.ids(ch); !slices.Equal(got, want) {
		t.Fatalf("handler got %v, want %v", got, want)
	}
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("MSYNC_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func staticToken(tok string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) { return tok, nil }
}

// startClient starts a client for srv with the recorder as the chat
// handler (unless h is set), fast backoff, and a bounded Shutdown at
// cleanup.
func startClient(t *testing.T, srv *fakeServer, rec *recorder, h Handler, mod func(*Options)) *Client {
	t.Helper()
	opts := Options{
		TokenProvider: staticToken("tok"),
		Device:        "dev1",
		Platform:      "android",
		AppVersion:    "1.2.3",
		BackoffMin:    10 * time.Millisecond,
		BackoffMax:    50 * time.Millisecond,
		DialTimeout:   2 * time.Second,
		Logger:        testLogger(t),
		OnEvent:       rec.onEvent,
	}
	if mod != nil {
		mod(&opts)
	}
	c, err := New(srv.addr(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if h == nil {
		h = rec.handler
	}
	if err := c.RegisterBiz(testBiz, h); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := c.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return c
}
