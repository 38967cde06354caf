package pebble

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/store"
)

func TestClaimDeviceAndNotBefore(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	ctx := context.Background()
	claim := func(device, user string, takeover bool, want string) {
		t.Helper()
		if got, err := s.ClaimDevice(ctx, device, user, takeover); err != nil || got != want {
			t.Fatalf("ClaimDevice(%s, %s, %v) = %q, %v; want %q", device, user, takeover, got, err, want)
		}
	}
	claim("tab", "jo", false, "jo")  // first claim records
	claim("tab", "kim", false, "jo") // foreign claim refused
	claim("tab", "jo", false, "jo")
	claim("tab", "kim", true, "kim") // vouched hand-over
	claim("tab", "jo", false, "kim")
	if _, err := s.ClaimDevice(ctx, "", "jo", false); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("empty device: %v", err)
	}

	if nb, err := s.TokensNotBefore(ctx, "jo"); err != nil || !nb.IsZero() {
		t.Fatalf("no cut-off: %v, %v", nb, err)
	}
	t1 := time.Unix(1_800_000_000, 0)
	if err := s.SetTokensNotBefore(ctx, "jo", t1); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTokensNotBefore(ctx, "jo", t1.Add(-time.Hour)); err != nil { // never lowered
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir) // both survive a reopen
	if nb, err := s.TokensNotBefore(ctx, "jo"); err != nil || !nb.Equal(t1) {
		t.Fatalf("cut-off after reopen: %v, %v", nb, err)
	}
	claim("tab", "jo", false, "kim")
}

// Security review #4: a caller that gives up while its group commits gets
// store.ErrOutcomeUnknown ("may be stored"), never a plain ErrUnavailable
// ("nothing was stored"), and the ops are then in fact stored.
func TestAppendGivingUpMidCommitIsOutcomeUnknown(t *testing.T) {
	s := openTest(t, t.TempDir())
	gate := holdFirstCommit(s)
	ch := oplog.UserChannel("late", "alice")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, []*oplog.Oplog{{Channel: ch, Payload: []byte("x"), DedupKey: "k"}})
		done <- err
	}()
	gate.waitHeld(t)
	cancel()
	err := <-done
	if !errors.Is(err, store.ErrOutcomeUnknown) || errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Append = %v; want ErrOutcomeUnknown only", err)
	}
	var late store.LateAppend
	if !errors.As(err, &late) {
		t.Fatalf("Append error %T does not implement store.LateAppend", err)
	}
	gate.release()
	if res, err := late.Wait(context.Background()); err != nil || len(res) != 1 || res[0].ID != 1 {
		t.Fatalf("Wait = %+v, %v; want id 1", res, err)
	}
	waitFor(t, "the late commit", func() bool { m, err := s.MaxID(context.Background(), ch); return err == nil && m == 1 })
	res, err := s.Append(context.Background(), []*oplog.Oplog{{Channel: ch, Payload: []byte("x"), DedupKey: "k"}})
	if err != nil || !res[0].Duplicate || res[0].ID != 1 {
		t.Fatalf("retry = %+v, %v; want duplicate of 1", res, err)
	}
}

// Security review #12: the per-channel id states are capped (MaxChannels):
// publishing to many distinct channels does not grow memory without bound,
// and a channel whose state was dropped continues its ids from disk.
func TestChannelStatesCapped(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir, Logger: testLogger(t), MaxChannels: 640})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	const channels = 5000
	for i := range channels {
		ch := oplog.UserChannel("many", fmt.Sprint("u", i))
		if _, err := s.Append(ctx, []*oplog.Oplog{{Channel: ch}, {Channel: ch}}); err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	if st.Channels > 640 || st.Evictions == 0 {
		t.Fatalf("channel states %d (cap 640), evictions %d", st.Channels, st.Evictions)
	}
	// Every channel, evicted or not, continues at 3 and reads back its max.
	for i := range channels {
		ch := oplog.UserChannel("many", fmt.Sprint("u", i))
		if m, err := s.MaxID(ctx, ch); err != nil || m != 2 {
			t.Fatalf("%s MaxID = %d, %v", ch, m, err)
		}
		res, err := s.Append(ctx, []*oplog.Oplog{{Channel: ch}})
		if err != nil || res[0].ID != 3 {
			t.Fatalf("%s next id = %+v, %v; want 3", ch, res, err)
		}
	}
	if st := s.Stats(); st.Channels > 640 {
		t.Fatalf("channel states %d after reads, cap 640", st.Channels)
	}
}
