package job

import (
	"context"
	"time"

	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/oplog"
)

// broadcastOplogs sends a batch's global-channel oplogs to one comet, one
// Broadcast per oplog, in order (one task per comet, so a comet sees a
// channel's ids ascending). A failed call is logged and the rest are still
// tried: a comet whose session missed one sees the next as a gap and
// resyncs from the store, so nothing is lost.
func (j *Job) broadcastOplogs(ctx context.Context, comet string, c pb.CometClient, ops []*oplog.Oplog) {
	for _, op := range ops {
		cctx, cancel := context.WithTimeout(ctx, j.cfg.PushTimeout)
		began := time.Now()
		reply, err := c.Broadcast(cctx, &pb.BroadcastReq{Oplog: op})
		cancel()
		j.m.pushSecs.Observe(time.Since(began).Seconds())
		if err != nil {
			j.m.calls.WithLabelValues("broadcast", "error").Inc()
			j.log.Warn("broadcast to comet failed; devices will catch up by sync", "comet", comet,
				"channel", op.Channel, "id", op.Id, "err", err)
			if ctx.Err() != nil {
				return
			}
			continue
		}
		j.m.calls.WithLabelValues("broadcast", "ok").Inc()
		j.m.delivered.Add(float64(reply.GetDelivered()))
	}
}
