package comet

import (
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/msync/msync/pkg/protocol"
	wirepb "github.com/msync/msync/pkg/protocol/pb"
)

// BenchmarkSendFrame is session.send, the one encode point every SYNC, PUSH
// and RESPONSE passes: plain sessions and frames below the threshold must
// cost no allocation (a branch); a compressed ~2 KB JSON frame costs the
// deflate (docs/benchmarks.md).
func BenchmarkSendFrame(b *testing.B) {
	e := newEnv(b, func(cfg *Config, _ *fakeLogic) { cfg.Logger = slog.New(slog.DiscardHandler) })
	payload := `{"type":"order.updated","order":{"id":"ord_8f3a2c91","status":"shipped","items":[` +
		strings.Repeat(`{"sku":"SKU-AAA-01","name":"Organic green tea, 100 g","quantity":2,"unit_price":"4.90"},`, 17) + `{}]}}`
	for _, tc := range []struct {
		name     string
		payload  string
		compress bool
	}{
		{"plain-session/2KB", payload, false},
		{"compressed-session/60B", `{"type":"chat","text":"hi, see you at 8?"}`, true},
		{"compressed-session/2KB", payload, true},
	} {
		frame, err := protocol.Encode(protocol.OpSync, 0, &wirepb.Sync{Pages: []*wirepb.ChannelPage{{Channel: "demo/u/alice", Biz: "demo",
			After: 1, Upto: 2, Live: true, Oplogs: []*wirepb.Oplog{{Id: 2, Payload: []byte(tc.payload), CreatedMs: 1764779530000}}}}})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("%s/frame=%dB", tc.name, len(frame)), func(b *testing.B) {
			var syncs atomic.Int64
			cc := &countConn{id: 1, syncs: &syncs}
			s := newSession(e.c, cc, "k")
			cc.s = s
			s.phase, s.compress = phaseAuthed, tc.compress
			before := counterValue(b, e.c.metrics.zWireOut)
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			n := 0
			for b.Loop() {
				s.send(protocol.OpSync, frame)
				n++
			}
			b.ReportMetric((counterValue(b, e.c.metrics.zWireOut)-before)/float64(n), "wire-B/frame")
		})
	}
}
