package gateway_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/msync/msync/gateway"
	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/pkg/protocol"
)

func TestNewValidatesEverything(t *testing.T) {
	tests := []struct {
		name string
		cfg  gateway.Config
		h    gateway.Handler
		want []string // substrings of the error; nil = valid
	}{
		{name: "zero config is valid", cfg: gateway.Config{}, h: newHandler()},
		{name: "nil handler", cfg: gateway.Config{}, h: nil, want: []string{"Handler is nil"}},
		{
			name: "every problem listed",
			cfg: gateway.Config{
				Addr: "no-port", MaxFrame: 8, WriteQueueBytes: -1, WriteTimeout: -1,
				ReadTimeout: -1, AuthTimeout: -1, Tick: -1, Workers: -1, BufferSize: -1,
			},
			h: newHandler(),
			want: []string{"Addr", "MaxFrame", "WriteQueueBytes", "WriteTimeout", "ReadTimeout",
				"AuthTimeout", "Tick", "Workers", "BufferSize"},
		},
		{name: "tick longer than auth timeout", cfg: gateway.Config{AuthTimeout: time.Second, Tick: 2 * time.Second},
			h: newHandler(), want: []string{"Tick"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := gateway.New(tt.cfg, tt.h)
			if tt.want == nil {
				if err != nil || s == nil {
					t.Fatalf("New: %v", err)
				}
				if err := s.Shutdown(context.Background()); err != nil { // never started: a no-op
					t.Fatal(err)
				}
				return
			}
			if err == nil || !errors.Is(err, gateway.ErrInvalidConfig) {
				t.Fatalf("err = %v, want ErrInvalidConfig", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
		})
	}
}

func TestStartTwiceAndAddr(t *testing.T) {
	h := newHandler()
	s := start(t, gateway.Config{}, h)
	if s.Addr() == nil || strings.HasSuffix(s.Addr().String(), ":0") {
		t.Fatalf("Addr = %v after Start", s.Addr())
	}
	if err := s.Start(); !errors.Is(err, gateway.ErrStarted) {
		t.Fatalf("second Start: %v", err)
	}
}

func TestRoundTrip(t *testing.T) {
	h := newHandler()
	h.onFrame = echo
	s := start(t, gateway.Config{}, h)
	c := dial(t, s)
	sc := recvOpen(t, h)
	if sc.RemoteAddr() != c.LocalAddr().String() {
		t.Errorf("RemoteAddr %q, client is %q", sc.RemoteAddr(), c.LocalAddr())
	}
	for i := 0; i < 100; i++ {
		body := bytes.Repeat([]byte{byte(i)}, i*37)
		send(t, c, protocol.AppendFrame(nil, protocol.OpHeartbeat, uint32(i), body))
		f := mustReadFrame(t, c)
		if f.Op != protocol.OpHeartbeatReply || f.Seq != uint32(i) || !bytes.Equal(f.Body, body) {
			t.Fatalf("frame %d: op %s seq %d len %d", i, f.Op, f.Seq, len(f.Body))
		}
	}
	st := s.Stats()
	if st.FramesIn != 100 || st.Accepted != 1 || st.Open != 1 || s.Len() != 1 {
		t.Errorf("stats %+v Len %d", st, s.Len())
	}
	waitFor(t, 2*time.Second, "FramesOut 100", func() bool { return s.Stats().FramesOut == 100 })
}

func TestBodyIsACopy(t *testing.T) {
	h := newHandler()
	s := start(t, gateway.Config{}, h)
	c := dial(t, s)
	// Two frames in one segment: if Body aliased netpoll's buffer, reading
	// the second would be free to overwrite the first's bytes.
	a := protocol.AppendFrame(nil, protocol.OpPush, 1, []byte("first-body"))
	send(t, c, protocol.AppendFrame(a, protocol.OpPush, 2, []byte("second-bod")))
	f1, f2 := recvFrame(t, h), recvFrame(t, h)
	for i := range f2.f.Body {
		f2.f.Body[i] = 'x'
	}
	if string(f1.f.Body) != "first-body" {
		t.Fatalf("first body changed to %q", f1.f.Body)
	}
}

func TestConnIDsAndValue(t *testing.T) {
	h := newHandler()
	s := start(t, gateway.Config{}, h)
	seen := map[uint64]bool{}
	for i := 0; i < 20; i++ {
		dial(t, s)
		c := recvOpen(t, h)
		if seen[c.ID()] {
			t.Fatalf("duplicate id %d", c.ID())
		}
		seen[c.ID()] = true
		if c.Value() != nil {
			t.Fatal("Value before SetValue")
		}
		c.SetValue(i)
		c.SetValue(fmt.Sprint(i)) // a different type must not panic (atomic.Value would)
		if c.Value() != fmt.Sprint(i) {
			t.Fatalf("Value %v", c.Value())
		}
	}
}

func TestManyFramesInOneWrite(t *testing.T) {
	h := newHandler()
	h.onFrame = echo
	s := start(t, gateway.Config{}, h)
	c := dial(t, s)
	var buf []byte
	const n = 1000
	for i := 0; i < n; i++ {
		buf = protocol.AppendFrame(buf, protocol.OpAck, uint32(i), []byte(fmt.Sprintf("frame-%d", i)))
	}
	send(t, c, buf) // ~25 KB: many frames per netpoll read, some split across reads
	for i := 0; i < n; i++ {
		f := mustReadFrame(t, c)
		if f.Seq != uint32(i) || string(f.Body) != fmt.Sprintf("frame-%d", i) {
			t.Fatalf("frame %d: seq %d body %q", i, f.Seq, f.Body)
		}
	}
}

func TestFrameSplitOverManyWrites(t *testing.T) {
	h := newHandler()
	h.onFrame = echo
	s := start(t, gateway.Config{ReadTimeout: 5 * time.Second}, h)
	c := dial(t, s)
	body := make([]byte, 20000)
	for i := range body {
		body[i] = byte(i * 7)
	}
	frame := protocol.AppendFrame(nil, protocol.OpSyncReq, 42, body)
	// Header byte by byte, then the body in growing chunks, with pauses so
	// each piece arrives in its own read.
	for i, step := 0, 1; i < len(frame); step *= 2 {
		end := min(i+step, len(frame))
		send(t, c, frame[i:end])
		time.Sleep(3 * time.Millisecond) // deliberate gap: each piece in its own read
		i = end
	}
	f := mustReadFrame(t, c)
	if f.Seq != 42 || !bytes.Equal(f.Body, body) {
		t.Fatalf("seq %d, body intact %v", f.Seq, bytes.Equal(f.Body, body))
	}
}

func TestMalformedHeader(t *testing.T) {
	tests := []struct {
		name string
		hdr  []byte
		seq  uint32
	}{
		{"bad version", header(16, 16, 2, protocol.OpAuth, 7), 7},
		{"header length below 16", header(16, 8, protocol.Version, protocol.OpAuth, 8), 8},
		{"length below header length", header(10, 16, protocol.Version, protocol.OpAuth, 9), 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHandler()
			s := start(t, gateway.Config{}, h)
			c := dial(t, s)
			recvOpen(t, h)
			send(t, c, append(tt.hdr, "trailing garbage"...))
			e := expectError(t, c, 5*time.Second, protocol.CodeBadFrame)
			if e.Message == "" {
				t.Error("empty ERROR message")
			}
			expectEOF(t, c)
			ev := recvClose(t, h, 5*time.Second)
			if !errors.Is(ev.err, gateway.ErrBadFrame) || !errors.Is(ev.err, protocol.ErrBadHeader) {
				t.Fatalf("OnClose err %v", ev.err)
			}
			if got := s.Stats().BadFrames; got != 1 {
				t.Errorf("BadFrames %d", got)
			}
			select {
			case f := <-h.frames:
				t.Fatalf("OnFrame for a bad frame: %+v", f.f)
			default:
			}
		})
	}
}

func TestSeqEchoedInBadFrameError(t *testing.T) {
	h := newHandler()
	s := start(t, gateway.Config{}, h)
	c := dial(t, s)
	send(t, c, header(16, 16, 9, protocol.OpAuth, 12345))
	f, err := readFrame(c, 5*time.Second)
	if err != nil || f.Op != protocol.OpError || f.Seq != 12345 {
		t.Fatalf("frame %+v err %v, want ERROR with seq 12345", f, err)
	}
}

func TestOversizedFrame(t *testing.T) {
	h := newHandler()
	s := start(t, gateway.Config{MaxFrame: 1024}, h)
	c := dial(t, s)
	recvOpen(t, h)
	// The header alone is enough to refuse it: the server must not wait for
	// (or buffer) the announced 1 MiB.
	send(t, c, header(1<<20, 16, protocol.Version, protocol.OpSync, 3))
	expectError(t, c, 5*time.Second, protocol.CodeFrameTooLarge)
	expectEOF(t, c)
	ev := recvClose(t, h, 5*time.Second)
	if !errors.Is(ev.err, protocol.ErrFrameTooLarge) || !errors.Is(ev.err, gateway.ErrBadFrame) {
		t.Fatalf("OnClose err %v", ev.err)
	}
	// A frame exactly at the limit is fine.
	c2 := dial(t, s)
	send(t, c2, protocol.AppendFrame(nil, protocol.OpAck, 1, make([]byte, 1024-protocol.HeaderSize)))
	if f := recvFrame(t, h); len(f.f.Body) != 1024-protocol.HeaderSize {
		t.Fatalf("body %d bytes", len(f.f.Body))
	}
}

func TestAuthTimeout(t *testing.T) {
	h := newHandler()
	s := start(t, gateway.Config{AuthTimeout: 200 * time.Millisecond, Tick: 10 * time.Millisecond}, h)
	begin := time.Now()
	c := dial(t, s)
	recvOpen(t, h)
	expectError(t, c, 5*time.Second, protocol.CodeAuthTimeout)
	if el := time.Since(begin); el < 200*time.Millisecond {
		t.Fatalf("auth timeout fired after %v, before 200ms", el)
	}
	expectEOF(t, c)
	if ev := recvClose(t, h, 5*time.Second); !errors.Is(ev.err, gateway.ErrDeadline) {
		t.Fatalf("OnClose err %v", ev.err)
	}
	if got := s.Stats().DeadlineCloses; got != 1 {
		t.Errorf("DeadlineCloses %d", got)
	}
}

// TestHeartbeatDeadline runs the deadline wheel on a clock the test moves:
// heartbeats keep extending the deadline far past the auth timeout, the
// deadline does not fire before hb has passed since the last one, and it
// fires once it has.
func TestHeartbeatDeadline(t *testing.T) {
	h := newHandler()
	const hb, tick = 400 * time.Millisecond, 10 * time.Millisecond
	h.onFrame = func(c *gateway.Conn, f protocol.Frame) {
		c.SetDeadline(hb, protocol.CodeHeartbeatTimeout)
		echo(c, f)
	}
	clk := testutil.NewClock(time.Unix(0, 0))
	wheelNow := func() int64 { return clk.Now().UnixNano() + 1 }
	s := start(t, gateway.WithClock(gateway.Config{AuthTimeout: 200 * time.Millisecond, Tick: tick}, wheelNow), h)
	c := dial(t, s)
	recvOpen(t, h)
	// 1.2s of heartbeats every 50ms (wheel time): far past the auth timeout
	// and the heartbeat deadline, so only the extensions keep it alive.
	for range 24 {
		send(t, c, protocol.AppendFrame(nil, protocol.OpHeartbeat, 1, nil))
		if f := mustReadFrame(t, c); f.Op != protocol.OpHeartbeatReply {
			t.Fatalf("got %s while heartbeating at wheel time %v", f.Op, clk.Now().Sub(time.Unix(0, 0)))
		}
		clk.Add(50 * time.Millisecond)
		gateway.AdvanceWheel(s)
	}
	// The last heartbeat set the deadline 50ms ago; just short of hb
	// after it, nothing has expired.
	clk.Add(hb - 50*time.Millisecond - 2*tick)
	gateway.AdvanceWheel(s)
	if got := s.Stats().DeadlineCloses; got != 0 {
		t.Fatalf("%d deadline closes %v after the last heartbeat, before %v", got, hb-2*tick, hb)
	}
	clk.Add(3 * tick)
	gateway.AdvanceWheel(s)
	expectError(t, c, 5*time.Second, protocol.CodeHeartbeatTimeout)
	expectEOF(t, c)
	if ev := recvClose(t, h, 5*time.Second); !errors.Is(ev.err, gateway.ErrDeadline) {
		t.Fatalf("OnClose err %v", ev.err)
	}
}

func TestAckDeadline(t *testing.T) {
	const ackTimeout = 200 * time.Millisecond
	newAckHandler := func() *testHandler {
		h := newHandler()
		h.onFrame = func(c *gateway.Conn, f protocol.Frame) {
			c.SetDeadline(10*time.Second, protocol.CodeHeartbeatTimeout)
			switch f.Op {
			case protocol.OpSyncReq: // "a page was sent": wait for its ack
				c.SetAckDeadline(ackTimeout)
			case protocol.OpAck:
				c.SetAckDeadline(0)
			}
			echo(c, f)
		}
		return h
	}
	// The wheel runs on a clock the test moves, so "well past the ack
	// timeout" is exact however slow the machine.
	newClock := func() (*testutil.Clock, gateway.Config) {
		clk := testutil.NewClock(time.Unix(0, 0))
		return clk, gateway.WithClock(gateway.Config{Tick: 10 * time.Millisecond}, func() int64 { return clk.Now().UnixNano() + 1 })
	}

	t.Run("expires", func(t *testing.T) {
		h := newAckHandler()
		clk, cfg := newClock()
		s := start(t, cfg, h)
		c := dial(t, s)
		send(t, c, protocol.AppendFrame(nil, protocol.OpSyncReq, 1, nil))
		mustReadFrame(t, c)
		clk.Add(ackTimeout + 20*time.Millisecond)
		gateway.AdvanceWheel(s)
		expectError(t, c, 5*time.Second, protocol.CodeAckTimeout)
		expectEOF(t, c)
		if ev := recvClose(t, h, 5*time.Second); !errors.Is(ev.err, gateway.ErrAckDeadline) {
			t.Fatalf("OnClose err %v", ev.err)
		}
	})
	t.Run("cleared", func(t *testing.T) {
		h := newAckHandler()
		clk, cfg := newClock()
		s := start(t, cfg, h)
		c := dial(t, s)
		send(t, c, protocol.AppendFrame(nil, protocol.OpSyncReq, 1, nil))
		send(t, c, protocol.AppendFrame(nil, protocol.OpAck, 2, nil))
		mustReadFrame(t, c)
		mustReadFrame(t, c)
		// Well past the ack timeout the connection still answers.
		clk.Add(3 * ackTimeout)
		gateway.AdvanceWheel(s)
		send(t, c, protocol.AppendFrame(nil, protocol.OpHeartbeat, 3, nil))
		if f := mustReadFrame(t, c); f.Op != protocol.OpHeartbeatReply || f.Seq != 3 {
			t.Fatalf("got %s seq %d, want HEARTBEAT_REPLY 3", f.Op, f.Seq)
		}
		if s.Len() != 1 {
			t.Fatalf("Len %d", s.Len())
		}
	})
}

func TestCloseDeliversFinal(t *testing.T) {
	h := newHandler()
	errKicked := errors.New("kicked by test")
	var afterClose = make(chan error, 1)
	h.onFrame = func(c *gateway.Conn, f protocol.Frame) {
		for i := 0; i < 3; i++ {
			_ = c.Write(protocol.AppendFrame(nil, protocol.OpPush, uint32(i), bytes.Repeat([]byte("p"), 30000)))
		}
		c.Close(protocol.KickFrame(protocol.CodeKicked, "bye"), errKicked)
		c.Close(nil, errors.New("second close must be ignored"))
		afterClose <- c.Write(protocol.AppendFrame(nil, protocol.OpPush, 9, nil))
	}
	s := start(t, gateway.Config{}, h)
	c := dial(t, s)
	send(t, c, protocol.AppendFrame(nil, protocol.OpAuth, 1, nil))
	for i := 0; i < 3; i++ {
		if f := mustReadFrame(t, c); f.Op != protocol.OpPush || f.Seq != uint32(i) || len(f.Body) != 30000 {
			t.Fatalf("frame %d: %s seq %d len %d", i, f.Op, f.Seq, len(f.Body))
		}
	}
	if f := mustReadFrame(t, c); f.Op != protocol.OpKick {
		t.Fatalf("got %s, want KICK", f.Op)
	}
	expectEOF(t, c)
	if ev := recvClose(t, h, 5*time.Second); !errors.Is(ev.err, errKicked) {
		t.Fatalf("OnClose err %v", ev.err)
	}
	if err := <-afterClose; !errors.Is(err, gateway.ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
}

func TestPeerClose(t *testing.T) {
	h := newHandler()
	s := start(t, gateway.Config{}, h)
	c := dial(t, s)
	sc := recvOpen(t, h)
	_ = c.Close()
	ev := recvClose(t, h, 5*time.Second)
	if ev.c != sc || !errors.Is(ev.err, gateway.ErrPeerClosed) {
		t.Fatalf("OnClose %v err %v", ev.c == sc, ev.err)
	}
	waitFor(t, 2*time.Second, "Len 0", func() bool { return s.Len() == 0 })
	if err := sc.Write(protocol.AppendFrame(nil, protocol.OpPush, 1, nil)); !errors.Is(err, gateway.ErrClosed) {
		t.Fatalf("Write after peer close: %v", err)
	}
}

// TestPartialFrameDoesNotSpin holds half a frame on the server past
// ReadTimeout and checks the connection is closed for it, and that the
// wait did not spin: returning from OnRequest with buffered bytes makes
// netpoll call it again at once, thousands of times a second.
func TestPartialFrameDoesNotSpin(t *testing.T) {
	frame := protocol.AppendFrame(nil, protocol.OpSync, 5, make([]byte, 4000))
	// A few calls per wait is netpoll handing the bytes over in pieces; a
	// spin is orders of magnitude more.
	const maxCalls = 20
	tests := []struct {
		name string
		part []byte
	}{
		{"partial header", frame[:7]},
		{"partial body", frame[:2000]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHandler()
			const rt = 600 * time.Millisecond
			s := start(t, gateway.Config{ReadTimeout: rt}, h)
			c := dial(t, s)
			recvOpen(t, h)
			calls0, t0 := gateway.OnRequestCalls(s), time.Now()
			send(t, c, tt.part)
			ev := recvClose(t, h, 5*time.Second)
			calls, wall := gateway.OnRequestCalls(s)-calls0, time.Since(t0)
			if !errors.Is(ev.err, gateway.ErrReadTimeout) {
				t.Fatalf("OnClose err %v", ev.err)
			}
			if wall < rt {
				t.Fatalf("closed after %v, before ReadTimeout %v", wall, rt)
			}
			if calls > maxCalls {
				t.Fatalf("OnRequest ran %d times during a %v wait: it is spinning", calls, wall)
			}
			expectEOF(t, c)
		})
	}
	t.Run("peer closes mid-frame", func(t *testing.T) {
		h := newHandler()
		s := start(t, gateway.Config{}, h)
		c := dial(t, s)
		recvOpen(t, h)
		send(t, c, frame[:2000])
		testutil.Eventually(t, 10*time.Second, time.Millisecond, func() error {
			if n := gateway.OnRequestCalls(s); n == 0 {
				return errors.New("the server has not read the partial frame yet")
			}
			return nil
		})
		calls0 := gateway.OnRequestCalls(s)
		_ = c.Close()
		ev := recvClose(t, h, 5*time.Second)
		if !errors.Is(ev.err, gateway.ErrPeerClosed) {
			t.Fatalf("OnClose err %v", ev.err)
		}
		// A deliberate gap, waiting for nothing to happen: a spin would
		// call OnRequest thousands of times in it.
		time.Sleep(100 * time.Millisecond)
		if calls := gateway.OnRequestCalls(s) - calls0; calls > maxCalls {
			t.Fatalf("OnRequest ran %d times after the peer left: it is spinning", calls)
		}
	})
}

func TestSlowConsumer(t *testing.T) {
	h := newHandler()
	h.onFrame = echo
	const limit = 256 << 10
	s := start(t, gateway.Config{WriteQueueBytes: limit, WriteTimeout: time.Second}, h)

	slow := dial(t, s) // never reads
	slowConn := recvOpen(t, h)
	fast := dial(t, s)
	recvOpen(t, h)

	frame := make([]byte, 16<<10)
	var err error
	var written int
	// Loopback socket buffers absorb a few MB; then the queue fills.
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		if err = slowConn.Write(protocol.AppendFrame(nil, protocol.OpPush, 0, frame)); err != nil {
			break
		}
		written += len(frame)
		if written%(1<<20) == 0 {
			time.Sleep(time.Millisecond) // deliberate pacing: let the drain hand bytes to the kernel
		}
	}
	if !errors.Is(err, gateway.ErrSlowConsumer) {
		t.Fatalf("Write err %v after %d bytes, want ErrSlowConsumer", err, written)
	}
	if err := slowConn.Write(frame); !errors.Is(err, gateway.ErrClosed) {
		t.Fatalf("Write after overflow: %v", err)
	}
	// The other connection keeps working while the slow one is torn down.
	for i := 0; i < 10; i++ {
		send(t, fast, protocol.AppendFrame(nil, protocol.OpHeartbeat, uint32(i), nil))
		if f := mustReadFrame(t, fast); f.Seq != uint32(i) {
			t.Fatalf("fast conn got seq %d", f.Seq)
		}
	}
	ev := recvClose(t, h, 5*time.Second)
	if ev.c != slowConn || !errors.Is(ev.err, gateway.ErrSlowConsumer) {
		t.Fatalf("OnClose slow=%v err %v", ev.c == slowConn, ev.err)
	}
	if got := s.Stats().SlowConsumerCloses; got < 1 {
		t.Errorf("SlowConsumerCloses %d", got)
	}
	// The slow client finds its socket closed once it drains what arrived.
	_ = slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1<<20)
	for {
		if _, err := slow.Read(buf); err != nil {
			if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
				t.Fatal("slow client's connection still open")
			}
			break
		}
	}
	if s.Len() != 1 {
		t.Fatalf("Len %d, want 1", s.Len())
	}
}

