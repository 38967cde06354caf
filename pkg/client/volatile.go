package client

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/msync/msync/pkg/protocol/pb"
)

// maxVolatileQueued bounds the non-persistent oplogs waiting for their
// handlers in one session. They are never stored or resent, so when the
// handlers fall this far behind, newer ones are dropped (and logged) rather
// than letting memory grow or blocking the read loop (heartbeats, pages).
const maxVolatileQueued = 256

// volatileQueue runs the handlers of non-persistent bizs' oplogs (PUSH
// frames with a biz) for one session, one at a time in arrival order, on a
// goroutine started with the first one and owned by the session's wg.
type volatileQueue struct {
	once sync.Once
	ch   chan *pb.Push
}

// deliverVolatile queues m (biz set) for its biz handler; it never blocks.
// A biz without a registered handler is ignored: the server sends these to
// every online session of the owner, whatever it registered.
func (s *session) deliverVolatile(m *pb.Push) {
	h := s.c.handlers[m.Biz]
	if h == nil {
		s.log.Debug("non-persistent oplog of an unregistered biz; ignored", "biz", m.Biz)
		return
	}
	q := &s.volatile
	q.once.Do(func() {
		q.ch = make(chan *pb.Push, maxVolatileQueued)
		s.wg.Go(func() { s.runVolatile(q.ch) })
	})
	select {
	case q.ch <- m:
	default:
		s.log.Warn("non-persistent oplog dropped: handlers too slow", "biz", m.Biz, "queued", maxVolatileQueued)
	}
}

func (s *session) runVolatile(ch <-chan *pb.Push) {
	for {
		select {
		case <-s.ctx.Done():
			return
		case m := <-ch:
			o := Oplog{Biz: m.Biz, Payload: m.Payload} // no id, no channel: nothing to ack
			if m.CreatedMs > 0 {
				o.Created = time.UnixMilli(m.CreatedMs)
			}
			if err := callVolatile(s.ctx, s.c.handlers[m.Biz], o); err != nil {
				// Not stored anywhere, so there is nothing to retry from.
				s.log.Warn("handler failed on a non-persistent oplog; it is not redelivered", "biz", m.Biz, "err", err)
			}
		}
	}
}

func callVolatile(ctx context.Context, h Handler, o Oplog) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrHandlerPanic, r)
		}
	}()
	return h(ctx, o)
}
