package gateway_test

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msync/msync/gateway"
	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/pkg/protocol"
)

// drainHandler is a testHandler that also counts OnDrained calls.
type drainHandler struct {
	*testHandler
	drained atomic.Int32
}

func (h *drainHandler) OnDrained(*gateway.Conn) { h.drained.Add(1) }

// TestQueuedCountsBytesBeingWrittenAndNotifyDrained: while a peer reads
// nothing, Queued includes what the drain is blocked writing (not only what
// waits in the queue); NotifyDrained calls back once the peer has taken it
// all, and at once on an idle connection.
func TestQueuedCountsBytesBeingWrittenAndNotifyDrained(t *testing.T) {
	h := &drainHandler{testHandler: newHandler()}
	s, err := gateway.New(gateway.Config{Addr: "127.0.0.1:0", Logger: testLogger(t), WriteQueueBytes: 8 << 20}, h)
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
	})
	nc, err := net.DialTimeout("tcp", s.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.(*net.TCPConn).SetReadBuffer(64 << 10)
	c := recvOpen(t, h.testHandler)
	c.NotifyDrained()
	waitFor(t, 5*time.Second, "OnDrained on an idle connection", func() bool { return h.drained.Load() == 1 })

	// Far more than socket buffers hold: the drain blocks in its write.
	frame := protocol.AppendFrame(nil, protocol.OpSync, 0, make([]byte, 60<<10))
	const frames = 100
	for range frames {
		if err := c.Write(frame); err != nil {
			t.Fatal(err)
		}
	}
	c.NotifyDrained()
	// The queue empties into the drain at once; the drain then stays
	// blocked on the peer, and Queued must still count what it holds.
	testutil.Eventually(t, 10*time.Second, time.Millisecond, func() error {
		if f := s.Stats().Flushes; f == 0 {
			return fmt.Errorf("the drain has not written yet (%d flushes, Queued %d)", f, c.Queued())
		}
		return nil
	})
	if q := c.Queued(); q < len(frame) {
		t.Fatalf("Queued %d while the peer reads nothing, want at least one frame (%d)", q, len(frame))
	}
	if h.drained.Load() != 1 {
		t.Fatal("OnDrained before the peer read anything")
	}
	// Now read everything: the callback comes once, with the queue empty.
	var total atomic.Int64
	go func() {
		buf := make([]byte, 64<<10)
		for total.Load() < int64(frames*len(frame)) {
			n, err := nc.Read(buf)
			if err != nil {
				return // the test fails on its wait
			}
			total.Add(int64(n))
		}
	}()
	waitFor(t, 10*time.Second, "OnDrained after the peer read it all", func() bool { return h.drained.Load() == 2 })
	if q := c.Queued(); q != 0 {
		t.Fatalf("Queued %d after OnDrained", q)
	}
}

// TestMaxConnsPerIPAndTotal: past MaxConnsPerIP from one address, and past
// MaxConns in all, a new TCP connection gets its ERROR code and is closed
// without OnOpen; closing one makes room again.
func TestMaxConnsPerIPAndTotal(t *testing.T) {
	h := newHandler()
	s := start(t, gateway.Config{MaxConnsPerIP: 2, MaxConns: 3}, h)
	dialFrom := func(ip string) net.Conn {
		t.Helper()
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		c, err := d.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	a1, _ := dialFrom("127.0.0.1"), recvOpen(t, h)
	dialFrom("127.0.0.1")
	recvOpen(t, h)
	expectError(t, dialFrom("127.0.0.1"), 5*time.Second, protocol.CodeTooManyConnsPerIP)
	dialFrom("127.0.0.2")
	recvOpen(t, h)
	expectError(t, dialFrom("127.0.0.3"), 5*time.Second, protocol.CodeTooManyConns)
	if st := s.Stats(); st.RefusedConnsPerIP != 1 || st.RefusedConns != 1 || st.Open != 3 {
		t.Fatalf("stats %+v", st)
	}
	_ = a1.Close()
	recvClose(t, h, 5*time.Second)
	dialFrom("127.0.0.1")
	recvOpen(t, h)
}
