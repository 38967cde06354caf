package job_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/job"
	"github.com/msync/msync/pkg/api"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/queue"
)

// rtComet records the real-time calls job makes.
type rtComet struct {
	pb.UnimplementedCometServer
	mu         sync.Mutex
	pushes     []string // "keys:payload" per pushed item
	broadcasts [][]string
	rooms      []string // "keys+join-leave"
	id         string
}

func (c *rtComet) Push(_ context.Context, req *pb.PushReq) (*pb.PushReply, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, it := range req.Items {
		if it.GetPush() == nil || it.GetPush().GetRoom() != "" {
			return nil, fmt.Errorf("unexpected item %v", it)
		}
		c.pushes = append(c.pushes, strings.Join(it.Keys, ",")+":"+string(it.Push.Payload))
	}
	return &pb.PushReply{Delivered: uint32(len(req.Items))}, nil
}

func (c *rtComet) Broadcast(_ context.Context, req *pb.BroadcastReq) (*pb.PushReply, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var got []string
	for _, m := range append([]*pb.PushMsg{req.GetPush()}, req.GetPushes()...) {
		got = append(got, m.GetRoom()+":"+string(m.GetPayload()))
	}
	c.broadcasts = append(c.broadcasts, got)
	return &pb.PushReply{Delivered: 1}, nil
}

func (c *rtComet) Rooms(_ context.Context, req *pb.RoomsReq) (*pb.Empty, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rooms = append(c.rooms, fmt.Sprintf("%s+%s-%s", strings.Join(req.Keys, ","), strings.Join(req.Join, ","), strings.Join(req.Leave, ",")))
	return &pb.Empty{}, nil
}

func (c *rtComet) snapshot() (pushes []string, broadcasts [][]string, rooms []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.pushes), slices.Clone(c.broadcasts), slices.Clone(c.rooms)
}

func pushMsg(t *testing.T, target *pb.PushTarget, payload string) queue.Message {
	target.Msg = &pb.PushMsg{Payload: []byte(payload), CreatedMs: 1}
	return queue.Message{Key: "push", Value: encode(t, &pb.QueueMsg{Body: &pb.QueueMsg_Push{Push: proto.Clone(target).(*pb.PushTarget)}})}
}

// TestRealtimeRouting: user and device pushes go to the sessions' keys on
// their comets (offline targets to nobody); room and all pushes of one batch
// go as ONE Broadcast per comet, in order; room changes reach the device's
// comet.
func TestRealtimeRouting(t *testing.T) {
	rc := map[string]*rtComet{"r1": {id: "r1"}, "r2": {id: "r2"}}
	e := newEnv(t, 0, func(cfg *job.Config) {
		static := cfg.Comets.(api.StaticComets)
		for id, c := range rc {
			static[id] = api.LocalComet(c)
		}
	})
	e.online("alice", "a1", "r1", "k1")
	e.online("alice", "a2", "r2", "k2")
	e.online("bob", "b1", "r1", "k3")
	e.send(
		pushMsg(t, &pb.PushTarget{User: "alice"}, "to-alice"),
		pushMsg(t, &pb.PushTarget{Device: "b1"}, "to-b1"),
		pushMsg(t, &pb.PushTarget{Device: "offline"}, "lost"),
		pushMsg(t, &pb.PushTarget{User: "nobody"}, "lost"),
		pushMsg(t, &pb.PushTarget{Room: "lobby"}, "room-1"),
		pushMsg(t, &pb.PushTarget{All: true}, "all"),
		pushMsg(t, &pb.PushTarget{Room: "lobby"}, "room-2"),
		pushMsg(t, &pb.PushTarget{User: "alice", Device: "a1"}, "two targets"), // bad: dropped
		pushMsg(t, &pb.PushTarget{}, "no target"),                              // bad: dropped
		queue.Message{Key: "a1", Value: encode(t, &pb.QueueMsg{Body: &pb.QueueMsg_Rooms{Rooms: &pb.RoomsMsg{Device: "a1", Join: []string{"lobby"}, Leave: []string{"old"}}}})},
		queue.Message{Key: "zz", Value: encode(t, &pb.QueueMsg{Body: &pb.QueueMsg_Rooms{Rooms: &pb.RoomsMsg{Device: "zz", Join: []string{"lobby"}}}})},
		queue.Message{Key: "a1", Value: encode(t, &pb.QueueMsg{Body: &pb.QueueMsg_Rooms{Rooms: &pb.RoomsMsg{Device: "a1", Join: []string{"bad room"}}}})},
	)
	e.start()
	wantBroadcast := []string{"lobby:room-1", ":all", "lobby:room-2"}
	waitFor(t, "broadcasts on both comets", func() bool {
		_, b1, _ := rc["r1"].snapshot()
		_, b2, _ := rc["r2"].snapshot()
		return len(b1) == 1 && len(b2) == 1
	})
	p1, b1, r1 := rc["r1"].snapshot()
	p2, b2, r2 := rc["r2"].snapshot()
	if !slices.Equal(b1[0], wantBroadcast) || !slices.Equal(b2[0], wantBroadcast) {
		t.Fatalf("broadcasts %v / %v, want one call each with %v", b1, b2, wantBroadcast)
	}
	if want := []string{"k1:to-alice", "k3:to-b1"}; !slices.Equal(p1, want) {
		t.Fatalf("pushes on r1 %v, want %v", p1, want)
	}
	if want := []string{"k2:to-alice"}; !slices.Equal(p2, want) {
		t.Fatalf("pushes on r2 %v, want %v", p2, want)
	}
	if want := []string{"k1+lobby-old"}; !slices.Equal(r1, want) || len(r2) != 0 {
		t.Fatalf("rooms r1 %v r2 %v, want %v on r1 only", r1, r2, want)
	}
	if bad := e.metric("msync_job_bad_messages_total", nil); bad != 3 {
		t.Fatalf("bad messages %v, want 3 (two targets, no target, bad room)", bad)
	}
}
