package client

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

// byteConn is a net.Conn whose reads come from a chunked byte stream and
// whose writes (pongs) are discarded.
type byteConn struct {
	net.Conn
	r io.Reader
}

func (c *byteConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *byteConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *byteConn) SetReadDeadline(time.Time) error  { return nil }
func (c *byteConn) SetWriteDeadline(time.Time) error { return nil }

// chunks serves b in pieces sized by cuts (1..256 each, cycling).
type chunks struct {
	b    []byte
	cuts []byte
	i    int
}

func (c *chunks) Read(p []byte) (int, error) {
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

const fuzzMaxFrame = 8192

// FuzzTCPReadFrame: the SDK's stream reader returns exactly the frames a
// buffer-based decode of the same bytes finds, however the stream is cut,
// and ends with an io error (peer gone, partial frame) or the protocol
// package's header errors.
func FuzzTCPReadFrame(f *testing.F) {
	sync1, _ := protocol.Encode(protocol.OpSync, 0, &pb.Sync{Pages: []*pb.ChannelPage{page(testChan, 0, 2, 1, 2)}})
	hb := protocol.AppendFrame(nil, protocol.OpHeartbeatReply, 3, []byte{8, 1})
	long := append(bytes.Clone(hb), 0, 0, 0, 0)
	long[3], long[5] = byte(len(long)), 20 // a 20-byte header
	f.Add(append(bytes.Clone(sync1), hb...), []byte{4, 0})
	f.Add(long, []byte{})
	f.Add([]byte{0x7f, 0xff, 0xff, 0xff, 0, 16, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0}, []byte{}) // 2 GiB announced
	f.Add(hb[:10], []byte{1})
	f.Fuzz(func(t *testing.T, in, cuts []byte) {
		tc := &tcpConn{c: &byteConn{r: &chunks{b: in, cuts: cuts}}, maxFrame: fuzzMaxFrame}
		tc.r = bufio.NewReaderSize(tc.c, 64)
		rest := in
		for {
			fr, err := tc.ReadFrame(time.Time{})
			want, n, werr := protocol.Decode(rest, fuzzMaxFrame)
			if errors.Is(werr, protocol.ErrShortFrame) {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("stream ends mid-frame: %v", err)
				}
				return
			}
			if werr != nil {
				if !errors.Is(err, protocol.ErrBadHeader) && !errors.Is(err, protocol.ErrFrameTooLarge) {
					t.Fatalf("bad header %x: reader says %v, decode %v", rest[:16], err, werr)
				}
				return
			}
			if err != nil || fr.Op != want.Op || fr.Seq != want.Seq || !bytes.Equal(fr.Body, want.Body) {
				t.Fatalf("got %v %d %x (%v), want %v %d %x", fr.Op, fr.Seq, fr.Body, err, want.Op, want.Seq, want.Body)
			}
			rest = rest[n:]
		}
	})
}

// wsServerFrame is one unmasked server frame.
func wsServerFrame(fin bool, op ws.OpCode, p []byte) []byte {
	var b bytes.Buffer
	_ = ws.WriteHeader(&b, ws.Header{Fin: fin, OpCode: op, Length: int64(len(p))})
	return append(b.Bytes(), p...)
}

// FuzzWSReadFrame: a well-formed message (the fuzzer's frame, fragmented
// where it says, with a ping in between) comes back exactly; whatever bytes
// follow never make the reader allocate past MaxFrame or return a frame
// that is not one whole, valid frame, and it fails only with ErrProtocol,
// the protocol package's errors or io errors.
func FuzzWSReadFrame(f *testing.F) {
	f.Add([]byte("body"), uint16(2), []byte{0x82, 0x7f, 0, 0, 0, 0, 0xff, 0, 0, 0}, []byte{3})
	f.Add([]byte{}, uint16(0), []byte{0x81, 0x02, 'h', 'i'}, []byte{})
	f.Add([]byte{1, 2, 3}, uint16(1), []byte{0x89, 0x7e, 0, 200}, []byte{})
	f.Add([]byte("x"), uint16(9), []byte{0x00, 0x01, 0x00}, []byte{0})
	f.Fuzz(func(t *testing.T, body []byte, split uint16, tail, cuts []byte) {
		fr := protocol.AppendFrame(nil, protocol.OpSync, 9, body)
		cut := int(split) % (len(fr) + 1)
		var in []byte
		if cut == 0 {
			in = wsServerFrame(true, ws.OpBinary, fr)
		} else {
			in = append(wsServerFrame(false, ws.OpBinary, fr[:cut]), wsServerFrame(true, ws.OpPing, []byte("p"))...)
			in = append(in, wsServerFrame(true, ws.OpContinuation, fr[cut:])...)
		}
		in = append(in, tail...)
		bc := &byteConn{r: &chunks{b: in, cuts: cuts}}
		w := &wsConn{c: bc, r: bufio.NewReaderSize(bc, 64), maxFrame: fuzzMaxFrame}
		got, err := w.ReadFrame(time.Time{})
		if len(fr) <= fuzzMaxFrame {
			if err != nil || got.Op != protocol.OpSync || got.Seq != 9 || !bytes.Equal(got.Body, body) {
				t.Fatalf("well-formed message: %v %d %x, %v", got.Op, got.Seq, got.Body, err)
			}
		} else if !errors.Is(err, protocol.ErrFrameTooLarge) {
			t.Fatalf("message of %d bytes over %d: %v", len(fr), fuzzMaxFrame, err)
		}
		for range 64 {
			got, err := w.ReadFrame(time.Time{})
			if err != nil {
				if !errors.Is(err, ErrProtocol) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) &&
					!errors.Is(err, protocol.ErrBadHeader) && !errors.Is(err, protocol.ErrFrameTooLarge) &&
					!errors.Is(err, protocol.ErrShortFrame) && !errors.Is(err, ws.ErrHeaderLengthMSB) &&
					!errors.Is(err, ws.ErrHeaderLengthUnexpected) {
					t.Fatalf("reader error %v (%T)", err, err)
				}
				return
			}
			if b := protocol.AppendFrame(nil, got.Op, got.Seq, got.Body); len(b) > fuzzMaxFrame {
				t.Fatalf("returned a frame of %d bytes over %d", len(b), fuzzMaxFrame)
			}
		}
	})
}

