package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/store"
)

// testReceipts checks ChannelReceipts: every raised point of the channel
// with the time of its last raise, by device, paged.
func testReceipts(t *testing.T, s store.Store) {
	ctx := testContext(t)
	a, other := oplog.UserChannel("rc", "alice"), oplog.UserChannel("rc", "bob")
	list := func(ch, after string, limit int) []store.Receipt {
		t.Helper()
		got, err := s.ChannelReceipts(ctx, ch, after, limit)
		if err != nil {
			t.Fatalf("ChannelReceipts(%q, %q, %d): %v", ch, after, limit, err)
		}
		return got
	}
	show := func(rs []store.Receipt) string {
		out := ""
		for _, r := range rs {
			out += fmt.Sprintf("%s/%s=%d ", r.Channel, r.Device, r.ID)
		}
		return out
	}
	if got := list(a, "", 10); len(got) != 0 {
		t.Fatalf("receipts of an empty channel = %v", show(got))
	}
	before := time.Now()
	save := func(points ...store.SyncPoint) {
		t.Helper()
		if err := s.SaveSyncPoints(ctx, points); err != nil {
			t.Fatalf("SaveSyncPoints: %v", err)
		}
	}
	save(store.SyncPoint{Device: "d2", Channel: a, ID: 3}, store.SyncPoint{Device: "d1", Channel: a, ID: 5},
		store.SyncPoint{Device: "d1", Channel: other, ID: 1})
	after := time.Now()
	got := list(a, "", 10)
	if want := a + "/d1=5 " + a + "/d2=3 "; show(got) != want {
		t.Fatalf("receipts = %q, want %q", show(got), want)
	}
	// Clocks: the store's, so allow for a coarse backend clock (ms) and
	// a little skew from the test's.
	for _, r := range got {
		if r.AckedAt.Before(before.Add(-time.Second)) || r.AckedAt.After(after.Add(time.Second)) {
			t.Fatalf("receipt %s acked at %v, want within [%v, %v]", r.Device, r.AckedAt, before, after)
		}
	}
	firstAt := got[0].AckedAt

	// A lower id changes neither the id nor the time.
	save(store.SyncPoint{Device: "d1", Channel: a, ID: 4})
	if got := list(a, "", 10); got[0].ID != 5 || !got[0].AckedAt.Equal(firstAt) {
		t.Fatalf("after a lower ack: d1 = %d at %v, want 5 at %v", got[0].ID, got[0].AckedAt, firstAt)
	}
	// A higher one moves both (the time never goes back).
	waitClockPast(firstAt)
	save(store.SyncPoint{Device: "d1", Channel: a, ID: 8})
	got = list(a, "", 10)
	if got[0].ID != 8 || !got[0].AckedAt.After(firstAt) {
		t.Fatalf("after a higher ack: d1 = %d at %v, want 8 after %v", got[0].ID, got[0].AckedAt, firstAt)
	}
	// Paging by device; a device id that is a prefix of another's.
	save(store.SyncPoint{Device: "d", Channel: a, ID: 1}, store.SyncPoint{Device: "d10", Channel: a, ID: 2})
	if got := show(list(a, "", 2)); got != a+"/d=1 "+a+"/d1=8 " {
		t.Fatalf("page 1 = %q", got)
	}
	if got := show(list(a, "d1", 2)); got != a+"/d10=2 "+a+"/d2=3 " {
		t.Fatalf("page 2 = %q", got)
	}
	if got := list(a, "d2", 2); len(got) != 0 {
		t.Fatalf("page 3 = %q, want empty", show(got))
	}
	if got := show(list(other, "", 10)); got != other+"/d1=1 " {
		t.Fatalf("other channel = %q", got)
	}
	if _, err := s.ChannelReceipts(ctx, "no-slash", "", 10); err == nil {
		t.Fatal("ChannelReceipts of a malformed channel: no error")
	}
	if _, err := s.ChannelReceipts(ctx, a, "", 0); err == nil {
		t.Fatal("ChannelReceipts with limit 0: no error")
	}
}

