package bench_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/msync/msync/bench"
)

// testLog sends the children's stderr to the test log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) { l.t.Logf("%s", p); return len(p), nil }

// TestSmoke builds msync and runs every scenario tiny against a child server:
// the tool works and nothing is lost. Figures are not judged here.
func TestSmoke(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "msync")
	build := exec.Command("go", "build", "-o", exe, "../cmd/msync")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("go build: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	common := bench.Common{Target: bench.Target{Exe: exe}, Procs: 2, Log: testLog{t}}

	t.Run("conns", func(t *testing.T) {
		r, err := bench.RunConns(ctx, bench.ConnsConfig{Common: common, N: 50, Window: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if r.Connected != 50 || r.ConnectRate <= 0 || r.RSSAfter == 0 || r.Drops != 0 {
			t.Fatalf("conns: %+v", r)
		}
	})
	t.Run("heartbeat-cluster", func(t *testing.T) {
		cc := common
		cc.Target.Comets = 2
		r, err := bench.RunHeartbeat(ctx, bench.HeartbeatConfig{Common: cc, N: 40, Interval: time.Second, Window: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if r.Connected != 40 || r.Comets != 2 || len(r.ServerProcs) != 3 || r.Drops != 0 || r.RSSAfter == 0 || r.ServerHeartbeats <= 0 {
			t.Fatalf("heartbeat cluster: %+v", r)
		}
		for _, p := range r.ServerProcs[1:] { // the comets: devices spread evenly
			if p.Sessions != 20 || p.RSSAfter == 0 {
				t.Fatalf("heartbeat cluster: comet %+v", p)
			}
		}
	})
	t.Run("publish", func(t *testing.T) {
		for _, batch := range []int{1, 20} {
			r, err := bench.RunPublish(ctx, bench.PublishConfig{Common: common, Rate: 400, Duration: time.Second, Devices: 20, Batch: batch, Workers: 4})
			if err != nil {
				t.Fatal(err)
			}
			if r.Published == 0 || r.Failed != 0 || r.Lost != 0 || r.Dups != 0 || r.P99 <= 0 {
				t.Fatalf("publish batch %d: %+v", batch, r)
			}
			t.Logf("publish batch %d: published %d lost %d p99 %.2fms", batch, r.Published, r.Lost, r.P99)
		}
	})
	t.Run("rpc", func(t *testing.T) {
		r, err := bench.RunRPC(ctx, bench.RPCConfig{Common: common, Rate: 200, Duration: time.Second, Devices: 3, Body: 100, Workers: 4})
		if err != nil {
			t.Fatal(err)
		}
		if r.DirectCalls != 200 || r.MsyncCalls != 200 || r.Errors != 0 || r.MsyncP99Ms <= 0 || r.DirectP99Ms <= 0 ||
			r.MaxMsyncPerSec <= 0 || r.MaxDirectPerSec <= 0 {
			t.Fatalf("rpc: %+v", r)
		}
	})
	t.Run("fanout", func(t *testing.T) {
		r, err := bench.RunFanout(ctx, bench.FanoutConfig{Common: common, N: 30, Msgs: 3})
		if err != nil {
			t.Fatal(err)
		}
		if r.Deliveries != 90 || r.Lost != 0 || r.Dups != 0 {
			t.Fatalf("fanout: %+v", r)
		}
	})
	t.Run("million-tiny", func(t *testing.T) {
		cc := common
		cc.Target.Comets = 2
		r, err := bench.RunMillion(ctx, bench.MillionConfig{Common: cc, N: 60, Hold: time.Second, Sample: 12, Heartbeat: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if r.Stopped != "" || r.Connected != 60 || r.Drops != 0 || r.SampleDelivered != 12 || r.SampleLost != 0 || r.SampleDups != 0 ||
			r.SessionsAtEnd != 60 || r.ServerHeartbeats <= 0 || r.ServerRSS == 0 || r.ClientRSS == 0 {
			t.Fatalf("million: %+v", r)
		}
	})
	t.Run("reconnect", func(t *testing.T) {
		r, err := bench.RunReconnect(ctx, bench.ReconnectConfig{Common: common, N: 20, Backlog: 30})
		if err != nil {
			t.Fatal(err)
		}
		if r.Published != 600 || r.Synced != 20 || r.Lost != 0 || r.Dups != 0 || r.SecondsToSynced <= 0 {
			t.Fatalf("reconnect: %+v", r)
		}
	})
}

// TestMillionMemoryCheck: the scenario refuses to start when the machine
// has too little free memory for the asked count, and says why.
func TestMillionMemoryCheck(t *testing.T) {
	cfg := bench.MillionConfig{N: 1_000_000, BytesPerSession: 20 << 10}
	err := bench.CheckMillionMemory(cfg, 16<<30, 4_000_000)
	if !errors.Is(err, bench.ErrConfig) || !strings.Contains(err.Error(), "MemAvailable is 16.0 GiB") {
		t.Fatalf("1M sessions with 16 GiB free: %v", err)
	}
	if err := bench.CheckMillionMemory(cfg, 40<<30, 4_000_000); err != nil {
		t.Fatalf("1M sessions with 40 GiB free: %v", err)
	}
	if err := bench.CheckMillionMemory(cfg, 40<<30, 1_000_000); !errors.Is(err, bench.ErrConfig) || !strings.Contains(err.Error(), "file-max") {
		t.Fatalf("1M sessions with file-max 1M: %v", err)
	}
}