// refPages is the client rules of docs/protocol.md written out: per page in
// order, a gap (after > point) is skipped (a SYNC_REQ goes out), ids at or
// below the point are dropped, an id beyond upto ends the page, and the
// point ends at least at upto.
func refPages(point uint64, pages []*pb.ChannelPage) []uint64 {
	var out []uint64
	for _, p := range pages {
		if p.Channel != testChan || p.After > point {
			continue
		}
		for _, op := range p.Oplogs {
			if op.Id <= point {
				continue
			}
			if op.Id > p.Upto {
				break
			}
			out = append(out, op.Id)
			point = op.Id
		}
		point = max(point, p.Upto)
	}
	return out
}

// fuzzPages turns bytes into up to 32 pages with small, overlapping ids:
// per page after, upto, a flag byte (foreign channel, oplog count) and the
// ids.
func fuzzPages(b []byte) []*pb.ChannelPage {
	var pages []*pb.ChannelPage
	for len(b) >= 3 && len(pages) < 32 {
		after, upto, flags := uint64(b[0]%64), uint64(b[1]%64), b[2]
		b = b[3:]
		ch := testChan
		if flags&0x80 != 0 {
			ch = "chat/u/mallory"
		}
		n := min(int(flags&0x07), len(b))
		ids := make([]uint64, n)
		for i := range n {
			ids[i] = uint64(b[i] % 64)
		}
		b = b[n:]
		pages = append(pages, page(ch, after, upto, ids...))
	}
	return pages
}

// FuzzPages runs a real Client against a scripted server that sends
// fuzzer-made SYNC pages (gaps, duplicates, ids out of order or beyond
// their page, foreign channels, several pages per frame), then a final
// page the client must ACK. The handler must have been given exactly what
// the protocol's client rules say, in that order: never a duplicate, never
// out of order.
func FuzzPages(f *testing.F) {
	f.Add([]byte{0, 3, 3, 1, 2, 3, 3, 5, 2, 4, 5}, uint64(0), uint8(1))
	f.Add([]byte{0, 5, 3, 3, 1, 2, 0, 5, 3, 1, 2, 3}, uint64(0), uint8(2))    // out of order, then duplicates
	f.Add([]byte{9, 12, 2, 10, 11, 0, 2, 0x82, 1, 2}, uint64(0), uint8(1))    // gap; foreign channel
	f.Add([]byte{0, 4, 4, 1, 2, 9, 3, 4, 6, 0, 1, 5, 6}, uint64(2), uint8(3)) // id beyond upto; from 2
	f.Fuzz(func(t *testing.T, in []byte, from uint64, perFrame uint8) {
		from %= 8
		pages := fuzzPages(in)
		srv := newFakeServer(t)
		rec := &recorder{}
		startClient(t, srv, rec, nil, nil)
		fc := srv.accept()
		fc.handshake(from)
		k := int(perFrame%4) + 1
		for i := 0; i < len(pages); i += k {
			fc.sync(pages[i:min(i+k, len(pages))]...)
		}
		const final = 1 << 20
		fc.sync(page(testChan, 0, final, final))
		for {
			f, err := fc.read(waitFor)
			if err != nil {
				t.Fatalf("waiting for the final ACK: %v", err)
			}
			var a pb.Ack
			if f.Op == protocol.OpAck && protocol.Unmarshal(f, &a) == nil && len(a.Points) == 1 && a.Points[0].Id == final {
				break
			}
		}
		want := append(refPages(from, pages), final)
		if got := rec.ids(testChan); !slices.Equal(got, want) {
			t.Fatalf("handler got %v, want %v (from %d, pages %v)", got, want, from, pages)
		}
		if len(rec.ids("chat/u/mallory")) != 0 {
			t.Fatal("handler got a foreign channel's oplog")
		}
	})
}
