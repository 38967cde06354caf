package comet

import (
	"fmt"
	"strconv"
	"testing"
)

// BenchmarkBucketLookup is the per-(key, oplog) cost of routing a push to a
// session: FNV shard pick, bucket lock, map lookup. sessions=%d is how many
// sessions the comet holds.
func BenchmarkBucketLookup(b *testing.B) {
	for _, n := range []int{1000, 19000} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			c := &Comet{buckets: make([]bucket, 64)}
			for i := range c.buckets {
				c.buckets[i].mu.sessions = make(map[string]*session)
			}
			keys := make([]string, n)
			for i := range keys {
				keys[i] = strconv.Itoa(i + 1)
				bk := c.bucketFor(keys[i])
				bk.mu.sessions[keys[i]] = &session{}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if c.lookup(keys[i%n]) == nil {
					b.Fatal("session not found")
				}
			}
		})
	}
}
