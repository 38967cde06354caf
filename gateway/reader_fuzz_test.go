package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

// The readers are fuzzed against small reference parsers written from the
// rules in ws.go's and read.go's comments (and docs/transports.md): the
// frames the handler gets, the reason the connection closes, and the ERROR
// frame (with the WebSocket close status) the peer is sent must match. The
// readers run on a Server started on 127.0.0.1:0 (wheel, drain pool), with
// byte-slice sources cut at fuzzer-chosen points so frames and headers
// arrive split across reads.

const fuzzMaxFrame = 4096

// fuzzHandler records the frames of the one connection a fuzz iteration
// opens.
type fuzzHandler struct {
	mu     sync.Mutex
	frames []protocol.Frame
	closed chan error
}

func (h *fuzzHandler) OnOpen(*Conn) {}
func (h *fuzzHandler) OnFrame(_ *Conn, f protocol.Frame) {
	h.mu.Lock()
	h.frames = append(h.frames, protocol.Frame{Op: f.Op, Seq: f.Seq, Body: bytes.Clone(f.Body)})
	h.mu.Unlock()
}
func (h *fuzzHandler) OnClose(_ *Conn, err error) {
	select {
	case h.closed <- err:
	default:
	}
}

func (h *fuzzHandler) reset() {
	h.mu.Lock()
	h.frames = nil
	h.mu.Unlock()
	select {
	case <-h.closed:
	default:
	}
}

func (h *fuzzHandler) got() []protocol.Frame {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.frames
}

func startFuzzServer(f *testing.F, cfg Config) (*Server, *fuzzHandler) {
	h := &fuzzHandler{closed: make(chan error, 1)}
	cfg.Addr = "127.0.0.1:0"
	cfg.MaxFrame = fuzzMaxFrame
	cfg.ReadTimeout = 5 * time.Second
	cfg.AuthTimeout = time.Minute
	s, err := New(cfg, h)
	if err != nil {
		f.Fatal(err)
	}
	if err := s.Start(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s, h
}

// fakeSock captures what the drain writes; Close marks the end.
type fakeSock struct {
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	once sync.Once
}

func newFakeSock() *fakeSock { return &fakeSock{done: make(chan struct{})} }

// Write fails once the socket is closed, as a real one does (an abort
// closes it while a drain may still be flushing a pong).
func (s *fakeSock) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.done:
		return 0, net.ErrClosed
	default:
	}
	return s.out.Write(b)
}

func (s *fakeSock) Close() error {
	s.mu.Lock()
	s.once.Do(func() { close(s.done) })
	s.mu.Unlock()
	return nil
}
func (s *fakeSock) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// written waits for the socket to be closed and returns what was written.
func (s *fakeSock) written(t *testing.T) []byte {
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("connection never closed its socket")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.out.Bytes())
}

// chunked serves b in pieces whose sizes come from cuts (each byte a size
// 1..256, cycling), like a socket delivering a stream in arbitrary reads.
type chunked struct {
	b    []byte
	cuts []byte
	i    int
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := len(c.b)
	if len(c.cuts) > 0 {
		n = int(c.cuts[c.i%len(c.cuts)]) + 1
		c.i++
	}
	n = min(n, len(p), len(c.b))
	copy(p, c.b[:n])
	c.b = c.b[n:]
	return n, nil
}

// boundedSource wraps a wsSource and records the largest read asked for,
// so a hostile length can be seen to never become an allocation.
type boundedSource struct {
	wsSource
	largest int
}

func (b *boundedSource) ReadBinary(n int) ([]byte, error) {
	b.largest = max(b.largest, n)
	return b.wsSource.ReadBinary(n)
}

// outcome is how a connection ended, as the peer and the handler see it.
type outcome struct {
	frames []protocol.Frame
	code   protocol.Code // ERROR frame sent before closing; 0 none
	status uint16        // WebSocket close status; 0 none
	eof    bool          // the input ran out (peer gone): nothing sent
}

