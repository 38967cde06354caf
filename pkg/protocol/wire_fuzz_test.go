package protocol

import (
	"bytes"
	"errors"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/protocol/pb"
)

// clientBodies are the messages a client sends (and the server parses) and
// the server's replies the SDKs parse: every body an attacker on either side
// of a connection controls.
func clientBodies() []proto.Message {
	return []proto.Message{&pb.Auth{}, &pb.Ack{}, &pb.SyncReq{}, &pb.Heartbeat{}, &pb.Room{},
		&pb.AuthReply{}, &pb.HeartbeatReply{}, &pb.Sync{}, &pb.Push{}, &pb.Kick{}, &pb.Error{}}
}

// FuzzBodies decodes arbitrary bytes as every frame body. Whatever decodes
// must survive a round trip (marshal, unmarshal, equal), and every failure
// must be ErrBadBody.
func FuzzBodies(f *testing.F) {
	for _, m := range []proto.Message{
		&pb.Auth{Token: "t", Device: "d", Platform: "ios", AppVersion: "1.2", Bizs: []string{"chat"},
			Points: []*pb.ChannelPoint{{Channel: "chat/u/a", Id: 7}}, HeartbeatMs: 30000},
		&pb.Ack{Points: []*pb.ChannelPoint{{Channel: "chat/u/a", Id: 1 << 40}}},
		&pb.SyncReq{Points: []*pb.ChannelPoint{{Channel: "lock/d/x", Id: 0}}},
		&pb.Sync{Pages: []*pb.ChannelPage{{Channel: "chat/u/a", Biz: "chat", After: 1, Upto: 3, More: true, Skipped: 1, Live: true,
			Oplogs: []*pb.Oplog{{Id: 2, Payload: []byte("x"), CreatedMs: 5, ValidUntilMs: -1}}}}},
		&pb.Error{Code: 4000, Message: "bad"},
		&pb.Room{Room: "lobby"},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0x02, 0xff, 0xfe}) // invalid UTF-8 in a string field
	f.Add([]byte{0x32, 0x80})             // truncated length
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, m := range clientBodies() {
			err := Unmarshal(Frame{Op: OpAuth, Body: body}, m)
			if err != nil {
				if !errors.Is(err, ErrBadBody) {
					t.Fatalf("%T: error %v is not ErrBadBody", m, err)
				}
				continue
			}
			again, err := proto.Marshal(m)
			if err != nil {
				t.Fatalf("%T decoded but does not marshal: %v", m, err)
			}
			back := m.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(again, back); err != nil {
				t.Fatalf("%T: re-encoded body does not decode: %v", m, err)
			}
			if !proto.Equal(m, back) {
				t.Fatalf("%T: round trip changed the message:\n%v\n%v", m, m, back)
			}
		}
	})
}

// FuzzFrameRoundTrip: any op, seq and body encode to a frame that Decode
// returns unchanged, also when it arrives with trailing bytes; the header
// limit is enforced exactly at maxFrame.
func FuzzFrameRoundTrip(f *testing.F) {
	f.Add(uint32(OpSync), uint32(1), []byte("body"), []byte{})
	f.Add(uint32(99), uint32(0xffffffff), []byte{}, []byte{0, 0})
	f.Fuzz(func(t *testing.T, op, seq uint32, body, trailer []byte) {
		fr := AppendFrame(nil, Op(op), seq, body)
		got, n, err := Decode(append(fr, trailer...), len(fr))
		if err != nil || n != len(fr) || got.Op != Op(op) || got.Seq != seq || !bytes.Equal(got.Body, body) {
			t.Fatalf("decode(encode) = %+v, %d, %v", got, n, err)
		}
		if len(fr) > HeaderSize {
			if _, _, err := Decode(fr, len(fr)-1); !errors.Is(err, ErrFrameTooLarge) {
				t.Fatalf("a frame one byte over the limit: %v", err)
			}
		}
		if _, _, err := Decode(fr[:len(fr)-1], len(fr)); !errors.Is(err, ErrShortFrame) {
			t.Fatalf("a frame missing its last byte: %v", err)
		}
	})
}

// FuzzErrorFrame: an ERROR frame is always a decodable frame carrying the
// code, whatever text a caller puts in it (messages quote client input).
func FuzzErrorFrame(f *testing.F) {
	f.Add(uint32(1), uint32(CodeBadAuth), "bad device \"x\"")
	f.Add(uint32(0), uint32(CodeBadFrame), "\xff\xfe")
	f.Fuzz(func(t *testing.T, seq, code uint32, msg string) {
		fr := ErrorFrame(seq, Code(code), msg)
		got, n, err := Decode(fr, 1<<30)
		if err != nil || n != len(fr) || got.Op != OpError || got.Seq != seq {
			t.Fatalf("ErrorFrame(%d, %d, %q) = %x: %v", seq, code, msg, fr, err)
		}
		var e pb.Error
		if err := Unmarshal(got, &e); err != nil || e.Code != code {
			t.Fatalf("ERROR body %v: %v", &e, err)
		}
		if utf8.ValidString(msg) && e.Message != msg {
			t.Fatalf("message %q came back as %q", msg, e.Message)
		}
	})
}
