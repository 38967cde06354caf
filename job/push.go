package job

import (
	"cmp"
	"context"
	"errors"

	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/directory"
	"github.com/msync/msync/pkg/protocol"
)

// This file routes the real-time queue messages: non-persistent pushes
// (pb.PushTarget) and server-side room changes (pb.RoomsMsg). Nothing here is
// retried or stored: a push reaches the sessions online when job handles it,
// and a target that is offline or on an unreachable comet simply misses it.
//
// Per batch: user and device pushes become PushItems in the same per-comet
// Comet.Push call as the batch's oplogs; room and "all" pushes are collected
// in order and sent as ONE Comet.Broadcast per comet (the comet indexes rooms
// itself, so job needs no room directory); room changes are applied before
// the batch's pushes, so "join, then push to the room" in one batch works.

// realtimeBatch is the real-time part of a batch; the zero value is empty.
type realtimeBatch struct {
	broadcasts []*pb.PushMsg // room and all pushes, in queue order
	rooms      []roomsCall
}

type roomsCall struct {
	comet string
	req   *pb.RoomsReq
}

// routePush resolves a push's target. User and device targets are looked
// up in the directory (cached per batch like oplog owners).
func (j *Job) routePush(ctx context.Context, b *batch, t *pb.PushTarget) {
	if t == nil || t.GetMsg() == nil {
		j.bad("push queue message without a message")
		return
	}
	j.m.messages.WithLabelValues("push").Inc()
	set := 0
	for _, v := range []bool{t.User != "", t.Device != "", t.Room != "", t.All} {
		if v {
			set++
		}
	}
	if set != 1 {
		j.bad("push queue message without exactly one target", "user", t.User, "device", t.Device, "room", t.Room, "all", t.All)
		return
	}
	switch {
	case t.Room != "" || t.All:
		m := t.Msg
		if t.Room != "" {
			m = &pb.PushMsg{Room: t.Room, Payload: t.Msg.Payload, CreatedMs: t.Msg.CreatedMs, Biz: t.Msg.Biz}
		} else if m.Room != "" {
			m = &pb.PushMsg{Payload: t.Msg.Payload, CreatedMs: t.Msg.CreatedMs, Biz: t.Msg.Biz} // all: no room
		}
		b.rt.broadcasts = append(b.rt.broadcasts, m)
		return
	}
	sessions, err := j.sessionsOf(ctx, b, t.User, t.Device)
	if err != nil {
		j.m.directoryErrors.Inc()
		j.log.Warn("directory lookup failed; push not delivered", "user", t.User, "device", t.Device, "err", err)
		return
	}
	// no room: a direct push; Biz is set for a non-persistent biz's oplog
	b.addPushItems(sessions, &pb.PushItem{Push: &pb.PushMsg{Payload: t.Msg.Payload, CreatedMs: t.Msg.CreatedMs, Biz: t.Msg.Biz}})
}

// sessionsOf returns the online sessions of user or device, using the
// batch's lookup cache. An offline device is no error.
func (j *Job) sessionsOf(ctx context.Context, b *batch, user, device string) ([]directory.Session, error) {
	cache := b.devices
	if user != "" {
		cache = b.users
	}
	key := cmp.Or(user, device)
	if s, ok := cache[key]; ok {
		return s, nil
	}
	s, err := j.lookup(ctx, user, device)
	if err != nil {
		return nil, err
	}
	cache[key] = s
	return s, nil
}

// lookup asks the directory for a user's sessions, or for a device's one
// (none when it is offline).
func (j *Job) lookup(ctx context.Context, user, device string) ([]directory.Session, error) {
	if user != "" {
		return j.cfg.Directory.ByUser(ctx, user)
	}
	one, err := j.cfg.Directory.ByDevice(ctx, device)
	switch {
	case err == nil:
		return []directory.Session{one}, nil
	case errors.Is(err, directory.ErrNotFound):
		return nil, nil
	default:
		return nil, err
	}
}