// refStream parses msync frames back to back from b (read.go's rules).
func refStream(b []byte, maxFrame int) outcome {
	var o outcome
	for {
		if len(b) < protocol.HeaderSize {
			o.eof = true
			return o
		}
		h, err := protocol.ParseHeader(b, maxFrame)
		if err != nil {
			o.code = protocol.CodeBadFrame
			if errors.Is(err, protocol.ErrFrameTooLarge) {
				o.code = protocol.CodeFrameTooLarge
			}
			return o
		}
		if len(b) < int(h.Length) {
			o.eof = true
			return o
		}
		o.frames = append(o.frames, protocol.Frame{Op: h.Op, Seq: h.Seq, Body: bytes.Clone(b[h.HeaderLen:h.Length])})
		b = b[h.Length:]
	}
}

// refWS parses client WebSocket frames (RFC 6455 with ws.go's rules) and
// the msync frame inside each binary message.
func refWS(b []byte, maxFrame int) outcome {
	var o outcome
	var msg []byte
	fragmented := false
	take := func(n uint64) ([]byte, bool) {
		if uint64(len(b)) < n {
			return nil, false
		}
		p := b[:n]
		b = b[n:]
		return p, true
	}
	violation := func() outcome { o.code, o.status = protocol.CodeBadFrame, wsStatusProtocol; return o }
	eof := func() outcome { o.eof = true; return o }
	for {
		h, ok := take(2)
		if !ok {
			return eof()
		}
		fin, rsv, op, masked, n := h[0]&0x80 != 0, h[0]&0x70, h[0]&0x0F, h[1]&0x80 != 0, uint64(h[1]&0x7F)
		if rsv != 0 || !masked {
			return violation()
		}
		switch n {
		case 126:
			x, ok := take(2)
			if !ok {
				return eof()
			}
			n = uint64(binary.BigEndian.Uint16(x))
		case 127:
			x, ok := take(8)
			if !ok {
				return eof()
			}
			n = binary.BigEndian.Uint64(x)
		}
		key, ok := take(4)
		if !ok {
			return eof()
		}
		if op >= 0x8 {
			if !fin || n > 125 {
				return violation()
			}
			p, ok := take(n)
			if !ok {
				return eof()
			}
			switch op {
			case wsOpPing, wsOpPong:
			case wsOpClose:
				o.status = wsStatusNormal // answered with close 1000, no ERROR
				return o
			default:
				return violation()
			}
			_ = p
			continue
		}
		switch {
		case op == wsOpContinuation && !fragmented, op == wsOpBinary && fragmented:
			return violation()
		case op == wsOpText:
			o.code, o.status = protocol.CodeBadFrame, wsStatusUnsupported
			return o
		case op != wsOpContinuation && op != wsOpBinary:
			return violation()
		}
		if total := uint64(len(msg)) + n; total > uint64(maxFrame) || total < n {
			o.code, o.status = protocol.CodeFrameTooLarge, wsStatusTooBig
			return o
		}
		p, ok := take(n)
		if !ok {
			return eof()
		}
		p = bytes.Clone(p)
		ws.Cipher(p, [4]byte(key), 0)
		msg = append(msg, p...)
		fragmented = !fin
		if !fin {
			continue
		}
		// One whole msync frame per message.
		hd, err := protocol.ParseHeader(msg, maxFrame)
		if err == nil && int(hd.Length) != len(msg) {
			err = protocol.ErrBadHeader
		}
		if err != nil {
			o.code, o.status = protocol.CodeBadFrame, wsStatusProtocol
			if errors.Is(err, protocol.ErrFrameTooLarge) {
				o.code, o.status = protocol.CodeFrameTooLarge, wsStatusTooBig
			}
			return o
		}
		o.frames = append(o.frames, protocol.Frame{Op: hd.Op, Seq: hd.Seq, Body: msg[hd.HeaderLen:hd.Length]})
		msg = nil
	}
}

