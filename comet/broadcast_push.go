package comet

import (
	"context"

	"github.com/msync/msync/pkg/api/pb"
)

// broadcastPush delivers the non-persistent pushes of a Broadcast: req.push,
// then req.pushes in order, each to the members of its room, or to every
// authenticated session when its room is empty (rooms.go broadcastOne).
// Delivered counts the PUSH frames queued.
func (c *Comet) broadcastPush(_ context.Context, req *pb.BroadcastReq) (*pb.PushReply, error) {
	var delivered uint32
	if m := req.GetPush(); m != nil {
		delivered += c.broadcastOne(m)
	}
	for _, m := range req.GetPushes() {
		delivered += c.broadcastOne(m)
	}
	return &pb.PushReply{Delivered: delivered}, nil
}
