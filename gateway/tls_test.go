package gateway_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/msync/msync/gateway"
	"github.com/msync/msync/internal/testcert"
	"github.com/msync/msync/pkg/protocol"
)

func newCert(t testing.TB) *testcert.Cert {
	t.Helper()
	c, err := testcert.New()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func startTLS(t testing.TB, cfg gateway.Config, h *testHandler) (*gateway.Server, *testcert.Cert) {
	t.Helper()
	cert := newCert(t)
	cfg.TLS = cert.Server
	cfg.TLSAddr, cfg.TLSWSAddr = "127.0.0.1:0", "127.0.0.1:0"
	return start(t, cfg, h), cert
}

func dialTLS(t testing.TB, s *gateway.Server, cert *testcert.Cert) net.Conn {
	t.Helper()
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cert.Client()}
	c, err := d.Dial("tcp", s.Addrs().TLS.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestTLSFramesBothWays(t *testing.T) {
	h := newHandler()
	h.onFrame = echo
	s, cert := startTLS(t, gateway.Config{}, h)

	c := dialTLS(t, s, cert)
	tc := recvOpen(t, h)
	w := wsDial(t, "wss://"+s.Addrs().TLSWS.String()+"/sub", cert.Client())
	wc := recvOpen(t, h)
	if tc.Transport() != "tls" || wc.Transport() != "wss" || tc.ID() == wc.ID() {
		t.Fatalf("transports %q/%q ids %d/%d", tc.Transport(), wc.Transport(), tc.ID(), wc.ID())
	}
	for i := uint32(1); i <= 20; i++ {
		body := bytes.Repeat([]byte{byte(i)}, int(i)*1000)
		send(t, c, protocol.AppendFrame(nil, protocol.OpHeartbeat, i, body))
		if f := mustReadFrame(t, c); f.Seq != i || !bytes.Equal(f.Body, body) {
			t.Fatalf("tls echo %d: seq %d len %d", i, f.Seq, len(f.Body))
		}
		w.sendFrame(t, protocol.OpHeartbeat, i, body)
		if f := w.readFrame(t); f.Seq != i || !bytes.Equal(f.Body, body) {
			t.Fatalf("wss echo %d: seq %d len %d", i, f.Seq, len(f.Body))
		}
	}
	// Pushes from another goroutine, batched by the drain.
	for i := 0; i < 100; i++ {
		if err := tc.Write(protocol.AppendFrame(nil, protocol.OpPush, uint32(i), []byte("push"))); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 100; i++ {
		if f := mustReadFrame(t, c); f.Op != protocol.OpPush || f.Seq != uint32(i) {
			t.Fatalf("push %d: op %s seq %d", i, f.Op, f.Seq)
		}
	}
	// wss bad input is handled like ws.
	w.sendWS(t, ws.OpText, true, []byte("hi"), false)
	w.expectErrorClose(t, protocol.CodeBadFrame, ws.StatusUnsupportedData)
}

func TestTLSBadFrame(t *testing.T) {
	h := newHandler()
	s, cert := startTLS(t, gateway.Config{MaxFrame: 1024}, h)
	for _, tt := range []struct {
		name string
		hdr  []byte
		code protocol.Code
	}{
		{"bad header length", header(16, 3, 1, protocol.OpHeartbeat, 9), protocol.CodeBadFrame},
		{"too large", header(4096, 16, 1, protocol.OpHeartbeat, 9), protocol.CodeFrameTooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialTLS(t, s, cert)
			recvOpen(t, h)
			send(t, c, tt.hdr)
			if e := expectError(t, c, 5*time.Second, tt.code); e == nil {
				t.Fatal("no error")
			}
			expectEOF(t, c)
			if e := recvClose(t, h, 5*time.Second); !errors.Is(e.err, gateway.ErrBadFrame) {
				t.Fatalf("OnClose %v", e.err)
			}
		})
	}
}

func TestTLSDeadlines(t *testing.T) {
	t.Run("handshake never starts", func(t *testing.T) {
		h := newHandler()
		s, _ := startTLS(t, gateway.Config{AuthTimeout: 200 * time.Millisecond, Tick: 50 * time.Millisecond}, h)
		c, err := net.Dial("tcp", s.Addrs().TLS.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		expectEOF(t, c)
		waitFor(t, 5*time.Second, "conn gone", func() bool { return s.Len() == 0 })
		if st := s.Stats(); st.Accepted != 0 || st.HandshakesFailed != 1 {
			t.Fatalf("accepted %d handshakes failed %d", st.Accepted, st.HandshakesFailed)
		}
	})
	t.Run("auth deadline after handshake", func(t *testing.T) {
		h := newHandler()
		s, cert := startTLS(t, gateway.Config{AuthTimeout: 200 * time.Millisecond, Tick: 50 * time.Millisecond}, h)
		c := dialTLS(t, s, cert)
		recvOpen(t, h)
		expectError(t, c, 5*time.Second, protocol.CodeAuthTimeout)
		expectEOF(t, c)
		if e := recvClose(t, h, 5*time.Second); !errors.Is(e.err, gateway.ErrDeadline) {
			t.Fatalf("OnClose %v", e.err)
		}
	})
	t.Run("slowloris", func(t *testing.T) {
		h := newHandler()
		s, cert := startTLS(t, gateway.Config{ReadTimeout: 200 * time.Millisecond}, h)
		c := dialTLS(t, s, cert)
		recvOpen(t, h)
		send(t, c, header(100, 16, 1, protocol.OpHeartbeat, 1)[:10])
		expectEOF(t, c)
		if e := recvClose(t, h, 5*time.Second); !errors.Is(e.err, gateway.ErrReadTimeout) {
			t.Fatalf("OnClose %v", e.err)
		}
	})
}

func TestTLSSlowConsumer(t *testing.T) {
	h := newHandler()
	s, cert := startTLS(t, gateway.Config{WriteQueueBytes: 64 << 10, WriteTimeout: 500 * time.Millisecond}, h)
	c := dialTLS(t, s, cert)
	_ = c // never read
	gc := recvOpen(t, h)
	frame := protocol.AppendFrame(nil, protocol.OpPush, 0, make([]byte, 8<<10))
	deadline := time.Now().Add(10 * time.Second)
	for gc.Write(append([]byte(nil), frame...)) == nil {
		if time.Now().After(deadline) {
			t.Fatal("writes never failed for a peer that does not read")
		}
		time.Sleep(time.Millisecond) // deliberate pacing while filling the peer's buffers
	}
	if e := recvClose(t, h, 10*time.Second); !errors.Is(e.err, gateway.ErrSlowConsumer) {
		t.Fatalf("OnClose %v, want ErrSlowConsumer", e.err)
	}
}

func TestTLSShutdown(t *testing.T) {
	h := newHandler()
	cert := newCert(t)
	s, err := gateway.New(gateway.Config{Addr: "127.0.0.1:0", TLS: cert.Server, TLSAddr: "127.0.0.1:0",
		TLSWSAddr: "127.0.0.1:0", Logger: testLogger(t)}, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	c := dialTLS(t, s, cert)
	recvOpen(t, h)
	w := wsDial(t, "wss://"+s.Addrs().TLSWS.String()+"/sub", cert.Client())
	recvOpen(t, h)
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(t.Context()) }()
	expectError(t, c, 5*time.Second, protocol.CodeServerShutdown)
	expectEOF(t, c)
	w.expectErrorClose(t, protocol.CodeServerShutdown, ws.StatusGoingAway)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	for _, a := range []net.Addr{s.Addrs().TLS, s.Addrs().TLSWS} {
		if c, err := net.DialTimeout("tcp", a.String(), time.Second); err == nil {
			c.Close()
			t.Fatalf("%s still accepts after Shutdown", a)
		}
	}
	h.check(t)
}
