package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/netpoll"

	"github.com/msync/msync/gateway/wheel"
	"github.com/msync/msync/pkg/protocol"
)

// Conn is one accepted connection. All methods are goroutine-safe.
type Conn struct {
	ctx  connCtx // returned to netpoll from OnConnect; handed back in OnRequest
	srv  *Server
	sock socket // netpoll.Connection, or a TLS connection on std net
	id   uint64
	kind connKind

	// ready is false until a WebSocket upgrade or TLS handshake finished
	// (always true for plain TCP); until then the handler knows nothing of
	// the connection and nothing queued is written.
	ready atomic.Bool

	live wheel.Entry   // liveness deadline; once closing, the hard close deadline
	ack  wheel.Entry   // ack deadline
	code atomic.Uint32 // protocol.Code sent when live expires

	state   atomic.Int32 // stateNew -> stateOpen -> stateClosed
	closing atomic.Bool  // mirrors mu.closing for lock-free checks on hot paths
	closeAt atomic.Int64 // wheel-clock hard close deadline, set before closing

	value atomic.Pointer[any]

	mu struct {
		sync.Mutex
		q         [][]byte // frames queued, oldest first
		queued    int      // bytes in q
		scheduled bool     // a drain owns the connection (running or parked on the backlog)
		closing   bool     // no more Writes; the drain flushes final and closes
		notify    bool     // NotifyDrained: call OnDrained when the queue is empty
		// writing is the bytes the drain took from q and is writing to the
		// socket (int32 next to the bools: Conn stays in the 256-byte size
		// class; one drain batch is at most WriteQueueBytes).
		writing int32
		rare    *connRare // nil until a close starts or a WebSocket ping arrives
	}
}

// connRare holds what only a closing connection or a WebSocket ping needs.
// Why not fields of Conn: every idle connection would carry their 64 bytes
// for nothing (Conn is 248 bytes, the 256-byte size class, with them out;
// docs/benchmarks.md, conns).
type connRare struct {
	final  []byte // written after q by the closing drain
	reason error  // passed to OnClose
	pong   []byte // WebSocket: the latest unanswered ping's pong frame
}

// rareLocked returns c.mu.rare, allocating it on first use.
// REQUIRES: c.mu.
func (c *Conn) rareLocked() *connRare {
	if c.mu.rare == nil {
		c.mu.rare = new(connRare)
	}
	return c.mu.rare
}

const (
	stateNew int32 = iota
	stateOpen
	stateClosed
)

// connCtx is the per-connection context netpoll threads from OnConnect to
// OnRequest. Embedding it in Conn saves a context.WithValue allocation per
// connection. It behaves as context.Background(), which is what onPrepare
// gives netpoll, so it need not hold a parent (16 bytes per connection).
type connCtx struct{ c *Conn }

