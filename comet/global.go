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

// Broadcast delivers req to every matching session of this comet. An oplog
// of a global channel goes, as a live push, to every session that syncs that
// channel (each evaluates filters and validity for its device and keeps its
// own sync point); Delivered counts the sessions that took it.
//
// Non-persistent pushes (push/pushes) are handled by broadcastPush.
func (c *Comet) Broadcast(ctx context.Context, req *pb.BroadcastReq) (*pb.PushReply, error) {
	if c.closing.Load() {
		return nil, ErrShutdown
	}
	var delivered uint32
	if op := req.GetOplog(); op != nil {
		if !isGlobal(op.Channel) {
			return nil, fmt.Errorf("%w: broadcast of oplog %d of non-global channel %q", ErrBadRequest, op.Id, op.Channel)
		}
		delivered += c.broadcastOplog(op)
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

func (c *Comet) broadcastOplog(op *oplog.Oplog) uint32 {
	var delivered uint32
	var clone *oplog.Oplog // shared read-only by the sessions after Broadcast returns
	for _, s := range c.global.sessions(op.Channel) {
		if clone == nil {
			clone = proto.Clone(op).(*oplog.Oplog)
		}
		if s.push(clone) {
			delivered++
		}
	}
	return delivered
}
