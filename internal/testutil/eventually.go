package testutil

import (
	"testing"
	"time"
)

// Eventually calls check every interval until it returns nil, and fails the
// test with check's last error once timeout has passed (nats-server's
// checkFor). check's error should say what it saw ("2 of 3 acked", "state
// resyncing"), so the failure tells what was wrong, not only that it was.
// check runs at least once, even when timeout is zero.
func Eventually(tb testing.TB, timeout, interval time.Duration, check func() error) {
	tb.Helper()
	if err := Poll(timeout, interval, check); err != nil {
		tb.Fatalf("after %v: %v", timeout, err)
	}
}

// Poll is Eventually without a test: it returns nil once check does, or
// check's last error after timeout. For goroutines other than the test's,
// which must not call Fatal, and for callers that add their own context.
func Poll(timeout, interval time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if !time.Now().Before(deadline) {
			return err
		}
		time.Sleep(interval)
	}
}
