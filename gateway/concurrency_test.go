package gateway_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/msync/msync/gateway"
	"github.com/msync/msync/pkg/protocol"
)

// These tests are about netpoll's writer not being safe for concurrent use:
// under -race netpoll swaps in a locked buffer, so they must pass in a
// normal build too (go test -count=1 ./gateway/...).

// testFrame encodes frame n of writer w with a length and content that
// depend on both, so a torn or interleaved write cannot go unnoticed.
func testFrame(w, n int) []byte {
	l := (w*131 + n*17) % 700
	body := make([]byte, 8+l)
	binary.BigEndian.PutUint32(body[0:], uint32(w))
	binary.BigEndian.PutUint32(body[4:], uint32(n))
	for i := 8; i < len(body); i++ {
		body[i] = byte(w*31 + n + i)
	}
	return protocol.AppendFrame(nil, protocol.OpPush, uint32(n), body)
}

// verifyStream reads writers*per frames from c and checks each is intact
// and that every writer's frames arrive in the order it wrote them.
func verifyStream(c net.Conn, writers, per int) error {
	next := make([]int, writers)
	for got := 0; got < writers*per; got++ {
		f, err := readFrame(c, 20*time.Second)
		if err != nil {
			return fmt.Errorf("after %d frames: %w", got, err)
		}
		if f.Op != protocol.OpPush || len(f.Body) < 8 {
			return fmt.Errorf("frame %d: op %s, body %d bytes", got, f.Op, len(f.Body))
		}
		w := int(binary.BigEndian.Uint32(f.Body[0:]))
		n := int(binary.BigEndian.Uint32(f.Body[4:]))
		if w >= writers || n != next[w] || f.Seq != uint32(n) {
			return fmt.Errorf("frame %d: writer %d n %d seq %d, want n %d", got, w, n, f.Seq, next[w])
		}
		if want := testFrame(w, n); len(want)-protocol.HeaderSize != len(f.Body) ||
			string(want[protocol.HeaderSize:]) != string(f.Body) {
			return fmt.Errorf("frame %d (writer %d n %d): body corrupted", got, w, n)
		}
		next[w]++
	}
	return nil
}

// hammer runs writers goroutines, each writing per frames to sc in order.
func hammer(t *testing.T, sc *gateway.Conn, writers, per int) {
	t.Helper()
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < per; n++ {
				if err := sc.Write(testFrame(w, n)); err != nil {
					t.Errorf("writer %d frame %d: %v", w, n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// idle is the auth and write timeout of the concurrent-write tests: they
// never authenticate, and under -race on a loaded machine they run far
// longer than the 10s defaults, which then closed their connections.
const idle = 10 * time.Minute

func TestConcurrentWritesOneConn(t *testing.T) {
	h := newHandler()
	s := start(t, gateway.Config{WriteQueueBytes: 256 << 20, AuthTimeout: idle, WriteTimeout: idle}, h)
	c := dial(t, s)
	sc := recvOpen(t, h)
	const writers, per = 32, 2000
	done := make(chan error, 1)
	go func() { done <- verifyStream(c, writers, per) }()
	hammer(t, sc, writers, per)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Minute):
		t.Fatal("reader did not finish")
	}
	if st := s.Stats(); st.FramesOut != writers*per {
		t.Fatalf("FramesOut %d, want %d", st.FramesOut, writers*per)
	}
}

// TestConcurrentWritesManyConns also runs with few drain workers, so
// connections queue on the backlog while others drain.
func TestConcurrentWritesManyConns(t *testing.T) {
	h := newHandler()
	s := start(t, gateway.Config{WriteQueueBytes: 64 << 20, Workers: 4, AuthTimeout: idle, WriteTimeout: idle}, h)
	const conns, writers, per = 48, 8, 300
	clients := make([]net.Conn, conns)
	servers := make([]*gateway.Conn, conns)
	for i := range clients {
		clients[i] = dial(t, s)
		servers[i] = recvOpen(t, h)
	}
	// OnOpen order and dial order can differ; match by address.
	byAddr := map[string]*gateway.Conn{}
	for _, sc := range servers {
		byAddr[sc.RemoteAddr()] = sc
	}
	var readers sync.WaitGroup
	for _, c := range clients {
		readers.Add(1)
		go func() {
			defer readers.Done()
			if err := verifyStream(c, writers, per); err != nil {
				t.Errorf("conn %s: %v", c.LocalAddr(), err)
			}
		}()
	}
	var wg sync.WaitGroup
	for _, c := range clients {
		sc := byAddr[c.LocalAddr().String()]
		if sc == nil {
			t.Fatalf("no server conn for %s", c.LocalAddr())
		}
		wg.Add(1)
		go func() { defer wg.Done(); hammer(t, sc, writers, per) }()
	}
	wg.Wait()
	readers.Wait()
	t.Logf("drains deferred to the backlog: %d", s.Stats().DrainsDeferred)
}

// TestCloseDuringWrites closes connections while many goroutines write to
// them, by the peer hanging up mid-stream or by the queue overflowing: the
// drain must never touch netpoll's buffers after its close callback released
// them. A drain that used Writer().WriteBinary+Flush instead of
// Connection.Write fails this with nil-pointer panics in a normal build.
func TestCloseDuringWrites(t *testing.T) {
	tests := []struct {
		name       string
		queueBytes int
		perWriter  int // frames per writer; 0 = until Write fails
	}{
		{"peer hangs up", 64 << 20, 1500},
		{"queue overflows", 1 << 20, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHandler()
			s := start(t, gateway.Config{WriteQueueBytes: tt.queueBytes}, h)
			const conns, writers = 16, 8
			var wg sync.WaitGroup
			for i := 0; i < conns; i++ {
				c := dial(t, s)
				sc := recvOpen(t, h)
				for w := 0; w < writers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for n := 0; tt.perWriter == 0 || n < tt.perWriter; n++ {
							if err := sc.Write(testFrame(w, n)); err != nil {
								if !errors.Is(err, gateway.ErrClosed) && !errors.Is(err, gateway.ErrSlowConsumer) {
									t.Errorf("Write: %v", err)
								}
								return
							}
						}
					}()
				}
				go func() {
					// Read a little, then hang up mid-stream.
					for j := 0; j < 50+i*20; j++ {
						if _, err := readFrame(c, 10*time.Second); err != nil {
							break
						}
					}
					_ = c.Close()
				}()
			}
			for i := 0; i < conns; i++ {
				ev := recvClose(t, h, 20*time.Second)
				if !errors.Is(ev.err, gateway.ErrPeerClosed) && !errors.Is(ev.err, gateway.ErrSlowConsumer) {
					t.Errorf("OnClose err %v", ev.err)
				}
			}
			wg.Wait()
			waitFor(t, 5*time.Second, "Len 0", func() bool { return s.Len() == 0 })
		})
	}
}
