package client

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

const (
	// maxQueuedPages and maxQueuedBytes bound the pages waiting for one
	// channel's handler. Backlog pages are flow-controlled by the server
	// (one unacked page per channel); only live pages can pile up, when
	// the handler is slower than the publisher. Past the bound pages are
	// dropped and the channel resyncs from its point once the queue
	// drains: memory stays bounded and nothing is lost.
	maxQueuedPages = 256
	maxQueuedBytes = 16 << 20
	// resyncQuiet suppresses repeating the same SYNC_REQ: after a gap,
	// the live pages already in flight all look like gaps too, and one
	// request is enough.
	resyncQuiet = time.Second
)

// worker runs one channel's handler for one session. Pages are processed
// one at a time in arrival order, so the handlers of a channel never
// overlap and see ids in order; different channels run in parallel.
type worker struct {
	s       *session
	c       *Client
	biz     string
	channel string
	handler Handler
	log     *slog.Logger

	wake chan struct{} // cap 1

	mu struct {
		sync.Mutex
		queue    []*pb.ChannelPage
		bytes    int
		overflow bool // pages were dropped: resync when drained
	}

	// Owned by the worker goroutine.
	lastReqPoint uint64
	lastReqAt    time.Time
	failures     int // consecutive exhausted retries, for the resync delay
}

func newWorker(s *session, biz, channel string, h Handler) *worker {
	return &worker{
		s: s, c: s.c, biz: biz, channel: channel, handler: h,
		log:  s.log.With("channel", channel),
		wake: make(chan struct{}, 1),
	}
}

