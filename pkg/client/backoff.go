package client

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff returns the delay before retry number attempt (1-based): capped
// exponential (min, 2min, 4min ... max) with full jitter, i.e. uniform in
// [0, cap]. Full jitter matters for a fleet: when a comet restarts, its
// thousands of devices must not all come back in the same millisecond.
func backoff(min, max time.Duration, attempt int) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := min
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	if d <= 0 {
		return 0
	}
	return rand.N(d + 1)
}

// sleep waits d or until ctx is done; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
