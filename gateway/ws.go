package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/gobwas/ws"

	"github.com/msync/msync/pkg/protocol"
)

// WebSocket transport (RFC 6455), on netpoll (Config.WSAddr) and on TLS
// (Config.TLSWSAddr). The WebSocket layer is only an envelope: every binary
// message carries exactly one msync frame with the same bytes as on TCP, in
// both directions. The rules, also in docs/transports.md:
//
//   - Upgrade: GET on Config.WSPath (query ignored); any other path gets HTTP
//     404, a malformed upgrade 400 (gobwas/ws), a request head over 8 KiB
//     431. No subprotocol or extension (permessage-deflate) is negotiated.
//     The upgrade counts against the AuthTimeout; OnOpen runs after it and
//     re-arms AuthTimeout for the AUTH frame.
//   - Binary message: must hold exactly one whole frame (header length ==
//     message length); anything else is ERROR 4000 and a close.
//   - Fragmented binary messages are reassembled (control frames may
//     interleave); the whole message is bounded by MaxFrame.
//   - Oversized (a message over MaxFrame): ERROR 4001, close status 1009;
//     the payload is not read.
//   - Text message: ERROR 4000, close status 1003 (the protocol is binary).
//   - Ping: answered with a pong carrying its payload (only the latest
//     unanswered ping is answered, so a ping flood cannot grow the queue).
//     Pong: ignored. Neither counts as an msync heartbeat: WebSocket
//     keepalives are often sent by proxies, not by the app.
//   - Close from the client: answered with close 1000, then the TCP
//     connection is closed (OnClose gets ErrPeerClosed).
//   - Any close by the server: the ERROR frame (if any) in a binary message,
//     then a close frame whose status is derived from the reason
//     (wsCloseStatus), then TCP close without waiting for the client's echo.
//   - Protocol violations (unmasked client frame, RSV bits, reserved opcode,
//     fragmented or long control frame, stray continuation): ERROR 4000,
//     close status 1002.

const (
	wsOpContinuation = 0x0
	wsOpText         = 0x1
	wsOpBinary       = 0x2
	wsOpClose        = 0x8
	wsOpPing         = 0x9
	wsOpPong         = 0xA

	// maxWSHeader is a server frame header's largest size (no mask).
	maxWSHeader = 10
	// maxUpgradeRequest bounds the HTTP upgrade request head.
	maxUpgradeRequest = 8 << 10

	// WebSocket close status codes (RFC 6455 section 7.4.1).
	wsStatusNormal      = 1000
	wsStatusGoingAway   = 1001
	wsStatusProtocol    = 1002
	wsStatusUnsupported = 1003
	wsStatusPolicy      = 1008
	wsStatusTooBig      = 1009
)

// DefaultWSPath is the WebSocket upgrade path when Config.WSPath is empty.
const DefaultWSPath = "/sub"

var (
	// errWSProtocol is a WebSocket framing violation; it wraps ErrBadFrame.
	errWSProtocol = fmt.Errorf("%w: websocket protocol violation", ErrBadFrame)
	// errWSText is a text message; it wraps ErrBadFrame.
	errWSText = fmt.Errorf("%w: websocket text message", ErrBadFrame)
)

// connKind is the transport a connection arrived on; it never changes.
type connKind uint8

const (
	kindTCP connKind = iota
	kindWS
	kindTLS
	kindTLSWS
)

func (k connKind) ws() bool { return k == kindWS || k == kindTLSWS }

func (k connKind) String() string {
	switch k {
	case kindWS:
		return "ws"
	case kindTLS:
		return "tls"
	case kindTLSWS:
		return "wss"
	}
	return "tcp"
}

// Transport names the listener c arrived on: "tcp", "ws", "tls" or "wss".
func (c *Conn) Transport() string { return c.kind.String() }

// socket is the write and close side of a connection. Write must be bounded
// by Config.WriteTimeout; Close must not block.
type socket interface {
	Write(b []byte) (int, error)
	Close() error
	RemoteAddr() net.Addr
}