// enqueue is called by the read loop; it never blocks, so a slow handler
// cannot stop heartbeat replies or other channels from being read.
func (w *worker) enqueue(p *pb.ChannelPage) {
	size := proto.Size(p)
	w.mu.Lock()
	if len(w.mu.queue) >= maxQueuedPages || (len(w.mu.queue) > 0 && w.mu.bytes+size > maxQueuedBytes) {
		if !w.mu.overflow {
			w.log.Warn("handler too slow, dropping pages; will resync", "queued", len(w.mu.queue))
		}
		w.mu.overflow = true
	} else {
		w.mu.queue = append(w.mu.queue, p)
		w.mu.bytes += size
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// next returns the next page, or nil with resync=true when dropped pages
// must be fetched again. ok is false when the session ended.
func (w *worker) next(ctx context.Context) (p *pb.ChannelPage, resync, ok bool) {
	for {
		w.mu.Lock()
		if len(w.mu.queue) > 0 {
			p = w.mu.queue[0]
			w.mu.queue[0] = nil
			w.mu.queue = w.mu.queue[1:]
			w.mu.bytes -= proto.Size(p)
			w.mu.Unlock()
			return p, false, true
		}
		if w.mu.overflow {
			w.mu.overflow = false
			w.mu.Unlock()
			return nil, true, true
		}
		w.mu.queue = nil // let a grown backing array go
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, false, false
		case <-w.wake:
		}
	}
}

func (w *worker) dropQueued() {
	w.mu.Lock()
	w.mu.queue, w.mu.bytes, w.mu.overflow = nil, 0, false
	w.mu.Unlock()
}

func (w *worker) run() {
	ctx := w.s.ctx
	for {
		p, resync, ok := w.next(ctx)
		if !ok {
			return
		}
		if resync {
			w.requestSync(w.point(), false)
			continue
		}
		w.process(ctx, p)
	}
}

func (w *worker) point() uint64 {
	p, _ := w.c.point(w.channel)
	return p
}

// process applies one page with the rules of docs/protocol.md ("Client
// rules"): gap -> SYNC_REQ, duplicates dropped, each oplog handed to the app
// in order, point advanced after each success, ACK when the page is done.
func (w *worker) process(ctx context.Context, p *pb.ChannelPage) {
	point := w.point()
	if p.Upto < p.After {
		// Rewind: our point is above everything the server holds for the
		// channel (its store was reset, or the point came from elsewhere).
		// Adopt upto, or every new oplog would look like a duplicate.
		if p.After == point {
			w.log.Warn("sync point ahead of the server; rewinding", "point", point, "to", p.Upto)
			w.c.rewind(w.channel, p.Upto)
			w.c.emit(Event{Kind: EventRewound, Biz: w.biz, Channel: w.channel, From: point, To: p.Upto})
			_ = w.s.send(protocol.OpAck, &pb.Ack{Points: []*pb.ChannelPoint{{Channel: w.channel, Id: p.Upto}}})
		}
		return
	}
	if p.After > point {
		w.log.Debug("gap", "point", point, "after", p.After, "upto", p.Upto)
		w.requestSync(point, false)
		return
	}
	if p.Skipped > 0 && p.Upto > point {
		w.log.Info("server skipped oplogs by backlog policy", "count", p.Skipped, "after", p.After, "upto", p.Upto)
		w.c.emit(Event{Kind: EventSkipped, Biz: w.biz, Channel: w.channel, Count: p.Skipped})
	}
	for i, op := range p.Oplogs {
		if op.Id <= point {
			continue // duplicate (or out of order, which is the same to us)
		}
		if op.Id > p.Upto {
			w.log.Warn("oplog beyond its page; ignored", "id", op.Id, "upto", p.Upto)
			break
		}
		if err := w.deliver(ctx, op); err != nil {
			if ctx.Err() != nil {
				return // the session ended; the next one resyncs from point
			}
			w.giveUp(ctx, p, point, op.Id, err)
			return
		}
		point = op.Id
		// The last listed oplog and the filtered ids after it up to upto
		// are saved in one write.
		if i == len(p.Oplogs)-1 && p.Upto > point {
			point = p.Upto
		}
		w.c.advance(w.channel, point)
	}
	if p.Upto > point {
		point = p.Upto
		w.c.advance(w.channel, point)
	}
	w.failures = 0
	// ACK upto, not the local point: the server refuses an ACK beyond what
	// this session sent (4005), and the local point can be ahead when the
	// page was an old duplicate. upto is also what releases the channel's
	// next backlog page.
	_ = w.s.send(protocol.OpAck, &pb.Ack{Points: []*pb.ChannelPoint{{Channel: w.channel, Id: p.Upto}}})
}

// deliver calls the handler for op, retrying in place with backoff up to
// HandlerRetries times.
func (w *worker) deliver(ctx context.Context, op *pb.Oplog) error {
	o := Oplog{Biz: w.biz, Channel: w.channel, ID: op.Id, Payload: op.Payload}
	if op.CreatedMs != 0 {
		o.Created = time.UnixMilli(op.CreatedMs)
	}
	if op.ValidUntilMs != 0 {
		o.ValidUntil = time.UnixMilli(op.ValidUntilMs)
	}
	opts := &w.c.opts
	for attempt := 0; ; attempt++ {
		err := w.call(ctx, o)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		w.log.Warn("handler failed", "id", op.Id, "attempt", attempt+1, "err", err)
		if attempt >= opts.HandlerRetries {
			return err
		}
		if !sleep(ctx, backoff(opts.BackoffMin, opts.BackoffMax, attempt+1)) {
			return ctx.Err()
		}
	}
}

func (w *worker) call(ctx context.Context, o Oplog) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrHandlerPanic, r)
		}
	}()
	return w.handler(ctx, o)
}

// giveUp handles an oplog whose retries are exhausted: acknowledge what
// succeeded, drop the page and what queued behind it, wait, and ask the
// server to resend from the point. The server redelivers the failed oplog,
// so the handler is retried forever, at most once per backoff.
func (w *worker) giveUp(ctx context.Context, p *pb.ChannelPage, point, failed uint64, err error) {
	w.log.Error("handler keeps failing; resyncing the channel", "id", failed, "err", err)
	if point > p.After {
		_ = w.s.send(protocol.OpAck, &pb.Ack{Points: []*pb.ChannelPoint{{Channel: w.channel, Id: point}}})
	}
	w.failures++
	w.dropQueued()
	opts := &w.c.opts
	if !sleep(ctx, backoff(opts.BackoffMin, opts.BackoffMax, w.failures)) {
		return
	}
	// Pages that arrived during the wait are stale now.
	w.dropQueued()
	w.requestSync(point, true)
}

// requestSync sends SYNC_REQ{channel, point}, unless the same request went
// out less than resyncQuiet ago (force skips that check).
func (w *worker) requestSync(point uint64, force bool) {
	now := time.Now()
	if !force && point == w.lastReqPoint && !w.lastReqAt.IsZero() && now.Sub(w.lastReqAt) < resyncQuiet {
		return
	}
	w.lastReqPoint, w.lastReqAt = point, now
	_ = w.s.send(protocol.OpSyncReq, &pb.SyncReq{Points: []*pb.ChannelPoint{{Channel: w.channel, Id: point}}})
}