// parseServerOutput splits what the server wrote into its ERROR frame code
// and WebSocket close status (pongs skipped).
func parseServerOutput(t *testing.T, out []byte, isWS bool) (code protocol.Code, status uint16) {
	frame := func(b []byte) {
		f, n, err := protocol.Decode(b, 1<<20)
		if err != nil || n != len(b) || f.Op != protocol.OpError {
			t.Fatalf("server wrote %x, not one ERROR frame: %v", b, err)
		}
		var e pb.Error
		if err := protocol.Unmarshal(f, &e); err != nil {
			t.Fatal(err)
		}
		code = protocol.Code(e.Code)
	}
	if !isWS {
		if len(out) > 0 {
			frame(out)
		}
		return code, 0
	}
	for len(out) > 0 {
		h, err := ws.ReadHeader(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("server wrote a bad WebSocket frame %x: %v", out, err)
		}
		hl := 2
		if h.Length > 125 {
			hl += 2
		}
		if h.Length > 0xFFFF {
			hl += 6
		}
		p := out[hl : hl+int(h.Length)]
		out = out[hl+int(h.Length):]
		switch h.OpCode {
		case ws.OpBinary:
			frame(p)
		case ws.OpClose:
			status = binary.BigEndian.Uint16(p)
		case ws.OpPong:
		default:
			t.Fatalf("server wrote opcode %v", h.OpCode)
		}
	}
	return code, status
}

func sameFrames(t *testing.T, got, want []protocol.Frame) {
	if len(got) != len(want) {
		t.Fatalf("handler got %d frames, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].Op != want[i].Op || got[i].Seq != want[i].Seq || !bytes.Equal(got[i].Body, want[i].Body) {
			t.Fatalf("frame %d: got %v %d %x, want %v %d %x", i, got[i].Op, got[i].Seq, got[i].Body, want[i].Op, want[i].Seq, want[i].Body)
		}
	}
}

// wsFrame builds one masked client frame.
func wsFrame(fin bool, op byte, payload []byte) []byte {
	var b bytes.Buffer
	_ = ws.WriteHeader(&b, ws.Header{Fin: fin, OpCode: ws.OpCode(op), Masked: true, Mask: [4]byte{1, 2, 3, 4}, Length: int64(len(payload))})
	p := bytes.Clone(payload)
	ws.Cipher(p, [4]byte{1, 2, 3, 4}, 0)
	return append(b.Bytes(), p...)
}

// FuzzWSReader drives readWSMessage and deliverWS (the loop of
// readStdWS/onRequestWS) over a chunked stream.
func FuzzWSReader(f *testing.F) {
	hb := protocol.AppendFrame(nil, protocol.OpHeartbeat, 7, nil)
	auth, _ := protocol.Encode(protocol.OpAuth, 1, &pb.Auth{Token: "t", Device: "d"})
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	f.Add(cat(wsFrame(true, wsOpBinary, auth), wsFrame(true, wsOpBinary, hb)), []byte{3, 0, 200})
	f.Add(cat(wsFrame(false, wsOpBinary, auth[:5]), wsFrame(true, wsOpPing, []byte("p")), wsFrame(true, wsOpContinuation, auth[5:])), []byte{})
	f.Add(cat(wsFrame(true, wsOpBinary, hb), wsFrame(true, wsOpText, []byte("hi"))), []byte{1})
	f.Add(cat(wsFrame(true, wsOpBinary, append(hb, hb...))), []byte{})                              // two frames, one message
	f.Add(cat(wsFrame(true, wsOpClose, []byte{3, 232})), []byte{})                                  // close
	f.Add([]byte{0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4}, []byte{}) // 2^63 length
	f.Add([]byte{0x82, 0x05, 1, 2, 3, 4, 5}, []byte{})                                              // unmasked
	f.Add(cat(wsFrame(true, 0x3, nil)), []byte{})                                                   // reserved opcode
	f.Add(cat(wsFrame(true, wsOpBinary, make([]byte, fuzzMaxFrame+1))), []byte{255})                // too big
	s, h := startFuzzServer(f, Config{})
	f.Fuzz(func(t *testing.T, in, cuts []byte) {
		h.reset()
		sock := newFakeSock()
		c := s.newConn(sock, kindWS)
		if s.register(c) != 0 || !c.markOpen() {
			t.Fatal("could not open a connection")
		}
		src := &boundedSource{wsSource: &stdSource{r: &chunked{b: in, cuts: cuts}}}
		for !c.closing.Load() {
			p, got, ok := c.readWSMessage(src, nil)
			if !ok {
				break
			}
			if got {
				c.deliverWS(p)
			}
		}
		if src.largest > fuzzMaxFrame {
			t.Fatalf("asked the source for %d bytes, over MaxFrame", src.largest)
		}
		out := sock.written(t)
		c.closed()
		want := refWS(in, fuzzMaxFrame)
		sameFrames(t, h.got(), want.frames)
		code, status := parseServerOutput(t, out, true)
		if want.eof {
			if code != 0 || status != 0 { // pongs only
				t.Fatalf("input ran out, yet the server sent code %d status %d", code, status)
			}
			return
		}
		if code != want.code || status != want.status {
			t.Fatalf("server sent ERROR %d close %d, want %d %d", code, status, want.code, want.status)
		}
	})
}

