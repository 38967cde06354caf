package gateway

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/msync/msync/pkg/protocol"
)

// TLS listeners (Config.TLSAddr, Config.TLSWSAddr). netpoll has no TLS, so
// these run on the standard library: crypto/tls over net, one goroutine per
// connection that reads frames and calls the Handler, while writes go
// through the same bounded queue, drain pool and timing wheel as netpoll
// connections. The cost is that goroutine and crypto/tls's buffers: about
// 3.5x the memory of an idle netpoll connection (docs/transports.md has the
// measurement). For very many TLS devices, terminate TLS in front of comet.

// errStdReadTimeout marks a std-net read that hit its deadline.
var errStdReadTimeout = os.ErrDeadlineExceeded

// stdSocket is the socket of a TLS connection.
type stdSocket struct {
	raw          net.Conn // the TCP connection
	tc           *tls.Conn
	writeTimeout time.Duration
}

// Write is called by the connection's drain only, one at a time.
func (s *stdSocket) Write(b []byte) (int, error) {
	if err := s.tc.SetWriteDeadline(time.Now().Add(s.writeTimeout)); err != nil {
		return 0, err
	}
	return s.tc.Write(b)
}

// Close closes the TCP connection without a TLS close_notify: it is used to
// abort, possibly while a Write is blocked, and must not block itself.
func (s *stdSocket) Close() error { return s.raw.Close() }

// CloseGracefully sends close_notify (bounded by crypto/tls's own 5s write
// deadline) and closes; the drain calls it after the closing flush.
func (s *stdSocket) CloseGracefully() error { return s.tc.Close() }

func (s *stdSocket) RemoteAddr() net.Addr { return s.raw.RemoteAddr() }

// stdSource reads from a std-net connection for the frame readers. pending
// holds bytes read past the WebSocket upgrade request.
type stdSource struct {
	r       io.Reader
	pending []byte
	scratch [16]byte
}

func (s *stdSource) fill(dst []byte) error {
	n := copy(dst, s.pending)
	s.pending = s.pending[n:]
	if n < len(dst) {
		_, err := io.ReadFull(s.r, dst[n:])
		return err
	}
	return nil
}

// Next serves headers only (n <= 16).
func (s *stdSource) Next(n int) ([]byte, error) {
	b := s.scratch[:n]
	return b, s.fill(b)
}

func (s *stdSource) ReadBinary(n int) ([]byte, error) {
	b := make([]byte, n)
	return b, s.fill(b)
}

// serveStd accepts TLS connections on ln until it is closed.
func (s *Server) serveStd(ln net.Listener, kind connKind) {
	defer s.wg.Done()
	var delay time.Duration
	for {
		raw, err := ln.Accept()
		if err != nil {
			if s.shutdown.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off instead of
			// spinning, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("tls accept failed", "addr", ln.Addr().String(), "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
				continue
			case <-s.quit:
				return
			}
		}
		delay = 0
		if tc, ok := raw.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		s.wg.Add(1) // the accept goroutine holds a count, so this never races Wait
		go s.runStd(raw, kind)
	}
}

// runStd owns one TLS connection: handshake, optional WebSocket upgrade,
// then the read loop. The handshake and upgrade count against AuthTimeout
// through the wheel, exactly like a netpoll connection waiting for AUTH.
func (s *Server) runStd(raw net.Conn, kind connKind) {
	defer s.wg.Done()
	tc := tls.Server(raw, s.cfg.TLS)
	c := s.newConn(&stdSocket{raw: raw, tc: tc, writeTimeout: s.cfg.WriteTimeout}, kind)
	if s.register(c) != 0 {
		_ = raw.Close() // before the handshake: no frame the peer could read
		return
	}
	defer func() {
		// Every way out of the readers left c closing. Like netpoll, report
		// the close only once the socket is gone: the drain closes it after
		// flushing the final frame, or the wheel's hard close deadline
		// (WriteTimeout) does. Until then input is discarded.
		_ = raw.SetReadDeadline(time.Time{})
		_, _ = io.Copy(io.Discard, raw)
		c.closed()
	}()
	c.SetDeadline(s.cfg.AuthTimeout, protocol.CodeAuthTimeout)
	if err := tc.Handshake(); err != nil {
		s.stats.handshakes.Add(1)
		c.abort(fmt.Errorf("%w: tls handshake: %w", ErrPeerClosed, err))
		return
	}
	src := &stdSource{r: tc}
	if kind.ws() {
		if !s.upgradeStd(c, tc, src) {
			return
		}
	} else if !c.markOpen() {
		return
	}
	if kind.ws() {
		s.readStdWS(c, tc, src)
	} else {
		s.readStdFrames(c, tc, src)
	}
}

