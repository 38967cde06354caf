package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/msync/msync/pkg/protocol"
)

// wsConn carries frames in WebSocket binary messages, one frame per message
// (docs/transports.md). It answers pings itself; Pong writes and WriteFrame
// share a mutex because pings are read on the ReadFrame goroutine.
type wsConn struct {
	c        net.Conn
	r        *bufio.Reader
	maxFrame int
	wmu      sync.Mutex
}

func dialWS(ctx context.Context, url string, maxFrame int, cfg *tls.Config) (frameConn, error) {
	d := ws.Dialer{TLSConfig: cfg}
	c, br, _, err := d.Dial(ctx, url) // bounded by ctx, upgrade included
	if err != nil {
		return nil, err
	}
	if tc, ok := netConnOf(c).(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	var src io.Reader = c
	if br != nil { // bytes the server sent right after its 101 response
		buffered, _ := br.Peek(br.Buffered())
		src = io.MultiReader(bytes.NewReader(append([]byte(nil), buffered...)), c)
		ws.PutReader(br)
	}
	return &wsConn{c: c, r: bufio.NewReaderSize(src, 32<<10), maxFrame: maxFrame}, nil
}

func netConnOf(c net.Conn) net.Conn {
	if tc, ok := c.(*tls.Conn); ok {
		return tc.NetConn()
	}
	return c
}

// ReadFrame reads one data message (reassembling fragments, answering pings)
// and decodes the one frame it must hold.
func (w *wsConn) ReadFrame(deadline time.Time) (protocol.Frame, error) {
	if err := w.c.SetReadDeadline(deadline); err != nil {
		return protocol.Frame{}, err
	}
	var msg []byte
	fragmented := false
	for {
		h, err := ws.ReadHeader(w.r)
		if err != nil {
			return protocol.Frame{}, err
		}
		if h.OpCode.IsControl() {
			if h.Length > 125 {
				return protocol.Frame{}, fmt.Errorf("%w: websocket control frame of %d bytes", ErrProtocol, h.Length)
			}
			p := make([]byte, h.Length)
			if _, err := io.ReadFull(w.r, p); err != nil {
				return protocol.Frame{}, err
			}
			if h.Masked {
				ws.Cipher(p, h.Mask, 0)
			}
			switch h.OpCode {
			case ws.OpPing:
				if err := w.writeMessage(ws.OpPong, p, deadline); err != nil {
					return protocol.Frame{}, err
				}
			case ws.OpClose:
				status := 0
				if len(p) >= 2 {
					status = int(binary.BigEndian.Uint16(p))
				}
				// The ERROR frame, if any, came before: the session already
				// has the real reason. This is the end of the stream.
				return protocol.Frame{}, fmt.Errorf("client: websocket closed by server (status %d): %w", status, io.EOF)
			}
			continue
		}
		switch {
		case h.OpCode == ws.OpText:
			if h.Length <= int64(w.maxFrame) { // keep the stream in step for whoever reads on
				_, _ = w.r.Discard(int(h.Length))
			}
			return protocol.Frame{}, fmt.Errorf("%w: websocket text message", ErrProtocol)
		case h.OpCode == ws.OpContinuation && !fragmented, h.OpCode == ws.OpBinary && fragmented:
			return protocol.Frame{}, fmt.Errorf("%w: websocket fragments out of order", ErrProtocol)
		}
		// Bounded before allocating, like the TCP reader's header check.
		if h.Length < 0 || int64(len(msg))+h.Length > int64(w.maxFrame) {
			return protocol.Frame{}, fmt.Errorf("%w: websocket message over %d bytes", protocol.ErrFrameTooLarge, w.maxFrame)
		}
		start := len(msg)
		msg = append(msg, make([]byte, h.Length)...)
		if _, err := io.ReadFull(w.r, msg[start:]); err != nil {
			return protocol.Frame{}, err
		}
		if h.Masked {
			ws.Cipher(msg[start:], h.Mask, 0)
		}
		if !h.Fin {
			fragmented = true
			continue
		}
		f, n, err := protocol.Decode(msg, w.maxFrame)
		if err != nil {
			return protocol.Frame{}, err
		}
		if n != len(msg) {
			return protocol.Frame{}, fmt.Errorf("%w: websocket message of %d bytes holds a frame of %d", ErrProtocol, len(msg), n)
		}
		return f, nil
	}
}

// WriteFrame sends b as one masked binary message (b is not modified).
func (w *wsConn) WriteFrame(b []byte, deadline time.Time) error {
	return w.writeMessage(ws.OpBinary, b, deadline)
}

func (w *wsConn) writeMessage(op ws.OpCode, p []byte, deadline time.Time) error {
	h := ws.Header{Fin: true, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(len(p))}
	var buf bytes.Buffer
	buf.Grow(ws.MaxHeaderSize + len(p))
	if err := ws.WriteHeader(&buf, h); err != nil {
		return err
	}
	start := buf.Len()
	buf.Write(p)
	ws.Cipher(buf.Bytes()[start:], h.Mask, 0)
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if err := w.c.SetWriteDeadline(deadline); err != nil {
		return err
	}
	_, err := w.c.Write(buf.Bytes())
	return err
}

// Close sends a close frame when no write is in flight (best effort, never
// waiting for one), then closes the connection.
func (w *wsConn) Close() error {
	if w.wmu.TryLock() {
		_ = w.c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		_, _ = w.c.Write(ws.MustCompileFrame(ws.MaskFrameInPlace(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))))
		w.wmu.Unlock()
	}
	return w.c.Close()
}