var _ socket = netpoll.Connection(nil)

// appendWSHeader appends an unmasked, final server frame header.
func appendWSHeader(dst []byte, op byte, n int) []byte {
	dst = append(dst, 0x80|op)
	switch {
	case n <= 125:
		dst = append(dst, byte(n))
	case n <= 0xFFFF:
		dst = append(dst, 126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, 127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return dst
}

// wsControl encodes a whole server control frame.
func wsControl(op byte, payload []byte) []byte {
	b := appendWSHeader(make([]byte, 0, 2+len(payload)), op, len(payload))
	return append(b, payload...)
}

// wsCloseStatus maps a close reason to the WebSocket close status sent with
// the close frame. The msync ERROR frame before it carries the exact code;
// the status is for WebSocket-level tooling (browsers, proxies, logs).
func wsCloseStatus(reason error) uint16 {
	switch {
	case errors.Is(reason, ErrShutdown):
		return wsStatusGoingAway
	case errors.Is(reason, protocol.ErrFrameTooLarge):
		return wsStatusTooBig
	case errors.Is(reason, errWSText):
		return wsStatusUnsupported
	case errors.Is(reason, ErrBadFrame):
		return wsStatusProtocol
	case errors.Is(reason, ErrSlowConsumer), errors.Is(reason, ErrDeadline), errors.Is(reason, ErrAckDeadline),
		errors.Is(reason, ErrReadTimeout):
		return wsStatusPolicy
	}
	return wsStatusNormal
}

func wsCloseFrame(reason error) []byte {
	var p [2]byte
	binary.BigEndian.PutUint16(p[:], wsCloseStatus(reason))
	return wsControl(wsOpClose, p[:])
}

// wsSource is what the WebSocket reader needs from a byte stream;
// netpoll.Reader has both methods, stdSource adapts a net.Conn.
type wsSource interface {
	// Next returns the next n bytes, valid until the next call; it blocks
	// until they arrive.
	Next(n int) ([]byte, error)
	// ReadBinary returns the next n bytes in a new slice.
	ReadBinary(n int) ([]byte, error)
}

// readWSMessage reads WebSocket frames until a whole binary message has
// arrived and returns its payload (owned by the caller) with got == true,
// answering control frames on the way. A control frame outside a
// fragmented message returns got == false, so that the caller goes back to
// waiting without a read deadline (a ping must not start the partial-frame
// clock). started, if not nil, is called once the first two bytes arrived
// (std-net connections arm their read deadline there). On ok == false the
// connection is already closing or failed.
func (c *Conn) readWSMessage(src wsSource, started func()) (msg []byte, got, ok bool) {
	maxFrame := uint64(c.srv.cfg.MaxFrame)
	fragmented := false
	for {
		b, err := src.Next(2)
		if err != nil {
			c.wsReadFailed(err)
			return nil, false, false
		}
		if started != nil {
			started()
			started = nil
		}
		fin, rsv, op := b[0]&0x80 != 0, b[0]&0x70, b[0]&0x0F
		masked, n := b[1]&0x80 != 0, uint64(b[1]&0x7F)
		switch {
		case rsv != 0:
			return nil, false, c.wsViolation("reserved bits set (no extension negotiated)")
		case !masked:
			return nil, false, c.wsViolation("client frames must be masked")
		}
		switch n {
		case 126:
			if b, err = src.Next(2); err != nil {
				c.wsReadFailed(err)
				return nil, false, false
			}
			n = uint64(binary.BigEndian.Uint16(b))
		case 127:
			if b, err = src.Next(8); err != nil {
				c.wsReadFailed(err)
				return nil, false, false
			}
			n = binary.BigEndian.Uint64(b)
		}
		if b, err = src.Next(4); err != nil {
			c.wsReadFailed(err)
			return nil, false, false
		}
		var mask [4]byte
		copy(mask[:], b)

		if op >= 0x8 { // control frame
			if !fin || n > 125 {
				return nil, false, c.wsViolation("control frame fragmented or over 125 bytes")
			}
			p, err := src.ReadBinary(int(n))
			if err != nil {
				c.wsReadFailed(err)
				return nil, false, false
			}
			ws.Cipher(p, mask, 0)
			switch op {
			case wsOpPing:
				c.queuePong(p)
			case wsOpPong:
			case wsOpClose:
				status := uint16(0)
				if len(p) >= 2 {
					status = binary.BigEndian.Uint16(p)
				}
				c.Close(nil, fmt.Errorf("%w: websocket close %d", ErrPeerClosed, status))
				return nil, false, false
			default:
				return nil, false, c.wsViolation(fmt.Sprintf("reserved control opcode %#x", op))
			}
			if !fragmented {
				return nil, false, true
			}
			continue
		}
		switch op {
		case wsOpContinuation:
			if !fragmented {
				return nil, false, c.wsViolation("continuation frame without a message")
			}
		case wsOpBinary:
			if fragmented {
				return nil, false, c.wsViolation("new message inside a fragmented one")
			}
		case wsOpText:
			c.srv.stats.badFrames.Add(1)
			c.Close(protocol.ErrorFrame(0, protocol.CodeBadFrame, "websocket text messages are not supported: send each frame as one binary message"), errWSText)
			return nil, false, false
		default:
			return nil, false, c.wsViolation(fmt.Sprintf("reserved data opcode %#x", op))
		}
		if total := uint64(len(msg)) + n; total > maxFrame || total < n {
			c.srv.stats.badFrames.Add(1)
			err := fmt.Errorf("%w: websocket message over %d bytes", protocol.ErrFrameTooLarge, maxFrame)
			c.Close(protocol.ErrorFrame(0, protocol.CodeFrameTooLarge, err.Error()), fmt.Errorf("%w: %w", ErrBadFrame, err))
			return nil, false, false
		}
		var p []byte
		if n > 0 {
			if p, err = src.ReadBinary(int(n)); err != nil {
				c.wsReadFailed(err)
				return nil, false, false
			}
			ws.Cipher(p, mask, 0)
		}
		if msg == nil && fin {
			return p, true, true // the common case: one frame, no extra copy
		}
		msg = append(msg, p...)
		fragmented = true
		if fin {
			return msg, true, true
		}
	}
}

// wsViolation closes c for a WebSocket framing error; it returns false for
// the caller's ok.
func (c *Conn) wsViolation(what string) bool {
	c.srv.stats.badFrames.Add(1)
	c.Close(protocol.ErrorFrame(0, protocol.CodeBadFrame, "websocket: "+what), fmt.Errorf("%w: %s", errWSProtocol, what))
	return false
}

// wsReadFailed is readFailed for both netpoll and std-net sources.
func (c *Conn) wsReadFailed(err error) {
	switch {
	case errors.Is(err, netpoll.ErrReadTimeout), errors.Is(err, errStdReadTimeout):
		c.Close(nil, fmt.Errorf("%w: %v", ErrReadTimeout, c.srv.cfg.ReadTimeout))
	default:
		c.abort(fmt.Errorf("%w: %w", ErrPeerClosed, err))
	}
}

// queuePong makes the drain answer a ping; a newer ping replaces an
// unanswered one (RFC 6455 5.5.3 allows answering only the latest).
func (c *Conn) queuePong(payload []byte) {
	pong := wsControl(wsOpPong, payload)
	c.mu.Lock()
	if c.mu.closing {
		c.mu.Unlock()
		return
	}
	c.rareLocked().pong = pong
	schedule := !c.mu.scheduled
	c.mu.scheduled = true
	c.mu.Unlock()
	if schedule {
		c.srv.schedule(c)
	}
}

// deliverWS turns one binary message into a frame for the handler.
func (c *Conn) deliverWS(p []byte) {
	s := c.srv
	h, err := protocol.ParseHeader(p, s.cfg.MaxFrame)
	if err == nil && int(h.Length) != len(p) {
		err = fmt.Errorf("%w: websocket message of %d bytes holds a frame of %d: send exactly one frame per message",
			protocol.ErrBadHeader, len(p), h.Length)
	}
	if err != nil {
		c.closeBadFrame(h, err) // read.go
		return
	}
	s.stats.framesIn.Add(1)
	s.stats.bytesIn.Add(uint64(h.Length))
	if c.closing.Load() {
		return
	}
	s.handler.OnFrame(c, protocol.Frame{Op: h.Op, Seq: h.Seq, Body: p[h.HeaderLen:h.Length:h.Length]})
}

// upgradeResponse runs the WebSocket handshake on a complete request head
// and returns the HTTP response to send, and whether the upgrade succeeded.
func (s *Server) upgradeResponse(req []byte) ([]byte, error) {
	var out bytes.Buffer
	_, err := s.upgrader.Upgrade(struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(req), &out})
	return out.Bytes(), err
}

func newUpgrader(path string) ws.Upgrader {
	return ws.Upgrader{
		OnRequest: func(uri []byte) error {
			p, _, _ := strings.Cut(string(uri), "?")
			if p != path {
				return ws.RejectConnectionError(ws.RejectionStatus(http.StatusNotFound))
			}
			return nil
		},
	}
}

var errUpgradeTooLarge = errors.New("gateway: websocket upgrade request head over 8 KiB")

const tooLargeResponse = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

// headEnd returns the length of the HTTP request head in b (through the
// blank line), or -1.
func headEnd(b []byte) int {
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		return i + 4
	}
	return -1
}

