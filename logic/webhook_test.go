package logic_test

import (
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/msync/msync/logic"
	"github.com/msync/msync/pkg/auth"
	"github.com/msync/msync/pkg/biz"
	"github.com/msync/msync/pkg/store"
)

const (
	hookSecret = "webhook-secret-0123456789"
	knownSig   = "f1769982edf184902c2040cf16499ffca0cc180bf51acc650981e75bfb2bde6d"
)

// hookReceiver is a real HTTP server standing for the business's webhook
// endpoint: it refuses every POST while down, and records every POST.
type hookReceiver struct {
	t    *testing.T
	srv  *httptest.Server
	down atomic.Bool

	mu       sync.Mutex
	attempts int
	badSigs  int
	keys     map[string]string // idempotency key -> body of its first POST
	got      map[string]uint64 // "channel device" -> highest upto delivered
	items    int
}

func newHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{t: t, keys: map[string]string{}, got: map[string]uint64{}}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookReceiver) serve(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(400)
		return
	}
	ts, sig, key := r.Header.Get(logic.HeaderWebhookTimestamp), r.Header.Get(logic.HeaderWebhookSignature), r.Header.Get(logic.HeaderIdempotencyKey)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.attempts++
	// The receiver's own check, as docs/http-api.md tells businesses to.
	if !hmac.Equal([]byte(sig), []byte(logic.WebhookSignature([]byte(hookSecret), ts, raw))) || r.Method != "POST" {
		h.badSigs++
		w.WriteHeader(401)
		return
	}
	var body struct {
		Biz            string `json:"biz"`
		IdempotencyKey string `json:"idempotency_key"`
		Receipts       []struct {
			Channel string `json:"channel"`
			Device  string `json:"device"`
			Upto    uint64 `json:"upto"`
			AckedAt string `json:"acked_at"`
		} `json:"receipts"`
	}
	if err := json.Unmarshal(raw, &body); err != nil || body.Biz != "hooked" || body.IdempotencyKey != key || len(body.Receipts) == 0 {
		h.t.Errorf("bad webhook POST (err %v): key %q body %s", err, key, raw)
		w.WriteHeader(400)
		return
	}
	if first, ok := h.keys[key]; ok && first != string(raw) {
		h.t.Errorf("idempotency key %s reused for another batch:\n%s\n%s", key, first, raw)
	}
	h.keys[key] = string(raw)
	if h.down.Load() {
		w.WriteHeader(503)
		return
	}
	for _, rc := range body.Receipts {
		if _, err := time.Parse(time.RFC3339Nano, rc.AckedAt); err != nil {
			h.t.Errorf("receipt acked_at %q: %v", rc.AckedAt, err)
		}
		k := rc.Channel + " " + rc.Device
		h.got[k] = max(h.got[k], rc.Upto)
	}
	h.items += len(body.Receipts)
	w.WriteHeader(204)
}

func (h *hookReceiver) snapshot() (attempts, badSigs, items int, got map[string]uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	got = make(map[string]uint64, len(h.got))
	for k, v := range h.got {
		got[k] = v
	}
	return h.attempts, h.badSigs, h.items, got
}

// hookedEnv is newEnv plus a biz "hooked" whose webhook is h.
func hookedEnv(t *testing.T, h *hookReceiver, batch int) *env {
	return newEnv(t, func(c *logic.Config) {
		specs := append(append([]biz.Spec(nil), testBizs...), biz.Spec{Name: "hooked",
			Webhook: &biz.WebhookSpec{URL: h.srv.URL + "/receipts", Secret: hookSecret, Batch: batch, MaxBackoff: "100ms", Timeout: "5s"}})
		bizs, err := biz.NewRegistry(specs)
		if err != nil {
			t.Fatal(err)
		}
		c.Bizs = bizs
		c.AckFeed = c.Owners.(store.AckFeed) // the Pebble store under the flaky wrapper
		c.WebhookPoll = 50 * time.Millisecond
	})
}

