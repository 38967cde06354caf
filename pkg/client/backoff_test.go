package client

import (
	"context"
	"testing"
	"time"
)

func TestBackoffCappedWithFullJitter(t *testing.T) {
	min, max := 100*time.Millisecond, time.Second
	caps := []time.Duration{100, 200, 400, 800, 1000, 1000, 1000}
	for i, cp := range caps {
		attempt := i + 1
		cp *= time.Millisecond
		var lo, hi time.Duration = cp, 0
		for range 2000 {
			d := backoff(min, max, attempt)
			if d < 0 || d > cp {
				t.Fatalf("attempt %d: %s outside [0, %s]", attempt, d, cp)
			}
			lo, hi = minDur(lo, d), maxDur(hi, d)
		}
		// Full jitter spreads over the whole range, not just near the cap.
		if lo > cp/10 || hi < cp*9/10 {
			t.Fatalf("attempt %d: range [%s, %s] does not span [0, %s]", attempt, lo, hi, cp)
		}
	}
	if d := backoff(min, max, 1000); d > max {
		t.Fatalf("attempt 1000: %s over max (overflow?)", d)
	}
}

func minDur(a, b time.Duration) time.Duration { return min(a, b) }
func maxDur(a, b time.Duration) time.Duration { return max(a, b) }

func TestSleepHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if sleep(ctx, time.Hour) {
		t.Fatal("sleep reported elapsed on a cancelled context")
	}
	if time.Since(start) > time.Second {
		t.Fatal("sleep ignored the cancelled context")
	}
	if !sleep(context.Background(), time.Millisecond) {
		t.Fatal("sleep did not elapse")
	}
}