// stdConn is the net.Conn under a tls.Conn that readStdFrames only uses for
// read deadlines.
type stdConn struct{ net.Conn }

func (stdConn) SetReadDeadline(time.Time) error { return nil }

// FuzzStreamReader drives readStdFrames (the TLS listener's frame reader,
// the same rules as onRequest on netpoll) over a chunked stream: partial
// headers, header lengths above 16, frames split across reads.
func FuzzStreamReader(f *testing.F) {
	hb := protocol.AppendFrame(nil, protocol.OpHeartbeat, 7, nil)
	auth, _ := protocol.Encode(protocol.OpAuth, 1, &pb.Auth{Token: "t", Device: "d"})
	long := append(bytes.Clone(hb), 0, 0, 0, 0)
	binary.BigEndian.PutUint32(long, 20)
	binary.BigEndian.PutUint16(long[4:], 20) // a 20-byte header, no body
	f.Add(append(bytes.Clone(auth), hb...), []byte{0, 15, 1})
	f.Add(append(long, auth...), []byte{2})
	f.Add(hb[:9], []byte{})
	f.Add(append(bytes.Clone(hb), 0, 0, 0xff, 0xff, 0, 16, 0, 1, 0, 0, 0, 3, 0, 0, 0, 9), []byte{}) // too large
	f.Add([]byte{0, 0, 0, 16, 0, 15, 0, 1, 0, 0, 0, 3, 0, 0, 0, 9}, []byte{})                       // header length 15
	f.Add([]byte{0, 0, 0, 16, 0, 16, 0, 2, 0, 0, 0, 3, 0, 0, 0, 9}, []byte{})                       // version 2
	s, h := startFuzzServer(f, Config{})
	tc := tls.Server(stdConn{}, &tls.Config{})
	f.Fuzz(func(t *testing.T, in, cuts []byte) {
		h.reset()
		sock := newFakeSock()
		c := s.newConn(sock, kindTLS)
		if s.register(c) != 0 || !c.markOpen() {
			t.Fatal("could not open a connection")
		}
		s.readStdFrames(c, tc, &stdSource{r: &chunked{b: in, cuts: cuts}})
		out := sock.written(t)
		c.closed()
		want := refStream(in, fuzzMaxFrame)
		sameFrames(t, h.got(), want.frames)
		code, _ := parseServerOutput(t, out, false)
		if !want.eof && code != want.code {
			t.Fatalf("server sent ERROR %d, want %d", code, want.code)
		}
		if want.eof && len(out) != 0 {
			t.Fatalf("input ran out mid-frame, yet the server wrote %x", out)
		}
	})
}

// FuzzUpgrade: the WebSocket handshake on arbitrary request heads never
// panics; it succeeds only for a GET of the configured path (query
// ignored) and then answers 101 with the RFC 6455 accept key; otherwise the
// connection gets an HTTP error status or nothing.
func FuzzUpgrade(f *testing.F) {
	const good = "GET /sub?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	f.Add([]byte(good))
	f.Add([]byte(strings.Replace(good, "/sub?x=1", "/other", 1)))
	f.Add([]byte(strings.Replace(good, "13", "8", 1)))
	f.Add([]byte(strings.Replace(good, "GET", "POST", 1)))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte("\r\n\r\n"))
	s, _ := startFuzzServer(f, Config{})
	f.Fuzz(func(t *testing.T, req []byte) {
		if len(req) > maxUpgradeRequest {
			return // refused with 431 before the handshake runs
		}
		resp, err := s.upgradeResponse(req)
		if err != nil {
			if len(resp) > 0 && !bytes.HasPrefix(resp, []byte("HTTP/1.1 4")) && !bytes.HasPrefix(resp, []byte("HTTP/1.1 5")) {
				t.Fatalf("failed upgrade answered %q", resp)
			}
			return
		}
		line, _, _ := bytes.Cut(req, []byte("\r\n"))
		parts := strings.Fields(string(line))
		if len(parts) < 2 || parts[0] != "GET" || strings.SplitN(parts[1], "?", 2)[0] != DefaultWSPath {
			t.Fatalf("upgraded request line %q", line)
		}
		if !bytes.HasPrefix(resp, []byte("HTTP/1.1 101 ")) || !bytes.Contains(bytes.ToLower(resp), []byte("sec-websocket-accept: ")) {
			t.Fatalf("upgrade answered %q", resp)
		}
	})
}