// upgradeStd reads the upgrade request head (bytes after it stay in src),
// answers it and opens c.
func (s *Server) upgradeStd(c *Conn, tc *tls.Conn, src *stdSource) bool {
	buf := make([]byte, 0, 1024)
	end := -1
	for end < 0 {
		if len(buf) >= maxUpgradeRequest {
			_, _ = c.sock.Write([]byte(tooLargeResponse))
			s.upgradeFailed(c, errUpgradeTooLarge)
			return false
		}
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, len(buf))...)[:len(buf)]
		}
		n, err := tc.Read(buf[len(buf):min(cap(buf), maxUpgradeRequest)])
		buf = buf[:len(buf)+n]
		end = headEnd(buf)
		if end < 0 && err != nil {
			c.wsReadFailed(err)
			return false
		}
	}
	src.pending = buf[end:]
	resp, err := s.upgradeResponse(buf[:end])
	if len(resp) > 0 {
		if _, werr := c.sock.Write(resp); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		s.upgradeFailed(c, err)
		return false
	}
	return c.markOpen()
}

// readStdFrames reads msync frames back to back. The first byte of a frame
// is awaited without a deadline (idle connections are the wheel's
// business); the rest must follow within ReadTimeout.
func (s *Server) readStdFrames(c *Conn, tc *tls.Conn, src *stdSource) {
	var hdr [protocol.HeaderSize]byte
	for !c.closing.Load() {
		if err := src.fill(hdr[:1]); err != nil {
			c.wsReadFailed(err)
			return
		}
		_ = tc.SetReadDeadline(time.Now().Add(s.cfg.ReadTimeout))
		if err := src.fill(hdr[1:]); err != nil {
			c.wsReadFailed(err)
			return
		}
		h, err := protocol.ParseHeader(hdr[:], s.cfg.MaxFrame)
		if err != nil {
			c.closeBadFrame(h, err) // read.go
			return
		}
		if extra := int(h.HeaderLen) - protocol.HeaderSize; extra > 0 { // a newer, longer header
			if _, err := src.ReadBinary(extra); err != nil {
				c.wsReadFailed(err)
				return
			}
		}
		var body []byte
		if n := int(h.Length) - int(h.HeaderLen); n > 0 {
			if body, err = src.ReadBinary(n); err != nil {
				c.wsReadFailed(err)
				return
			}
		}
		_ = tc.SetReadDeadline(time.Time{})
		s.stats.framesIn.Add(1)
		s.stats.bytesIn.Add(uint64(h.Length))
		if c.closing.Load() {
			return
		}
		s.handler.OnFrame(c, protocol.Frame{Op: h.Op, Seq: h.Seq, Body: body})
	}
}

// readStdWS reads WebSocket messages.
func (s *Server) readStdWS(c *Conn, tc *tls.Conn, src *stdSource) {
	arm := func() { _ = tc.SetReadDeadline(time.Now().Add(s.cfg.ReadTimeout)) }
	for !c.closing.Load() {
		p, got, ok := c.readWSMessage(src, arm)
		if !ok {
			return
		}
		_ = tc.SetReadDeadline(time.Time{})
		if got {
			c.deliverWS(p)
		}
	}
}
