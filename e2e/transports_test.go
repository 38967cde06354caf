package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/msync/msync/internal/testcert"
	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/pkg/client"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

// transportsConfig is testConfig with every listener: WebSocket, TLS and
// WebSocket over TLS next to TCP. %s are the certificate and key files.
const transportsConfig = `
secret: ` + testSecret + `
dev: true # short test keys
api_keys:
  - {key: test-key, bizs: ["*"]}
comet:
  addr: 127.0.0.1:0
  ws_addr: 127.0.0.1:0
  heartbeat: 10s
  auth_timeout: 5s
  ack_timeout: 30s
  page_limit: 50
  tls:
    cert_file: %s
    key_file: %s
    tcp_addr: 127.0.0.1:0
    ws_addr: 127.0.0.1:0
logic:
  http_addr: 127.0.0.1:0
bizs:
  - {name: demo, target: user, ttl: 7d}
`

func startTransportsNode(t *testing.T) (*node, *testcert.Cert) {
	t.Helper()
	cert, err := testcert.New()
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := cert.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return startNodeWith(t, fmt.Sprintf(transportsConfig, certFile, keyFile), ""), cert
}

// wsStream turns a WebSocket client connection into the byte stream the
// raw device reads: each Write is one binary message (the device writes
// one whole frame per Write), Read returns message payloads back to back,
// pings are answered, a close frame reads as EOF.
type wsStream struct {
	net.Conn
	r       io.Reader
	wmu     sync.Mutex
	pending []byte
}

