package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/msync/msync/gateway"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

// wsClient is a raw WebSocket client: tests choose every frame bit.
type wsClient struct {
	net.Conn
	r io.Reader // bytes the dialer read past the handshake come first
}

// wsDial upgrades a connection to url; tlsCfg non-nil means wss.
func wsDial(t testing.TB, url string, tlsCfg *tls.Config) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, br, _, err := ws.Dialer{TLSConfig: tlsCfg}.Dial(ctx, url)
	if err != nil {
		t.Fatalf("websocket dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := &wsClient{Conn: conn, r: conn}
	if br != nil {
		c.r = io.MultiReader(br, conn)
	}
	return c
}

func wsURL(s *gateway.Server) string { return "ws://" + s.Addrs().WS.String() + gateway.DefaultWSPath }

// sendWS writes one client frame: masked unless unmasked is set.
func (c *wsClient) sendWS(t testing.TB, op ws.OpCode, fin bool, payload []byte, unmasked bool) {
	t.Helper()
	h := ws.Header{Fin: fin, OpCode: op, Length: int64(len(payload)), Masked: !unmasked}
	p := append([]byte(nil), payload...)
	if h.Masked {
		h.Mask = ws.NewMask()
		ws.Cipher(p, h.Mask, 0)
	}
	var buf bytes.Buffer
	if err := ws.WriteHeader(&buf, h); err != nil {
		t.Fatal(err)
	}
	buf.Write(p)
	send(t, c.Conn, buf.Bytes())
}

// sendFrame sends one msync frame as one binary message.
func (c *wsClient) sendFrame(t testing.TB, op protocol.Op, seq uint32, body []byte) {
	t.Helper()
	c.sendWS(t, ws.OpBinary, true, protocol.AppendFrame(nil, op, seq, body), false)
}

// readWS reads one server frame.
func (c *wsClient) readWS(timeout time.Duration) (ws.Header, []byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	h, err := ws.ReadHeader(c.r)
	if err != nil {
		return h, nil, err
	}
	if h.Masked {
		return h, nil, errors.New("server frame is masked")
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c.r, p); err != nil {
		return h, nil, err
	}
	return h, p, nil
}

// readFrame reads one binary message and decodes the single frame in it.
func (c *wsClient) readFrame(t testing.TB) protocol.Frame {
	t.Helper()
	h, p, err := c.readWS(5 * time.Second)
	if err != nil {
		t.Fatalf("websocket read: %v", err)
	}
	if h.OpCode != ws.OpBinary || !h.Fin {
		t.Fatalf("want one final binary message, got op %v fin %v", h.OpCode, h.Fin)
	}
	f, n, err := protocol.Decode(p, len(p))
	if err != nil || n != len(p) {
		t.Fatalf("message of %d bytes: frame of %d, err %v", len(p), n, err)
	}
	return f
}

// expectErrorClose reads ERROR code, then a close frame with status, then EOF.
func (c *wsClient) expectErrorClose(t testing.TB, code protocol.Code, status ws.StatusCode) {
	t.Helper()
	f := c.readFrame(t)
	var e pb.Error
	if f.Op != protocol.OpError || protocol.Unmarshal(f, &e) != nil || protocol.Code(e.Code) != code {
		t.Fatalf("want ERROR %d, got op %s code %d (%q)", code, f.Op, e.Code, e.Message)
	}
	c.expectClose(t, status)
}

func (c *wsClient) expectClose(t testing.TB, status ws.StatusCode) {
	t.Helper()
	h, p, err := c.readWS(5 * time.Second)
	if err != nil {
		t.Fatalf("want close frame %d: %v", status, err)
	}
	if h.OpCode != ws.OpClose || len(p) < 2 {
		t.Fatalf("want close frame %d, got op %v payload %q", status, h.OpCode, p)
	}
	if got := ws.StatusCode(binary.BigEndian.Uint16(p)); got != status {
		t.Fatalf("close status %d, want %d", got, status)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.r.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("want EOF after the close frame, got n=%d err=%v", n, err)
	}
}

func startWS(t testing.TB, cfg gateway.Config, h *testHandler) *gateway.Server {
	t.Helper()
	cfg.WSAddr = "127.0.0.1:0"
	return start(t, cfg, h)
}

func TestWSFramesBothWays(t *testing.T) {
	h := newHandler()
	h.onFrame = echo
	s := startWS(t, gateway.Config{}, h)

	tcp := dial(t, s)
	tcpConn := recvOpen(t, h)
	c := wsDial(t, wsURL(s), nil)
	wsConn := recvOpen(t, h)
	if wsConn.Transport() != "ws" || tcpConn.Transport() != "tcp" {
		t.Fatalf("transports %q and %q", wsConn.Transport(), tcpConn.Transport())
	}
	if wsConn.ID() == tcpConn.ID() {
		t.Fatalf("TCP and WebSocket connections share ID %d", wsConn.ID())
	}
	for i := uint32(1); i <= 50; i++ {
		body := bytes.Repeat([]byte{byte(i)}, int(i)*100) // up to 5000 bytes: 16-bit WS lengths too
		c.sendFrame(t, protocol.OpHeartbeat, i, body)
		f := c.readFrame(t)
		if f.Op != protocol.OpHeartbeat+1 || f.Seq != i || !bytes.Equal(f.Body, body) {
			t.Fatalf("echo %d: op %s seq %d len %d", i, f.Op, f.Seq, len(f.Body))
		}
	}
	// A push from another goroutine, large enough for a 64-bit WS length.
	big := bytes.Repeat([]byte("p"), 70000)
	if err := wsConn.Write(protocol.AppendFrame(nil, protocol.OpPush, 0, big)); err != nil {
		t.Fatal(err)
	}
	if f := c.readFrame(t); f.Op != protocol.OpPush || !bytes.Equal(f.Body, big) {
		t.Fatalf("push: op %s len %d", f.Op, len(f.Body))
	}
	// The TCP listener is unaffected.
	send(t, tcp, protocol.AppendFrame(nil, protocol.OpHeartbeat, 7, nil))
	if f := mustReadFrame(t, tcp); f.Seq != 7 {
		t.Fatalf("tcp echo seq %d", f.Seq)
	}
}

func TestWSBadUpgradePath(t *testing.T) {
	h := newHandler()
	s := startWS(t, gateway.Config{}, h)
	for _, tt := range []struct{ name, req, status string }{
		{"other path", "GET /other HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", "404"},
		{"not an upgrade", "GET /sub HTTP/1.1\r\nHost: x\r\n\r\n", "400"},
		{"head too large", "GET /sub HTTP/1.1\r\nX-Pad: " + strings.Repeat("a", 9000) + "\r\n\r\n", "431"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", s.Addrs().WS.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			send(t, c, []byte(tt.req))
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "HTTP/1.1 "+tt.status) {
				t.Fatalf("status line %q err %v, want %s", line, err, tt.status)
			}
			expectEOF(t, c)
		})
	}
	if st := s.Stats(); st.Accepted != 0 || st.HandshakesFailed != 3 {
		t.Fatalf("accepted %d, failed handshakes %d; want 0 and 3", st.Accepted, st.HandshakesFailed)
	}
	waitFor(t, 5*time.Second, "rejected conns gone", func() bool { return s.Len() == 0 })
	select {
	case c := <-h.opens:
		t.Fatalf("OnOpen for a failed upgrade: conn %d", c.ID())
	default:
	}
}

