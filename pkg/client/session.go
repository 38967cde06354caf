package client

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

const (
	// defaultHeartbeat is used when AUTH_REPLY carries no interval.
	defaultHeartbeat = 30 * time.Second
	// minHeartbeat and maxHeartbeat clamp the server's interval, so a
	// misconfigured server can neither make a phone spin nor let a NAT
	// mapping expire unnoticed for hours.
	minHeartbeat = 100 * time.Millisecond
	maxHeartbeat = 10 * time.Minute
	// readGrace is added to two heartbeat intervals to get the read
	// deadline: the server answers every HEARTBEAT, so two intervals of
	// silence plus a slow network means the connection is dead.
	readGrace = 5 * time.Second
)

// session is one connection: handshake, read loop (on the Client's loop
// goroutine), a heartbeat goroutine and one worker goroutine per channel.
// Everything it starts stops before runSession returns.
type session struct {
	c      *Client
	conn   frameConn
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelCauseFunc

	seq       atomic.Uint32
	heartbeat atomic.Int64  // current interval, ns
	hbChanged chan struct{} // cap 1: HEARTBEAT_REPLY changed the interval

	wmu sync.Mutex // serializes writes

	workers map[string]*worker // by channel; fixed after the handshake
	wg      sync.WaitGroup

	volatile volatileQueue // volatile.go: non-persistent bizs' oplogs
	// compress: AUTH_REPLY chose deflate (compress.go); set before the
	// read loop and the writers start.
	compress bool
	calls    callTable     // call.go: requests in flight
}

// runSession connects, authenticates and serves one session until it ends.
// It returns how long the session was authenticated and why it ended.
func (c *Client) runSession(parent context.Context, token string) (time.Duration, error) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)

	dctx, dcancel := context.WithTimeout(ctx, c.opts.DialTimeout)
	conn, err := c.dial(dctx, c.addr, c.opts.MaxFrame)
	dcancel()
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
			return 0, cause
		}
		return 0, fmt.Errorf("client: dial %s: %w", c.addr, err)
	}
	s := &session{
		c:         c,
		conn:      conn,
		log:       c.log.With("addr", c.addr),
		ctx:       ctx,
		cancel:    cancel,
		hbChanged: make(chan struct{}, 1),
		workers:   map[string]*worker{},
	}
	// Closing the connection is what unblocks a read or write when the
	// session is cancelled (Background, Close, a failed worker).
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer func() {
		c.connected.Store(false)
		s.detachRooms() // realtime.go
		s.detachCalls() // call.go
		cancel(nil)
		stop()
		_ = conn.Close()
		s.wg.Wait()
	}()

	reply, err := s.handshake(token)
	if err != nil {
		return 0, s.cause(err)
	}
	start := time.Now()
	s.setup(reply)
	err = s.readLoop()
	return time.Since(start), s.cause(err)
}

// cause prefers the reason the session was cancelled (a control call, a
// worker's write error) over the read error it provoked.
func (s *session) cause(err error) error {
	if s.ctx.Err() != nil {
		if cause := context.Cause(s.ctx); cause != nil {
			return cause
		}
	}
	return err
}

func (s *session) handshake(token string) (*pb.AuthReply, error) {
	c := s.c
	deadline := time.Now().Add(c.opts.DialTimeout)
	seq := s.seq.Add(1)
	b, err := protocol.Encode(protocol.OpAuth, seq, c.authMessage(token))
	if err != nil {
		return nil, err
	}
	if err := s.conn.WriteFrame(b, deadline); err != nil {
		return nil, fmt.Errorf("client: write AUTH: %w", err)
	}
	for {
		f, err := s.conn.ReadFrame(deadline)
		if err != nil {
			return nil, fmt.Errorf("client: waiting for AUTH_REPLY: %w", err)
		}
		switch f.Op {
		case protocol.OpAuthReply:
			var r pb.AuthReply
			if err := protocol.Unmarshal(f, &r); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			return &r, nil
		case protocol.OpError, protocol.OpKick:
			return nil, s.serverClosed(f)
		case protocol.OpHeartbeatReply, protocol.OpPush:
			// Harmless before AUTH_REPLY; a future server might send them.
		default:
			return nil, fmt.Errorf("%w: %s before AUTH_REPLY", ErrProtocol, f.Op)
		}
	}
}