func dialWSDevice(t *testing.T, url string, tlsCfg *tls.Config) *device {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, br, _, err := ws.Dialer{TLSConfig: tlsCfg}.Dial(ctx, url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	s := &wsStream{Conn: c, r: c}
	if br != nil {
		s.r = io.MultiReader(br, c)
	}
	d := newDevice(t, s)
	go d.readLoop()
	return d
}

func (s *wsStream) Read(p []byte) (int, error) {
	for len(s.pending) == 0 {
		h, err := ws.ReadHeader(s.r)
		if err != nil {
			return 0, err
		}
		b := make([]byte, h.Length)
		if _, err := io.ReadFull(s.r, b); err != nil {
			return 0, err
		}
		switch h.OpCode {
		case ws.OpBinary, ws.OpContinuation:
			s.pending = b
		case ws.OpPing:
			if err := s.writeMessage(ws.OpPong, b); err != nil {
				return 0, err
			}
		case ws.OpClose:
			return 0, io.EOF
		case ws.OpText:
			return 0, errors.New("server sent a text message")
		}
	}
	n := copy(p, s.pending)
	s.pending = s.pending[n:]
	return n, nil
}

func (s *wsStream) Write(b []byte) (int, error) {
	if err := s.writeMessage(ws.OpBinary, b); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (s *wsStream) writeMessage(op ws.OpCode, b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	f := ws.MaskFrameInPlace(ws.NewFrame(op, true, append([]byte(nil), b...)))
	return ws.WriteFrame(s.Conn, f)
}

// TestTransportsSameChannel: devices on TCP, WebSocket, TLS and WebSocket
// over TLS (raw-protocol devices and SDK clients) all receive the same
// user channel: the same oplogs, in the same order, no duplicates.
func TestTransportsSameChannel(t *testing.T) {
	n, cert := startTransportsNode(t)
	a := n.Comet.Addrs()
	if a.WS == nil || a.TLS == nil || a.TLSWS == nil {
		t.Fatalf("listeners missing: %+v", a)
	}
	tok := n.token(t, "alice")
	ch := oplog.UserChannel("demo", "alice")

	tlsDev, err := tls.Dial("tcp", a.TLS.String(), cert.Client())
	if err != nil {
		t.Fatal(err)
	}
	devices := map[string]*device{
		"tcp": dial(t, n),
		"ws":  dialWSDevice(t, "ws://"+a.WS.String()+"/sub", nil),
		"wss": dialWSDevice(t, "wss://"+a.TLSWS.String()+"/sub", cert.Client()),
		"tls": func() *device { d := newDevice(t, tlsDev); go d.readLoop(); return d }(),
	}
	for name, d := range devices {
		if r := d.auth(tok, "raw-"+name, "demo"); r.User != "alice" {
			t.Fatalf("%s: auth reply %v", name, r)
		}
	}

	// SDK clients on every transport.
	sdkAddrs := map[string]string{
		"tcp": a.TCP.String(),
		"ws":  "ws://" + a.WS.String() + "/sub",
		"tls": "tls://" + a.TLS.String(),
		"wss": "wss://" + a.TLSWS.String(), // path defaults to /sub
	}
	got := map[string]*recorder[client.Oplog]{}
	var online sync.WaitGroup
	for name, addr := range sdkAddrs {
		g := &recorder[client.Oplog]{}
		online.Add(1)
		connected := sync.OnceFunc(online.Done)
		got[name] = g
		startSDK(t, addr, client.Options{
			TokenProvider: func(context.Context) (string, error) { return tok, nil },
			Device:        "sdk-" + name,
			TLSConfig:     cert.Client(),
			BackoffMin:    50 * time.Millisecond,
			BackoffMax:    200 * time.Millisecond,
			OnEvent: func(e client.Event) {
				if e.Kind == client.EventConnected {
					connected()
				}
			},
		}, map[string]client.Handler{"demo": oplogs(g)})
	}
	// Publish once every SDK session is up, so most oplogs travel as live
	// pushes rather than backlog pages.
	waitGroup(t, &online, "SDK clients connected")

	const total = 300
	payloads := publishConcurrently(t, n, "alice", 6, total/6)
	for name, d := range devices {
		d.waitGot(total, waitFor)
		checkInOrder(t, d, ch, 1, total, func(id uint64) string { return payloads[id] })
		t.Logf("%s raw device: %d oplogs in order", name, total)
	}
	for name, g := range got {
		testutil.Eventually(t, waitFor, 5*time.Millisecond, func() error {
			if n := len(g.all()); n < total {
				return fmt.Errorf("%s SDK: %d of %d oplogs", name, n, total)
			}
			return nil
		})
		ops := g.all()
		if len(ops) != total {
			t.Fatalf("%s SDK: %d oplogs, want %d", name, len(ops), total)
		}
		for i, op := range ops {
			if op.ID != uint64(i+1) || string(op.Payload) != payloads[op.ID] {
				t.Fatalf("%s SDK: position %d has id %d payload %q", name, i, op.ID, op.Payload)
			}
		}
	}
}

// TestTransportsBadInputOverWS: a malformed frame inside a binary message
// gets ERROR 4000 and a close, and the node keeps serving.
func TestTransportsBadInputOverWS(t *testing.T) {
	n, cert := startTransportsNode(t)
	a := n.Comet.Addrs()
	for _, tt := range []struct {
		name, url string
		cfg       *tls.Config
	}{
		{"ws", "ws://" + a.WS.String() + "/sub", nil},
		{"wss", "wss://" + a.TLSWS.String() + "/sub", cert.Client()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, br, _, err := ws.Dialer{TLSConfig: tt.cfg}.Dial(ctx, tt.url)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var r io.Reader = c
			if br != nil {
				r = io.MultiReader(br, c)
			}
			bad := append(binary.BigEndian.AppendUint32(nil, 3), []byte("garbage, not a header")...)
			if err := ws.WriteFrame(c, ws.MaskFrameInPlace(ws.NewBinaryFrame(bad))); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			h, err := ws.ReadHeader(r)
			if err != nil || h.OpCode != ws.OpBinary {
				t.Fatalf("want a binary message, got %v %v", h.OpCode, err)
			}
			p := make([]byte, h.Length)
			if _, err := io.ReadFull(r, p); err != nil {
				t.Fatal(err)
			}
			f, _, err := protocol.Decode(p, len(p))
			var e pb.Error
			if err != nil || f.Op != protocol.OpError || protocol.Unmarshal(f, &e) != nil || protocol.Code(e.Code) != protocol.CodeBadFrame {
				t.Fatalf("want ERROR 4000, got op %v code %d err %v", f.Op, e.Code, err)
			}
			if h, err = ws.ReadHeader(r); err != nil || h.OpCode != ws.OpClose {
				t.Fatalf("want close frame, got %v %v", h.OpCode, err)
			}
			if _, err := io.Copy(io.Discard, r); err != nil && !errors.Is(err, net.ErrClosed) {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatal("connection not closed after the close frame")
				}
			}
		})
	}
	// The node still serves WebSocket devices.
	d := dialWSDevice(t, "ws://"+a.WS.String()+"/sub", nil)
	d.auth(n.token(t, "bob"), "after", "demo")
	n.publish(t, toUser("bob", "still here"))
	if got := d.waitGot(1, waitFor); !bytes.Equal([]byte(got[0].Payload), []byte("still here")) {
		t.Fatalf("got %+v", got)
	}
}

func waitGroup(t *testing.T, wg *sync.WaitGroup, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatalf("timed out waiting for %s", what)
	}
}