func (connCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (connCtx) Done() <-chan struct{}       { return nil }
func (connCtx) Err() error                  { return nil }
func (connCtx) Value(any) any               { return nil }

// ID is unique among the connections of one Server.
func (c *Conn) ID() uint64 { return c.id }

// RemoteAddr is the peer's address, e.g. "10.0.0.7:52114".
func (c *Conn) RemoteAddr() string {
	if a := c.sock.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

// SetValue stores the handler's per-connection state.
func (c *Conn) SetValue(v any) { c.value.Store(&v) }

// Value returns what SetValue stored, or nil.
func (c *Conn) Value() any {
	if p := c.value.Load(); p != nil {
		return *p
	}
	return nil
}

// Queued returns the bytes queued and not yet written to the socket,
// including those the write drain is writing right now (blocked on a slow
// peer). A handler paces itself on it (e.g. holds back a backlog page)
// before Write would close the connection as a slow consumer; only the
// bytes still in the queue count against Config.WriteQueueBytes.
func (c *Conn) Queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.queued + int(c.mu.writing)
}

// NotifyDrained asks for one OnDrained call (when the Handler implements
// DrainHandler) once everything queued has been written to the socket. If
// nothing is queued or being written it is called at once, from this
// goroutine. A handler that held back output because Queued was high calls
// it to learn when to resume. Closing connections get no call.
func (c *Conn) NotifyDrained() {
	c.mu.Lock()
	if c.mu.closing {
		c.mu.Unlock()
		return
	}
	if c.mu.scheduled {
		c.mu.notify = true
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.srv.notifyDrained(c)
}

// Write enqueues one encoded frame and returns at once; ownership of frame
// passes to the connection (do not modify it afterwards). It returns
// ErrClosed once the connection is closing. If the bytes queued would exceed
// Config.WriteQueueBytes, the connection is closed as a slow consumer:
// what is queued is dropped, the peer gets ERROR protocol.CodeSlowConsumer if
// its socket still takes it, and Write returns ErrSlowConsumer.
func (c *Conn) Write(frame []byte) error {
	if len(frame) == 0 {
		return nil
	}
	s := c.srv
	c.mu.Lock()
	if c.mu.closing {
		c.mu.Unlock()
		return ErrClosed
	}
	if c.mu.queued+len(frame) > s.cfg.WriteQueueBytes {
		// The queue drains into the socket as fast as the peer reads, so a
		// full queue means the peer fell behind; keeping its bytes would let
		// one laggard hold unbounded memory. It resyncs on reconnect.
		s.stats.slowConsumer.Add(1)
		c.mu.q, c.mu.queued = nil, 0
		c.startCloseLocked(protocol.ErrorFrame(0, protocol.CodeSlowConsumer, "write queue overflow"), ErrSlowConsumer)
		if s.log.Enabled(context.Background(), slog.LevelWarn) {
			s.log.Warn("slow consumer closed", "conn", c.id, "remote", c.RemoteAddr(), "limit", s.cfg.WriteQueueBytes)
		}
		return ErrSlowConsumer
	}
	c.mu.q = append(c.mu.q, frame)
	c.mu.queued += len(frame)
	schedule := !c.mu.scheduled
	c.mu.scheduled = true
	c.mu.Unlock()
	if schedule {
		s.schedule(c)
	}
	return nil
}

// Close flushes what is queued, then final (may be nil), then closes the
// connection; OnClose gets reason (ErrClosed if nil). The flush is bounded by
// Config.WriteTimeout: after that the connection is dropped regardless.
// Close is idempotent: only the first call's final and reason count. Like
// Write, final's ownership passes to the connection.
func (c *Conn) Close(final []byte, reason error) {
	if reason == nil {
		reason = ErrClosed
	}
	c.mu.Lock()
	if c.mu.closing {
		c.mu.Unlock()
		return
	}
	c.startCloseLocked(final, reason)
}

// startCloseLocked marks c closing, arms the hard close deadline and makes
// sure a drain runs to flush and close. It unlocks c.mu.
// REQUIRES: c.mu, !c.mu.closing.
func (c *Conn) startCloseLocked(final []byte, reason error) {
	s := c.srv
	c.mu.closing = true
	r := c.rareLocked()
	r.final, r.reason = final, reason
	schedule := !c.mu.scheduled
	c.mu.scheduled = true
	// closeAt before closing: SetDeadline re-arms it if it sees closing.
	at := s.wheel.Now() + int64(s.cfg.WriteTimeout)
	c.closeAt.Store(at)
	c.closing.Store(true)
	c.mu.Unlock()

	s.wheel.Set(&c.live, at)
	s.wheel.Disarm(&c.ack)
	if schedule {
		s.schedule(c)
	}
}

// SetDeadline sets the liveness deadline to now+d, replacing the previous
// one (use it for the auth timeout and heartbeats); it fires up to about
// two Ticks late, never early, and d <= 0 fires on the next Tick. If it passes, the peer
// gets ERROR code, the connection closes and OnClose gets ErrDeadline. It is
// cheap enough to call on every inbound frame. It does nothing once the
// connection is closing.
func (c *Conn) SetDeadline(d time.Duration, code protocol.Code) {
	if c.closing.Load() {
		return
	}
	c.code.Store(uint32(code))
	w := c.srv.wheel
	w.Set(&c.live, w.Now()+int64(d))
	// A Close racing this call armed the hard close deadline on the same
	// entry; put it back if we may have overwritten it.
	if c.closing.Load() {
		w.Set(&c.live, c.closeAt.Load())
	}
}

// SetAckDeadline sets a second deadline, independent of SetDeadline, to
// now+d; d <= 0 clears it. If it passes, the peer gets ERROR
// protocol.CodeAckTimeout, the connection closes and OnClose gets
// ErrAckDeadline.
func (c *Conn) SetAckDeadline(d time.Duration) {
	w := c.srv.wheel
	if d <= 0 {
		w.Disarm(&c.ack)
		return
	}
	if c.closing.Load() {
		return
	}
	w.Set(&c.ack, w.Now()+int64(d))
}

// expire is the wheel callback for both entries; it runs on the tick
// goroutine with no lock held.
func (c *Conn) expire(e *wheel.Entry) {
	s := c.srv
	if c.state.Load() == stateClosed {
		return
	}
	if e == &c.ack {
		if c.closing.Load() {
			return
		}
		s.stats.deadline.Add(1)
		c.Close(protocol.ErrorFrame(0, protocol.CodeAckTimeout, "ack timeout"), ErrAckDeadline)
		return
	}
	if c.closing.Load() {
		// The closing flush overran WriteTimeout: drop the connection. This
		// also wakes a drain blocked in Flush.
		_ = c.sock.Close()
		return
	}
	s.stats.deadline.Add(1)
	code := protocol.Code(c.code.Load())
	c.Close(protocol.ErrorFrame(0, code, deadlineMessage(code)), ErrDeadline)
}

func deadlineMessage(code protocol.Code) string {
	switch code {
	case protocol.CodeAuthTimeout:
		return "no AUTH within the auth timeout"
	case protocol.CodeHeartbeatTimeout:
		return "no heartbeat within the deadline"
	case protocol.CodeAckTimeout:
		return "ack timeout"
	}
	return "deadline expired"
}

// maxBatch bounds one socket write: large enough to amortise the syscall,
// small enough that the pooled batch buffers stay cheap.
const maxBatch = 64 << 10

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, maxBatch); return &b }}