// onRequestWS is onRequest for netpoll WebSocket connections: the upgrade
// request first, then messages. Like onRequest, every return leaves the
// input buffer empty.
func (s *Server) onRequestWS(c *Conn, nc netpoll.Connection, r netpoll.Reader) {
	if !c.ready.Load() && !s.upgradeNetpoll(c, nc, r) {
		discard(r)
		return
	}
	for r.Len() > 0 {
		if c.closing.Load() {
			discard(r)
			return
		}
		// Bound the whole message from its first byte (slowloris).
		_ = nc.SetReadDeadline(time.Now().Add(s.cfg.ReadTimeout))
		p, got, ok := c.readWSMessage(r, nil)
		if !ok {
			discard(r)
			return
		}
		_ = nc.SetReadDeadline(time.Time{})
		_ = r.Release()
		if got {
			c.deliverWS(p)
		}
	}
}

// upgradeNetpoll reads the upgrade request, answers it and opens c. The
// response is written directly: before the upgrade no drain writes (drain
// checks ready), so this is the connection's only writer.
func (s *Server) upgradeNetpoll(c *Conn, nc netpoll.Connection, r netpoll.Reader) bool {
	_ = nc.SetReadDeadline(time.Now().Add(s.cfg.ReadTimeout))
	end := -1
	for {
		n := r.Len()
		buf, err := r.Peek(n)
		if err != nil {
			c.wsReadFailed(err)
			return false
		}
		if end = headEnd(buf); end >= 0 && end <= maxUpgradeRequest {
			break
		}
		if n >= maxUpgradeRequest {
			_, _ = nc.Write([]byte(tooLargeResponse))
			s.upgradeFailed(c, errUpgradeTooLarge)
			return false
		}
		if _, err := r.Peek(n + 1); err != nil { // wait for more, bounded by the deadline
			c.wsReadFailed(err)
			return false
		}
	}
	req, err := r.Next(end)
	if err != nil {
		c.wsReadFailed(err)
		return false
	}
	resp, err := s.upgradeResponse(req)
	_ = r.Release()
	_ = nc.SetReadDeadline(time.Time{})
	if len(resp) > 0 {
		if _, werr := nc.Write(resp); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		s.upgradeFailed(c, err)
		return false
	}
	return c.markOpen()
}

func (s *Server) upgradeFailed(c *Conn, err error) {
	s.stats.handshakes.Add(1)
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("websocket upgrade failed", "conn", c.id, "remote", c.RemoteAddr(), "err", err)
	}
	c.abort(fmt.Errorf("%w: websocket upgrade: %w", ErrBadFrame, err))
}
