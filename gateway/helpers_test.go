package gateway_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/msync/msync/gateway"
	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

// leakOpts are the goroutines goleak must not count:
//   - netpoll's epoll pollers: started once per process on first use and
//     never stopped, so they outlive every Server. We match any frame rather
//     than the top one because a poller parked in epoll_wait has
//     syscall.Syscall6 on top, which would hide real leaks too.
//   - whatever runs before the tests, by goroutine id: importing ants starts
//     its package-level default pool (purge and ticktock goroutines), which
//     the gateway never uses. Our own pools run the same functions, so
//     ignoring those by name would hide a pool we forgot to release.
var leakOpts []goleak.Option

func TestMain(m *testing.M) {
	leakOpts = []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/cloudwego/netpoll.(*defaultPoll).Wait"),
		goleak.IgnoreCurrent(),
	}
	goleak.VerifyTestMain(m, leakOpts...)
}

// testLogger sends the server's logs to t.Log and fails the test on
// error-level lines: the gateway logs errors only for real faults (panics,
// a dead event loop).
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(&tbHandler{t: t})
}

type tbHandler struct {
	t     testing.TB
	attrs []slog.Attr
}

func (h *tbHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *tbHandler) Handle(_ context.Context, r slog.Record) error {
	h.t.Helper()
	line := r.Level.String() + " " + r.Message
	for _, a := range h.attrs {
		line += " " + a.String()
	}
	r.Attrs(func(a slog.Attr) bool { line += " " + a.String(); return true })
	if r.Level >= slog.LevelError {
		h.t.Errorf("server logged an error: %s", line)
	} else {
		h.t.Log(line)
	}
	return nil
}
func (h *tbHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &tbHandler{t: h.t, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}
func (h *tbHandler) WithGroup(string) slog.Handler { return h }

type closeEvent struct {
	c   *gateway.Conn
	err error
}

type frameEvent struct {
	c *gateway.Conn
	f protocol.Frame
}

// testHandler records events on channels. onFrame, if set, replaces the
// frames channel; it runs on netpoll's goroutine and must not block.
type testHandler struct {
	opens   chan *gateway.Conn
	frames  chan frameEvent
	closes  chan closeEvent
	onOpen  func(c *gateway.Conn)
	onFrame func(c *gateway.Conn, f protocol.Frame)

	mu     sync.Mutex
	state  map[*gateway.Conn]string // "open" or "closed", to check the callback order
	faults []string
}

func newHandler() *testHandler {
	return &testHandler{
		opens:  make(chan *gateway.Conn, 8192),
		frames: make(chan frameEvent, 8192),
		closes: make(chan closeEvent, 8192),
		state:  map[*gateway.Conn]string{},
	}
}

func (h *testHandler) fault(s string) {
	h.mu.Lock()
	h.faults = append(h.faults, s)
	h.mu.Unlock()
}

func (h *testHandler) OnOpen(c *gateway.Conn) {
	h.mu.Lock()
	if _, ok := h.state[c]; ok {
		h.faults = append(h.faults, "OnOpen twice")
	}
	h.state[c] = "open"
	h.mu.Unlock()
	if h.onOpen != nil {
		h.onOpen(c)
	}
	select {
	case h.opens <- c:
	default: // callbacks must not block; fail instead of stalling netpoll
		h.fault("opens channel full")
	}
}

func (h *testHandler) OnFrame(c *gateway.Conn, f protocol.Frame) {
	h.mu.Lock()
	if h.state[c] != "open" {
		h.faults = append(h.faults, "OnFrame in state "+h.state[c])
	}
	h.mu.Unlock()
	if h.onFrame != nil {
		h.onFrame(c, f)
		return
	}
	select {
	case h.frames <- frameEvent{c, f}:
	default:
		h.fault("frames channel full")
	}
}

func (h *testHandler) OnClose(c *gateway.Conn, err error) {
	h.mu.Lock()
	if h.state[c] != "open" {
		h.faults = append(h.faults, "OnClose in state "+h.state[c])
	}
	if err == nil {
		h.faults = append(h.faults, "OnClose with nil error")
	}
	h.state[c] = "closed"
	h.mu.Unlock()
	select {
	case h.closes <- closeEvent{c, err}:
	default:
		h.fault("closes channel full")
	}
}

// check fails t if any callback came out of order.
func (h *testHandler) check(t testing.TB) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, f := range h.faults {
		t.Errorf("handler contract violated: %s", f)
	}
}

