package client

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/msync/msync/pkg/protocol"
)

// frameConn is one transport connection carrying whole protocol frames. The
// session logic only sees this interface, so a WebSocket transport (each
// binary message holds frames with the same bytes) can be added next to
// tcpConn without touching it.
//
// ReadFrame is called from one goroutine; WriteFrame calls are serialized by
// the caller; Close may be called at any time, from any goroutine, and
// unblocks both.
type frameConn interface {
	ReadFrame(deadline time.Time) (protocol.Frame, error)
	WriteFrame(b []byte, deadline time.Time) error
	Close() error
}

// dialFunc opens a frameConn to addr.
type dialFunc func(ctx context.Context, addr string, maxFrame int) (frameConn, error)

// parseAddr picks the transport for addr: "host:port" and "tcp://host:port"
// use TCP. ws:// and wss:// are reserved for the WebSocket transport.
func parseAddr(addr string) (dialFunc, string, error) {
	scheme, rest, ok := strings.Cut(addr, "://")
	if !ok {
		scheme, rest = "tcp", addr
	}
	switch scheme {
	case "tcp":
		if _, _, err := net.SplitHostPort(rest); err != nil {
			return nil, "", fmt.Errorf("%w: address %q: %w", ErrBadOptions, addr, err)
		}
		return dialTCP, rest, nil
	case "ws", "wss":
		return nil, "", fmt.Errorf("%w: %s (use host:port for TCP)", ErrUnsupportedTransport, scheme)
	}
	return nil, "", fmt.Errorf("%w: %q", ErrUnsupportedTransport, scheme)
}

// tcpConn reads frames back to back from a byte stream.
type tcpConn struct {
	c        net.Conn
	r        *bufio.Reader
	maxFrame int
}

func dialTCP(ctx context.Context, addr string, maxFrame int) (frameConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		// Acks and heartbeats are tiny; Nagle would hold them back.
		_ = tc.SetNoDelay(true)
	}
	return &tcpConn{c: c, r: bufio.NewReaderSize(c, 32<<10), maxFrame: maxFrame}, nil
}

func (t *tcpConn) ReadFrame(deadline time.Time) (protocol.Frame, error) {
	if err := t.c.SetReadDeadline(deadline); err != nil {
		return protocol.Frame{}, err
	}
	var hdr [protocol.HeaderSize]byte
	if _, err := io.ReadFull(t.r, hdr[:]); err != nil {
		return protocol.Frame{}, err
	}
	// The header is validated against maxFrame before the body is
	// allocated, so a hostile length cannot make us allocate gigabytes.
	h, err := protocol.ParseHeader(hdr[:], t.maxFrame)
	if err != nil {
		return protocol.Frame{}, err
	}
	// A fresh buffer per frame: the decoded Frame aliases it, and handlers
	// may keep payloads.
	buf := make([]byte, h.Length)
	copy(buf, hdr[:])
	if _, err := io.ReadFull(t.r, buf[protocol.HeaderSize:]); err != nil {
		return protocol.Frame{}, err
	}
	f, _, err := protocol.Decode(buf, t.maxFrame)
	return f, err
}

func (t *tcpConn) WriteFrame(b []byte, deadline time.Time) error {
	if err := t.c.SetWriteDeadline(deadline); err != nil {
		return err
	}
	_, err := t.c.Write(b)
	return err
}

func (t *tcpConn) Close() error { return t.c.Close() }