// TestPoolSaturated runs with one drain worker and blocks it on a peer
// that does not read: another connection's write must wait on the backlog,
// not be dropped, run inline or spawn a goroutine, and go out as soon as
// the worker is free.
func TestPoolSaturated(t *testing.T) {
	h := newHandler()
	s := start(t, gateway.Config{Workers: 1, WriteQueueBytes: 128 << 20, WriteTimeout: 500 * time.Millisecond}, h)
	dial(t, s) // never reads
	slowConn := recvOpen(t, h)
	other := dial(t, s)
	otherConn := recvOpen(t, h)

	// More than loopback socket buffers hold, so the only worker blocks in
	// a flush until WriteTimeout.
	// One frame queued 48 times (the drain only reads it): encoding 48 MB
	// anew took longer than WriteTimeout under -race on a loaded machine.
	big := protocol.AppendFrame(nil, protocol.OpPush, 0, make([]byte, 1<<20))
	for i := 0; i < 48; i++ {
		if err := slowConn.Write(big); err != nil {
			t.Fatalf("queueing: %v", err)
		}
	}
	// The first Write above handed slowConn to the only worker, which stays
	// busy until the flush times out, so this Write finds the pool full.
	if err := otherConn.Write(protocol.AppendFrame(nil, protocol.OpPush, 77, []byte("hello"))); err != nil {
		t.Fatal(err)
	}
	f := mustReadFrame(t, other)
	if f.Seq != 77 || string(f.Body) != "hello" {
		t.Fatalf("got seq %d body %q", f.Seq, f.Body)
	}
	if got := s.Stats().DrainsDeferred; got < 1 {
		t.Errorf("DrainsDeferred %d: the write was not parked", got)
	}
	if ev := recvClose(t, h, 5*time.Second); ev.c != slowConn || !errors.Is(ev.err, gateway.ErrSlowConsumer) {
		t.Fatalf("OnClose slow=%v err %v", ev.c == slowConn, ev.err)
	}
}

