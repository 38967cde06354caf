package gateway_test

import (
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msync/msync/gateway"
	"github.com/msync/msync/pkg/protocol"
)

// BenchmarkWriteFlush measures Conn.Write through the drain, batching and
// netpoll flush to a loopback client that reads and discards. The timer
// stops only after the client received every byte.
func BenchmarkWriteFlush(b *testing.B) {
	for _, writers := range []int{1, 8} {
		for _, size := range []int{64, 512, 4096} {
			b.Run(fmt.Sprintf("writers=%d/msgSz=%db", writers, size), func(b *testing.B) {
				benchWriteFlush(b, writers, size)
			})
		}
	}
}

func benchWriteFlush(b *testing.B, writers, size int) {
	h := newHandler()
	s := start(b, gateway.Config{WriteQueueBytes: 16 << 20, Logger: slog.New(slog.DiscardHandler)}, h)
	c := dial(b, s)
	sc := recvOpen(b, h)
	// The gateway never modifies a frame, so reusing one is safe here.
	frame := protocol.AppendFrame(nil, protocol.OpPush, 1, make([]byte, size-protocol.HeaderSize))

	var received atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 256<<10)
		for {
			n, err := c.Read(buf)
			received.Add(int64(n))
			if err != nil {
				if err != io.EOF {
					_ = err // closed by the benchmark's cleanup
				}
				return
			}
		}
	}()
	_ = c.SetReadDeadline(time.Time{})

	b.ReportAllocs()
	b.SetBytes(int64(size))
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N / writers
	for w := 0; w < writers; w++ {
		n := per
		if w == 0 {
			n += b.N % writers
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n; i++ {
				// Back-pressure, as a real producer would: an unthrottled
				// loop outruns the socket and is a slow consumer by design.
				for sc.Queued() > 4<<20 {
					runtime.Gosched()
				}
				if err := sc.Write(frame); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	want := int64(b.N) * int64(size)
	deadline := time.Now().Add(time.Minute)
	for received.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("client got %d of %d bytes", received.Load(), want)
		}
		time.Sleep(50 * time.Microsecond)
	}
	b.StopTimer()
	if st := s.Stats(); st.Flushes > 0 {
		b.ReportMetric(float64(st.FramesOut)/float64(st.Flushes), "frames/flush")
	}
	_ = c.Close()
	<-done
}
