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

// BenchmarkCompressOplog is the cost of compressing one SYNC frame holding a
// realistic JSON oplog (orderJSON: about 2 KB), per level, and of inflating
// it on the device; docs/benchmarks.md records the bytes saved and the CPU.
func BenchmarkCompressOplog(b *testing.B) {
	frame := syncFrame(b, orderJSON(12))
	for _, level := range []int{1, 6, 9} {
		c, err := NewCompressor(0, level)
		if err != nil {
			b.Fatal(err)
		}
		z := c.Compress(frame)
		b.Run(fmt.Sprintf("deflate/level=%d", level), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				if c.Compress(frame) == nil {
					b.Fatal("not compressed")
				}
			}
			b.ReportMetric(float64(len(frame)), "raw-B/frame")
			b.ReportMetric(float64(len(z)), "wire-B/frame")
		})
		b.Run(fmt.Sprintf("inflate/level=%d", level), func(b *testing.B) {
			f, _, _ := Decode(z, 0)
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				if _, err := Inflate(f, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	c, _ := NewCompressor(0, 0)
	small := syncFrame(b, []byte(`{"type":"chat","text":"hi"}`))
	b.Run("below-threshold", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if c.Compress(small) != nil {
				b.Fatal("compressed")
			}
		}
	})
}
