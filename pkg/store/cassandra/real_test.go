//go:build integration

package cassandra

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msync/msync/pkg/oplog"
)

// What a real Cassandra 5.0 node does that the scripted wire server did not.

func realOp(ch, payload string, until time.Time) *oplog.Oplog {
	biz, _, _, _ := oplog.ParseChannel(ch)
	return &oplog.Oplog{
		Channel:      ch,
		Biz:          biz,
		Payload:      []byte(payload),
		CreatedMs:    time.Now().UnixMilli(),
		ValidUntilMs: until.UnixMilli(),
	}
}

func openReal(t *testing.T, cfg Config) *Store {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// A node in storage_compatibility_mode CASSANDRA_4 (5.0's default) rejects a
// write whose expiry is past 2038-01-19T03:14:06Z. Oplogs valid for longer
// must still be stored (capped), never fail the whole batch.
func TestFarFutureTTLRealCassandra(t *testing.T) {
	s := openReal(t, realConfig(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ch := oplog.GlobalChannel("far-future")
	ops := []*oplog.Oplog{
		realOp(ch, "in-15-years", time.Now().AddDate(15, 0, 0)),
		realOp(ch, "in-100-years", time.Now().AddDate(100, 0, 0)),
		realOp(ch, "tomorrow", time.Now().Add(24*time.Hour)),
	}
	res, err := s.Append(ctx, ops)
	if err != nil {
		t.Fatalf("Append with ValidUntil past 2038: %v", err)
	}
	for i, r := range res {
		if r.ID != uint64(i+1) {
			t.Fatalf("ids %+v: want 1, 2, 3", res)
		}
	}
	got, _, err := s.Read(ctx, ch, 0, 10)
	if err != nil || len(got) != 3 || string(got[0].Payload) != "in-15-years" || got[0].ValidUntilMs != ops[0].ValidUntilMs {
		t.Fatalf("Read = %v, %v; want the 3 oplogs with their ValidUntilMs unchanged", got, err)
	}
}

// gocql v1.7.0 has no protocol v5 framing: Open must refuse it up front with
// an error naming the setting, and v3/v4 must really work against 5.0.
func TestProtoVersionsRealCassandra(t *testing.T) {
	base := realConfig(t)
	for _, v := range []int{3, 4} {
		cfg := base
		cfg.ProtoVersion = v
		s := openReal(t, cfg)
		ch := oplog.GlobalChannel(fmt.Sprintf("proto-%d", v))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		res, err := s.Append(ctx, []*oplog.Oplog{realOp(ch, "x", time.Now().Add(time.Hour))})
		cancel()
		if err != nil || res[0].ID != 1 {
			t.Fatalf("ProtoVersion %d: Append = %v, %v", v, res, err)
		}
	}
	cfg := base
	cfg.ProtoVersion = 5
	_, err := Open(cfg)
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "proto_version") {
		t.Fatalf("Open with ProtoVersion 5 = %v; want ErrInvalidConfig naming proto_version", err)
	}
}

// A keyspace that was never migrated is a configuration error found at
// Open, naming the setting, not an "unconfigured table" at the first write.
func TestMissingKeyspaceRealCassandra(t *testing.T) {
	cfg := Config{Hosts: strings.Split(needHosts(t), ","), Keyspace: "msync_never_migrated", Timeout: 10 * time.Second}
	_, err := Open(cfg)
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "store.cassandra.keyspace") ||
		!strings.Contains(err.Error(), "msync_never_migrated") || !strings.Contains(err.Error(), "migrate") {
		t.Fatalf("Open on a missing keyspace = %v; want ErrInvalidConfig naming store.cassandra.keyspace and msync migrate", err)
	}
}

// Two store instances (two logic processes) append to the same channels at
// once: every channel's ids are exactly 1..N, each handed out once, and a
// read returns each oplog under the id its writer was given.
func TestTwoWritersDenseRealCassandra(t *testing.T) {
	cfg := realConfig(t) // BucketSize 5: the writers race across buckets constantly
	stores := []*Store{openReal(t, cfg), openReal(t, cfg)}
	const channels, writersPerStore, calls = 3, 4, 15
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	type key struct {
		ch string
		id uint64
	}
	var mu sync.Mutex
	given := make(map[key]string)
	var wg sync.WaitGroup
	for si, s := range stores {
		for w := range writersPerStore {
			wg.Go(func() {
				for c := range calls {
					// Single and batched appends; batches of 4 and 5 span
					// channels (written concurrently by one call).
					n := 1 + c%5
					var ops []*oplog.Oplog
					for i := range n {
						ch := oplog.GlobalChannel(fmt.Sprintf("two-%d", (w+c+i/3)%channels))
						ops = append(ops, realOp(ch, fmt.Sprintf("s%d-w%d-c%d-%d", si, w, c, i), time.Now().Add(time.Hour)))
					}
					res, err := s.Append(ctx, ops)
					if err != nil {
						t.Errorf("store %d writer %d: Append: %v", si, w, err)
						return
					}
					mu.Lock()
					for i, r := range res {
						k := key{ops[i].Channel, r.ID}
						if prev, dup := given[k]; dup {
							t.Errorf("%s id %d handed out twice: %q and %q", k.ch, r.ID, prev, ops[i].Payload)
						}
						given[k] = string(ops[i].Payload)
					}
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	total := 0
	for c := range channels {
		ch := oplog.GlobalChannel(fmt.Sprintf("two-%d", c))
		got, maxID, err := stores[c%2].Read(ctx, ch, 0, 10000)
		if err != nil {
			t.Fatal(err)
		}
		for i, op := range got {
			if op.Id != uint64(i+1) {
				t.Fatalf("%s: oplog %d has id %d: ids are not dense 1..N", ch, i, op.Id)
			}
			if want := given[key{ch, op.Id}]; string(op.Payload) != want {
				t.Fatalf("%s id %d holds %q, but its writer was given it for %q", ch, op.Id, op.Payload, want)
			}
		}
		if maxID != uint64(len(got)) {
			t.Fatalf("%s: max id %d, %d oplogs", ch, maxID, len(got))
		}
		total += len(got)
	}
	if total != len(given) {
		t.Fatalf("%d oplogs stored, %d ids handed out", total, len(given))
	}
	t.Logf("%d oplogs on %d channels from 2 stores x %d writers: dense, none reused", total, channels, writersPerStore)
}

// Two stores take turns on one channel, one call at a time, so every turn
// change meets a cached head the other store has moved (trusted after a
// store's clean commits, stale by then), also across buckets (BucketSize 5)
// and by more than a bucket (runs of 7): each call must still get exactly
// the next id.
func TestTurnTakingWritersRealCassandra(t *testing.T) {
	cfg := realConfig(t)
	stores := []*Store{openReal(t, cfg), openReal(t, cfg)}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ch := oplog.GlobalChannel("turns")
	next := uint64(1)
	for turn := range 12 {
		s := stores[turn%2]
		run := 1 + turn%4
		if turn%5 == 4 {
			run = 7 // more than a bucket behind for the other store
		}
		for range run {
			res, err := s.Append(ctx, []*oplog.Oplog{realOp(ch, fmt.Sprint(next), time.Now().Add(time.Hour))})
			if err != nil {
				t.Fatalf("turn %d: Append: %v", turn, err)
			}
			if res[0].ID != next {
				t.Fatalf("turn %d (store %d): id %d, want %d", turn, turn%2, res[0].ID, next)
			}
			next++
		}
	}
	got, maxID, err := stores[0].Read(ctx, ch, 0, 1000)
	if err != nil || maxID != next-1 || uint64(len(got)) != next-1 {
		t.Fatalf("Read = %d oplogs, max %d, %v; want %d", len(got), maxID, err, next-1)
	}
	for i, op := range got {
		if op.Id != uint64(i+1) || string(op.Payload) != fmt.Sprint(i+1) {
			t.Fatalf("oplog %d: id %d payload %q", i, op.Id, op.Payload)
		}
	}
}
