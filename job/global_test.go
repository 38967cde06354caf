package job_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/msync/msync/job"
	"github.com/msync/msync/pkg/api"
	"github.com/msync/msync/pkg/api/pb"
)

// broadcastComet records Broadcast calls (global-channel oplogs).
type broadcastComet struct {
	pb.UnimplementedCometServer
	mu  sync.Mutex
	got []string // "channel#id"
}

func (c *broadcastComet) Broadcast(_ context.Context, req *pb.BroadcastReq) (*pb.PushReply, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	op := req.GetOplog()
	if op == nil {
		return nil, fmt.Errorf("broadcast without an oplog")
	}
	c.got = append(c.got, fmt.Sprintf("%s#%d", op.Channel, op.Id))
	return &pb.PushReply{Delivered: 1}, nil
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
	// c1 (the fake without Broadcast) refused: counted as errors, not lost
	// silently (its sessions resync from the store).
	// Comets are broadcast to concurrently: wait for both counts to settle.
	waitFor(t, "90 ok and 30 failed broadcasts (c1 does not serve Broadcast)", func() bool {
		return e.metric("msync_job_comet_calls_total", map[string]string{"op": "broadcast", "result": "ok"}) == 90 &&
			e.metric("msync_job_comet_calls_total", map[string]string{"op": "broadcast", "result": "error"}) == 30
	})
}
