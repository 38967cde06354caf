// Package storetest is the conformance suite every store.Store backend runs:
// call Run (and RunReopen, if the backend can be closed and reopened on the
// same data) from the backend's tests. It uses only the store.Store
// interface, so it assumes nothing about the backend.
//
// Beyond store.go's doc comments the suite pins down two choices: an oplog
// with ValidUntilMs <= 0 never expires (as oplog.Evaluate treats it), and
// Read with limit <= 0 is invalid (a caller paging with it would never end).
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/store"
)

// Run runs the conformance suite. open must return a new, empty store for
// each call; the suite closes it (Close must be idempotent).
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	RunWith(t, open, Options{})
}

// RunWith is Run with options for backends that differ where store.go allows.
func RunWith(t *testing.T, open func(t *testing.T) store.Store, opt Options) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"IDsDensePerChannel", testIDsDensePerChannel},
		{"IDsInCallOrder", testIDsInCallOrder},
		{"ConcurrentAppenders", testConcurrentAppenders},
		{"Dedup", testDedup},
		{"ReadPaging", testReadPaging},
		{"MaxID", testMaxID},
		{"RoundTrip", testRoundTrip},
		{"SyncPoints", testSyncPoints},
		{"Receipts", testReceipts},
		{"AckFeed", testAckFeed},
		{"DeleteExpired", testDeleteExpired},
		{"ExpiredIDsNotReused", testExpiredIDsNotReused},
		{"InvalidInput", testInvalidInput},
		{"CancelledContext", testCancelledContext},
		{"Close", testClose},
	}
	for _, tt := range tests {
		if opt.NativeTTL {
			tt.fn = nativeTTLVariant(tt.name, tt.fn)
		}
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tt.fn(t, s)
		})
	}
}

