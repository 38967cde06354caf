package comet

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
	wirepb "github.com/msync/msync/pkg/protocol/pb"
)

// generatedPage is the ChannelPage the generated code builds for a live page.
func generatedPage(ch *channel, p *livePage) *wirepb.ChannelPage {
	out := &wirepb.ChannelPage{Channel: ch.name, Biz: ch.biz, After: p.after, Upto: p.upto, Live: true}
	for _, op := range p.ops {
		out.Oplogs = append(out.Oplogs, wireOplog(op.op))
	}
	return out
}

// decodeSync checks that b is one SYNC frame and returns its body decoded.
func decodeSync(t *testing.T, b []byte) *wirepb.Sync {
	t.Helper()
	f, n, err := protocol.Decode(b, 16<<20)
	if err != nil {
		t.Fatalf("decode frame: %v", err)
	}
	if n != len(b) || f.Op != protocol.OpSync || f.Seq != 0 {
		t.Fatalf("frame: op %s seq %d, %d of %d bytes", f.Op, f.Seq, n, len(b))
	}
	var got wirepb.Sync
	if err := proto.Unmarshal(f.Body, &got); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	return &got
}

// TestWireOplogMatchesGenerated: an oplog's hand-encoded wire form decodes to
// the wirepb.Oplog the generated code builds, for zero, small, large and
// negative values.
func TestWireOplogMatchesGenerated(t *testing.T) {
	for _, op := range []*oplog.Oplog{
		{},
		{Id: 1},
		{Id: 1 << 40, Payload: []byte("x"), CreatedMs: 1_700_000_000_000},
		{Id: 7, Payload: make([]byte, 300), CreatedMs: -1, ValidUntilMs: 1 << 62},
		{Id: 9, ValidUntilMs: 5, Channel: "news/g", Biz: "news", Platforms: []string{"ios"}, ValidFromMs: 3},
	} {
		lo := newLiveOp(op)
		if len(lo.wire) != wireOplogLen(op) {
			t.Fatalf("oplog %d: wireOplogLen %d, encoded %d", op.Id, wireOplogLen(op), len(lo.wire))
		}
		var got wirepb.Oplog
		if err := proto.Unmarshal(lo.wire, &got); err != nil {
			t.Fatalf("oplog %d: %v", op.Id, err)
		}
		if want := wireOplog(op); !proto.Equal(&got, want) {
			t.Fatalf("oplog %d: decoded %v, want %v", op.Id, &got, want)
		}
	}
}

// TestLiveSyncMatchesGenerated: SYNC frames concatenated from pre-encoded
// oplogs decode to exactly the Sync message the generated code would build:
// one page, several channels, ids skipped inside a page (after/upto wider
// than the oplogs), an empty page (only skipped ids), a zero after.
func TestLiveSyncMatchesGenerated(t *testing.T) {
	ops := func(first, n uint64, payload int) []*liveOp {
		var out []*liveOp
		for id := first; id < first+n; id++ {
			out = append(out, newLiveOp(&oplog.Oplog{Id: id, Payload: []byte(strings.Repeat("p", payload)), CreatedMs: int64(id) * 1000}))
		}
		return out
	}
	chA := &channel{name: "news/g", biz: "news"}
	chB := &channel{name: "chat/u/alice", biz: "chat"}
	chC := &channel{name: "lock/d/phone", biz: "lock"}
	skipped := ops(10, 6, 3)
	skipped = append(skipped[:2], skipped[4:]...) // ids 10, 11, 14, 15: 12 and 13 skipped
	cases := []struct {
		name  string
		parts []livePart
	}{
		{"one page", []livePart{{ch: chA, page: &livePage{after: 4, upto: 7, ops: ops(5, 3, 20)}}}},
		{"zero after", []livePart{{ch: chA, page: &livePage{after: 0, upto: 1, ops: ops(1, 1, 0)}}}},
		{"skipped ids", []livePart{{ch: chA, page: &livePage{after: 9, upto: 17, ops: skipped}}}},
		{"only skipped", []livePart{{ch: chB, page: &livePage{after: 3, upto: 5}}}},
		{"several channels", []livePart{
			{ch: chA, page: &livePage{after: 100, upto: 102, ops: ops(101, 2, 5)}},
			{ch: chB, page: &livePage{after: 1 << 33, upto: 1<<33 + 1, ops: ops(1<<33+1, 1, 200)}},
			{ch: chC, page: &livePage{after: 0, upto: 3, ops: ops(2, 2, 0)}},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := &wirepb.Sync{}
			for i := range tc.parts {
				p := &tc.parts[i]
				p.n = p.page.pageLen(p.ch)
				want.Pages = append(want.Pages, generatedPage(p.ch, p.page))
			}
			b := appendLiveSync(nil, tc.parts)
			if got := decodeSync(t, b); !proto.Equal(got, want) {
				t.Fatalf("decoded %v\nwant %v", got, want)
			}
			// The generated encoding is byte-for-byte the same (fields in
			// number order), so clients see no difference at all.
			gen, err := protocol.Encode(protocol.OpSync, 0, want)
			if err != nil {
				t.Fatal(err)
			}
			if string(gen) != string(b) {
				t.Fatalf("bytes differ from the generated encoding:\n got %x\nwant %x", b, gen)
			}
		})
	}
}

