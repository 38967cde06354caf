package comet

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/oplog"
)

// globalIndex maps each global channel ("biz/g") to the authenticated
// sessions of this comet that sync it, so a Broadcast of a global oplog
// visits only those sessions instead of scanning every session. The zero
// value is ready to use.
type globalIndex struct {
	mu sync.RWMutex
	m  map[string]map[*session]struct{}
}

func (g *globalIndex) add(ch string, s *session) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = make(map[string]map[*session]struct{})
	}
	set := g.m[ch]
	if set == nil {
		set = make(map[*session]struct{})
		g.m[ch] = set
	}
	set[s] = struct{}{}
}

func (g *globalIndex) remove(ch string, s *session) {
	g.mu.Lock()
	defer g.mu.Unlock()
	set := g.m[ch]
	delete(set, s)
	if len(set) == 0 {
		delete(g.m, ch)
	}
}

// sessions returns the sessions of ch (a copy: pushing must not hold the lock).
func (g *globalIndex) sessions(ch string) []*session {
	g.mu.RLock()
	defer g.mu.RUnlock()
	set := g.m[ch]
	out := make([]*session, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	return out
}

// isGlobal reports whether ch is a global channel.
func isGlobal(ch string) bool {
	_, kind, _, err := oplog.ParseChannel(ch)
	return err == nil && kind == oplog.KindGlobal
}

// Broadcast delivers req to every matching session of this comet. The
// oplogs of global channels (req.oplog, then req.oplogs) go, as live pushes,
// to every session that syncs their channel (each evaluates filters and
// validity for its device and keeps its own sync point); the oplogs of one
// channel reach a session together, so its next frame carries all of them.
// Delivered counts the (session, oplog) pairs taken.
//
// Non-persistent pushes (push/pushes) are handled by broadcastPush.
func (c *Comet) Broadcast(ctx context.Context, req *pb.BroadcastReq) (*pb.PushReply, error) {
	if c.closing.Load() {
		return nil, ErrShutdown
	}
	var delivered uint32
	if op, more := req.GetOplog(), req.GetOplogs(); op != nil || len(more) > 0 {
		ops := make([]*oplog.Oplog, 0, 1+len(more))
		if op != nil {
			ops = append(ops, op)
		}
		ops = append(ops, more...)
		for _, op := range ops { // all or nothing: a bad request delivers none
			if op == nil || !isGlobal(op.Channel) {
				return nil, fmt.Errorf("%w: broadcast of oplog %d of non-global channel %q", ErrBadRequest, op.GetId(), op.GetChannel())
			}
		}
		delivered += c.broadcastOplogs(ops)
	}
	if req.GetPush() != nil || len(req.GetPushes()) > 0 {
		reply, err := c.broadcastPush(ctx, req)
		if err != nil {
			return nil, err
		}
		delivered += reply.GetDelivered()
	}
	return &pb.PushReply{Delivered: delivered}, nil
}

// broadcastOplogs pushes ops, grouped per channel in order, to the sessions
// of each channel: one push (one lock, one drain task) per session and
// channel.
func (c *Comet) broadcastOplogs(ops []*oplog.Oplog) uint32 {
	var order []string // channels in first-seen order
	groups := make(map[string][]*oplog.Oplog, 1)
	for _, op := range ops {
		if _, ok := groups[op.Channel]; !ok {
			order = append(order, op.Channel)
		}
		groups[op.Channel] = append(groups[op.Channel], op)
	}
	var delivered uint32
	for _, ch := range order {
		delivered += c.broadcastChannel(ch, groups[ch])
	}
	return delivered
}

// broadcastChannel pushes ops (all of channel ch) to the sessions of ch.
func (c *Comet) broadcastChannel(ch string, ops []*oplog.Oplog) uint32 {
	sessions := c.global.sessions(ch)
	if len(sessions) == 0 {
		return 0
	}
	// Cloned and encoded once, then shared read-only by the sessions after
	// Broadcast returns.
	lb := &liveBatch{ops: make([]*liveOp, len(ops))}
	for i, op := range ops {
		lo := newLiveOp(proto.Clone(op).(*oplog.Oplog))
		lo.batch = lb
		lb.ops[i] = lo
	}
	var delivered uint32
	for _, s := range sessions {
		delivered += s.push(ch, lb.ops...)
	}
	return delivered
}
