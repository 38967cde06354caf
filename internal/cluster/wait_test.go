package cluster

import (
	"errors"
	"fmt"
	"log/slog"
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
