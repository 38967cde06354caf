package pebble

import (
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/msync/msync/pkg/oplog"
)

// BenchmarkReconnectStorm mimics `msync bench reconnect`: a backlog written
// round robin over many device channels (so every flush spans them all),
// then every channel read once from its start with 64 readers at a time.
// One iteration is one whole storm; the write phase is not timed. It logs
// the write and read phases' process CPU (compactions included) and Pebble's
// metrics (flushes, compactions, write amplification, block cache hits).
func BenchmarkReconnectStorm(b *testing.B) {
	const chans, backlog, batch, writers, readers = 19_000, 100, 500, 8, 64
	s := openTest(b, b.TempDir())
	cpu0 := cpuTime()
	ctx := testContext(b)
	names := make([]string, chans)
	for i := range names {
		names[i] = oplog.DeviceChannel("bench-dev", "rc-"+strconv.Itoa(i))
	}
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for {
				j0 := int(next.Add(batch)) - batch
				if j0 >= chans*backlog {
					return
				}
				now := time.Now()
				ops := make([]*oplog.Oplog, 0, batch)
				for j := j0; j < j0+batch && j < chans*backlog; j++ {
					ops = append(ops, &oplog.Oplog{Channel: names[j%chans], Biz: "bench-dev",
						Payload:   []byte(strconv.FormatInt(now.UnixNano(), 10)),
						CreatedMs: now.UnixMilli(), ValidUntilMs: now.Add(24 * time.Hour).UnixMilli()})
				}
				if _, err := s.Append(ctx, ops); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.Logf("write: %v cpu %v\n%s", time.Since(start), cpuTime()-cpu0, s.db.Metrics())
	cpu0 = cpuTime()
	b.ResetTimer()
	for b.Loop() {
		var idx atomic.Int64
		var rg sync.WaitGroup
		for range readers {
			rg.Go(func() {
				for i := int(idx.Add(1)) - 1; i < chans; i = int(idx.Add(1)) - 1 {
					ops, _, err := s.Read(ctx, names[i], 0, 200)
					if err != nil || len(ops) != backlog {
						b.Errorf("Read %s = %d ops, %v", names[i], len(ops), err)
						return
					}
				}
			})
		}
		rg.Wait()
	}
	b.StopTimer()
	b.Logf("reads cpu %v; after reads:\n%s", cpuTime()-cpu0, s.db.Metrics())
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