// broadcast sends ops in one Broadcast (oplog, then oplogs).
func (e *testEnv) broadcast(ops ...*oplog.Oplog) uint32 {
	e.t.Helper()
	r, err := e.c.Broadcast(context.Background(), &pb.BroadcastReq{Oplog: ops[0], Oplogs: ops[1:]})
	if err != nil {
		e.t.Fatalf("Broadcast: %v", err)
	}
	return r.Delivered
}

// TestLargeLivePagesSplit: a burst of live pushes larger than maxLivePage,
// taken by one drain round, is written as several pages of one channel,
// contiguous (each after is the previous upto), in several SYNC frames, and
// nothing is lost or repeated.
func TestLargeLivePagesSplit(t *testing.T) {
	e := newEnv(t, nil)
	cl := e.dial()
	cl.auth("good-alice", "a1", "android", "1.0.0", []string{"news"})
	cl.expectQuiet()
	payload := strings.Repeat("x", 20<<10)
	var ops []*oplog.Oplog
	for range 10 { // 200 KiB: at least 4 pages of at most 64 KiB payload
		ops = append(ops, e.logic.add(newsGlobal, &oplog.Oplog{Payload: []byte(payload)}))
	}
	if n := e.broadcast(ops...); n != 10 {
		t.Fatalf("delivered %d, want 10", n)
	}
	var got []uint64
	after, frames := uint64(0), 0
	for len(got) < len(ops) {
		s := cl.expectSync()
		frames++
		for _, p := range s.Pages {
			if p.Channel != newsGlobal || p.Biz != "news" || !p.Live || p.After != after {
				t.Fatalf("page %s/%s after %d (want %d) live %v", p.Biz, p.Channel, p.After, after, p.Live)
			}
			size := 0
			for _, op := range p.Oplogs {
				got = append(got, op.Id)
				size += len(op.Payload)
				if string(op.Payload) != payload {
					t.Fatalf("oplog %d: payload of %d bytes", op.Id, len(op.Payload))
				}
			}
			if size > maxLivePage {
				t.Fatalf("page of %d payload bytes, over %d", size, maxLivePage)
			}
			after = p.Upto
		}
	}
	if want := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}; !slices.Equal(got, want) {
		t.Fatalf("got ids %v, want %v", got, want)
	}
	if frames < 4 {
		t.Fatalf("%d frames for 200 KiB of live pushes: want the burst split", frames)
	}
	cl.expectQuiet()
}

