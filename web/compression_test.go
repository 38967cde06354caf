//go:build unix

package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/msync/msync/internal/cluster"
	"github.com/msync/msync/pkg/config"
)

// TestJSCompressionRealServer runs the JS SDK in Node.js (its WebSocket and
// DecompressionStream, the same APIs browsers have) against a real node:
// a small oplog arrives plain, a ~2 KB JSON oplog compressed and exact, and
// a bomb a client sends is refused with ERROR 4008 (docs/protocol.md §18).
func TestJSCompressionRealServer(t *testing.T) {
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found in PATH: the JS SDK tests need Node.js >= 20 (apt-get install nodejs)")
	}
	f, err := config.Parse([]byte(browserConfig))
	if err != nil {
		t.Fatal(err)
	}
	n, err := cluster.Start(cluster.Config{File: f, DataDir: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("node shutdown: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	script := filepath.Join("..", "sdk", "js", "test", "live", "compression.mjs")
	cmd := exec.CommandContext(ctx, nodeBin, "--experimental-websocket", "--no-warnings", script,
		"http://"+n.Logic.HTTPAddr().String(), fmt.Sprintf("ws://%s/sub", n.Comet.Addrs().WS), "dev-key")
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", script, err, out)
	}
	var r struct {
		SmallCompressed int  `json:"smallCompressed"`
		BigExact        bool `json:"bigExact"`
		Stats           struct {
			FramesIn    int `json:"framesIn"`
			BytesInWire int `json:"bytesInWire"`
			BytesInRaw  int `json:"bytesInRaw"`
		} `json:"stats"`
		RawChosen string `json:"rawChosen"`
		BombCode  int    `json:"bombCode"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("script output %q: %v", out, err)
	}
	t.Logf("JS SDK: %s", out)
	switch {
	case r.SmallCompressed != 0:
		t.Fatalf("a small oplog arrived compressed")
	case !r.BigExact || r.Stats.FramesIn != 1 || r.Stats.BytesInWire*2 > r.Stats.BytesInRaw:
		t.Fatalf("big oplog: exact %v, stats %+v", r.BigExact, r.Stats)
	case r.RawChosen != "deflate" || r.BombCode != 4008:
		t.Fatalf("bomb: chosen %q, code %d, want deflate and 4008", r.RawChosen, r.BombCode)
	}
}