// RunReopen checks that data, dedup keys, sync points and max ids survive
// Close and reopening the same data: open(t, dir) must open the store kept
// under dir (a backend without directories can map dir to its own namespace).
// The suite closes every store it opens.
func RunReopen(t *testing.T, open func(t *testing.T, dir string) store.Store) {
	ctx := testContext(t)
	dir := t.TempDir()
	a, b := oplog.UserChannel("reopen", "alice"), oplog.DeviceChannel("reopen", "dev-1")
	past := time.Now().Add(-time.Hour).UnixMilli()

	s := openAndClose(t, open, dir)
	var want []*oplog.Oplog
	for i := 1; i <= 5; i++ {
		op := newOp(a, fmt.Sprintf("a%d", i))
		if i == 3 {
			op.DedupKey = "three"
		}
		want = append(want, op)
	}
	mustAppend(t, s, want...)
	mustAppend(t, s, newOp(b, "b1"), newOp(b, "b2"))
	// Ids 6 and 7 expire and are deleted: the max id must still be 7.
	e6, e7 := newOp(a, "a6"), newOp(a, "a7")
	e6.ValidUntilMs, e7.ValidUntilMs = past, past
	mustAppend(t, s, e6, e7)
	if n, err := s.DeleteExpired(ctx, time.Now(), 100); err != nil || n != 2 {
		t.Fatalf("DeleteExpired = %d, %v; want 2, nil", n, err)
	}
	if err := s.SaveSyncPoints(ctx, []store.SyncPoint{{Device: "dev-1", Channel: a, ID: 4}}); err != nil {
		t.Fatalf("SaveSyncPoints: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = openAndClose(t, open, dir)
	wantMaxID(t, s, a, 7)
	wantMaxID(t, s, b, 2)
	got := readAll(t, s, a)
	checkSame(t, got, want)
	res := mustAppend(t, s, &oplog.Oplog{Channel: a, Biz: "reopen", Payload: []byte("again"), DedupKey: "three"})
	if res[0] != (store.AppendResult{ID: 3, Duplicate: true}) {
		t.Errorf("dedup key after reopen: got %+v, want id 3 duplicate", res[0])
	}
	wantIDs(t, mustAppend(t, s, newOp(a, "a8")), 8)
	wantIDs(t, mustAppend(t, s, newOp(b, "b3")), 3)
	points, err := s.SyncPoints(ctx, "dev-1")
	if err != nil || points[a] != 4 {
		t.Errorf("SyncPoints after reopen = %v, %v; want %s: 4", points, err, a)
	}
	if rs, err := s.ChannelReceipts(ctx, a, "", 10); err != nil || len(rs) != 1 || rs[0].ID != 4 || rs[0].AckedAt.IsZero() {
		t.Errorf("ChannelReceipts after reopen = %+v, %v; want dev-1 at 4 with a time", rs, err)
	}
	if f, ok := s.(store.AckFeed); ok {
		// A save after the reopen sorts after everything saved before it.
		_, c, err := f.AcksAfter(ctx, "reopen", nil, 10)
		if err != nil {
			t.Fatalf("AcksAfter: %v", err)
		}
		if err := s.SaveSyncPoints(ctx, []store.SyncPoint{{Device: "dev-2", Channel: a, ID: 1}}); err != nil {
			t.Fatalf("SaveSyncPoints: %v", err)
		}
		if got, _, err := f.AcksAfter(ctx, "reopen", c, 10); err != nil || len(got) != 1 || got[0].Device != "dev-2" {
			t.Errorf("ack feed after reopen = %+v, %v; want dev-2's save after the old cursor", got, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = openAndClose(t, open, dir)
	wantMaxID(t, s, a, 8)
	wantIDs(t, mustAppend(t, s, newOp(a, "a9")), 9)
}

func openAndClose(t *testing.T, open func(t *testing.T, dir string) store.Store, dir string) store.Store {
	s := open(t, dir)
	t.Cleanup(func() { _ = s.Close() }) // error checked where the test closes it
	return s
}

func testIDsDensePerChannel(t *testing.T, s store.Store) {
	a, b := oplog.UserChannel("dense", "alice"), oplog.UserChannel("dense", "bob")
	for i := 1; i <= 10; i++ {
		wantIDs(t, mustAppend(t, s, newOp(a, "a")), uint64(i))
		if i%2 == 0 {
			wantIDs(t, mustAppend(t, s, newOp(b, "b")), uint64(i/2))
		}
	}
	// One call over both channels: each continues its own sequence.
	ops := []*oplog.Oplog{newOp(a, "a"), newOp(b, "b"), newOp(a, "a")}
	wantIDs(t, mustAppend(t, s, ops...), 11, 6, 12)
	for i, op := range ops {
		if want := []uint64{11, 6, 12}[i]; op.Id != want {
			t.Errorf("op %d: Id = %d after Append, want %d", i, op.Id, want)
		}
	}
	wantMaxID(t, s, a, 12)
	wantMaxID(t, s, b, 6)
	checkDense(t, readAll(t, s, a), 12)
	checkDense(t, readAll(t, s, b), 6)
}

func testIDsInCallOrder(t *testing.T, s store.Store) {
	ch := oplog.UserChannel("order", "alice")
	var ops []*oplog.Oplog
	var wantIDList []uint64
	for i := 1; i <= 20; i++ {
		ops = append(ops, newOp(ch, fmt.Sprintf("p%d", i)))
		wantIDList = append(wantIDList, uint64(i))
	}
	wantIDs(t, mustAppend(t, s, ops...), wantIDList...)
	got := readAll(t, s, ch)
	checkSame(t, got, ops)
}

func testConcurrentAppenders(t *testing.T, s store.Store) {
	const writers, calls = 50, 10
	ctx := testContext(t)
	ch := oplog.GlobalChannel("concurrent")

	var mu sync.Mutex
	payloads := make(map[uint64]string) // id -> payload it was assigned to
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			var last uint64
			for c := range calls {
				// Alternate single and multi-op calls.
				n := 1 + 2*(c%2)
				var ops []*oplog.Oplog
				for i := range n {
					ops = append(ops, newOp(ch, fmt.Sprintf("w%d-c%d-%d", w, c, i)))
				}
				res, err := s.Append(ctx, ops)
				if err != nil {
					t.Errorf("writer %d: Append: %v", w, err)
					return
				}
				mu.Lock()
				for i, r := range res {
					if r.ID <= last {
						t.Errorf("writer %d: id %d after %d: calls of one goroutine must get increasing ids", w, r.ID, last)
					}
					last = r.ID
					if prev, dup := payloads[r.ID]; dup {
						t.Errorf("id %d handed out twice (%q and %q)", r.ID, prev, ops[i].Payload)
					}
					payloads[r.ID] = string(ops[i].Payload)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	total := uint64(len(payloads))
	if want := uint64(writers * calls * 2); total != want { // n averages 2
		t.Fatalf("%d ids assigned, want %d", total, want)
	}
	for id := uint64(1); id <= total; id++ {
		if _, ok := payloads[id]; !ok {
			t.Fatalf("id %d never assigned: ids are not 1..%d", id, total)
		}
	}
	got := readAll(t, s, ch)
	checkDense(t, got, total)
	for _, op := range got {
		if string(op.Payload) != payloads[op.Id] {
			t.Fatalf("id %d: read payload %q, appended %q", op.Id, op.Payload, payloads[op.Id])
		}
	}
}

func testDedup(t *testing.T, s store.Store) {
	a, b := oplog.UserChannel("dedup", "alice"), oplog.UserChannel("dedup", "bob")
	first := newOp(a, "first")
	first.DedupKey = "k1"
	wantResults(t, mustAppend(t, s, first), store.AppendResult{ID: 1})

	t.Run("RepeatReturnsFirstID", func(t *testing.T) {
		again := newOp(a, "again")
		again.DedupKey = "k1"
		wantResults(t, mustAppend(t, s, again), store.AppendResult{ID: 1, Duplicate: true})
		wantMaxID(t, s, a, 1)
		got := readAll(t, s, a)
		if len(got) != 1 || string(got[0].Payload) != "first" {
			t.Fatalf("channel holds %v, want only the first oplog", payloadsOf(got))
		}
	})
	t.Run("SameKeyTwiceInOneCall", func(t *testing.T) {
		x, y, z := newOp(a, "x"), newOp(a, "y"), newOp(a, "z")
		x.DedupKey, z.DedupKey = "k2", "k2"
		wantResults(t, mustAppend(t, s, x, y, z),
			store.AppendResult{ID: 2}, store.AppendResult{ID: 3}, store.AppendResult{ID: 2, Duplicate: true})
		wantMaxID(t, s, a, 3)
		got := readAll(t, s, a)
		if fmt.Sprint(payloadsOf(got)) != "[first x y]" {
			t.Fatalf("channel holds %v, want [first x y]", payloadsOf(got))
		}
	})
	t.Run("DuplicateDoesNotConsumeAnID", func(t *testing.T) {
		dup, fresh := newOp(a, "dup"), newOp(a, "fresh")
		dup.DedupKey, fresh.DedupKey = "k1", "k4"
		wantResults(t, mustAppend(t, s, dup, fresh),
			store.AppendResult{ID: 1, Duplicate: true}, store.AppendResult{ID: 4})
		checkDense(t, readAll(t, s, a), 4)
	})
	t.Run("SameKeyOtherChannel", func(t *testing.T) {
		other := newOp(b, "other")
		other.DedupKey = "k1"
		wantResults(t, mustAppend(t, s, other), store.AppendResult{ID: 1})
		wantMaxID(t, s, b, 1)
	})
}

func testReadPaging(t *testing.T, s store.Store) {
	ctx := testContext(t)
	ch := oplog.UserChannel("paging", "alice")
	var ops []*oplog.Oplog
	for i := 1; i <= 10; i++ {
		ops = append(ops, newOp(ch, fmt.Sprintf("p%d", i)))
	}
	mustAppend(t, s, ops...)

	tests := []struct {
		after   uint64
		limit   int
		wantIDs []uint64
	}{
		{0, 3, []uint64{1, 2, 3}},
		{3, 3, []uint64{4, 5, 6}},
		{9, 3, []uint64{10}},
		{0, 100, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{5, 1, []uint64{6}},
		{10, 5, nil},
		{1000, 5, nil},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("after=%d/limit=%d", tt.after, tt.limit), func(t *testing.T) {
			got, maxID, err := s.Read(ctx, ch, tt.after, tt.limit)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if maxID != 10 {
				t.Errorf("maxID = %d, want 10", maxID)
			}
			if fmt.Sprint(idsOf(got)) != fmt.Sprint(tt.wantIDs) {
				t.Fatalf("ids = %v, want %v", idsOf(got), tt.wantIDs)
			}
			for _, op := range got {
				if want := fmt.Sprintf("p%d", op.Id); string(op.Payload) != want || op.Channel != ch {
					t.Errorf("id %d: payload %q channel %q, want %q %q", op.Id, op.Payload, op.Channel, want, ch)
				}
			}
		})
	}
	t.Run("EmptyChannel", func(t *testing.T) {
		got, maxID, err := s.Read(ctx, oplog.UserChannel("paging", "nobody"), 0, 10)
		if err != nil || len(got) != 0 || maxID != 0 {
			t.Fatalf("Read(empty) = %d ops, maxID %d, %v; want 0, 0, nil", len(got), maxID, err)
		}
	})
}

func testMaxID(t *testing.T, s store.Store) {
	a, b := oplog.DeviceChannel("maxid", "d1"), oplog.DeviceChannel("maxid", "d2")
	wantMaxID(t, s, a, 0)
	mustAppend(t, s, newOp(a, "1"), newOp(a, "2"), newOp(a, "3"))
	wantMaxID(t, s, a, 3)
	wantMaxID(t, s, b, 0)
	mustAppend(t, s, newOp(b, "1"))
	wantMaxID(t, s, a, 3)
	wantMaxID(t, s, b, 1)
}

func testRoundTrip(t *testing.T, s store.Store) {
	ch := oplog.UserChannel("roundtrip", "alice/with/slashes")
	full := &oplog.Oplog{
		Channel:      ch,
		Biz:          "roundtrip",
		Payload:      []byte{0, 1, 2, 0xff, 0xfe, 0, 'x'},
		CreatedMs:    1_700_000_000_123,
		ValidFromMs:  1_700_000_000_456,
		ValidUntilMs: time.Now().Add(24 * time.Hour).UnixMilli(),
		Platforms:    []string{"ios", "android", "harmony"},
		MinVersion:   "5.9",
		MaxVersion:   "6.10.2",
		DedupKey:     "round-trip-key",
	}
	// Every field but id is set, so a field added to oplog.proto that a
	// backend forgets to store fails here until the test sets it too.
	set := 0
	full.ProtoReflect().Range(func(protoreflect.FieldDescriptor, protoreflect.Value) bool { set++; return true })
	if total := full.ProtoReflect().Descriptor().Fields().Len(); set != total-1 {
		t.Fatalf("test oplog sets %d of %d fields; set every field but id", set, total)
	}
	minimal := &oplog.Oplog{Channel: ch}
	want := []*oplog.Oplog{proto.Clone(full).(*oplog.Oplog), proto.Clone(minimal).(*oplog.Oplog)}
	wantIDs(t, mustAppend(t, s, full, minimal), 1, 2)
	want[0].Id, want[1].Id = 1, 2
	got := readAll(t, s, ch)
	if len(got) != 2 {
		t.Fatalf("read %d oplogs, want 2", len(got))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("oplog %d round-trip:\n got %v\nwant %v", i, got[i], want[i])
		}
	}
}

func testSyncPoints(t *testing.T, s store.Store) {
	ctx := testContext(t)
	a, b := oplog.UserChannel("sp", "alice"), oplog.GlobalChannel("sp")
	save := func(points ...store.SyncPoint) {
		t.Helper()
		if err := s.SaveSyncPoints(ctx, points); err != nil {
			t.Fatalf("SaveSyncPoints: %v", err)
		}
	}
	check := func(device string, want map[string]uint64) {
		t.Helper()
		got, err := s.SyncPoints(ctx, device)
		if err != nil {
			t.Fatalf("SyncPoints(%q): %v", device, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) { // fmt sorts map keys
			t.Fatalf("SyncPoints(%q) = %v, want %v", device, got, want)
		}
	}
	check("d1", map[string]uint64{})
	save(store.SyncPoint{Device: "d1", Channel: a, ID: 5}, store.SyncPoint{Device: "d1", Channel: b, ID: 3},
		store.SyncPoint{Device: "d2", Channel: a, ID: 7})
	check("d1", map[string]uint64{a: 5, b: 3})
	check("d2", map[string]uint64{a: 7})

	save(store.SyncPoint{Device: "d1", Channel: a, ID: 9})
	check("d1", map[string]uint64{a: 9, b: 3})
	save(store.SyncPoint{Device: "d1", Channel: a, ID: 4}) // lower: ignored
	check("d1", map[string]uint64{a: 9, b: 3})
	// One call naming a point twice keeps the higher id, whatever the order.
	save(store.SyncPoint{Device: "d1", Channel: b, ID: 10}, store.SyncPoint{Device: "d1", Channel: b, ID: 8})
	check("d1", map[string]uint64{a: 9, b: 10})
	check("d2", map[string]uint64{a: 7})
	// A device whose id is a prefix of another's sees only its own points.
	save(store.SyncPoint{Device: "d", Channel: a, ID: 1})
	check("d", map[string]uint64{a: 1})
	save()
}

func testDeleteExpired(t *testing.T, s store.Store) {
	ctx := testContext(t)
	a, b := oplog.UserChannel("expiry", "alice"), oplog.UserChannel("expiry", "bob")
	now := time.Now()
	at := func(ch string, until time.Time, payload string) *oplog.Oplog {
		op := newOp(ch, payload)
		op.ValidUntilMs = until.UnixMilli()
		return op
	}
	never := newOp(b, "never")
	never.ValidUntilMs = 0 // never expires
	mustAppend(t, s,
		at(a, now.Add(-2*time.Hour), "a1"), // expired
		at(a, now.Add(-time.Hour), "a2"),   // expired
		at(a, now.Add(time.Hour), "a3"),
		at(a, now.Add(-time.Minute), "a4"), // expired
		at(a, now.Add(2*time.Hour), "a5"),
		at(a, now, "a6"), // valid until exactly `before`: not < before
	)
	mustAppend(t, s, at(b, now.Add(-time.Hour), "b1"), never) // b1 expired

	n, err := s.DeleteExpired(ctx, now, 2)
	if err != nil || n != 2 {
		t.Fatalf("DeleteExpired(limit 2) = %d, %v; want 2, nil", n, err)
	}
	if left := len(readAll(t, s, a)) + len(readAll(t, s, b)); left != 6 {
		t.Fatalf("%d oplogs left after deleting 2 of 8, want 6", left)
	}
	n, err = s.DeleteExpired(ctx, now, 100)
	if err != nil || n != 2 {
		t.Fatalf("second DeleteExpired = %d, %v; want the remaining 2, nil", n, err)
	}
	if n, err = s.DeleteExpired(ctx, now, 100); err != nil || n != 0 {
		t.Fatalf("third DeleteExpired = %d, %v; want 0, nil", n, err)
	}
	got, maxID, err := s.Read(ctx, a, 0, 100)
	if err != nil || fmt.Sprint(payloadsOf(got)) != "[a3 a5 a6]" || maxID != 6 {
		t.Fatalf("Read(a) = %v, maxID %d, %v; want [a3 a5 a6], 6", payloadsOf(got), maxID, err)
	}
	if fmt.Sprint(idsOf(got)) != "[3 5 6]" {
		t.Errorf("Read(a) ids = %v, want [3 5 6]", idsOf(got))
	}
	// Paging across deleted ids: after 3, the next is 5.
	if got, _, err := s.Read(ctx, a, 3, 1); err != nil || fmt.Sprint(idsOf(got)) != "[5]" {
		t.Errorf("Read(a, after 3, limit 1) = %v, %v; want [5]", idsOf(got), err)
	}
	got, maxID, err = s.Read(ctx, b, 0, 100)
	if err != nil || fmt.Sprint(payloadsOf(got)) != "[never]" || maxID != 2 {
		t.Fatalf("Read(b) = %v, maxID %d, %v; want [never], 2", payloadsOf(got), maxID, err)
	}
	// Later sweeps take what has expired by then, never the one without end.
	if n, err = s.DeleteExpired(ctx, now.Add(3*time.Hour), 100); err != nil || n != 3 {
		t.Fatalf("DeleteExpired(+3h) = %d, %v; want 3, nil", n, err)
	}
	if got := readAll(t, s, b); fmt.Sprint(payloadsOf(got)) != "[never]" {
		t.Fatalf("Read(b) after sweeping +3h = %v, want [never]", payloadsOf(got))
	}
}

func testExpiredIDsNotReused(t *testing.T, s store.Store) {
	ctx := testContext(t)
	ch := oplog.DeviceChannel("expiry", "d1")
	past := time.Now().Add(-time.Hour).UnixMilli()
	var ops []*oplog.Oplog
	for i := range 3 {
		op := newOp(ch, fmt.Sprint(i))
		op.ValidUntilMs = past
		ops = append(ops, op)
	}
	mustAppend(t, s, ops...)
	if n, err := s.DeleteExpired(ctx, time.Now(), 100); err != nil || n != 3 {
		t.Fatalf("DeleteExpired = %d, %v; want 3, nil", n, err)
	}
	got, maxID, err := s.Read(ctx, ch, 0, 10)
	if err != nil || len(got) != 0 || maxID != 3 {
		t.Fatalf("Read after expiry = %d ops, maxID %d, %v; want 0 ops, maxID 3", len(got), maxID, err)
	}
	wantMaxID(t, s, ch, 3)
	wantIDs(t, mustAppend(t, s, newOp(ch, "next")), 4)
}

func testInvalidInput(t *testing.T, s store.Store) {
	ctx := testContext(t)
	ch := oplog.UserChannel("invalid", "alice")
	withID := newOp(ch, "x")
	withID.Id = 5
	appends := []struct {
		name string
		ops  []*oplog.Oplog
	}{
		{"NilOp", []*oplog.Oplog{nil}},
		{"EmptyChannel", []*oplog.Oplog{newOp("", "x")}},
		{"UnparsableChannel", []*oplog.Oplog{newOp("no-slash", "x")}},
		{"BadKind", []*oplog.Oplog{newOp("biz/x/alice", "x")}},
		{"IDSet", []*oplog.Oplog{withID}},
		// One bad op fails the whole call: nothing of it is stored.
		{"ValidThenInvalid", []*oplog.Oplog{newOp(ch, "ok"), nil}},
	}
	for _, tt := range appends {
		t.Run("Append"+tt.name, func(t *testing.T) {
			res, err := s.Append(ctx, tt.ops)
			if !errors.Is(err, store.ErrInvalid) || res != nil {
				t.Fatalf("Append = %v, %v; want nil, ErrInvalid", res, err)
			}
			wantMaxID(t, s, ch, 0)
		})
	}
	others := []struct {
		name string
		call func() error
	}{
		{"ReadBadChannel", func() error { _, _, err := s.Read(ctx, "bad", 0, 10); return err }},
		{"ReadZeroLimit", func() error { _, _, err := s.Read(ctx, ch, 0, 0); return err }},
		{"MaxIDEmptyChannel", func() error { _, err := s.MaxID(ctx, ""); return err }},
		{"SaveSyncPointsNoDevice", func() error {
			return s.SaveSyncPoints(ctx, []store.SyncPoint{{Channel: ch, ID: 1}})
		}},
		{"SaveSyncPointsBadChannel", func() error {
			return s.SaveSyncPoints(ctx, []store.SyncPoint{{Device: "d1", Channel: "bad", ID: 1}})
		}},
		{"SyncPointsNoDevice", func() error { _, err := s.SyncPoints(ctx, ""); return err }},
	}
	for _, tt := range others {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
		})
	}
}

func testCancelledContext(t *testing.T, s store.Store) {
	ch := oplog.UserChannel("cancel", "alice")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := []struct {
		name string
		call func() error
	}{
		{"Append", func() error { _, err := s.Append(ctx, []*oplog.Oplog{newOp(ch, "x")}); return err }},
		{"Read", func() error { _, _, err := s.Read(ctx, ch, 0, 10); return err }},
		{"MaxID", func() error { _, err := s.MaxID(ctx, ch); return err }},
		{"SaveSyncPoints", func() error {
			return s.SaveSyncPoints(ctx, []store.SyncPoint{{Device: "d1", Channel: ch, ID: 1}})
		}},
		{"SyncPoints", func() error { _, err := s.SyncPoints(ctx, "d1"); return err }},
		{"DeleteExpired", func() error { _, err := s.DeleteExpired(ctx, time.Now(), 10); return err }},
	}
	for _, tt := range calls {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); err == nil {
				t.Fatal("nil error with a cancelled context")
			}
		})
	}
	wantMaxID(t, s, ch, 0) // the cancelled Append stored nothing
}

func testClose(t *testing.T, s store.Store) {
	ctx := testContext(t)
	ch := oplog.UserChannel("close", "alice")
	mustAppend(t, s, newOp(ch, "x"))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	calls := []struct {
		name string
		call func() error
	}{
		{"Append", func() error { _, err := s.Append(ctx, []*oplog.Oplog{newOp(ch, "y")}); return err }},
		{"Read", func() error { _, _, err := s.Read(ctx, ch, 0, 10); return err }},
		{"MaxID", func() error { _, err := s.MaxID(ctx, ch); return err }},
		{"SaveSyncPoints", func() error {
			return s.SaveSyncPoints(ctx, []store.SyncPoint{{Device: "d1", Channel: ch, ID: 1}})
		}},
		{"SyncPoints", func() error { _, err := s.SyncPoints(ctx, "d1"); return err }},
		{"DeleteExpired", func() error { _, err := s.DeleteExpired(ctx, time.Now(), 10); return err }},
	}
	for _, tt := range calls {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, store.ErrClosed) {
				t.Fatalf("after Close: got %v, want ErrClosed", err)
			}
		})
	}
}