// TestWebhookReceiverDown: receipts acked while the receiver refuses every
// POST all arrive, signed, once it is back; acks never wait for it.
func TestWebhookReceiverDown(t *testing.T) {
	h := newHookReceiver(t)
	h.down.Store(true)
	e := hookedEnv(t, h, 4)
	want := map[string]uint64{}
	for u := range 3 {
		user := fmt.Sprintf("user%d", u)
		ch := "hooked/u/" + user
		for range 5 {
			e.publish(`{"biz":"hooked","user":"` + user + `","payload":"x"}`)
		}
		for d := range 4 {
			dev := fmt.Sprintf("%s-dev%d", user, d)
			for id := uint64(1); id <= uint64(2+d); id++ { // every step acked: the feed keeps the latest
				start := time.Now()
				e.ack(user, dev, ch, id)
				if el := time.Since(start); el > 2*time.Second {
					t.Errorf("an ack took %v while the webhook receiver is down", el)
				}
			}
			want[ch+" "+dev] = uint64(2 + d)
		}
	}
	// Not a receipt: another biz's ack.
	e.publish(`{"biz":"chat","user":"user0","payload":"x"}`)
	e.ack("user0", "user0-dev0", "chat/u/user0", 1)

	waitLong(t, "webhook retries while the receiver is down", func() bool {
		attempts, _, _, _ := h.snapshot()
		return attempts >= 3 && e.metric("msync_webhook_post_failures_total", map[string]string{"biz": "hooked"}) >= 3
	})
	if _, _, items, _ := h.snapshot(); items != 0 {
		t.Fatalf("%d receipts accepted while down", items)
	}
	if p := e.metric("msync_webhook_pending_receipts", map[string]string{"biz": "hooked"}); p < 1 || p > 4 {
		t.Fatalf("pending receipts while down = %v, want the one batch in memory (1..4)", p)
	}

	h.down.Store(false)
	waitLong(t, "every receipt delivered once the receiver is back", func() bool {
		_, _, _, got := h.snapshot()
		for k, v := range want {
			if got[k] != v {
				return false
			}
		}
		return true
	})
	// A new ack after the catch-up arrives too.
	e.ack("user1", "user1-dev0", "hooked/u/user1", 5)
	want["hooked/u/user1 user1-dev0"] = 5
	waitLong(t, "a receipt acked after the catch-up", func() bool {
		_, _, _, got := h.snapshot()
		return got["hooked/u/user1 user1-dev0"] == 5
	})
	_, badSigs, items, got := h.snapshot()
	if badSigs != 0 {
		t.Fatalf("%d POSTs with a bad signature", badSigs)
	}
	if len(got) != len(want) {
		t.Fatalf("receipts for %d (channel, device), want %d: %v", len(got), len(want), got)
	}
	if sent := e.metric("msync_webhook_receipts_sent_total", map[string]string{"biz": "hooked"}); sent != float64(items) || sent < float64(len(want)) {
		t.Fatalf("sent metric %v, receiver accepted %d items (want >= %d)", sent, items, len(want))
	}
	waitLong(t, "pending back to 0", func() bool {
		return e.metric("msync_webhook_pending_receipts", map[string]string{"biz": "hooked"}) == 0
	})
}

// TestWebhookSignatureChecked: a receiver with another secret refuses every
// POST, so the check in hookReceiver is a real one.
func TestWebhookSignatureChecked(t *testing.T) {
	body := []byte(`{"biz":"hooked"}`)
	good := logic.WebhookSignature([]byte(hookSecret), "1700000000", body)
	for _, bad := range []string{
		logic.WebhookSignature([]byte("another-secret-0123456789"), "1700000000", body),
		logic.WebhookSignature([]byte(hookSecret), "1700000001", body),
		logic.WebhookSignature([]byte(hookSecret), "1700000000", []byte(`{"biz":"hookeD"}`)),
	} {
		if bad == good {
			t.Fatalf("signature %s does not depend on secret, timestamp and body", good)
		}
	}
	// Known answer: HMAC-SHA256("k"*16, "1.{}") computed independently
	// (python3 -c 'import hmac,hashlib;print(hmac.new(b"k"*16,b"1.{}",hashlib.sha256).hexdigest())').
	if got := logic.WebhookSignature([]byte("kkkkkkkkkkkkkkkk"), "1", []byte("{}")); got != "v1="+knownSig {
		t.Fatalf("signature = %s, want v1=%s", got, knownSig)
	}
}

func TestWebhookNeedsAnAckFeed(t *testing.T) {
	bizs, err := biz.NewRegistry([]biz.Spec{{Name: "hooked", Webhook: &biz.WebhookSpec{URL: "http://127.0.0.1:1/", Secret: hookSecret}}})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, nil) // for its dependencies; e.st has only store.Store's methods
	_, err = logic.New(logic.Config{Store: e.st, Queue: e.q, Directory: e.dir, Bizs: bizs, Tokens: e.tokens,
		APIKeys: auth.NewAPIKeys(nil), Registerer: prometheus.NewRegistry()})
	if !errors.Is(err, logic.ErrInvalidConfig) {
		t.Fatalf("logic.New with a webhook and no ack feed = %v, want ErrInvalidConfig", err)
	}
}

// waitLong is waitFor with a bound for work behind retries and backoff on a
// loaded machine.
func waitLong(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
