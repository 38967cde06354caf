package testutil

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestPollReturnsOnceTheConditionHolds(t *testing.T) {
	calls := 0
	err := Poll(10*time.Second, time.Millisecond, func() error {
		calls++
		if calls < 3 {
			return fmt.Errorf("call %d", calls)
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Poll = %v after %d calls, want nil after 3", err, calls)
	}
}

func TestPollReportsTheLastObservedState(t *testing.T) {
	calls := 0
	err := Poll(20*time.Millisecond, time.Millisecond, func() error {
		calls++
		return fmt.Errorf("saw %d", calls)
	})
	if err == nil || err.Error() != fmt.Sprintf("saw %d", calls) || calls < 2 {
		t.Fatalf("Poll = %v after %d calls, want the last call's error", err, calls)
	}
}

func TestPollChecksOnceWithZeroTimeout(t *testing.T) {
	calls := 0
	err := Poll(0, time.Hour, func() error { calls++; return errors.New("no") })
	if err == nil || calls != 1 {
		t.Fatalf("Poll = %v after %d calls, want an error after 1", err, calls)
	}
}

// fatalTB records Fatalf instead of stopping the test.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
}

func TestEventuallyFailsWithWhatItSaw(t *testing.T) {
	tb := &fatalTB{TB: t}
	Eventually(tb, 5*time.Millisecond, time.Millisecond, func() error { return errors.New("queue holds 2, want 0") })
	if !strings.Contains(tb.msg, "queue holds 2, want 0") {
		t.Fatalf("failure message %q does not say what was seen", tb.msg)
	}
}

func TestClock(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c := NewClock(start)
	if !c.Now().Equal(start) {
		t.Fatalf("Now = %v, want %v", c.Now(), start)
	}
	if got := c.Add(time.Minute); !got.Equal(start.Add(time.Minute)) || !c.Now().Equal(got) {
		t.Fatalf("after Add(1m): %v / %v, want %v", got, c.Now(), start.Add(time.Minute))
	}
}