// FuzzNetpollStream is FuzzStreamReader on the real netpoll path (onRequest)
// over a loopback socket: the input is written in fuzzer-cut pieces. The handler must get exactly the reference
// frames, the close reason must say bad frame or peer gone as the reference
// does, and anything the client can read back is the reference's ERROR.
// (The write side is not half-closed: see below.)
func FuzzNetpollStream(f *testing.F) {
	hb := protocol.AppendFrame(nil, protocol.OpHeartbeat, 7, nil)
	auth, _ := protocol.Encode(protocol.OpAuth, 1, &pb.Auth{Token: "t", Device: "d"})
	long := append(bytes.Clone(hb), 0, 0, 0, 0)
	binary.BigEndian.PutUint32(long, 20)
	binary.BigEndian.PutUint16(long[4:], 20)
	f.Add(append(bytes.Clone(auth), hb...), []byte{0, 15, 1})
	f.Add(append(long, auth...), []byte{2})
	f.Add(hb[:9], []byte{})
	f.Add(append(bytes.Clone(hb), 0, 0, 0xff, 0xff, 0, 16, 0, 1, 0, 0, 0, 3, 0, 0, 0, 9), []byte{})
	f.Add([]byte{0, 0, 0, 16, 0, 15, 0, 1, 0, 0, 0, 3, 0, 0, 0, 9}, []byte{})
	s, h := startFuzzServer(f, Config{})
	addr := s.Addr().String()
	f.Fuzz(func(t *testing.T, in, cuts []byte) {
		if len(in) == 0 {
			return // nothing to read: netpoll may never call OnRequest
		}
		h.reset()
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		tcp := nc.(*net.TCPConn)
		_ = tcp.SetNoDelay(true)
		rd := &chunked{b: in, cuts: cuts}
		buf := make([]byte, 256)
		for {
			n, err := rd.Read(buf)
			if err != nil {
				break
			}
			if _, err := tcp.Write(buf[:n]); err != nil {
				break // the server closed on a bad frame
			}
		}
		// No half-close: netpoll may see the hang-up before it hands over
		// the bytes buffered ahead of it. The server closes by itself on a
		// bad header; otherwise wait for the frames, then hang up.
		want := refStream(in, fuzzMaxFrame)
		var back []byte
		if want.eof {
			// A timeout is reported below, comparing what arrived.
			_ = testutil.Poll(10*time.Second, time.Millisecond, func() error {
				if n := len(h.got()); n < len(want.frames) {
					return fmt.Errorf("%d of %d frames", n, len(want.frames))
				}
				return nil
			})
			_ = tcp.Close()
		} else {
			_ = tcp.SetReadDeadline(time.Now().Add(10 * time.Second))
			back, _ = io.ReadAll(tcp) // may end in a reset: the server drops unread input
		}
		var reason error
		select {
		case reason = <-h.closed:
		case <-time.After(10 * time.Second):
			t.Fatal("server never closed the connection")
		}
		sameFrames(t, h.got(), want.frames)
		if want.eof != errors.Is(reason, ErrPeerClosed) || !want.eof && !errors.Is(reason, ErrBadFrame) {
			t.Fatalf("closed with %v, reference eof=%v code=%d", reason, want.eof, want.code)
		}
		if len(back) > 0 {
			code, _ := parseServerOutput(t, back, false)
			if want.eof || code != want.code {
				t.Fatalf("client read ERROR %d, reference eof=%v code=%d", code, want.eof, want.code)
			}
		}
	})
}
