package job_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/job"
	"github.com/msync/msync/pkg/api"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/queue"
)

// broadcastComet records Broadcast calls (global-channel oplogs).
type broadcastComet struct {
	pb.UnimplementedCometServer
	mu    sync.Mutex
	got   []string // "channel#id"
	calls []int    // proto size of each call's oplogs
}

func (c *broadcastComet) Broadcast(_ context.Context, req *pb.BroadcastReq) (*pb.PushReply, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if req.GetOplog() == nil {
		return nil, fmt.Errorf("broadcast without an oplog")
	}
	size := 0
	for _, op := range append([]*oplog.Oplog{req.GetOplog()}, req.GetOplogs()...) {
		c.got = append(c.got, fmt.Sprintf("%s#%d", op.Channel, op.Id))
		size += proto.Size(op)
	}
	c.calls = append(c.calls, size)
	return &pb.PushReply{Delivered: uint32(1 + len(req.GetOplogs()))}, nil
}

func (c *broadcastComet) sizes() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.calls...)
}

func (c *broadcastComet) list() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.got, " ")
}

// TestGlobalOplogsBroadcastToEveryComet: a global channel's oplogs go to
// every comet the registry lists, in id order, without a directory lookup;
// appointed oplogs of the same batch still go through Push.
func TestGlobalOplogsBroadcastToEveryComet(t *testing.T) {
	bc := map[string]*broadcastComet{"g1": {}, "g2": {}, "g3": {}}
	e := newEnv(t, 1, func(cfg *job.Config) {
		static := cfg.Comets.(api.StaticComets)
		for id, c := range bc {
			static[id] = api.LocalComet(c)
		}
	})
	e.online("alice", "a1", "c1", "k1")
	var want []string
	for i := uint64(1); i <= 30; i++ {
		e.send(oplogMsg(t, "news/g", i))
		want = append(want, fmt.Sprintf("news/g#%d", i))
	}
	e.send(oplogMsg(t, "chat/u/alice", 1))
	e.start()
	for id, c := range bc {
		waitFor(t, "30 broadcasts to "+id, func() bool { return strings.Count(c.list(), "#") == 30 })
		if got := c.list(); got != strings.Join(want, " ") {
			t.Fatalf("%s got %s", id, got)
		}
	}
	waitFor(t, "the appointed push", func() bool { return len(e.comets["c1"].items()) == 1 })
	// A batch's global oplogs go in one call per comet, not one per oplog.
	calls := len(bc["g1"].sizes())
	if calls >= 30 {
		t.Fatalf("30 oplogs took %d Broadcast calls per comet: want them coalesced per batch", calls)
	}
	// c1 (the fake without Broadcast) refused: counted as errors, not lost
	// silently (its sessions resync from the store).
	// Comets are broadcast to concurrently: wait for both counts to settle.
	waitFor(t, fmt.Sprintf("%d ok and %d failed broadcasts (c1 does not serve Broadcast)", 3*calls, calls), func() bool {
		return e.metric("msync_job_comet_calls_total", map[string]string{"op": "broadcast", "result": "ok"}) == float64(3*calls) &&
			e.metric("msync_job_comet_calls_total", map[string]string{"op": "broadcast", "result": "error"}) == float64(calls)
	})
}

// TestGlobalBroadcastSplitsLargeBatches: a batch's global oplogs whose bytes
// exceed one call's bound go in several calls, each within the bound, and
// together in order.
func TestGlobalBroadcastSplitsLargeBatches(t *testing.T) {
	const maxCall = 1 << 20 // job's maxBroadcastBytes
	g := &broadcastComet{}
	e := newEnv(t, 1, func(cfg *job.Config) {
		cfg.Comets.(api.StaticComets)["g1"] = api.LocalComet(g)
	})
	payload := make([]byte, 300<<10)
	var want []string
	for i := uint64(1); i <= 12; i++ {
		op := &oplog.Oplog{Channel: "news/g", Id: i, Payload: payload}
		e.send(queue.Message{Key: op.Channel, Value: encode(t, &pb.QueueMsg{Body: &pb.QueueMsg_Oplog{Oplog: op}})})
		want = append(want, fmt.Sprintf("news/g#%d", i))
	}
	e.start()
	waitFor(t, "12 oplogs broadcast", func() bool { return strings.Count(g.list(), "#") == 12 })
	if got := g.list(); got != strings.Join(want, " ") {
		t.Fatalf("got %s", got)
	}
	sizes := g.sizes()
	if len(sizes) < 4 { // 12 x 300 KiB cannot fit in fewer calls of 1 MiB
		t.Fatalf("%d calls for 3.6 MiB of oplogs: %v", len(sizes), sizes)
	}
	for _, n := range sizes {
		if n > maxCall {
			t.Fatalf("a call carried %d bytes of oplogs, over %d: %v", n, maxCall, sizes)
		}
	}
}
