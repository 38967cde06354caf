package client

import (
	"bufio"
	"context"
	"crypto/tls"
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

// parseAddr picks the transport for addr and returns the dialer and the
// target it dials:
//
//	host:port, tcp://host:port  msync frames on TCP
//	tls://host:port             msync frames on TLS (tlsCfg, or system roots)
//	ws://host:port/path         WebSocket, one frame per binary message;
//	                            path zero: /sub
//	wss://host:port/path        WebSocket over TLS (tlsCfg, or system roots)
func parseAddr(addr string, tlsCfg *tls.Config) (dialFunc, string, error) {
	scheme, rest, ok := strings.Cut(addr, "://")
	if !ok {
		scheme, rest = "tcp", addr
	}
	hostport, path, _ := strings.Cut(rest, "/")
	switch scheme {
	case "tcp", "tls", "ws", "wss":
		if _, _, err := net.SplitHostPort(hostport); err != nil {
			return nil, "", fmt.Errorf("%w: address %q: %w", ErrBadOptions, addr, err)
		}
	default:
		return nil, "", fmt.Errorf("%w: %q (want tcp, tls, ws or wss)", ErrUnsupportedTransport, scheme)
	}
	if (scheme == "tcp" || scheme == "tls") && path != "" {
		return nil, "", fmt.Errorf("%w: address %q: %s takes no path", ErrBadOptions, addr, scheme)
	}
	switch scheme {
	case "tcp":
		return dialTCP, hostport, nil
	case "tls":
		cfg := clientTLS(tlsCfg, hostport)
		return func(ctx context.Context, addr string, maxFrame int) (frameConn, error) {
			return dialTLS(ctx, addr, maxFrame, cfg)
		}, hostport, nil
	}
	if path == "" {
		path = "sub"
	}
	url := scheme + "://" + hostport + "/" + path
	var cfg *tls.Config
	if scheme == "wss" {
		cfg = clientTLS(tlsCfg, hostport)
	}
	return func(ctx context.Context, url string, maxFrame int) (frameConn, error) {
		return dialWS(ctx, url, maxFrame, cfg)
	}, url, nil
}

// clientTLS returns a copy of cfg (nil: system roots) with ServerName set
// from hostport when empty.
func clientTLS(cfg *tls.Config, hostport string) *tls.Config {
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	} else {
		cfg = cfg.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(hostport)
	}
	return cfg
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

func dialTLS(ctx context.Context, addr string, maxFrame int, cfg *tls.Config) (frameConn, error) {
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr) // handshake included, bounded by ctx
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*tls.Conn).NetConn().(*net.TCPConn); ok {
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