func TestShutdown(t *testing.T) {
	h := newHandler()
	h.onFrame = echo
	cfg := gateway.Config{Addr: "127.0.0.1:0", Logger: testLogger(t)}
	s, err := gateway.New(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	const n = 8
	conns := make([]func(), 0, n)
	for i := 0; i < n; i++ {
		c := dial(t, s)
		recvOpen(t, h)
		send(t, c, protocol.AppendFrame(nil, protocol.OpHeartbeat, 1, nil))
		mustReadFrame(t, c)
		conns = append(conns, func() {
			expectError(t, c, 5*time.Second, protocol.CodeServerShutdown)
			expectEOF(t, c)
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if s.Len() != 0 {
		t.Fatalf("Len %d after Shutdown", s.Len())
	}
	for _, check := range conns {
		check()
	}
	for i := 0; i < n; i++ {
		if ev := recvClose(t, h, time.Second); !errors.Is(ev.err, gateway.ErrShutdown) {
			t.Fatalf("OnClose err %v", ev.err)
		}
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if err := s.Start(); !errors.Is(err, gateway.ErrShutdown) {
		t.Fatalf("Start after Shutdown: %v", err)
	}
	h.check(t)
	goleak.VerifyNone(t, leakOpts...)
}

func TestShutdownContextExpires(t *testing.T) {
	h := newHandler()
	// WriteTimeout is far longer than the test may take: a Shutdown that
	// waited for the stuck flush instead of dropping it would show.
	const writeTimeout = 2 * time.Minute
	cfg := gateway.Config{Addr: "127.0.0.1:0", Logger: testLogger(t), WriteQueueBytes: 128 << 20, WriteTimeout: writeTimeout}
	s, err := gateway.New(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	c := dial(t, s)
	sc := recvOpen(t, h)
	big := make([]byte, 1<<20)
	for i := 0; i < 48; i++ { // a flush that cannot finish: the client never reads
		_ = sc.Write(protocol.AppendFrame(nil, protocol.OpPush, 0, big))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	begin := time.Now()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown err %v, want DeadlineExceeded", err)
	}
	if el := time.Since(begin); el > writeTimeout/2 {
		t.Fatalf("Shutdown took %v after its context expired: it waited for the flush", el)
	}
	if ev := recvClose(t, h, 10*time.Second); !errors.Is(ev.err, gateway.ErrShutdown) {
		t.Fatalf("OnClose err %v", ev.err)
	}
	_ = c.Close()
	h.check(t)
	goleak.VerifyNone(t, leakOpts...)
}

func TestRejectDuringShutdown(t *testing.T) {
	h := newHandler()
	s := start(t, gateway.Config{}, h)
	addr := s.Addr().String()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The listener is closed: dialing fails or the connection dies at once,
	// and no OnOpen happens.
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		var b [1]byte
		if n, err := c.Read(b[:]); n != 0 || err == nil {
			t.Fatalf("read %d bytes, err %v from a shut-down server", n, err)
		}
		_ = c.Close()
	}
	select {
	case <-h.opens:
		t.Fatal("OnOpen after Shutdown")
	default:
	}
}
