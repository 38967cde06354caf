package e2e

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msync/msync/pkg/client"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

// Body compression (docs/protocol.md §18) through every tier: the Go SDK
// offers deflate, big oplogs and RPC answers arrive compressed and decode
// to the exact bytes, small ones stay plain, an old client that offers
// nothing gets plain frames, and a bomb from a client is refused with 4008.

// orderPayload is a realistic ~2 KB JSON oplog: an order with items.
func orderPayload(id int) string {
	items := make([]string, 0, 12)
	for i := range 12 {
		items = append(items, fmt.Sprintf(`{"sku":"SKU-%03d-%02d","name":"Organic green tea, 100 g","quantity":%d,"unit_price":"4.90","tax_rate":"0.07"}`, id, i, i%3+1))
	}
	return fmt.Sprintf(`{"type":"order.updated","order":{"id":"ord_%06d","status":"shipped","currency":"EUR","customer":{"id":"cus_1029","name":"Alice Martin","email":"alice.martin@example.com"},"items":[%s],"shipping":{"carrier":"DHL","tracking":"JD0146000062%08d","address":{"street":"12 Rue de Rivoli","city":"Paris","zip":"75001","country":"FR"}},"updated_at":"2026-12-03T16:32:10Z"}}`,
		id, strings.Join(items, ","), id)
}

