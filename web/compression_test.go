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

// TestBrowserCompression runs the JS SDK inside headless Chromium (served by
// the demo page) against a real node: DecompressionStream("deflate-raw")
// is there, a ~2 KB JSON oplog arrives compressed and decodes to the exact
// text, a short one arrives plain.
func TestBrowserCompression(t *testing.T) {
	chrome := findChromium(t)
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
	base := "http://" + n.Logic.HTTPAddr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tb := launchChromium(t, chrome).openTab(t, ctx)
	tb.navigate(t, ctx, base+"/demo/")
	tb.waitString(t, ctx, "the demo page", `document.readyState === 'complete' ? 'yes' : ''`)
	res := tb.waitString(t, ctx, "the SDK receiving a compressed oplog", `(async () => {
	  try {
	    const { MsyncClient } = await import('./sdk/index.js');
	    const cfg = await (await fetch('config.json')).json();
	    const tok = (await (await fetch('token?user=chromez')).json()).token;
	    const got = new Map();
	    const c = new MsyncClient('ws://' + location.hostname + ':' + cfg.ws_port + cfg.ws_path, { tokenProvider: async () => tok, device: 'chromez-tab' });
	    c.registerBiz('demo', async (op) => { got.set(op.id, op.text); });
	    c.start();
	    const until = async (cond) => { for (let i = 0; i < 1000 && !cond(); i++) await new Promise((r) => setTimeout(r, 10)); if (!cond()) throw new Error('timeout'); };
	    await until(() => c.connected);
	    const publish = async (payload) => (await (await fetch('/v1/sync', { method: 'POST',
	      headers: { 'Content-Type': 'application/json', Authorization: 'Bearer dev-key' },
	      body: JSON.stringify({ biz: 'demo', user: 'chromez', payload }) })).json()).id;
	    const small = await publish('{"text":"hi"}');
	    await until(() => got.has(small));
	    const smallCompressed = c.compressionStats().framesIn;
	    const big = JSON.stringify({ order: 'ord_7', items: Array.from({ length: 24 }, (_, i) => ({ sku: 'SKU-7-' + i, name: 'Organic green tea, 100 g', quantity: i % 3 + 1 })) });
	    const id = await publish(big);
	    await until(() => got.has(id));
	    const st = c.compressionStats();
	    await c.close();
	    return JSON.stringify({ supported: typeof DecompressionStream === 'function', smallCompressed, exact: got.get(id) === big, ...st });
	  } catch (e) { return JSON.stringify({ error: String(e) }); }
	})()`)
	t.Logf("Chromium: %s", res)
	var r struct {
		Error           string `json:"error"`
		Supported       bool   `json:"supported"`
		SmallCompressed int    `json:"smallCompressed"`
		Exact           bool   `json:"exact"`
		FramesIn        int    `json:"framesIn"`
		BytesInWire     int    `json:"bytesInWire"`
		BytesInRaw      int    `json:"bytesInRaw"`
	}
	if err := json.Unmarshal([]byte(res), &r); err != nil {
		t.Fatalf("result %q: %v", res, err)
	}
	if r.Error != "" || !r.Supported || r.SmallCompressed != 0 || !r.Exact || r.FramesIn != 1 || r.BytesInWire*2 > r.BytesInRaw {
		t.Fatalf("Chromium: %+v", r)
	}
}