func TestWSBadInput(t *testing.T) {
	for _, tt := range []struct {
		name   string
		send   func(t *testing.T, c *wsClient)
		code   protocol.Code
		status ws.StatusCode
	}{
		{"text message", func(t *testing.T, c *wsClient) {
			c.sendWS(t, ws.OpText, true, protocol.AppendFrame(nil, protocol.OpHeartbeat, 1, nil), false)
		}, protocol.CodeBadFrame, ws.StatusUnsupportedData},
		{"oversized message", func(t *testing.T, c *wsClient) {
			c.sendWS(t, ws.OpBinary, true, protocol.AppendFrame(nil, protocol.OpHeartbeat, 1, make([]byte, 2000)), false)
		}, protocol.CodeFrameTooLarge, ws.StatusMessageTooBig},
		{"oversized after reassembly", func(t *testing.T, c *wsClient) {
			c.sendWS(t, ws.OpBinary, false, make([]byte, 600), false)
			c.sendWS(t, ws.OpContinuation, true, make([]byte, 600), false)
		}, protocol.CodeFrameTooLarge, ws.StatusMessageTooBig},
		{"malformed frame inside a binary message", func(t *testing.T, c *wsClient) {
			c.sendWS(t, ws.OpBinary, true, []byte("this is not an msync frame at all"), false)
		}, protocol.CodeBadFrame, ws.StatusProtocolError},
		{"two frames in one message", func(t *testing.T, c *wsClient) {
			two := protocol.AppendFrame(protocol.AppendFrame(nil, protocol.OpHeartbeat, 1, nil), protocol.OpHeartbeat, 2, nil)
			c.sendWS(t, ws.OpBinary, true, two, false)
		}, protocol.CodeBadFrame, ws.StatusProtocolError},
		{"unmasked client frame", func(t *testing.T, c *wsClient) {
			c.sendWS(t, ws.OpBinary, true, protocol.AppendFrame(nil, protocol.OpHeartbeat, 1, nil), true)
		}, protocol.CodeBadFrame, ws.StatusProtocolError},
		{"stray continuation", func(t *testing.T, c *wsClient) {
			c.sendWS(t, ws.OpContinuation, true, []byte("x"), false)
		}, protocol.CodeBadFrame, ws.StatusProtocolError},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHandler()
			s := startWS(t, gateway.Config{MaxFrame: 1024}, h)
			c := wsDial(t, wsURL(s), nil)
			recvOpen(t, h)
			tt.send(t, c)
			c.expectErrorClose(t, tt.code, tt.status)
			if e := recvClose(t, h, 5*time.Second); !errors.Is(e.err, gateway.ErrBadFrame) {
				t.Fatalf("OnClose %v, want ErrBadFrame", e.err)
			}
			select {
			case f := <-h.frames:
				t.Fatalf("bad input reached OnFrame: %+v", f.f)
			default:
			}
		})
	}
}

