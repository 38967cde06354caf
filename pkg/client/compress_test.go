package client

import (
	"bytes"
	"compress/flate"
	"errors"
	"testing"

	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

// A comet that negotiated deflate: compressed pages are inflated and handled
// in order with plain ones; a page that inflates past MaxFrame (a bomb) or
// a compressed frame on a session that did not negotiate ends the session
// as a protocol error, and the client reconnects.

func rawDeflate(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.BestCompression)
	_, _ = w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func (fc *fakeConn) sendCompressed(op protocol.Op, m *pb.Sync) {
	fc.t.Helper()
	b, err := protocol.Encode(op, 0, m)
	if err != nil {
		fc.t.Fatal(err)
	}
	frame := protocol.AppendFrame(nil, op|protocol.FlagCompressed, 0, rawDeflate(fc.t, b[protocol.HeaderSize:]))
	if _, err := fc.c.Write(frame); err != nil {
		fc.t.Fatal(err)
	}
}

func (fc *fakeConn) handshakeCompressed(alg string) *pb.Auth {
	fc.t.Helper()
	a := fc.auth()
	fc.send(protocol.OpAuthReply, fc.seq, &pb.AuthReply{User: "alice", Session: "s1", HeartbeatMs: 60000,
		Channels: []*pb.ChannelInfo{{Biz: testBiz, Channel: testChan}}, Compression: alg})
	return a
}

func TestCompressedPagesInOrder(t *testing.T) {
	srv := newFakeServer(t)
	rec := &recorder{}
	c := startClient(t, srv, rec, nil, nil)
	fc := srv.accept()
	if a := fc.handshakeCompressed(protocol.CompressionDeflate); len(a.Compression) != 1 || a.Compression[0] != protocol.CompressionDeflate {
		t.Fatalf("AUTH offers %v, want [deflate]", a.Compression)
	}
	fc.sendCompressed(protocol.OpSync, &pb.Sync{Pages: []*pb.ChannelPage{page(testChan, 0, 2, 1, 2)}})
	fc.sync(page(testChan, 2, 3, 3))
	waitIDs(t, rec, testChan, 1, 2, 3)
	if st := c.CompressionStats(); st.FramesIn != 1 || st.BytesInRaw <= protocol.HeaderSize {
		t.Fatalf("stats %+v", st)
	}
}

func TestCompressedBombAndUnnegotiatedEndTheSession(t *testing.T) {
	for name, tc := range map[string]struct {
		alg     string
		body    func(t *testing.T) []byte
		disable bool
	}{
		"bomb":         {alg: protocol.CompressionDeflate, body: func(t *testing.T) []byte { return rawDeflate(t, make([]byte, 8<<20)) }},
		"corrupt":      {alg: protocol.CompressionDeflate, body: func(*testing.T) []byte { return []byte{0xde, 0xad} }},
		"unnegotiated": {alg: "", body: func(t *testing.T) []byte { return rawDeflate(t, []byte("x")) }},
		"disabled":     {alg: protocol.CompressionDeflate, disable: true, body: func(t *testing.T) []byte { return rawDeflate(t, []byte("x")) }},
	} {
		t.Run(name, func(t *testing.T) {
			srv := newFakeServer(t)
			rec := &recorder{}
			startClient(t, srv, rec, nil, func(o *Options) { o.MaxFrame = 1 << 20; o.DisableCompression = tc.disable })
			fc := srv.accept()
			a := fc.handshakeCompressed(tc.alg)
			if tc.disable && len(a.Compression) != 0 {
				t.Fatalf("DisableCompression but AUTH offers %v", a.Compression)
			}
			if _, err := fc.c.Write(protocol.AppendFrame(nil, protocol.OpSync|protocol.FlagCompressed, 0, tc.body(t))); err != nil {
				t.Fatal(err)
			}
			fc.expectClosed()
			e := rec.event(t, EventDisconnected, 1)
			if !errors.Is(e.Err, ErrProtocol) {
				t.Fatalf("disconnected with %v, want ErrProtocol", e.Err)
			}
			if name == "bomb" && !errors.Is(e.Err, protocol.ErrInflateTooLarge) {
				t.Fatalf("bomb: %v, want ErrInflateTooLarge", e.Err)
			}
			srv.accept() // it reconnects: a protocol error is not a 4xxx stop
		})
	}
}