// waitClockPast waits (bounded) until time.Now is past t, so a backend with
// a millisecond clock can tell two saves apart.
func waitClockPast(t time.Time) {
	for deadline := time.Now().Add(time.Second); !time.Now().After(t.Add(time.Millisecond)) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
}

// testAckFeed checks store.AckFeed on backends that have one: every raise
// appears after the cursor of what came before, once, at its latest raise.
func testAckFeed(t *testing.T, s store.Store) {
	f, ok := s.(store.AckFeed)
	if !ok {
		t.Logf("%T has no ack feed (store.AckFeed): nothing to check", s)
		return
	}
	ctx := testContext(t)
	a, b, other := oplog.UserChannel("feed", "alice"), oplog.GlobalChannel("feed"), oplog.UserChannel("feed2", "alice")
	read := func(after store.AckCursor, limit int) ([]store.Receipt, store.AckCursor) {
		t.Helper()
		got, next, err := f.AcksAfter(ctx, "feed", after, limit)
		if err != nil {
			t.Fatalf("AcksAfter: %v", err)
		}
		return got, next
	}
	show := func(rs []store.Receipt) string {
		out := ""
		for _, r := range rs {
			out += fmt.Sprintf("%s/%s=%d ", r.Channel, r.Device, r.ID)
		}
		return out
	}
	if got, next := read(nil, 10); len(got) != 0 || next != nil {
		t.Fatalf("empty feed = %q, cursor %x", show(got), next)
	}
	save := func(points ...store.SyncPoint) {
		t.Helper()
		if err := s.SaveSyncPoints(ctx, points); err != nil {
			t.Fatalf("SaveSyncPoints: %v", err)
		}
	}
	save(store.SyncPoint{Device: "d1", Channel: a, ID: 1}, store.SyncPoint{Device: "d2", Channel: b, ID: 4},
		store.SyncPoint{Device: "d1", Channel: other, ID: 9})
	save(store.SyncPoint{Device: "d2", Channel: a, ID: 2})
	got, c1 := read(nil, 2)
	if want := a + "/d1=1 " + b + "/d2=4 "; show(got) != want {
		t.Fatalf("feed page 1 = %q, want %q (in save order, this biz only)", show(got), want)
	}
	if !got[0].AckedAt.Before(got[1].AckedAt) {
		t.Fatalf("acked-at times not increasing: %v, %v", got[0].AckedAt, got[1].AckedAt)
	}
	// Raising d1 again moves it after d2's; the old entry is gone.
	save(store.SyncPoint{Device: "d1", Channel: a, ID: 3})
	save(store.SyncPoint{Device: "d1", Channel: a, ID: 2}) // lower: no entry
	got, c2 := read(c1, 10)
	if want := a + "/d2=2 " + a + "/d1=3 "; show(got) != want {
		t.Fatalf("feed after cursor = %q, want %q", show(got), want)
	}
	if got, next := read(c2, 10); len(got) != 0 || string(next) != string(c2) {
		t.Fatalf("feed after the end = %q, cursor moved %x -> %x", show(got), c2, next)
	}
	if got, _ := read(nil, 10); len(got) != 3 {
		t.Fatalf("whole feed = %q, want one entry per point", show(got))
	}
	// Cursors persist by name.
	if c, err := f.LoadAckCursor(ctx, "hook"); err != nil || c != nil {
		t.Fatalf("LoadAckCursor of a new name = %x, %v", c, err)
	}
	if err := f.SaveAckCursor(ctx, "hook", c1); err != nil {
		t.Fatalf("SaveAckCursor: %v", err)
	}
	if c, err := f.LoadAckCursor(ctx, "hook"); err != nil || string(c) != string(c1) {
		t.Fatalf("LoadAckCursor = %x, %v, want %x", c, err, c1)
	}
	if _, _, err := f.AcksAfter(ctx, "feed", store.AckCursor{1, 2}, 10); err == nil {
		t.Fatal("AcksAfter with a garbage cursor: no error")
	}
}
