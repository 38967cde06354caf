package comet

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/msync/msync/pkg/protocol"
	wirepb "github.com/msync/msync/pkg/protocol/pb"
)

// levelCounter counts log records at info and above.
type levelCounter struct {
	mu   sync.Mutex
	msgs []string
}

func (h *levelCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h *levelCounter) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.msgs = append(h.msgs, r.Message)
	h.mu.Unlock()
	return nil
}
func (h *levelCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *levelCounter) WithGroup(string) slog.Handler      { return h }

// TestFailedAuthLogsNothingAtInfo: a client failing AUTH over and over must
// not write a log line per attempt at info (it could flood the log); the
// attempts are counted in msync_comet_errors_total instead.
func TestFailedAuthLogsNothingAtInfo(t *testing.T) {
	lc := &levelCounter{}
	e := newEnv(t, func(cfg *Config, _ *fakeLogic) { cfg.Logger = slog.New(lc) })
	for range 20 {
		cl := e.dial()
		cl.sendMsg(protocol.OpAuth, &wirepb.Auth{Token: "forged", Device: "d"})
		cl.expectError(protocol.CodeTokenInvalid)
	}
	eventually(t, "sessions finished", func() bool { return e.c.live.Load() == 0 })
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if len(lc.msgs) > 0 {
		t.Fatalf("%d info lines for 20 failed AUTHs, first %q", len(lc.msgs), lc.msgs[0])
	}
	if v := counterValue(t, e.c.metrics.errors.WithLabelValues("2002")); v != 20 {
		t.Fatalf("errors_total{code=2002} = %v, want 20", v)
	}
}

func TestRateGCRA(t *testing.T) {
	r := newRate(10, 3) // 10/s, burst 3
	var tat int64
	now := int64(0)
	for i := range 3 {
		if !r.allow(&tat, now, 1) {
			t.Fatalf("token %d of the burst refused", i)
		}
	}
	if r.allow(&tat, now, 1) {
		t.Fatal("4th token at once allowed")
	}
	at := r.readyAt(tat)
	if r.allow(&tat, at-1, 1) || !r.allow(&tat, at, 1) {
		t.Fatalf("readyAt %d is not when the next token comes", at)
	}
	off := newRate(-1, 3)
	for range 100 {
		if !off.allow(&tat, 0, 1) {
			t.Fatal("a negative rate must not limit")
		}
	}
}