// echo answers every frame with op+1, same seq and body.
func echo(c *gateway.Conn, f protocol.Frame) {
	_ = c.Write(protocol.AppendFrame(nil, f.Op+1, f.Seq, f.Body))
}

// start runs a server on a free loopback port, shut down at cleanup.
func start(t testing.TB, cfg gateway.Config, h *testHandler) *gateway.Server {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s, err := gateway.New(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		h.check(t)
	})
	return s
}

func dial(t testing.TB, s *gateway.Server) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func send(t testing.TB, c net.Conn, b []byte) {
	t.Helper()
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatalf("client write: %v", err)
	}
}

// readFrame reads one whole frame from the client side.
func readFrame(c net.Conn, timeout time.Duration) (protocol.Frame, error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	var hdr [protocol.HeaderSize]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return protocol.Frame{}, err
	}
	n := binary.BigEndian.Uint32(hdr[0:4])
	if n < protocol.HeaderSize || n > 64<<20 {
		return protocol.Frame{}, errors.New("client: bad frame length from server")
	}
	buf := make([]byte, n)
	copy(buf, hdr[:])
	if _, err := io.ReadFull(c, buf[protocol.HeaderSize:]); err != nil {
		return protocol.Frame{}, err
	}
	f, _, err := protocol.Decode(buf, len(buf))
	return f, err
}

func mustReadFrame(t testing.TB, c net.Conn) protocol.Frame {
	t.Helper()
	f, err := readFrame(c, 5*time.Second)
	if err != nil {
		t.Fatalf("client read: %v", err)
	}
	return f
}

// expectError reads the next frame and checks it is ERROR with code.
func expectError(t testing.TB, c net.Conn, timeout time.Duration, code protocol.Code) *pb.Error {
	t.Helper()
	f, err := readFrame(c, timeout)
	if err != nil {
		t.Fatalf("want ERROR %d, read failed: %v", code, err)
	}
	if f.Op != protocol.OpError {
		t.Fatalf("want ERROR %d, got op %s", code, f.Op)
	}
	var e pb.Error
	if err := protocol.Unmarshal(f, &e); err != nil {
		t.Fatal(err)
	}
	if protocol.Code(e.Code) != code {
		t.Fatalf("ERROR code %d (%q), want %d", e.Code, e.Message, code)
	}
	return &e
}

// expectEOF checks the server closed the connection: reads end in EOF or
// a reset, not a timeout, and no more frames come.
func expectEOF(t testing.TB, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	n, err := c.Read(b[:])
	if n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("want EOF, got n=%d err=%v", n, err)
	}
}

func recvOpen(t testing.TB, h *testHandler) *gateway.Conn {
	t.Helper()
	select {
	case c := <-h.opens:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no OnOpen")
		return nil
	}
}

func recvClose(t testing.TB, h *testHandler, timeout time.Duration) closeEvent {
	t.Helper()
	select {
	case e := <-h.closes:
		return e
	case <-time.After(timeout):
		t.Fatal("no OnClose")
		return closeEvent{}
	}
}

func recvFrame(t testing.TB, h *testHandler) frameEvent {
	t.Helper()
	select {
	case e := <-h.frames:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no OnFrame")
		return frameEvent{}
	}
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, timeout, 2*time.Millisecond, func() error {
		if !cond() {
			return fmt.Errorf("still waiting for %s", what)
		}
		return nil
	})
}

// header builds a raw 16-byte header, for malformed ones.
func header(length uint32, hlen, version uint16, op protocol.Op, seq uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, length)
	b = binary.BigEndian.AppendUint16(b, hlen)
	b = binary.BigEndian.AppendUint16(b, version)
	b = binary.BigEndian.AppendUint32(b, uint32(op))
	return binary.BigEndian.AppendUint32(b, seq)
}
