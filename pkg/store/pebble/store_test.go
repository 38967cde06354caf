package pebble

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/store"
	"github.com/msync/msync/pkg/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTest(t, t.TempDir()) })
}

func TestReopen(t *testing.T) {
	storetest.RunReopen(t, func(t *testing.T, dir string) store.Store { return openTest(t, dir) })
}

func TestPrincipalsConformance(t *testing.T) {
	storetest.RunPrincipals(t, func(t *testing.T, n int) []storetest.Principals {
		s := openTest(t, t.TempDir())
		ps := make([]storetest.Principals, n)
		for i := range ps {
			ps[i] = s // one process: every handle is the same store
		}
		return ps
	})
}

func TestConfig(t *testing.T) {
	t.Run("EveryProblemAtOnce", func(t *testing.T) {
		_, err := Open(Config{MaxBatch: -1, QueueSize: -2, CacheSize: -3, MemTableSize: 1 << 10})
		if !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("Open = %v, want ErrInvalidConfig", err)
		}
		for _, field := range []string{"Dir", "MaxBatch", "QueueSize", "CacheSize", "MemTableSize"} {
			if !strings.Contains(err.Error(), field) {
				t.Errorf("error %q does not name %s", err, field)
			}
		}
	})
	t.Run("Defaults", func(t *testing.T) {
		c := Config{Dir: "x"}.withDefaults()
		if c.MaxBatch != defaultMaxBatch || c.QueueSize != defaultQueueSize || c.CacheSize != defaultCacheSize || c.MemTableSize != defaultMemTable || c.Logger == nil {
			t.Fatalf("withDefaults = %+v", c)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Validate(defaults) = %v", err)
		}
	})
	t.Run("DirIsAFile", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(Config{Dir: file}); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Open(file) = %v, want ErrUnavailable", err)
		}
	})
}

// TestWatermarkHidesCommittedGroup holds a group after its synced commit
// returned but before the watermark moved, and checks that Pebble already
// shows the oplog (the hazard DEPENDENCIES.md describes) while Read and MaxID
// do not.
func TestWatermarkHidesCommittedGroup(t *testing.T) {
	s := openTest(t, t.TempDir())
	gate := holdFirstCommit(s)
	ctx := testContext(t)
	ch := oplog.UserChannel("wm", "alice")

	done := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, []*oplog.Oplog{{Channel: ch, Payload: []byte("x")}})
		done <- err
	}()
	gate.waitHeld(t)

	if _, closer, err := s.db.Get(oplogKey(ch, 1)); err != nil {
		t.Fatalf("oplog 1 not in Pebble while held: %v", err)
	} else {
		closer.Close()
	}
	if ops, maxID, err := s.Read(ctx, ch, 0, 10); err != nil || len(ops) != 0 || maxID != 0 {
		t.Fatalf("Read while held = %d ops, maxID %d, %v; want nothing", len(ops), maxID, err)
	}
	if maxID, err := s.MaxID(ctx, ch); err != nil || maxID != 0 {
		t.Fatalf("MaxID while held = %d, %v; want 0", maxID, err)
	}

	gate.release()
	if err := <-done; err != nil {
		t.Fatalf("Append: %v", err)
	}
	if ops, maxID, err := s.Read(ctx, ch, 0, 10); err != nil || len(ops) != 1 || maxID != 1 {
		t.Fatalf("Read after release = %d ops, maxID %d, %v; want 1, 1", len(ops), maxID, err)
	}
}

