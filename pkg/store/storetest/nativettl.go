package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/store"
)

// Options relax the suite where store.go leaves backends a choice.
type Options struct {
	// NativeTTL: the backend expires oplogs itself (DeleteExpired may return
	// 0 and do nothing). DeleteExpired and ExpiredIDsNotReused then check
	// that expired oplogs vanish on their own (polled, with a deadline),
	// valid ones stay, and max ids are kept and not reused.
	NativeTTL bool
}

func nativeTTLVariant(name string, fn func(*testing.T, store.Store)) func(*testing.T, store.Store) {
	switch name {
	case "DeleteExpired":
		return testNativeExpiry
	case "ExpiredIDsNotReused":
		return testNativeExpiredIDsNotReused
	}
	return fn
}

// waitPayloads polls ch until it holds exactly want (a backend's TTL
// granularity is seconds) or the deadline passes.
func waitPayloads(t *testing.T, s store.Store, ch string, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := fmt.Sprint(payloadsOf(readAll(t, s, ch)))
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Read(%q) = %s after %v, want %s (expired oplogs must vanish by native TTL)", ch, got, within, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func testNativeExpiry(t *testing.T, s store.Store) {
	ctx := testContext(t)
	a := oplog.UserChannel("expiry", "alice")
	now := time.Now()
	at := func(until time.Time, payload string) *oplog.Oplog {
		op := newOp(a, payload)
		op.ValidUntilMs = until.UnixMilli()
		return op
	}
	never := newOp(a, "never")
	never.ValidUntilMs = 0
	mustAppend(t, s, at(now.Add(-time.Hour), "a1"), at(now.Add(time.Hour), "a2"), never, at(now.Add(-time.Minute), "a4"))
	if n, err := s.DeleteExpired(ctx, now, 100); err != nil || n < 0 {
		t.Fatalf("DeleteExpired = %d, %v; want >= 0, nil", n, err)
	}
	waitPayloads(t, s, a, "[a2 never]", 15*time.Second)
	wantMaxID(t, s, a, 4)
	if got, _, err := s.Read(ctx, a, 2, 1); err != nil || fmt.Sprint(idsOf(got)) != "[3]" {
		t.Errorf("Read(after 2, limit 1) = %v, %v; want [3]", idsOf(got), err)
	}
}

func testNativeExpiredIDsNotReused(t *testing.T, s store.Store) {
	ch := oplog.DeviceChannel("expiry", "d1")
	past := time.Now().Add(-time.Hour).UnixMilli()
	var ops []*oplog.Oplog
	for i := range 3 {
		op := newOp(ch, fmt.Sprint(i))
		op.ValidUntilMs = past
		ops = append(ops, op)
	}
	mustAppend(t, s, ops...)
	waitPayloads(t, s, ch, "[]", 15*time.Second)
	wantMaxID(t, s, ch, 3)
	wantIDs(t, mustAppend(t, s, newOp(ch, "next")), 4)
}
