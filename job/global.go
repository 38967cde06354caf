package job

import (
	"context"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/oplog"
)

// maxBroadcastBytes bounds the oplog bytes of one Broadcast call: a batch's
// global oplogs beyond it go in further calls, so one call stays far below
// gRPC's message limit whatever the payloads.
const maxBroadcastBytes = 1 << 20

// broadcastOplogs sends a batch's global-channel oplogs to one comet in as
// few Broadcast calls as maxBroadcastBytes allows (usually one: oplog, then
// oplogs), in order (one task per comet, so a comet sees a channel's ids
// ascending). One call rather than one per oplog lets the comet hand each
// session all of them at once, so a session writes one frame for the batch
// instead of one per oplog. A failed call is logged and the rest are still
// tried: a comet whose session missed some sees the next as a gap and
// resyncs from the store, so nothing is lost.
func (j *Job) broadcastOplogs(ctx context.Context, comet string, c pb.CometClient, ops []*oplog.Oplog) {
	for len(ops) > 0 {
		n, size := 1, proto.Size(ops[0])
		for n < len(ops) {
			s := proto.Size(ops[n])
			if size+s > maxBroadcastBytes {
				break
			}
			size += s
			n++
		}
		if !j.broadcastCall(ctx, comet, c, ops[:n]) {
			return
		}
		ops = ops[n:]
	}
}

// broadcastCall sends ops (at least one) in one Broadcast. It reports false
// when ctx ended: the remaining calls are not tried.
func (j *Job) broadcastCall(ctx context.Context, comet string, c pb.CometClient, ops []*oplog.Oplog) bool {
	cctx, cancel := context.WithTimeout(ctx, j.cfg.PushTimeout)
	began := time.Now()
	reply, err := c.Broadcast(cctx, &pb.BroadcastReq{Oplog: ops[0], Oplogs: ops[1:]})
	cancel()
	j.m.pushSecs.Observe(time.Since(began).Seconds())
	if err != nil {
		j.m.calls.WithLabelValues("broadcast", "error").Inc()
		last := ops[len(ops)-1]
		j.log.Warn("broadcast to comet failed; devices will catch up by sync", "comet", comet,
			"channel", ops[0].Channel, "first_id", ops[0].Id, "last_id", last.Id, "oplogs", len(ops), "err", err)
		return ctx.Err() == nil
	}
	j.m.calls.WithLabelValues("broadcast", "ok").Inc()
	j.m.delivered.Add(float64(reply.GetDelivered()))
	return true
}