func TestWSPingPongAndFragments(t *testing.T) {
	for _, secure := range []bool{false, true} {
		name := map[bool]string{false: "ws", true: "wss"}[secure]
		t.Run(name, func(t *testing.T) { testPingPongAndFragments(t, secure) })
	}
}

func testPingPongAndFragments(t *testing.T, secure bool) {
	h := newHandler()
	h.onFrame = echo
	const readTimeout = 200 * time.Millisecond
	var c *wsClient
	if secure {
		s, cert := startTLS(t, gateway.Config{ReadTimeout: readTimeout}, h)
		c = wsDial(t, "wss://"+s.Addrs().TLSWS.String()+"/sub", cert.Client())
	} else {
		s := startWS(t, gateway.Config{ReadTimeout: readTimeout}, h)
		c = wsDial(t, wsURL(s), nil)
	}
	recvOpen(t, h)

	c.sendWS(t, ws.OpPing, true, []byte("hello"), false)
	hd, p, err := c.readWS(5 * time.Second)
	if err != nil || hd.OpCode != ws.OpPong || string(p) != "hello" {
		t.Fatalf("want pong hello, got op %v %q err %v", hd.OpCode, p, err)
	}
	c.sendWS(t, ws.OpPong, true, []byte("unsolicited"), false) // ignored
	// Idle after control frames, longer than ReadTimeout: that bounds a
	// message in progress, not the silence between messages.
	time.Sleep(3 * readTimeout) // a deliberate idle gap, longer than ReadTimeout

	// One frame in three fragments with a ping in between.
	frame := protocol.AppendFrame(nil, protocol.OpHeartbeat, 42, []byte("fragmented body"))
	c.sendWS(t, ws.OpBinary, false, frame[:5], false)
	c.sendWS(t, ws.OpContinuation, false, frame[5:20], false)
	c.sendWS(t, ws.OpPing, true, []byte("mid"), false)
	c.sendWS(t, ws.OpContinuation, true, frame[20:], false)
	if hd, p, err := c.readWS(5 * time.Second); err != nil || hd.OpCode != ws.OpPong || string(p) != "mid" {
		t.Fatalf("want pong mid, got op %v %q err %v", hd.OpCode, p, err)
	}
	if f := c.readFrame(t); f.Seq != 42 || string(f.Body) != "fragmented body" {
		t.Fatalf("reassembled echo: seq %d body %q", f.Seq, f.Body)
	}
}

