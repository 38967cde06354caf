//go:build integration

package cassandra

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gocql/gocql"

	"github.com/msync/msync/pkg/oplog"
)

// BenchmarkRealCassandra measures, against the node named by
// MSYNC_CASSANDRA_HOSTS and in one run, what the store's LWT appends achieve
// next to plain QUORUM inserts of the same rows into the same table. Each
// sub-benchmark reports oplogs/s; b.N is the number of oplogs written.
// docs/cluster.md ("Real engines") has the command and the figures.
//
//	MSYNC_CASSANDRA_HOSTS=127.0.0.1:9042 go test -tags integration -run '^$' \
//	  -bench RealCassandra -benchtime 2000x ./pkg/store/cassandra
func BenchmarkRealCassandra(b *testing.B) {
	cfg := realConfig(b)
	cfg.BucketSize = defaultBucketSize // as in production: buckets are crossed rarely
	// before: the store as it was before the cached head was trusted and
	// lost rounds paused.
	before := cfg
	before.legacyAppend = true
	now := []*Store{openBench(b, cfg), openBench(b, cfg)}
	old := []*Store{openBench(b, before), openBench(b, before)}
	stores := now
	body := make([]byte, 100)
	var run atomic.Int64 // fresh channels per sub-benchmark run

	// raw: plain INSERTs at QUORUM, conc goroutines, each on its own
	// partition with increasing ids: the node's write rate for these rows.
	raw := func(conc int) func(b *testing.B) {
		return func(b *testing.B) {
			r := run.Add(1)
			s := stores[0]
			insert := "INSERT INTO " + cfg.Keyspace + ".oplogs (channel, bucket, id, op_uuid, body) VALUES (?, ?, ?, ?, ?)"
			parallel(b, conc, func(g, i int) error {
				u, _ := gocql.RandomUUID()
				return s.sess.Query(insert, fmt.Sprintf("raw%d-%d/g", r, g), int64(0), int64(i+1), u, body).
					Consistency(gocql.Quorum).Exec()
			})
		}
	}
	// appends: conc goroutines per store over `writers` stores, each call
	// `batch` oplogs; channels = 1 puts everyone on one channel, else each
	// goroutine has its own.
	appends := func(stores []*Store, writers, conc, batch, channels int) func(b *testing.B) {
		return func(b *testing.B) {
			r := run.Add(1)
			parallel(b, writers*conc, func(g, _ int) error {
				ch := oplog.GlobalChannel(fmt.Sprintf("bench%d-%d", r, g%channels))
				ops := make([]*oplog.Oplog, batch)
				for k := range ops {
					ops[k] = realOp(ch, "x", time.Now().Add(time.Hour))
				}
				_, err := stores[g%writers].Append(context.Background(), ops)
				return err
			}, batch)
		}
	}
	// spread: `writers` goroutines (one per store), each call one oplog on
	// each of n channels (a batched publish to n users or devices).
	spread := func(stores []*Store, writers, n int) func(b *testing.B) {
		return func(b *testing.B) {
			r := run.Add(1)
			parallel(b, writers, func(g, _ int) error {
				ops := make([]*oplog.Oplog, n)
				for k := range ops {
					ops[k] = realOp(oplog.GlobalChannel(fmt.Sprintf("spread%d-%d", r, k)), "x", time.Now().Add(time.Hour))
				}
				_, err := stores[g%writers].Append(context.Background(), ops)
				return err
			}, n)
		}
	}
	b.Run("raw-insert/conc=1", raw(1))
	b.Run("raw-insert/conc=16", raw(16))
	b.Run("raw-insert/conc=64", raw(64))
	// Each workload runs on the old store and then on the current one, side
	// by side, so load changes during the run hit both alike.
	workloads := []struct {
		name string
		fn   func(stores []*Store) func(b *testing.B)
	}{
		{"append/1ch/writers=1/conc=1/batch=1", func(st []*Store) func(*testing.B) { return appends(st, 1, 1, 1, 1) }},
		{"append/1ch/writers=1/conc=1/batch=10", func(st []*Store) func(*testing.B) { return appends(st, 1, 1, 10, 1) }},
		{"append/1ch/writers=1/conc=16/batch=1", func(st []*Store) func(*testing.B) { return appends(st, 1, 16, 1, 1) }},
		{"append/1ch/writers=2/conc=8/batch=1", func(st []*Store) func(*testing.B) { return appends(st, 2, 8, 1, 1) }},
		{"append/16ch/writers=1/conc=16/batch=1", func(st []*Store) func(*testing.B) { return appends(st, 1, 16, 1, 16) }},
		{"append/16ch/writers=2/conc=8/batch=1", func(st []*Store) func(*testing.B) { return appends(st, 2, 8, 1, 16) }},
		{"append/64ch/writers=1/conc=64/batch=1", func(st []*Store) func(*testing.B) { return appends(st, 1, 64, 1, 64) }},
		{"append/16ch-per-call/writers=1/conc=1/batch=16", func(st []*Store) func(*testing.B) { return spread(st, 1, 16) }},
		{"append/100ch-per-call/writers=1/conc=1/batch=100", func(st []*Store) func(*testing.B) { return spread(st, 1, 100) }},
		{"append/100ch-per-call/writers=2/conc=1/batch=100", func(st []*Store) func(*testing.B) { return spread(st, 2, 100) }},
	}
	for _, w := range workloads {
		b.Run("before/"+w.name, w.fn(old))
		b.Run("after/"+w.name, w.fn(now))
	}
}

func openBench(b *testing.B, cfg Config) *Store {
	s, err := Open(cfg)
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// parallel runs b.N oplogs' worth of calls of op on conc goroutines (each
// call writes per oplogs, default 1) and reports oplogs/s.
func parallel(b *testing.B, conc int, op func(g, i int) error, per ...int) {
	n := 1
	if len(per) > 0 {
		n = per[0]
	}
	calls := max(1, b.N/n)
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for g := range conc {
		wg.Go(func() {
			for i := 0; ; i++ {
				if next.Add(1) > int64(calls) || failed.Load() != nil {
					return
				}
				if err := op(g, i); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(calls*n)/el.Seconds(), "oplogs/s")
	b.ReportMetric(0, "ns/op")
}
