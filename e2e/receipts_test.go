package e2e

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msync/msync/logic"
	"github.com/msync/msync/pkg/client"
)

// Delivery receipts (docs/http-api.md "Delivery receipts") through the
// whole stack: a real device's ACKs, GET /v1/receipts and the biz's webhook
// on a real HTTP receiver, across a restart of msync while the receiver is
// down.

const receiptSecret = "receipt-hook-secret-0123"

type receiptHook struct {
	srv      *httptest.Server
	down     atomic.Bool
	attempts atomic.Int32

	mu      sync.Mutex
	badSigs int
	got     map[string]uint64 // "channel device" -> highest upto delivered
}

func startReceiptHook(t *testing.T) *receiptHook {
	h := &receiptHook{got: map[string]uint64{}}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.attempts.Add(1)
		raw, _ := io.ReadAll(r.Body)
		want := logic.WebhookSignature([]byte(receiptSecret), r.Header.Get("X-Msync-Timestamp"), raw)
		h.mu.Lock()
		defer h.mu.Unlock()
		if !hmac.Equal([]byte(r.Header.Get("X-Msync-Signature")), []byte(want)) {
			h.badSigs++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if h.down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var body struct {
			Receipts []struct {
				Channel, Device string
				Upto            uint64
			}
		}
		if err := json.Unmarshal(raw, &body); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		for _, rc := range body.Receipts {
			k := rc.Channel + " " + rc.Device
			h.got[k] = max(h.got[k], rc.Upto)
		}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *receiptHook) delivered(key string) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.got[key]
}

type receiptsAnswer struct {
	Acked, Pending []struct {
		Device  string
		Upto    uint64
		AckedAt string `json:"acked_at"`
	}
}

func (n *node) receipts(t *testing.T, query string) receiptsAnswer {
	t.Helper()
	var out receiptsAnswer
	if code := call(t, "GET", n.api()+"/v1/receipts?"+query, "test-key", nil, &out); code != 200 {
		t.Fatalf("GET /v1/receipts?%s = %d", query, code)
	}
	return out
}

func TestReceiptsAndWebhookEndToEnd(t *testing.T) {
	h := startReceiptHook(t)
	h.down.Store(true)
	cfg := testConfig + fmt.Sprintf(`  - name: hooked
    target: user
    webhook: {url: "%s/hook", secret: %s, batch: 10, max_backoff: 200ms}
`, h.srv.URL, receiptSecret)
	dir := t.TempDir()
	n := startNodeWith(t, cfg, dir)
	n.publish(t, map[string]any{"biz": "hooked", "user": "rita", "payload": "one"})
	n.publish(t, map[string]any{"biz": "hooked", "user": "rita", "payload": "two"})
	const q = "channel=hooked/u/rita&id=2"
	if r := n.receipts(t, q); len(r.Acked)+len(r.Pending) != 0 {
		t.Fatalf("receipts before any device connected: %+v", r)
	}

	// The device gets both oplogs, but its handler holds the second: it
	// is received, not acknowledged, so no receipt for id 2 yet (while it is
	// held, the comet's ack timeout may resync the session: the handler is
	// then called again for 2, which changes nothing here).
	got, release := make(chan uint64, 2), make(chan struct{})
	c, err := client.New(n.Comet.Addr().String(), client.Options{
		TokenProvider: func(context.Context) (string, error) { return n.token(t, "rita"), nil },
		Device:        "rita-phone", Platform: "ios", AppVersion: "1.0",
		BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RegisterBiz("hooked", func(ctx context.Context, op client.Oplog) error {
		select { // a held handler is called again after a resync: never block here
		case got <- op.ID:
		default:
		}
		if op.ID == 2 {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for want := uint64(1); want <= 2; want++ {
		select {
		case id := <-got:
			if id != want {
				t.Fatalf("device got oplog %d, want %d", id, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("device never got oplog %d", want)
		}
	}
	// The handler of 2 has not returned, so the SDK cannot have acked 2
	// (it may have acked 1, which is pending for id 2).
	if r := n.receipts(t, q); len(r.Acked) != 0 || (len(r.Pending) == 1 && r.Pending[0].Upto != 1) {
		t.Fatalf("oplog 2 has a receipt before its handler returned: %+v", r)
	}
	close(release)
	eventually(t, 30*time.Second, "the receipt of oplog 2", func() bool {
		r := n.receipts(t, q)
		return len(r.Acked) == 1 && r.Acked[0].Device == "rita-phone" && r.Acked[0].Upto == 2 && r.Acked[0].AckedAt != ""
	})

	// The webhook receiver is down: msync keeps retrying, and a restart of
	// msync loses nothing (the feed and its cursor are in the store).
	eventually(t, 30*time.Second, "webhook retries", func() bool { return h.attempts.Load() >= 2 })
	if v := h.delivered("hooked/u/rita rita-phone"); v != 0 {
		t.Fatalf("receipt delivered while the receiver is down: %d", v)
	}
	_ = c.Close()
	n.stop(t)
	n = startNodeWith(t, cfg, dir)
	h.down.Store(false)
	eventually(t, 30*time.Second, "the receipt delivered after the restart", func() bool {
		return h.delivered("hooked/u/rita rita-phone") == 2
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.badSigs != 0 {
		t.Fatalf("%d webhook POSTs with a bad signature", h.badSigs)
	}
}