// authMessage builds AUTH with the points of the channels of registered
// bizs the client knows. Channels without a point are left out on purpose:
// the server then starts them from its own stored point instead of 0.
func (c *Client) authMessage(token string) *pb.Auth {
	m := &pb.Auth{
		Token:      token,
		Device:     c.opts.Device,
		Platform:   c.opts.Platform,
		AppVersion: c.opts.AppVersion,
		// The server clamps the wish into its bounds (protocol §10).
		HeartbeatMs: uint32(c.opts.Heartbeat / time.Millisecond),
		Compression: c.offeredCompression(), // compress.go
	}
	for biz := range c.handlers {
		m.Bizs = append(m.Bizs, biz)
	}
	slices.Sort(m.Bizs)
	c.pmu.Lock()
	for ch, id := range c.points {
		biz, kind, owner, err := oplog.ParseChannel(ch)
		if err != nil || c.handlers[biz] == nil || (kind == oplog.KindDevice && owner != c.opts.Device) {
			continue
		}
		m.Points = append(m.Points, &pb.ChannelPoint{Channel: ch, Id: id})
	}
	c.pmu.Unlock()
	slices.SortFunc(m.Points, func(a, b *pb.ChannelPoint) int {
		switch {
		case a.Channel < b.Channel:
			return -1
		case a.Channel > b.Channel:
			return 1
		}
		return 0
	})
	// The server rejects frames over 64 KiB. Dropping points is safe: for
	// those channels the server starts from its stored point, and anything
	// at or below the local point is dropped here as a duplicate.
	for len(m.Points) > 0 && protocol.HeaderSize+proto.Size(m) > protocol.DefaultMaxFrame {
		m.Points = m.Points[:len(m.Points)/2]
	}
	return m
}

// setup applies AUTH_REPLY and starts the heartbeat and channel workers.
func (s *session) setup(r *pb.AuthReply) {
	c := s.c
	s.log = s.log.With("user", r.User, "session", r.Session)
	s.compress = r.Compression == protocol.CompressionDeflate && !c.opts.DisableCompression
	s.setHeartbeat(r.HeartbeatMs)
	for _, ch := range r.Channels {
		h := c.handlers[ch.Biz]
		if h == nil || s.workers[ch.Channel] != nil {
			s.log.Warn("AUTH_REPLY names a channel of an unregistered biz; ignored", "biz", ch.Biz, "channel", ch.Channel)
			continue
		}
		// A channel this client has no point for starts where the server
		// starts it (its stored point): pages then begin at `from` and
		// must not look like a gap.
		// With from == 0 nothing is recorded, so the next AUTH still sends
		// no point for it and the server keeps using its own.
		if _, ok := c.point(ch.Channel); !ok && ch.From > 0 {
			c.advance(ch.Channel, ch.From)
		}
		s.workers[ch.Channel] = newWorker(s, ch.Biz, ch.Channel, h)
	}
	c.connected.Store(true)
	s.log.Info("connected", "channels", len(s.workers), "heartbeat", s.interval())
	c.emit(Event{Kind: EventConnected, User: r.User, Session: r.Session})
	if len(r.Rejected) > 0 {
		rej := make([]RejectedBiz, 0, len(r.Rejected))
		for _, x := range r.Rejected {
			rej = append(rej, RejectedBiz{Biz: x.Biz, Reason: x.Reason})
		}
		s.log.Warn("server rejected bizs", "rejected", rej)
		c.emit(Event{Kind: EventAuthRejected, Rejected: rej})
	}
	for _, w := range s.workers {
		s.wg.Go(w.run)
	}
	s.wg.Go(s.heartbeatLoop)
	s.attachRooms()              // realtime.go: join the app's rooms on this connection
	s.attachCalls(r.MaxRequests) // call.go
}