// drain writes everything queued, repeatedly, until the queue is empty (then
// it gives up the connection) or the connection is closing (then it writes
// final and closes the socket). Only the drain touches the socket for
// writing, and only one drain per connection runs at a time (mu.scheduled).
func (c *Conn) drain() {
	s := c.srv
	var spare [][]byte
	for {
		c.mu.Lock()
		q, queued := c.mu.q, c.mu.queued
		c.mu.q, c.mu.queued = spare, 0
		closing := c.mu.closing
		var final, pong []byte
		var reason error
		if r := c.mu.rare; r != nil {
			final, pong, reason = r.final, r.pong, r.reason
			r.final, r.pong = nil, nil
		}
		if len(q) == 0 && !closing && pong == nil {
			// Idle: keep no queue slice (the next burst allocates one).
			c.mu.q = nil
			c.mu.scheduled = false
			c.mu.writing = 0
			notify := c.mu.notify
			c.mu.notify = false
			c.mu.Unlock()
			if notify {
				s.notifyDrained(c)
			}
			return
		}
		c.mu.writing = int32(min(queued, 1<<31-1))
		c.mu.Unlock()

		if closing && len(final) > 0 {
			q = append(q, final)
			queued += len(final)
		}
		var err error
		if c.ready.Load() {
			// Before the upgrade or handshake the peer speaks HTTP or a TLS
			// handshake: msync frames would be garbage to it, so a close
			// (auth deadline, Shutdown) just drops the socket.
			var tail []byte
			if closing && c.kind.ws() {
				tail = wsCloseFrame(reason)
			}
			err = c.writeFrames(pong, q, tail)
		}
		if err == nil && c.ready.Load() {
			s.stats.framesOut.Add(uint64(len(q)))
			s.stats.bytesOut.Add(uint64(queued))
		}
		clear(q) // drop frame references before keeping the slice
		spare = q[:0]
		if cap(spare) > 256 { // a burst should not pin a big slice on an idle connection
			spare = nil
		}
		if err != nil {
			if errors.Is(err, netpoll.ErrWriteTimeout) || errors.Is(err, os.ErrDeadlineExceeded) {
				err = fmt.Errorf("%w: flush timed out after %v", ErrSlowConsumer, s.cfg.WriteTimeout)
				s.stats.slowConsumer.Add(1)
			} else {
				err = fmt.Errorf("%w: write: %w", ErrPeerClosed, err)
			}
			c.abort(err)
			return
		}
		if closing {
			c.closeGracefully()
			return
		}
	}
}