// testContext bounds each test, so a hung backend fails instead of blocking
// the whole run.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newOp returns an oplog valid for a week, as logic would build it.
func newOp(ch, payload string) *oplog.Oplog {
	biz, _, _, _ := oplog.ParseChannel(ch)
	now := time.Now()
	return &oplog.Oplog{
		Channel:      ch,
		Biz:          biz,
		Payload:      []byte(payload),
		CreatedMs:    now.UnixMilli(),
		ValidUntilMs: now.Add(7 * 24 * time.Hour).UnixMilli(),
	}
}

func mustAppend(t *testing.T, s store.Store, ops ...*oplog.Oplog) []store.AppendResult {
	t.Helper()
	res, err := s.Append(testContext(t), ops)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if len(res) != len(ops) {
		t.Fatalf("Append returned %d results for %d ops", len(res), len(ops))
	}
	return res
}

func wantIDs(t *testing.T, res []store.AppendResult, ids ...uint64) {
	t.Helper()
	want := make([]store.AppendResult, len(ids))
	for i, id := range ids {
		want[i] = store.AppendResult{ID: id}
	}
	wantResults(t, res, want...)
}

func wantResults(t *testing.T, res []store.AppendResult, want ...store.AppendResult) {
	t.Helper()
	if fmt.Sprint(res) != fmt.Sprint(want) {
		t.Fatalf("Append results = %+v, want %+v", res, want)
	}
}

