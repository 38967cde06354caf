package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/protocol/pb"
)

func TestRoundTrip(t *testing.T) {
	msg := &pb.Auth{Token: "t", Device: "d1", Bizs: []string{"demo"}, Points: []*pb.ChannelPoint{{Channel: "demo/u/a", Id: 7}}}
	b, err := Encode(OpAuth, 42, msg)
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.BigEndian.Uint32(b); int(got) != len(b) {
		t.Fatalf("length field %d, frame %d bytes", got, len(b))
	}
	f, n, err := Decode(b, 0)
	if err != nil || n != len(b) || f.Op != OpAuth || f.Seq != 42 {
		t.Fatalf("Decode = %+v %d %v", f, n, err)
	}
	var got pb.Auth
	if err := Unmarshal(f, &got); err != nil || !proto.Equal(&got, msg) {
		t.Fatalf("body = %v, %v", &got, err)
	}
}

func TestDecodeStream(t *testing.T) {
	var stream []byte
	for i := 0; i < 5; i++ {
		stream = AppendFrame(stream, OpHeartbeat, uint32(i), bytes.Repeat([]byte{byte(i)}, i))
	}
	for i := 0; i < 5; i++ {
		// Every strict prefix of the next frame is short, never an error.
		h, _ := ParseHeader(stream, 0)
		for cut := 0; cut < int(h.Length); cut++ {
			if _, _, err := Decode(stream[:cut], 0); !errors.Is(err, ErrShortFrame) {
				t.Fatalf("frame %d cut at %d: %v", i, cut, err)
			}
		}
		f, n, err := Decode(stream, 0)
		if err != nil || f.Seq != uint32(i) || len(f.Body) != i {
			t.Fatalf("frame %d: %+v %v", i, f, err)
		}
		stream = stream[n:]
	}
	if len(stream) != 0 {
		t.Fatalf("%d bytes left", len(stream))
	}
}

func TestBadHeaders(t *testing.T) {
	good := AppendFrame(nil, OpAck, 1, []byte("x"))
	mutate := func(f func(b []byte)) []byte { b := bytes.Clone(good); f(b); return b }
	tests := []struct {
		name string
		b    []byte
		max  int
		want error
	}{
		{"version", mutate(func(b []byte) { binary.BigEndian.PutUint16(b[6:], 9) }), 0, ErrBadHeader},
		{"header len small", mutate(func(b []byte) { binary.BigEndian.PutUint16(b[4:], 4) }), 0, ErrBadHeader},
		{"length below header", mutate(func(b []byte) { binary.BigEndian.PutUint32(b, 3) }), 0, ErrBadHeader},
		{"too large", mutate(func(b []byte) { binary.BigEndian.PutUint32(b, 1<<30) }), 0, ErrFrameTooLarge},
		{"over custom limit", good, HeaderSize, ErrFrameTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := Decode(tt.b, tt.max); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestLongerHeaderIsSkipped(t *testing.T) {
	// A future version may extend the header; version-1 readers skip the extra bytes.
	body := []byte("body")
	b := binary.BigEndian.AppendUint32(nil, uint32(HeaderSize+4+len(body)))
	b = binary.BigEndian.AppendUint16(b, HeaderSize+4)
	b = binary.BigEndian.AppendUint16(b, Version)
	b = binary.BigEndian.AppendUint32(b, uint32(OpPush))
	b = binary.BigEndian.AppendUint32(b, 9)
	b = append(append(b, 0, 0, 0, 0), body...)
	f, _, err := Decode(b, 0)
	if err != nil || string(f.Body) != "body" {
		t.Fatalf("%+v %v", f, err)
	}
}

func TestErrorFrameAndCodes(t *testing.T) {
	f, _, err := Decode(ErrorFrame(3, CodeFrameTooLarge, "too big"), 0)
	if err != nil || f.Op != OpError || f.Seq != 3 {
		t.Fatalf("%+v %v", f, err)
	}
	var e pb.Error
	if err := Unmarshal(f, &e); err != nil || Code(e.Code) != CodeFrameTooLarge || e.Message != "too big" {
		t.Fatalf("%v %v", &e, err)
	}
	if !CodeSlowConsumer.Reconnect() || CodeBadFrame.Reconnect() || !CodeTokenExpired.NeedsToken() || CodeKicked.NeedsToken() {
		t.Fatal("code classes")
	}
	if err := Unmarshal(Frame{Op: OpAuth, Body: []byte{0xff, 0xff}}, &pb.Auth{}); !errors.Is(err, ErrBadBody) {
		t.Fatalf("bad body: %v", err)
	}
	if OpSync.String() != "SYNC" || Op(99).Known() {
		t.Fatal("op names")
	}
}

func FuzzDecode(f *testing.F) {
	seed, _ := Encode(OpSync, 1, &pb.Sync{Pages: []*pb.ChannelPage{{Channel: "demo/u/a", After: 1, Upto: 2, Oplogs: []*pb.Oplog{{Id: 2, Payload: []byte("hi")}}}}})
	f.Add(seed)
	f.Add(append(AppendFrame(nil, OpHeartbeat, 1, nil), seed[:10]...))
	f.Add([]byte{0, 0, 0, 16, 0, 16, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		for len(b) > 0 {
			fr, n, err := Decode(b, 1<<16)
			if err != nil {
				return
			}
			if n < HeaderSize || n > len(b) || len(fr.Body) > n {
				t.Fatalf("n=%d len=%d body=%d", n, len(b), len(fr.Body))
			}
			// Bodies must never crash the decoders, whatever the op.
			_ = Unmarshal(fr, &pb.Sync{})
			_ = Unmarshal(fr, &pb.Auth{})
			b = b[n:]
		}
	})
}