func TestWSClose(t *testing.T) {
	t.Run("client close", func(t *testing.T) {
		h := newHandler()
		s := startWS(t, gateway.Config{}, h)
		c := wsDial(t, wsURL(s), nil)
		recvOpen(t, h)
		c.sendWS(t, ws.OpClose, true, []byte{0x03, 0xE8}, false) // 1000
		c.expectClose(t, ws.StatusNormalClosure)
		if e := recvClose(t, h, 5*time.Second); !errors.Is(e.err, gateway.ErrPeerClosed) {
			t.Fatalf("OnClose %v, want ErrPeerClosed", e.err)
		}
	})
	t.Run("handler close", func(t *testing.T) {
		h := newHandler()
		s := startWS(t, gateway.Config{}, h)
		c := wsDial(t, wsURL(s), nil)
		gc := recvOpen(t, h)
		gc.Close(protocol.ErrorFrame(0, protocol.CodeKicked, "bye"), nil)
		c.expectErrorClose(t, protocol.CodeKicked, ws.StatusNormalClosure)
	})
	t.Run("auth deadline", func(t *testing.T) {
		h := newHandler()
		s := startWS(t, gateway.Config{AuthTimeout: 300 * time.Millisecond, Tick: 50 * time.Millisecond}, h)
		c := wsDial(t, wsURL(s), nil)
		recvOpen(t, h)
		c.expectErrorClose(t, protocol.CodeAuthTimeout, ws.StatusPolicyViolation)
	})
	t.Run("shutdown", func(t *testing.T) {
		h := newHandler()
		cfg := gateway.Config{Addr: "127.0.0.1:0", WSAddr: "127.0.0.1:0", Logger: testLogger(t)}
		s, err := gateway.New(cfg, h)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		c := wsDial(t, wsURL(s), nil)
		recvOpen(t, h)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- s.Shutdown(ctx) }()
		c.expectErrorClose(t, protocol.CodeServerShutdown, ws.StatusGoingAway)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if _, err := net.DialTimeout("tcp", s.Addrs().WS.String(), time.Second); err == nil {
			t.Fatal("websocket listener still accepts after Shutdown")
		}
		h.check(t)
	})
}

// TestWSUpgradeAuthDeadline: a connection that never sends the upgrade
// request is closed by the auth deadline, without OnOpen.
func TestWSUpgradeAuthDeadline(t *testing.T) {
	h := newHandler()
	s := startWS(t, gateway.Config{AuthTimeout: 200 * time.Millisecond, Tick: 50 * time.Millisecond}, h)
	c, err := net.Dial("tcp", s.Addrs().WS.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	send(t, c, []byte("GET /sub HTTP/1.1\r\n")) // half a request, then silence
	expectEOF(t, c)
	waitFor(t, 5*time.Second, "conn gone", func() bool { return s.Len() == 0 })
	if st := s.Stats(); st.Accepted != 0 {
		t.Fatalf("accepted %d", st.Accepted)
	}
}

func TestWSConfigValidation(t *testing.T) {
	for _, cfg := range []gateway.Config{
		{WSAddr: "nope"},
		{WSPath: "sub"},
		{TLSAddr: "127.0.0.1:0"},
		{TLSWSAddr: "127.0.0.1:0", TLS: &tls.Config{}},
	} {
		if _, err := gateway.New(cfg, newHandler()); !errors.Is(err, gateway.ErrInvalidConfig) {
			t.Errorf("%+v: err %v, want ErrInvalidConfig", cfg, err)
		}
	}
}

// TestWSConcurrentPushes writes to one WebSocket connection from several
// goroutines (run it without -race too: netpoll's writer is not safe for
// concurrent use, only the drain may touch it). Every frame arrives whole,
// each in its own message, in per-writer order.
func TestWSConcurrentPushes(t *testing.T) {
	h := newHandler()
	s := startWS(t, gateway.Config{WriteQueueBytes: 64 << 20}, h)
	c := wsDial(t, wsURL(s), nil)
	gc := recvOpen(t, h)
	const writers, each = 8, 500
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		go func() {
			for i := 0; i < each; i++ {
				body := binary.BigEndian.AppendUint32(make([]byte, 0, 4+w*100), uint32(i))
				body = append(body, bytes.Repeat([]byte{byte(w)}, w*100)...)
				if err := gc.Write(protocol.AppendFrame(nil, protocol.OpPush, uint32(w), body)); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	next := make([]uint32, writers)
	for n := 0; n < writers*each; n++ {
		f := c.readFrame(t)
		w := f.Seq
		if int(w) >= writers || len(f.Body) != 4+int(w)*100 {
			t.Fatalf("frame %d: writer %d, body %d bytes", n, w, len(f.Body))
		}
		if i := binary.BigEndian.Uint32(f.Body); i != next[w] {
			t.Fatalf("writer %d: got #%d, want #%d", w, i, next[w])
		}
		next[w]++
	}
	for w := 0; w < writers; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