func TestCompressionGoSDK(t *testing.T) {
	u := startRPCUpstream(t)
	n := startRPCNode(t, u)
	var mu sync.Mutex
	got := map[uint64][]byte{}
	c, err := client.New(n.Comet.Addr().String(), client.Options{
		TokenProvider: func(context.Context) (string, error) { return n.token(t, "zoe"), nil },
		Device:        "zoe-phone",
		BackoffMin:    10 * time.Millisecond,
		BackoffMax:    50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RegisterBiz("demo", func(_ context.Context, op client.Oplog) error {
		mu.Lock()
		got[op.ID] = bytes.Clone(op.Payload)
		mu.Unlock()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Shutdown(ctx)
	})
	eventually(t, 10*time.Second, "connected", c.Connected)
	payloadOf := func(id uint64) ([]byte, bool) {
		mu.Lock()
		defer mu.Unlock()
		p, ok := got[id]
		return p, ok
	}

	// Below the threshold: delivered plain.
	small := n.publish(t, toUser("zoe", `{"type":"chat","text":"hi"}`))
	eventually(t, 10*time.Second, "small oplog", func() bool { _, ok := payloadOf(small.ID); return ok })
	if st := c.CompressionStats(); st.FramesIn != 0 {
		t.Fatalf("a 27-byte oplog arrived compressed: %+v", st)
	}
	// A ~2 KB JSON oplog: compressed on the wire, the exact bytes in the handler.
	want := orderPayload(1)
	big := n.publish(t, toUser("zoe", want))
	eventually(t, 10*time.Second, "big oplog", func() bool { _, ok := payloadOf(big.ID); return ok })
	if p, _ := payloadOf(big.ID); string(p) != want {
		t.Fatalf("payload differs: %d bytes, want %d", len(p), len(want))
	}
	st := c.CompressionStats()
	if st.FramesIn != 1 || st.BytesInWire*2 > st.BytesInRaw {
		t.Fatalf("big oplog: %+v, want one frame at least halved", st)
	}
	if v := n.metric(t, "msync_comet_compressed_frames_total", map[string]string{"dir": "out"}); v != 1 {
		t.Fatalf("comet compressed frames out %v", v)
	}
	// RPC: a 2 KB request body goes compressed, its echo comes back compressed.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Call(ctx, "echo", "/big", []byte(want))
	if err != nil {
		t.Fatal(err)
	}
	var echo echoAnswer
	if err := json.Unmarshal(resp.Body, &echo); err != nil || echo.Body != want || echo.User != "zoe" {
		t.Fatalf("echo: %v, body %d bytes (want %d), user %q", err, len(echo.Body), len(want), echo.User)
	}
	st = c.CompressionStats()
	if st.FramesOut != 1 || st.FramesIn != 2 {
		t.Fatalf("after the call: %+v, want 1 frame out, 2 in", st)
	}
	if v := n.metric(t, "msync_comet_compressed_frames_total", map[string]string{"dir": "in"}); v != 1 {
		t.Fatalf("comet compressed frames in %v", v)
	}
	raw := n.metric(t, "msync_comet_compression_bytes_total", map[string]string{"dir": "out", "stage": "raw"})
	wire := n.metric(t, "msync_comet_compression_bytes_total", map[string]string{"dir": "out", "stage": "wire"})
	if raw <= 0 || wire <= 0 || wire >= raw/2 {
		t.Fatalf("comet bytes out raw %v wire %v", raw, wire)
	}
	t.Logf("2 KB JSON oplog + RPC: %d wire bytes for %d raw (%.0f%%)", st.BytesInWire, st.BytesInRaw, 100*float64(st.BytesInWire)/float64(st.BytesInRaw))
}

// An SDK with compression disabled, and a raw client that lists nothing (an
// old app), get plain frames for the same big oplog.
func TestCompressionOldClientGetsPlainFrames(t *testing.T) {
	n := startNode(t, "")
	d := dial(t, n)
	if r := d.auth(n.token(t, "old"), "old-phone", "demo"); r.Compression != "" {
		t.Fatalf("compression %q chosen for a client that offered none", r.Compression)
	}
	want := orderPayload(2)
	n.publish(t, toUser("old", want))
	// device.handle only understands plain SYNC frames: a compressed one
	// would land in d.other and never count as received.
	if got := d.waitGot(1, 10*time.Second); got[0].Payload != want {
		t.Fatalf("payload differs: %d bytes", len(got[0].Payload))
	}
	c, err := client.New(n.Comet.Addr().String(), client.Options{
		TokenProvider:      func(context.Context) (string, error) { return n.token(t, "old"), nil },
		Device:             "old-tablet",
		DisableCompression: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	_ = c.RegisterBiz("demo", func(_ context.Context, op client.Oplog) error {
		select {
		case done <- string(op.Payload):
		default:
		}
		return nil
	})
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Shutdown(ctx)
	}()
	select {
	case p := <-done:
		if p != want {
			t.Fatalf("SDK payload differs")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SDK without compression got nothing")
	}
	if st := c.CompressionStats(); st.FramesIn != 0 {
		t.Fatalf("compression disabled but %+v", st)
	}
	if v := n.metric(t, "msync_comet_compressed_frames_total", map[string]string{"dir": "out"}); v != 0 {
		t.Fatalf("comet compressed %v frames for clients that did not offer it", v)
	}
}

// A client that negotiated compression and sends a frame that inflates past
// the 64 KiB frame limit gets ERROR 4008 and is closed; a corrupt one 4000.
func TestCompressionBombFromClient(t *testing.T) {
	n := startNode(t, "")
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.BestCompression)
	_, _ = w.Write(make([]byte, 4<<20)) // 4 MiB of zeros in about 4 KiB
	_ = w.Close()
	for name, tc := range map[string]struct {
		body []byte
		code protocol.Code
	}{
		"bomb":    {buf.Bytes(), protocol.CodeInflateTooLarge},
		"corrupt": {[]byte{0xde, 0xad, 0xbe, 0xef}, protocol.CodeBadFrame},
	} {
		t.Run(name, func(t *testing.T) {
			d := dial(t, n)
			d.sendMsg(protocol.OpAuth, &pb.Auth{Token: n.token(t, "mallory"), Device: "mallory-" + name, Platform: "ios",
				Bizs: []string{"demo"}, Compression: []string{protocol.CompressionDeflate}})
			var r pb.AuthReply
			if err := protocol.Unmarshal(d.expect(protocol.OpAuthReply, 5*time.Second), &r); err != nil || r.Compression != protocol.CompressionDeflate {
				t.Fatalf("auth reply %v %v", &r, err)
			}
			d.send(protocol.OpHeartbeat|protocol.FlagCompressed, tc.body)
			d.expectError(tc.code, 5*time.Second)
			d.expectClosed(5 * time.Second)
		})
	}
	if v := n.metric(t, "msync_comet_inflate_refused_total", nil); v != 1 {
		t.Fatalf("inflate_refused %v", v)
	}
}