func (s *session) setHeartbeat(ms uint32) {
	d := time.Duration(ms) * time.Millisecond
	if ms == 0 {
		d = defaultHeartbeat
	}
	d = min(max(d, minHeartbeat), maxHeartbeat)
	if time.Duration(s.heartbeat.Swap(int64(d))) != d {
		select {
		case s.hbChanged <- struct{}{}:
		default:
		}
	}
}

func (s *session) interval() time.Duration { return time.Duration(s.heartbeat.Load()) }

// heartbeatLoop sends HEARTBEAT every interval. A HEARTBEAT_REPLY with a new
// interval restarts the wait with it, since the reply says how long the
// server wants until the next heartbeat.
func (s *session) heartbeatLoop() {
	t := time.NewTimer(s.interval())
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.hbChanged:
			t.Reset(s.interval())
			continue
		case <-t.C:
		}
		if err := s.send(protocol.OpHeartbeat, &pb.Heartbeat{}); err != nil {
			return
		}
		t.Reset(s.interval())
	}
}

// send writes one frame. A write failure ends the session.
func (s *session) send(op protocol.Op, m proto.Message) error {
	b, err := protocol.Encode(op, s.seq.Add(1), m)
	if err != nil {
		s.cancel(err)
		return err
	}
	b = s.deflate(op, b) // compress.go
	s.wmu.Lock()
	err = s.conn.WriteFrame(b, time.Now().Add(s.c.opts.DialTimeout))
	s.wmu.Unlock()
	if err != nil {
		err = fmt.Errorf("client: write %s: %w", op, err)
		s.cancel(err)
		return err
	}
	return nil
}

func (s *session) readLoop() error {
	for {
		f, err := s.readFrame(time.Now().Add(2*s.interval() + readGrace)) // compress.go: inflated
		if err != nil {
			return fmt.Errorf("client: read: %w", err)
		}
		switch f.Op {
		case protocol.OpSync:
			var m pb.Sync
			if err := protocol.Unmarshal(f, &m); err != nil {
				return fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			for _, p := range m.Pages {
				w := s.workers[p.Channel]
				if w == nil {
					s.log.Warn("page for a channel not in this session; ignored", "channel", p.Channel)
					continue
				}
				w.enqueue(p)
			}
		case protocol.OpHeartbeatReply:
			var m pb.HeartbeatReply
			if err := protocol.Unmarshal(f, &m); err != nil {
				return fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			if m.IntervalMs > 0 {
				s.setHeartbeat(m.IntervalMs)
			}
		case protocol.OpError, protocol.OpKick:
			return s.serverClosed(f)
		case protocol.OpPush:
			if err := s.handlePush(f); err != nil { // realtime.go
				return err
			}
		case protocol.OpRoomReply:
			if err := s.handleRoomReply(f); err != nil { // realtime.go
				return err
			}
		case protocol.OpResponse:
			if err := s.handleResponse(f); err != nil { // call.go
				return err
			}
		default:
			// Ops of later protocol versions. Ignoring them keeps old apps
			// working with newer servers.
			if s.log.Enabled(s.ctx, slog.LevelDebug) {
				s.log.Debug("ignored frame", "op", f.Op, "bytes", len(f.Body))
			}
		}
	}
}

// serverClosed turns an ERROR or KICK frame into the session's end reason,
// wrapping a *protocol.WireError so callers can branch on the code.
func (s *session) serverClosed(f protocol.Frame) error {
	if f.Op == protocol.OpKick {
		var k pb.Kick
		if err := protocol.Unmarshal(f, &k); err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		we := &protocol.WireError{Code: protocol.Code(k.Code), Message: k.Reason}
		s.log.Warn("kicked", "code", k.Code, "reason", k.Reason)
		s.c.emit(Event{Kind: EventKicked, Code: we.Code, Reason: k.Reason})
		return fmt.Errorf("%w: %w", ErrKicked, we)
	}
	var e pb.Error
	if err := protocol.Unmarshal(f, &e); err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	return fmt.Errorf("%w: %w", ErrServer, &protocol.WireError{Code: protocol.Code(e.Code), Message: e.Message})
}
