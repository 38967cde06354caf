package wheel

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkSet measures extending a deadline (a heartbeat) with 1M live
// entries: the lock-free path, since the new deadline is later.
func BenchmarkSet(b *testing.B) {
	for _, n := range []int{1 << 10, 1 << 20} {
		w, err := New(Config{Tick: 250 * time.Millisecond, Expire: func(*Entry) {}})
		if err != nil {
			b.Fatal(err)
		}
		es := make([]Entry, n)
		now := w.Now()
		for i := range es {
			w.Init(&es[i], nil)
			w.Set(&es[i], now+int64(30*time.Second)+int64(i))
		}
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			d := now + int64(40*time.Second)
			for i := 0; b.Loop(); i++ {
				w.Set(&es[(i*7919)&(n-1)], d+int64(i)) // odd stride: a permutation, cache-unfriendly like real heartbeats
			}
		})
		b.Run(fmt.Sprintf("entries=%d/parallel", n), func(b *testing.B) {
			b.ReportAllocs()
			var next atomic.Int64
			d := now + int64(50*time.Second)
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1) * 7919)
				for pb.Next() {
					i++
					w.Set(&es[(i*7919)&(n-1)], d+int64(i)) // odd stride: a permutation, cache-unfriendly like real heartbeats
				}
			})
		})
		b.Run(fmt.Sprintf("entries=%d/withClock", n), func(b *testing.B) {
			// What Conn.SetDeadline does: read the clock, then Set.
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				w.Set(&es[(i*7919)&(n-1)], w.Now()+int64(60*time.Second))
			}
		})
	}
}

// BenchmarkAdvance measures one tick with 1M entries spread over the wheel,
// none due: the cost the tick goroutine pays per Tick.
func BenchmarkAdvance(b *testing.B) {
	const n = 1 << 20
	w, err := New(Config{Tick: time.Millisecond, Expire: func(*Entry) {}})
	if err != nil {
		b.Fatal(err)
	}
	es := make([]Entry, n)
	for i := range es {
		w.Init(&es[i], nil)
		w.Set(&es[i], int64(time.Hour)+int64(i)*int64(time.Millisecond)%int64(time.Second))
	}
	b.ReportAllocs()
	now := int64(0)
	for b.Loop() {
		now += int64(time.Millisecond)
		w.Advance(now)
	}
}