// routeRooms resolves the device's current session; an offline device has
// no session to change (server-side rooms last for one session).
func (j *Job) routeRooms(ctx context.Context, b *batch, r *pb.RoomsMsg) {
	if r == nil || r.Device == "" || len(r.Join)+len(r.Leave) == 0 {
		j.bad("rooms queue message without device or rooms")
		return
	}
	for _, room := range append(append([]string(nil), r.Join...), r.Leave...) {
		if err := protocol.ValidRoom(room); err != nil {
			j.bad("rooms queue message with a bad room", "device", r.Device, "err", err)
			return
		}
	}
	j.m.messages.WithLabelValues("rooms").Inc()
	sessions, err := j.sessionsOf(ctx, b, "", r.Device)
	if err != nil {
		j.m.directoryErrors.Inc()
		j.log.Warn("directory lookup failed; rooms not changed", "device", r.Device, "err", err)
		return
	}
	for _, s := range sessions {
		b.rt.rooms = append(b.rt.rooms, roomsCall{comet: s.Comet,
			req: &pb.RoomsReq{Keys: []string{s.Key}, Join: r.Join, Leave: r.Leave}})
	}
}

// applyRooms runs the batch's room changes on the pool and waits for them.
// Changes of one device stay in queue order: they run one after another.
func (j *Job) applyRooms(ctx context.Context, b *batch) {
	if len(b.rt.rooms) == 0 {
		return
	}
	// Group per comet, keeping order; one goroutine per comet runs its calls
	// in sequence, so a device's join-then-leave is not reordered.
	var order []string
	per := map[string][]*pb.RoomsReq{}
	for _, rc := range b.rt.rooms {
		if _, ok := per[rc.comet]; !ok {
			order = append(order, rc.comet)
		}
		per[rc.comet] = append(per[rc.comet], rc.req)
	}
	j.runOnComets(ctx, "rooms", order, func(comet string) func(ctx context.Context, c pb.CometClient) error {
		reqs := per[comet]
		return func(ctx context.Context, c pb.CometClient) error {
			for _, req := range reqs {
				if _, err := c.Rooms(ctx, req); err != nil {
					return err
				}
			}
			return nil
		}
	})
}

// broadcastPushes sends the batch's room/all pushes to every comet, one
// Broadcast call per comet, and waits.
func (j *Job) broadcastPushes(ctx context.Context, b *batch) {
	if len(b.rt.broadcasts) == 0 {
		return
	}
	req := &pb.BroadcastReq{Push: b.rt.broadcasts[0], Pushes: b.rt.broadcasts[1:]}
	ids := j.cfg.Comets.IDs()
	if len(ids) == 0 {
		j.m.calls.WithLabelValues("broadcast_push", "no_comets").Inc()
		return
	}
	j.runOnComets(ctx, "broadcast_push", ids, func(string) func(ctx context.Context, c pb.CometClient) error {
		return func(ctx context.Context, c pb.CometClient) error {
			_, err := c.Broadcast(ctx, req)
			return err
		}
	})
}

// runOnComets runs call(comet) for each comet on the worker pool, each bounded
// by PushTimeout, and waits for all of them. what labels the metrics.
func (j *Job) runOnComets(ctx context.Context, what string, comets []string,
	call func(comet string) func(context.Context, pb.CometClient) error) {
	cs := j.cometCalls() // job.go
	for _, comet := range comets {
		fn := call(comet)
		cs.submit(what, comet, func(c pb.CometClient) {
			cctx, cancel := context.WithTimeout(ctx, j.cfg.PushTimeout)
			defer cancel()
			if err := fn(cctx, c); err != nil {
				j.m.calls.WithLabelValues(what, "error").Inc()
				j.log.Warn("comet call failed", "op", what, "comet", comet, "err", err)
				return
			}
			j.m.calls.WithLabelValues(what, "ok").Inc()
		})
	}
	cs.wait()
}
