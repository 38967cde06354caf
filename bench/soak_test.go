package bench_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/msync/msync/bench"
)

// TestSoakShort is `make soak` in small: msync all killed with SIGKILL three
// times under publishing while 60 SDK devices churn; every acknowledged
// oplog must reach every matching device's handlers once, in order. No
// timing is judged: the bounds only stop a hung run.
func TestSoakShort(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "msync")
	build := exec.Command("go", "build", "-o", exe, "../cmd/msync")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("go build: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r, err := bench.RunSoak(ctx, bench.SoakConfig{Exe: exe, Devices: 60, Oplogs: 5000, Kills: 3, Workers: 4, Batch: 50,
		MaxTime: 3 * time.Minute, Log: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("soak: %+v", *r)
	if !r.OK() || r.Kills != 3 || r.Oplogs < 5000 || r.Expected == 0 || r.Delivered < r.Expected ||
		r.SingleCalls == 0 || r.BatchCalls == 0 || r.DevicesOwnPoints == 0 || r.DevicesOwnPoints == r.Devices {
		t.Fatalf("soak: lost %d duplicated %d out of order %d altered %d, kills %d, oplogs %d, delivered %d of %d: %v",
			r.Lost, r.Duplicated, r.OutOfOrder, r.PayloadMismatch, r.Kills, r.Oplogs, r.Delivered, r.Expected, r.Problems)
	}
}
