package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msync/msync/pkg/store"
)

func TestWaitForRetriesTransientErrors(t *testing.T) {
	down := fmt.Errorf("connect: %w", store.ErrUnavailable)
	calls := 0
	err := waitFor(TierConfig{StartupWait: time.Minute}, discard(), "test store", func() error {
		if calls++; calls < 3 {
			return down
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("waitFor = %v after %d calls, want nil after 3", err, calls)
	}

	bad := errors.New("keyspace: invalid")
	calls = 0
	if err := waitFor(TierConfig{StartupWait: time.Minute}, discard(), "test store", func() error { calls++; return bad }); !errors.Is(err, bad) || calls != 1 {
		t.Fatalf("non-transient: %v after %d calls, want the error at once", err, calls)
	}

	calls = 0
	if err := waitFor(TierConfig{}, discard(), "test store", func() error { calls++; return down }); !errors.Is(err, store.ErrUnavailable) || calls != 1 {
		t.Fatalf("no StartupWait: %v after %d calls, want one try", err, calls)
	}

	err = waitFor(TierConfig{StartupWait: 700 * time.Millisecond}, discard(), "test store", func() error { return down })
	if !errors.Is(err, ErrDependencyWait) || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("deadline: %v, want ErrDependencyWait wrapping the last error", err)
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// A logic started while its Cassandra is down waits (logging what for) and
// gives up with ErrDependencyWait once StartupWait is over.
func TestStartLogicWaitsForADownCassandra(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	f := parse(t, `
store: {backend: cassandra, cassandra: {hosts: ["`+addr+`"], keyspace: ks_down, timeout: 1s}}
queue: {backend: rocketmq, rocketmq: {name_servers: ["127.0.0.1:1"]}}
job: {embedded: false}
`)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil))
	began := time.Now()
	_, err = StartLogic(TierConfig{File: f, Logger: log, StartupWait: 3 * time.Second})
	if !errors.Is(err, ErrDependencyWait) || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("StartLogic with Cassandra down = %v, want ErrDependencyWait wrapping store.ErrUnavailable", err)
	}
	if d := time.Since(began); d < 3*time.Second || d > 30*time.Second {
		t.Fatalf("gave up after %v, want about the 3s StartupWait", d)
	}
	if out := logs.String(); !strings.Contains(out, "waiting for a dependency") || !strings.Contains(out, addr) {
		t.Fatalf("the log does not say what it waits for:\n%s", out)
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
