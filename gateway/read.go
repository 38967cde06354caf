package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cloudwego/netpoll"

	"github.com/msync/msync/pkg/protocol"
)

// onRequest is netpoll's OnRequest: it runs while the connection has unread
// input, one call at a time per connection.
//
// netpoll calls it again immediately as long as input remains, so every
// return path leaves the input buffer empty: whole frames are consumed, a
// partial frame is waited for (Peek/Skip/ReadBinary block, bounded by
// ReadTimeout, without spinning), and on any error or once the connection
// is closing the rest is discarded. Returning with half a frame buffered
// would spin a core at 100%.
func (s *Server) onRequest(ctx context.Context, nc netpoll.Connection) error {
	s.stats.requests.Add(1)
	r := nc.Reader()
	cc, ok := ctx.(*connCtx)
	if !ok { // rejected in OnConnect (shutdown); netpoll still delivers input once
		discard(r)
		return nil
	}
	c := cc.c
	if c.kind.ws() {
		s.onRequestWS(c, nc, r)
		return nil
	}
	for r.Len() > 0 {
		if c.closing.Load() {
			discard(r)
			return nil
		}
		// Bound the whole frame from its first byte, not each wait: a
		// slowloris peer trickling one byte at a time must not reset it.
		deadline := false
		if r.Len() < protocol.HeaderSize {
			_ = nc.SetReadDeadline(time.Now().Add(s.cfg.ReadTimeout))
			deadline = true
		}
		hdr, err := r.Peek(protocol.HeaderSize)
		if err != nil {
			c.readFailed(r, err)
			return nil
		}
		h, err := protocol.ParseHeader(hdr, s.cfg.MaxFrame)
		if err != nil {
			c.badFrame(r, h, err)
			return nil
		}
		if !deadline && r.Len() < int(h.Length) {
			_ = nc.SetReadDeadline(time.Now().Add(s.cfg.ReadTimeout))
			deadline = true
		}
		if err := r.Skip(int(h.HeaderLen)); err != nil {
			c.readFailed(r, err)
			return nil
		}
		// ReadBinary copies (netpoll is configured without AlwaysNoCopyRead),
		// which is the copy OnFrame's contract promises, made straight out of
		// netpoll's buffer nodes.
		var body []byte
		if n := int(h.Length) - int(h.HeaderLen); n > 0 {
			if body, err = r.ReadBinary(n); err != nil {
				c.readFailed(r, err)
				return nil
			}
		}
		if deadline {
			_ = nc.SetReadDeadline(time.Time{})
		}
		_ = r.Release()
		s.stats.framesIn.Add(1)
		s.stats.bytesIn.Add(uint64(h.Length))
		if c.closing.Load() {
			continue // the handler closed it during an earlier frame
		}
		s.handler.OnFrame(c, protocol.Frame{Op: h.Op, Seq: h.Seq, Body: body})
	}
	return nil
}

// discard drops all buffered input so netpoll does not call OnRequest again
// for it.
func discard(r netpoll.Reader) {
	if n := r.Len(); n > 0 {
		_ = r.Skip(n)
	}
	_ = r.Release()
}

// badFrame answers a header protocol.ParseHeader rejected with an ERROR
// frame echoing its seq, and closes.
func (c *Conn) badFrame(r netpoll.Reader, h protocol.Header, err error) {
	c.closeBadFrame(h, err)
	discard(r)
}

// closeBadFrame closes c for a frame header that does not parse (every
// transport): ERROR 4000, or 4001 for a frame over MaxFrame, echoing its seq.
func (c *Conn) closeBadFrame(h protocol.Header, err error) {
	c.srv.stats.badFrames.Add(1)
	code := protocol.CodeBadFrame
	if errors.Is(err, protocol.ErrFrameTooLarge) {
		code = protocol.CodeFrameTooLarge
	}
	c.Close(protocol.ErrorFrame(h.Seq, code, err.Error()), fmt.Errorf("%w: %w", ErrBadFrame, err))
}

// readFailed handles a failed wait for the rest of a frame: a read timeout
// (slowloris) closes the connection, flushing what is queued; EOF means
// the peer went away and netpoll's close callback follows. Either way the
// partial frame is discarded.
func (c *Conn) readFailed(r netpoll.Reader, err error) {
	if errors.Is(err, netpoll.ErrReadTimeout) {
		c.Close(nil, fmt.Errorf("%w: %v", ErrReadTimeout, c.srv.cfg.ReadTimeout))
	} else {
		c.abort(fmt.Errorf("%w: %w", ErrPeerClosed, err))
	}
	discard(r)
}
