package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/msync/msync/internal/testcert"
	"github.com/msync/msync/pkg/protocol"
)

// wsPeer is the server side of one WebSocket connection, driven by the test.
type wsPeer struct {
	t *testing.T
	c net.Conn
}

// listenWS accepts one WebSocket connection on path /sub (TLS when cert is
// set) and hands it to the test.
func listenWS(t *testing.T, cert *testcert.Cert) (addr string, peers chan *wsPeer) {
	t.Helper()
	var ln net.Listener
	var err error
	if cert != nil {
		ln, err = tls.Listen("tcp", "127.0.0.1:0", cert.Server)
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	peers = make(chan *wsPeer, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_ = c.SetDeadline(time.Now().Add(waitFor))
		u := ws.Upgrader{OnRequest: func(uri []byte) error {
			if string(uri) != "/sub" {
				return ws.RejectConnectionError(ws.RejectionStatus(404))
			}
			return nil
		}}
		if _, err := u.Upgrade(c); err != nil {
			_ = c.Close()
			return
		}
		peers <- &wsPeer{t: t, c: c}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		select {
		case p := <-peers:
			_ = p.c.Close()
		default:
		}
	})
	return ln.Addr().String(), peers
}

func (p *wsPeer) send(op ws.OpCode, fin bool, b []byte) {
	p.t.Helper()
	if err := ws.WriteFrame(p.c, ws.Frame{Header: ws.Header{Fin: fin, OpCode: op, Length: int64(len(b))}, Payload: b}); err != nil {
		p.t.Fatal(err)
	}
}

// readData reads the next client data message, failing on control frames
// other than those wanted.
func (p *wsPeer) readFrame(want ws.OpCode) []byte {
	p.t.Helper()
	h, err := ws.ReadHeader(p.c)
	if err != nil {
		p.t.Fatal(err)
	}
	if !h.Masked {
		p.t.Fatal("client frame not masked")
	}
	b := make([]byte, h.Length)
	if _, err := io.ReadFull(p.c, b); err != nil {
		p.t.Fatal(err)
	}
	ws.Cipher(b, h.Mask, 0)
	if h.OpCode != want || !h.Fin {
		p.t.Fatalf("client sent op %v fin %v, want %v", h.OpCode, h.Fin, want)
	}
	return b
}

func TestWSTransport(t *testing.T) {
	for _, secure := range []bool{false, true} {
		name, scheme := "ws", "ws"
		var cert *testcert.Cert
		var opts *tls.Config
		if secure {
			name, scheme = "wss", "wss"
			var err error
			if cert, err = testcert.New(); err != nil {
				t.Fatal(err)
			}
			opts = cert.Client()
		}
		t.Run(name, func(t *testing.T) {
			addr, peers := listenWS(t, cert)
			dial, target, err := parseAddr(scheme+"://"+addr, opts) // path defaults to /sub
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			fc, err := dial(ctx, target, 1024)
			if err != nil {
				t.Fatalf("dial %s: %v", target, err)
			}
			defer fc.Close()
			p := <-peers
			deadline := time.Now().Add(waitFor)

			// Client -> server: one frame per binary message, masked.
			frame := protocol.AppendFrame(nil, protocol.OpHeartbeat, 7, []byte("hi"))
			if err := fc.WriteFrame(frame, deadline); err != nil {
				t.Fatal(err)
			}
			if got := p.readFrame(ws.OpBinary); !bytes.Equal(got, frame) {
				t.Fatalf("server got %x, want %x", got, frame)
			}

			// Server -> client: a ping (answered), then a frame in two
			// fragments around a pong.
			p.send(ws.OpPing, true, []byte("pp"))
			push := protocol.AppendFrame(nil, protocol.OpPush, 9, []byte("payload"))
			p.send(ws.OpBinary, false, push[:10])
			p.send(ws.OpPong, true, nil)
			p.send(ws.OpContinuation, true, push[10:])
			f, err := fc.ReadFrame(deadline)
			if err != nil || f.Op != protocol.OpPush || f.Seq != 9 || string(f.Body) != "payload" {
				t.Fatalf("ReadFrame: %+v %v", f, err)
			}
			if got := p.readFrame(ws.OpPong); string(got) != "pp" {
				t.Fatalf("pong payload %q", got)
			}

			// Oversized message: refused before reading it.
			p.send(ws.OpBinary, true, make([]byte, 2000))
			if _, err := fc.ReadFrame(deadline); !errors.Is(err, protocol.ErrFrameTooLarge) {
				t.Fatalf("oversized: %v", err)
			}
		})
	}
}

func TestWSTransportServerClose(t *testing.T) {
	addr, peers := listenWS(t, nil)
	dial, target, err := parseAddr("ws://"+addr+"/sub", nil)
	if err != nil {
		t.Fatal(err)
	}
	fc, err := dial(context.Background(), target, 1024)
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	p := <-peers
	deadline := time.Now().Add(waitFor)
	p.send(ws.OpText, true, []byte("text"))
	if _, err := fc.ReadFrame(deadline); !errors.Is(err, ErrProtocol) {
		t.Fatalf("text message: %v, want ErrProtocol", err)
	}
	if err := wsutil.WriteServerMessage(p.c, ws.OpClose, ws.NewCloseFrameBody(ws.StatusGoingAway, "")); err != nil {
		t.Fatal(err)
	}
	if _, err := fc.ReadFrame(deadline); !errors.Is(err, io.EOF) {
		t.Fatalf("close frame: %v, want io.EOF", err)
	}
	// Close sends a close frame before closing the socket.
	_ = fc.Close()
	if got := p.readFrame(ws.OpClose); len(got) < 2 {
		t.Fatalf("close payload %x", got)
	}
}

func TestWSTransportBadPath(t *testing.T) {
	addr, _ := listenWS(t, nil)
	dial, target, err := parseAddr("ws://"+addr+"/nope", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dial(context.Background(), target, 1024); err == nil {
		t.Fatal("dial to a 404 path succeeded")
	}
}

// TestTLSTransport: tls:// checks the certificate against TLSConfig.
func TestTLSTransport(t *testing.T) {
	cert, err := testcert.New()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cert.Server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(waitFor))
				b := make([]byte, protocol.HeaderSize)
				if _, err := io.ReadFull(c, b); err != nil {
					got <- nil
					return
				}
				got <- b
				_, _ = c.Write(protocol.AppendFrame(nil, protocol.OpHeartbeatReply, 1, nil))
			}()
		}
	}()
	dial, target, err := parseAddr("tls://"+ln.Addr().String(), cert.Client())
	if err != nil {
		t.Fatal(err)
	}
	fc, err := dial(context.Background(), target, 1024)
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	frame := protocol.AppendFrame(nil, protocol.OpHeartbeat, 1, nil)
	if err := fc.WriteFrame(frame, time.Now().Add(waitFor)); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, frame) {
		t.Fatalf("server got %x", b)
	}
	if f, err := fc.ReadFrame(time.Now().Add(waitFor)); err != nil || f.Op != protocol.OpHeartbeatReply {
		t.Fatalf("ReadFrame %+v %v", f, err)
	}

	// Without the test CA the handshake fails: the system roots do not
	// trust a self-signed certificate.
	dial, target, _ = parseAddr("tls://"+ln.Addr().String(), nil)
	if _, err := dial(context.Background(), target, 1024); err == nil {
		t.Fatal("untrusted certificate accepted")
	}
	<-got // the server's failed read
}
