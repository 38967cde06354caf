package gateway_test

import (
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/msync/msync/gateway"
)

// BenchmarkIdleMemoryPerConn opens idle connections and measures the Go
// memory (live heap plus goroutine stacks) the server holds for each, as
// the B/conn metric. The clients are raw sockets, so they add nothing to the
// Go heap. The contract target is about 4 KB per connection with the default
// 256-byte netpoll buffer; over 6 KB fails. It measures once, whatever b.N:
//
//	go test -run '^$' -bench BenchmarkIdleMemoryPerConn -benchtime 1x ./gateway
func BenchmarkIdleMemoryPerConn(b *testing.B) {
	const n = 2000
	t := b
	h := newHandler()
	s := start(t, gateway.Config{AuthTimeout: 10 * time.Minute}, h) // idle on purpose
	tcp := s.Addr().(*net.TCPAddr)
	sa := &syscall.SockaddrInet4{Port: tcp.Port, Addr: [4]byte{127, 0, 0, 1}}

	before := liveBytes()
	fds := make([]int, 0, n)
	t.Cleanup(func() {
		for _, fd := range fds {
			_ = syscall.Close(fd)
		}
	})
	for i := 0; i < n; i++ {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
		if err := syscall.Connect(fd, sa); err != nil {
			t.Fatal(err)
		}
		<-h.opens
	}
	waitFor(t, 10*time.Second, "all conns open", func() bool { return s.Len() == n })
	// netpoll's per-connection OnConnect goroutines exit on their own, with
	// nothing to wait on: let them, so their stacks are not counted.
	time.Sleep(100 * time.Millisecond)
	after := liveBytes()
	per := float64(after-before) / n
	b.ReportMetric(per, "B/conn")
	if per > 6<<10 {
		t.Fatalf("%.0f bytes per idle connection, want about 4 KB", per)
	}
}

func liveBytes() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc + m.StackInuse)
}
