package pebble

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/msync/msync/pkg/oplog"
)

// BenchmarkAppend measures synced appends of one oplog per call. Each
// goroutine writes its own channel, like many users publishing at once;
// throughput should grow with concurrency as calls share group commits.
func BenchmarkAppend(b *testing.B) {
	for _, conc := range []int{1, 16, 64, 256} {
		for _, size := range []int{64, 1024} {
			b.Run(fmt.Sprintf("conc=%d/msgSz=%db", conc, size), func(b *testing.B) {
				s := openTest(b, b.TempDir())
				ctx := testContext(b)
				payload := make([]byte, size)
				b.ReportAllocs()
				b.SetBytes(int64(size))
				b.ResetTimer()

				var next atomic.Int64
				var wg sync.WaitGroup
				for g := range conc {
					wg.Go(func() {
						ch := oplog.UserChannel("bench", fmt.Sprint(g))
						for next.Add(1) <= int64(b.N) {
							if _, err := s.Append(ctx, []*oplog.Oplog{{Channel: ch, Biz: "bench", Payload: payload}}); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				st := s.Stats()
				if st.Commits > 0 {
					b.ReportMetric(float64(st.Ops)/float64(st.Commits), "ops/commit")
				}
			})
		}
	}
}

// BenchmarkRead measures reading pages of 100 oplogs from a 10k channel.
func BenchmarkRead(b *testing.B) {
	const total, page, size = 10_000, 100, 256
	s := openTest(b, b.TempDir())
	ctx := testContext(b)
	ch := oplog.UserChannel("bench", "reader")
	payload := make([]byte, size)
	for i := 0; i < total; i += 1000 {
		ops := make([]*oplog.Oplog, 1000)
		for j := range ops {
			ops[j] = &oplog.Oplog{Channel: ch, Biz: "bench", Payload: payload}
		}
		if _, err := s.Append(ctx, ops); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.SetBytes(page * size)
	for i := 0; b.Loop(); i++ {
		after := uint64(i*page) % (total - page)
		ops, _, err := s.Read(ctx, ch, after, page)
		if err != nil || len(ops) != page {
			b.Fatalf("Read = %d ops, %v", len(ops), err)
		}
	}
}