// TestReadDensePrefixDuringAppends reads a channel while many goroutines
// append to it: every read must be a dense prefix 1..maxID, and maxID never
// goes back.
func TestReadDensePrefixDuringAppends(t *testing.T) {
	const writers, calls, readers = 16, 60, 4
	s := openTest(t, t.TempDir())
	ctx := testContext(t)
	ch := oplog.GlobalChannel("prefix")

	var writing sync.WaitGroup
	for w := range writers {
		writing.Go(func() {
			for c := range calls {
				ops := []*oplog.Oplog{{Channel: ch, Payload: fmt.Appendf(nil, "%d-%d", w, c)}}
				if c%3 == 0 {
					ops = append(ops, &oplog.Oplog{Channel: ch, Payload: fmt.Appendf(nil, "%d-%d+", w, c)})
				}
				if _, err := s.Append(ctx, ops); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		})
	}
	stop := make(chan struct{})
	var reading sync.WaitGroup
	var reads atomic.Int64
	for range readers {
		reading.Go(func() {
			var last uint64
			for {
				select {
				case <-stop:
					return
				default:
				}
				ops, maxID, err := s.Read(ctx, ch, 0, 1<<20)
				if err != nil {
					t.Errorf("Read: %v", err)
					return
				}
				if maxID < last {
					t.Errorf("maxID went back from %d to %d", last, maxID)
					return
				}
				last = maxID
				if uint64(len(ops)) != maxID {
					t.Errorf("read %d oplogs with maxID %d: not a dense prefix", len(ops), maxID)
					return
				}
				for i, op := range ops {
					if op.Id != uint64(i+1) {
						t.Errorf("position %d holds id %d: hole in the prefix", i, op.Id)
						return
					}
				}
				reads.Add(1)
			}
		})
	}
	writing.Wait()
	close(stop)
	reading.Wait()
	want := uint64(writers * (calls + calls/3))
	if maxID, err := s.MaxID(ctx, ch); err != nil || maxID != want {
		t.Fatalf("final MaxID = %d, %v; want %d", maxID, err, want)
	}
	t.Logf("%d reads during %d appended oplogs", reads.Load(), want)
}

// TestGroupCommit checks that calls queued while a commit is in progress are
// written together by the next one.
func TestGroupCommit(t *testing.T) {
	const queued = 10
	s := openTest(t, t.TempDir())
	gate := holdFirstCommit(s)
	ctx := testContext(t)

	var wg sync.WaitGroup
	appendOne := func(ch string) {
		wg.Go(func() {
			if _, err := s.Append(ctx, []*oplog.Oplog{{Channel: ch}}); err != nil {
				t.Errorf("Append: %v", err)
			}
		})
	}
	appendOne(oplog.UserChannel("group", "first"))
	gate.waitHeld(t)
	for i := range queued {
		appendOne(oplog.UserChannel("group", fmt.Sprint(i%3)))
	}
	waitFor(t, "calls to queue", func() bool { return len(s.reqs) == queued })
	gate.release()
	wg.Wait()

	st := s.Stats()
	if st.Commits != 2 || st.Calls != queued+1 || st.Ops != queued+1 || st.MaxGroup != queued {
		t.Fatalf("Stats = %+v; want 2 commits, %d calls and ops, max group %d", st, queued+1, queued)
	}
}

// TestAppendCancelledWhileQueued: a call whose ctx ends while it waits for
// the writer returns at once and stores nothing.
func TestAppendCancelledWhileQueued(t *testing.T) {
	s := openTest(t, t.TempDir())
	gate := holdFirstCommit(s)
	ctx := testContext(t)
	ch := oplog.UserChannel("cancel", "alice")

	first := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, []*oplog.Oplog{{Channel: ch, Payload: []byte("first")}})
		first <- err
	}()
	gate.waitHeld(t)

	cctx, cancel := context.WithCancel(ctx)
	second := make(chan error, 1)
	go func() {
		_, err := s.Append(cctx, []*oplog.Oplog{{Channel: ch, Payload: []byte("second"), DedupKey: "k"}})
		second <- err
	}()
	waitFor(t, "second call to queue", func() bool { return len(s.reqs) == 1 })
	cancel()
	if err := <-second; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Append = %v, want context.Canceled", err)
	}
	gate.release()
	if err := <-first; err != nil {
		t.Fatalf("first Append: %v", err)
	}
	// The writer must have dropped the cancelled call: the next Append gets
	// id 2, and the dedup key is free.
	res, err := s.Append(ctx, []*oplog.Oplog{{Channel: ch, Payload: []byte("third"), DedupKey: "k"}})
	if err != nil || res[0] != (store.AppendResult{ID: 2}) {
		t.Fatalf("Append after cancel = %+v, %v; want id 2, not duplicate", res, err)
	}
}

// TestCloseFailsQueuedCalls: Close lets the group being committed finish,
// fails the calls still queued with ErrClosed, and none of those is stored.
func TestCloseFailsQueuedCalls(t *testing.T) {
	const queued = 5
	dir := t.TempDir()
	s := openTest(t, dir)
	gate := holdFirstCommit(s)
	ctx := testContext(t)
	ch := oplog.UserChannel("close", "alice")

	errs := make(chan error, queued+1)
	appendOne := func() {
		go func() {
			_, err := s.Append(ctx, []*oplog.Oplog{{Channel: ch}})
			errs <- err
		}()
	}
	appendOne()
	gate.waitHeld(t)
	for range queued {
		appendOne()
	}
	waitFor(t, "calls to queue", func() bool { return len(s.reqs) == queued })
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	waitFor(t, "Close to signal the writer", func() bool {
		select {
		case <-s.quit:
			return true
		default:
			return false
		}
	})
	gate.release()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	var ok, failed int
	for range queued + 1 {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, store.ErrClosed) && errors.Is(err, store.ErrUnavailable):
			failed++
		default:
			t.Errorf("Append: %v, want nil or ErrClosed", err)
		}
	}
	if ok != 1 || failed != queued {
		t.Fatalf("%d calls succeeded and %d failed, want 1 and %d", ok, failed, queued)
	}
	s = openTest(t, dir)
	if maxID, err := s.MaxID(ctx, ch); err != nil || maxID != 1 {
		t.Fatalf("MaxID after reopen = %d, %v; want 1 (only the committed call)", maxID, err)
	}
}

func openTest(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(Config{Dir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// testLogger sends the store's and Pebble's log lines to the test's output.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// commitGate holds the writer in its first group, after the synced commit
// and before the watermark moves.
type commitGate struct {
	held    chan struct{}
	release func()
}

// holdFirstCommit must be called before the first Append on s.
func holdFirstCommit(s *Store) *commitGate {
	g := &commitGate{held: make(chan struct{}, 1)}
	open := make(chan struct{})
	var once sync.Once
	g.release = func() { once.Do(func() { close(open) }) }
	var first atomic.Bool
	first.Store(true)
	s.testHookCommitted = func() {
		if first.CompareAndSwap(true, false) {
			g.held <- struct{}{}
			<-open
		}
	}
	return g
}

// waitHeld waits until the writer is held; the gate is released when the
// test ends, so a failing test does not leave the writer stuck in Close.
func (g *commitGate) waitHeld(t *testing.T) {
	t.Helper()
	t.Cleanup(g.release) // runs before openTest's Close (cleanups are LIFO)
	select {
	case <-g.held:
	case <-time.After(time.Minute):
		t.Fatal("writer never reached the commit hook")
	}
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, time.Minute, time.Millisecond, func() error {
		if !cond() {
			return fmt.Errorf("still waiting for %s", what)
		}
		return nil
	})
}