// writeFrames copies frames into batches of up to maxBatch bytes and hands
// each batch to netpoll.Connection.Write, which appends to netpoll's output
// buffer and flushes (bounded by WriteTimeout).
//
// Why not Writer().Malloc/WriteBinary and one Flush: netpoll's close
// finalizer releases the output LinkBuffer when the peer hangs up, and only
// waits for code holding the internal "flushing" lock. Malloc and
// WriteBinary do not take it, so a peer closing mid-batch would have the
// drain write into freed buffer nodes. Connection.Write holds that lock
// across the copy and the flush.
//
// On WebSocket connections each frame of q goes out as one binary message
// (a WebSocket header is written in front of it); pre and post are
// complete WebSocket control frames (a pong, the close frame) written as
// they are. On TCP, pre and post are nil.
func (c *Conn) writeFrames(pre []byte, q [][]byte, post []byte) error {
	bp := batchPool.Get().(*[]byte)
	buf := (*bp)[:0]
	defer func() { *bp = buf[:0]; batchPool.Put(bp) }()
	ws := c.kind.ws()
	var hdr [maxWSHeader]byte
	put := func(h, f []byte) error {
		if len(buf) > 0 && len(buf)+len(h)+len(f) > maxBatch {
			if err := c.flush(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
		buf = append(buf, h...)
		if len(f) >= maxBatch { // too big to batch: no point copying it twice
			if len(buf) > 0 {
				if err := c.flush(buf); err != nil {
					return err
				}
				buf = buf[:0]
			}
			return c.flush(f)
		}
		buf = append(buf, f...)
		return nil
	}
	if len(pre) > 0 {
		if err := put(nil, pre); err != nil {
			return err
		}
	}
	for _, f := range q {
		var h []byte
		if ws {
			h = appendWSHeader(hdr[:0], wsOpBinary, len(f))
		}
		if err := put(h, f); err != nil {
			return err
		}
	}
	if len(post) > 0 {
		if err := put(nil, post); err != nil {
			return err
		}
	}
	if len(buf) > 0 {
		return c.flush(buf)
	}
	return nil
}

func (c *Conn) flush(b []byte) error {
	c.srv.stats.flushes.Add(1)
	_, err := c.sock.Write(b)
	return err
}

// closeGracefully closes the socket after the closing flush: on TLS it
// sends close_notify first, so the peer can tell the end from truncation.
func (c *Conn) closeGracefully() {
	if g, ok := c.sock.(interface{ CloseGracefully() error }); ok {
		_ = g.CloseGracefully()
		return
	}
	_ = c.sock.Close()
}

// abort closes the socket now, keeping the first reason recorded.
func (c *Conn) abort(reason error) {
	c.mu.Lock()
	if !c.mu.closing {
		c.mu.closing = true
		c.rareLocked().reason = reason
		c.closing.Store(true)
	}
	c.mu.q, c.mu.queued = nil, 0
	if r := c.mu.rare; r != nil {
		r.final, r.pong = nil, nil
	}
	c.mu.Unlock()
	_ = c.sock.Close()
}

// onClosed runs as netpoll's close callback, exactly once, after the last
// OnRequest for the connection returned.
func (c *Conn) onClosed(netpoll.Connection) error {
	c.closed()
	return nil
}

// closed finishes a connection whose socket is gone: netpoll's close
// callback, or the end of a std-net connection's read goroutine. Either runs
// after the connection's last OnFrame returned.
func (c *Conn) closed() {
	s := c.srv
	c.mu.Lock()
	c.mu.closing = true
	c.closing.Store(true)
	var reason error
	if r := c.mu.rare; r != nil {
		reason = r.reason
		r.final, r.pong = nil, nil
	}
	c.mu.q, c.mu.queued = nil, 0
	c.mu.Unlock()
	s.wheel.Remove(&c.live)
	s.wheel.Remove(&c.ack)
	if reason == nil {
		reason = ErrPeerClosed
	}
	if c.state.CompareAndSwap(stateNew, stateClosed) {
		// Registered but never opened (failed upgrade or handshake): the
		// handler never saw it, so no OnClose.
		s.unregister(c)
		s.connGone()
		return
	}
	if !c.state.CompareAndSwap(stateOpen, stateClosed) {
		return
	}
	s.unregister(c)
	s.stats.closed.Add(1)
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("conn closed", "conn", c.id, "remote", c.RemoteAddr(), "reason", reason)
	}
	s.handler.OnClose(c, reason)
	s.connGone()
}

// notifyDrained tells the handler that c's queue is empty (NotifyDrained).
func (s *Server) notifyDrained(c *Conn) {
	if h, ok := s.handler.(DrainHandler); ok && !c.closing.Load() {
		h.OnDrained(c)
	}
}

// connGone counts a registered connection out and wakes Shutdown on the last.
func (s *Server) connGone() {
	if s.open.Add(-1) == 0 {
		select {
		case s.drained <- struct{}{}:
		default:
		}
	}
}

// markOpen makes a registered connection visible to the handler: state
// open, a fresh AuthTimeout liveness deadline, OnOpen. It reports false if
// the connection was closed or is closing meanwhile (no OnOpen then, and
// no OnClose later).
func (c *Conn) markOpen() bool {
	s := c.srv
	if c.closing.Load() || !c.state.CompareAndSwap(stateNew, stateOpen) {
		return false
	}
	c.ready.Store(true)
	s.stats.accepted.Add(1)
	// Through SetDeadline: a Shutdown sweep may already have closed c, and
	// SetDeadline keeps the close deadline in that case.
	c.SetDeadline(s.cfg.AuthTimeout, protocol.CodeAuthTimeout)
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("conn opened", "conn", c.id, "remote", c.RemoteAddr(), "transport", c.kind.String())
	}
	s.handler.OnOpen(c)
	return true
}
