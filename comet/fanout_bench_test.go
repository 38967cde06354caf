package comet

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
	wirepb "github.com/msync/msync/pkg/protocol/pb"
)

// countConn is a Conn that only counts the SYNC frames written to it: the
// benchmark measures the comet's own work per delivery, without sockets.
type countConn struct {
	id     uint64
	syncs  *atomic.Int64
	s      *session
	closed atomic.Bool
}

func (c *countConn) ID() uint64         { return c.id }
func (c *countConn) RemoteAddr() string { return "10.0.0.1:1" }
func (c *countConn) Write(b []byte) error {
	if h, err := protocol.ParseHeader(b, 1<<30); err == nil && h.Op == protocol.OpSync {
		c.syncs.Add(1)
	}
	return nil
}
func (c *countConn) Close(_ []byte, reason error) {
	if c.closed.CompareAndSwap(false, true) {
		go c.s.onClose(reason) // like the gateway: once, from its own goroutine
	}
}
func (c *countConn) SetDeadline(time.Duration, protocol.Code) {}
func (c *countConn) SetAckDeadline(time.Duration)             {}
func (c *countConn) Queued() int                              { return 0 }
func (c *countConn) NotifyDrained()                           {}

// BenchmarkBroadcastFanout is one Broadcast of oplogs=%d global oplogs to
// 2,000 sessions, until every session wrote its SYNC frame; ns/session-round
// is the comet's cost per session and call (push, drain round, frame).
func BenchmarkBroadcastFanout(b *testing.B) {
	const sessions = 2000
	for _, k := range []int{1, 20} {
		b.Run(fmt.Sprintf("oplogs=%d", k), func(b *testing.B) {
			e := newEnv(b, func(cfg *Config, _ *fakeLogic) { cfg.Workers = 256; cfg.Logger = slog.New(slog.DiscardHandler) })
			var syncs atomic.Int64
			for i := range sessions {
				cc := &countConn{id: uint64(i + 1), syncs: &syncs}
				s := e.c.open(cc)
				cc.s = s
				auth, err := protocol.Encode(protocol.OpAuth, 1, &wirepb.Auth{Token: fmt.Sprintf("good-u%d", i), Device: fmt.Sprintf("d%d", i),
					Platform: "ios", AppVersion: "1.0", Bizs: []string{"news"}})
				if err != nil {
					b.Fatal(err)
				}
				f, _, _ := protocol.Decode(auth, 0)
				s.onFrame(f)
			}
			eventually(b, "sessions authenticated", func() bool { return len(e.c.global.sessions(newsGlobal)) == sessions })
			next := uint64(0)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ops := make([]*oplog.Oplog, k)
				for j := range ops {
					next++
					ops[j] = &oplog.Oplog{Channel: newsGlobal, Biz: "news", Id: next, Payload: []byte("1700000000000000000"), CreatedMs: 1}
				}
				want := syncs.Load() + sessions
				if _, err := e.c.Broadcast(context.Background(), &pb.BroadcastReq{Oplog: ops[0], Oplogs: ops[1:]}); err != nil {
					b.Fatal(err)
				}
				for syncs.Load() < want {
					time.Sleep(50 * time.Microsecond)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*sessions), "ns/session-round")
		})
	}
}
