package protocol

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/msync/msync/pkg/protocol/pb"
)

func BenchmarkEncodeSync(b *testing.B) {
	for _, size := range []int{64, 1024, 16 << 10} {
		msg := &pb.Sync{Pages: []*pb.ChannelPage{{Channel: "demo/u/alice", After: 9, Upto: 10, Live: true,
			Oplogs: []*pb.Oplog{{Id: 10, Payload: bytes.Repeat([]byte("x"), size), CreatedMs: 1}}}}}
		b.Run(fmt.Sprintf("msgSz=%db", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			buf := make([]byte, 0, 64<<10)
			for i := 0; i < b.N; i++ {
				var err error
				if buf, err = AppendMessage(buf[:0], OpSync, 0, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	frame, _ := Encode(OpAck, 1, &pb.Ack{Points: []*pb.ChannelPoint{{Channel: "demo/u/alice", Id: 10}}})
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	var ack pb.Ack
	for i := 0; i < b.N; i++ {
		f, _, err := Decode(frame, 0)
		if err != nil {
			b.Fatal(err)
		}
		if err := Unmarshal(f, &ack); err != nil {
			b.Fatal(err)
		}
	}
}