func wantMaxID(t *testing.T, s store.Store, ch string, want uint64) {
	t.Helper()
	got, err := s.MaxID(testContext(t), ch)
	if err != nil || got != want {
		t.Fatalf("MaxID(%q) = %d, %v; want %d", ch, got, err, want)
	}
}

// readAll pages through ch with a small limit, so paging is exercised too,
// and checks the store's paging contract on the way.
func readAll(t *testing.T, s store.Store, ch string) []*oplog.Oplog {
	t.Helper()
	const page = 7
	ctx := testContext(t)
	var all []*oplog.Oplog
	var after uint64
	for {
		ops, maxID, err := s.Read(ctx, ch, after, page)
		if err != nil {
			t.Fatalf("Read(%q, %d): %v", ch, after, err)
		}
		for _, op := range ops {
			if op.Id <= after || op.Id > maxID || op.Channel != ch {
				t.Fatalf("Read(%q, after %d) returned id %d of channel %q with maxID %d", ch, after, op.Id, op.Channel, maxID)
			}
			after = op.Id
		}
		all = append(all, ops...)
		if len(ops) < page {
			return all
		}
	}
}

// checkDense fails unless ops have ids 1..n in order.
func checkDense(t *testing.T, ops []*oplog.Oplog, n uint64) {
	t.Helper()
	if uint64(len(ops)) != n {
		t.Fatalf("read %d oplogs, want %d", len(ops), n)
	}
	for i, op := range ops {
		if op.Id != uint64(i+1) {
			t.Fatalf("oplog %d has id %d: ids are not dense from 1", i, op.Id)
		}
	}
}

// checkSame fails unless got holds want's payloads with ids 1..len(want).
func checkSame(t *testing.T, got, want []*oplog.Oplog) {
	t.Helper()
	checkDense(t, got, uint64(len(want)))
	for i := range want {
		if string(got[i].Payload) != string(want[i].Payload) {
			t.Fatalf("id %d: payload %q, want %q", i+1, got[i].Payload, want[i].Payload)
		}
	}
}

func idsOf(ops []*oplog.Oplog) []uint64 {
	var ids []uint64
	for _, op := range ops {
		ids = append(ids, op.Id)
	}
	return ids
}

func payloadsOf(ops []*oplog.Oplog) []string {
	var ps []string
	for _, op := range ops {
		ps = append(ps, string(op.Payload))
	}
	return ps
}