// TestBroadcastBatchOneFrame: the oplogs of one Broadcast reach each session
// as one SYNC frame (one page, all ids in order); sessions in step get the
// same bytes, and a session whose filters skip an oplog gets its own page
// covering the skipped id.
func TestBroadcastBatchOneFrame(t *testing.T) {
	e := newEnv(t, nil)
	var cls []*client
	for i, platform := range []string{"ios", "ios", "web"} {
		cl := e.dial()
		cl.auth(fmt.Sprintf("good-u%d", i), fmt.Sprintf("d%d", i), platform, "5.0", []string{"news"})
		cl.expectQuiet()
		cls = append(cls, cl)
	}
	ops := []*oplog.Oplog{
		e.logic.add(newsGlobal, &oplog.Oplog{}),
		e.logic.add(newsGlobal, &oplog.Oplog{Platforms: []string{"web"}}),
		e.logic.add(newsGlobal, &oplog.Oplog{CreatedMs: 12345}),
	}
	if n := e.broadcast(ops...); n != 9 {
		t.Fatalf("delivered %d (session, oplog) pairs, want 9", n)
	}
	var bodies []string
	for i, cl := range cls {
		f := cl.next()
		if f.Op != protocol.OpSync {
			t.Fatalf("session %d: %s", i, describe(f))
		}
		var s wirepb.Sync
		if err := protocol.Unmarshal(f, &s); err != nil {
			t.Fatal(err)
		}
		want := []uint64{1, 3} // 2 is for web only
		if i == 2 {
			want = []uint64{1, 2, 3}
		}
		if len(s.Pages) != 1 || s.Pages[0].After != 0 || s.Pages[0].Upto != 3 || !s.Pages[0].Live {
			t.Fatalf("session %d: %s", i, pagesString(&s))
		}
		var got []uint64
		for _, op := range s.Pages[0].Oplogs {
			got = append(got, op.Id)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("session %d: ids %v, want %v", i, got, want)
		}
		bodies = append(bodies, string(f.Body))
		cl.expectQuiet()
	}
	if bodies[0] != bodies[1] {
		t.Fatal("two sessions in step got different frames")
	}
	// A bad oplog anywhere refuses the whole call: nothing is delivered.
	bad := e.logic.add(chatAlice, &oplog.Oplog{})
	if _, err := e.c.Broadcast(context.Background(), &pb.BroadcastReq{Oplog: e.logic.add(newsGlobal, &oplog.Oplog{}), Oplogs: []*oplog.Oplog{bad}}); err == nil {
		t.Fatal("broadcast with a user-channel oplog accepted")
	}
	for _, cl := range cls {
		cl.expectQuiet()
	}
}

// TestSharedFrameOnlyForExactBatch: the shared frame of a Broadcast batch
// serves only a page that is exactly the batch (same oplogs, after and
// upto); anything else is built per session.
func TestSharedFrameOnlyForExactBatch(t *testing.T) {
	ch := &channel{name: "news/g", biz: "news"}
	lb := &liveBatch{}
	for id := uint64(5); id <= 7; id++ {
		lo := newLiveOp(&oplog.Oplog{Id: id, Channel: ch.name, Payload: []byte("p")})
		lo.batch = lb
		lb.ops = append(lb.ops, lo)
	}
	exact := &livePage{after: 4, upto: 7, ops: lb.ops}
	f := lb.sharedFrame(ch, exact)
	if f == nil {
		t.Fatal("no shared frame for the exact batch")
	}
	want := &wirepb.Sync{Pages: []*wirepb.ChannelPage{generatedPage(ch, exact)}}
	if got := decodeSync(t, f.raw); !proto.Equal(got, want) {
		t.Fatalf("shared frame %v, want %v", got, want)
	}
	other := newLiveOp(&oplog.Oplog{Id: 6, Channel: ch.name, Payload: []byte("p")})
	for name, p := range map[string]*livePage{
		"earlier after":   {after: 3, upto: 7, ops: lb.ops},
		"later upto":      {after: 4, upto: 8, ops: lb.ops},
		"fewer oplogs":    {after: 4, upto: 7, ops: lb.ops[:2]},
		"another oplog 6": {after: 4, upto: 7, ops: []*liveOp{lb.ops[0], other, lb.ops[2]}},
	} {
		if lb.sharedFrame(ch, p) != nil {
			t.Fatalf("%s: got the shared frame", name)
		}
	}
	if lb.sharedFrame(&channel{name: ch.name, biz: "other"}, exact) != nil {
		t.Fatal("another biz got the shared frame")
	}
}
