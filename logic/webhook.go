package logic

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/msync/msync/pkg/biz"
	"github.com/msync/msync/pkg/store"
)

// Delivery receipt webhooks (docs/http-api.md, "Receipt webhooks").
//
// The ack path never waits for a webhook: Ack saves the sync points, which
// also appends them to the store's ack feed in the same write, and only
// wakes the senders (a non-blocking send). One sender per biz with a
// webhook reads the feed after its durable cursor, a batch at a time, POSTs
// it until the receiver answers 2xx (retrying with capped exponential
// backoff, never giving up), then saves the cursor past it. So the queue is
// the feed itself: it holds at most one entry per sync point (a point acked
// again moves to its end), a receiver that is down for hours loses nothing,
// and memory holds one batch per biz. A crash between a delivered POST and
// the cursor save sends that batch again: at least once, with the same
// Idempotency-Key when the batch read again is the same.

const (
	// webhookMinBackoff is the first retry's wait (capped by the biz's
	// max_backoff); each failure doubles it.
	webhookMinBackoff = 200 * time.Millisecond
	// webhookMaxResponse bounds what is read of a receiver's answer.
	webhookMaxResponse = 64 << 10
)

// Headers of a webhook POST.
const (
	HeaderWebhookSignature = "X-Msync-Signature"
	HeaderWebhookTimestamp = "X-Msync-Timestamp"
	HeaderIdempotencyKey   = "Idempotency-Key"
)

// WebhookSignature is the X-Msync-Signature value of a POST: "v1=" and the
// hex HMAC-SHA256, keyed by the biz's webhook secret, of the
// X-Msync-Timestamp value, a ".", and the body.
func WebhookSignature(secret []byte, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1=" + hex.EncodeToString(mac.Sum(nil))
}

// webhookBody is the JSON of one POST.
type webhookBody struct {
	Biz            string    `json:"biz"`
	IdempotencyKey string    `json:"idempotency_key"`
	Receipts       []receipt `json:"receipts"`
}

type webhookMetrics struct {
	sent, failures *prometheus.CounterVec
	pending, lag   *prometheus.GaugeVec
}

func newWebhookMetrics(reg prometheus.Registerer) (*webhookMetrics, error) {
	const ns, sub = "msync", "webhook"
	m := &webhookMetrics{
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "receipts_sent_total", Help: "Receipts delivered to the biz's webhook (answered 2xx)."}, []string{"biz"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "post_failures_total", Help: "Webhook POSTs that failed (error, timeout or non-2xx) and will be retried."}, []string{"biz"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "pending_receipts", Help: "Receipts read from the ack feed and not yet delivered (the batch being sent)."}, []string{"biz"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "lag_seconds", Help: "Age of the oldest undelivered receipt (0 when caught up)."}, []string{"biz"}),
	}
	for _, c := range []prometheus.Collector{m.sent, m.failures, m.pending, m.lag} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("logic: registering webhook metrics: %w", err)
		}
	}
	return m, nil
}

// webhooks owns one sender per biz with a webhook. A nil *webhooks (no biz
// has one) does nothing.
type webhooks struct {
	feed    store.AckFeed
	poll    time.Duration
	log     *slog.Logger
	m       *webhookMetrics
	senders []*webhookSender
}

type webhookSender struct {
	hooks  *webhooks
	biz    string
	cfg    *biz.Webhook
	client *http.Client
	// wake (capacity 1) is signalled by Ack; a full channel already holds
	// a wake-up, so the send is dropped, never blocking.
	wake chan struct{}
}

func newWebhooks(cfg Config, reg prometheus.Registerer) (*webhooks, error) {
	var withHook []*biz.Biz
	for _, b := range cfg.Bizs.All() {
		if b.Webhook != nil {
			withHook = append(withHook, b)
		}
	}
	if len(withHook) == 0 {
		return nil, nil
	}
	if cfg.AckFeed == nil {
		return nil, fmt.Errorf("%w: biz %q has a webhook, but the store keeps no ack feed (the embedded Pebble store does; the Cassandra one does not yet)",
			ErrInvalidConfig, withHook[0].Name)
	}
	if cfg.WebhookPoll < 0 {
		return nil, fmt.Errorf("%w: WebhookPoll %v: want > 0", ErrInvalidConfig, cfg.WebhookPoll)
	}
	m, err := newWebhookMetrics(reg)
	if err != nil {
		return nil, err
	}
	h := &webhooks{feed: cfg.AckFeed, poll: cfg.WebhookPoll, log: cfg.Logger, m: m}
	for _, b := range withHook {
		m.sent.WithLabelValues(b.Name)
		m.failures.WithLabelValues(b.Name)
		m.pending.WithLabelValues(b.Name)
		m.lag.WithLabelValues(b.Name)
		h.senders = append(h.senders, &webhookSender{hooks: h, biz: b.Name, cfg: b.Webhook,
			client: &http.Client{Timeout: b.Webhook.Timeout, Transport: &http.Transport{
				MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute, ResponseHeaderTimeout: b.Webhook.Timeout}},
			wake: make(chan struct{}, 1)})
	}
	return h, nil
}

// start runs the senders until ctx ends; wg owns them.
func (h *webhooks) start(ctx context.Context, wg *sync.WaitGroup) {
	if h == nil {
		return
	}
	for _, s := range h.senders {
		wg.Go(func() {
			defer s.client.CloseIdleConnections()
			s.run(ctx)
		})
	}
}

// notify wakes the senders after an ack was saved. It never blocks.
func (h *webhooks) notify() {
	if h == nil {
		return
	}
	for _, s := range h.senders {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

func (s *webhookSender) cursorName() string { return "webhook/" + s.biz }

func (s *webhookSender) run(ctx context.Context) {
	log := s.hooks.log.With("biz", s.biz, "webhook", s.cfg.URL)
	var cursor store.AckCursor
	for attempt := 0; ; attempt++ {
		c, err := s.hooks.feed.LoadAckCursor(ctx, s.cursorName())
		if err == nil {
			cursor = c
			break
		}
		log.Warn("webhook: loading the cursor failed", "err", err)
		if !s.sleep(ctx, attempt) {
			return
		}
	}
	poll := time.NewTicker(s.hooks.poll)
	defer poll.Stop()
	failures := 0 // consecutive failures of feed reads and cursor saves
	for ctx.Err() == nil {
		items, next, err := s.hooks.feed.AcksAfter(ctx, s.biz, cursor, s.cfg.Batch)
		if err != nil {
			log.Warn("webhook: reading the ack feed failed", "err", err)
			if failures++; !s.sleep(ctx, failures) {
				return
			}
			continue
		}
		if len(items) == 0 {
			failures = 0
			s.hooks.m.lag.WithLabelValues(s.biz).Set(0)
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
			case <-poll.C:
			}
			continue
		}
		receipts := make([]receipt, 0, len(items))
		for _, it := range items {
			if !strings.HasPrefix(it.Device, sharedDevicePrefix) {
				receipts = append(receipts, newReceipt(it, true))
			}
		}
		if len(receipts) > 0 && !s.deliver(ctx, log, cursor, next, receipts, items[0].AckedAt) {
			return // ctx ended
		}
		// The batch is delivered: move past it. A failed save resends it.
		if err := s.hooks.feed.SaveAckCursor(ctx, s.cursorName(), next); err != nil {
			log.Warn("webhook: saving the cursor failed (the batch may be sent again)", "err", err)
		}
		cursor = next
	}
}

// deliver POSTs one batch until a 2xx answer; false when ctx ended first.
func (s *webhookSender) deliver(ctx context.Context, log *slog.Logger, from, to store.AckCursor, receipts []receipt, oldest time.Time) bool {
	sum := sha256.Sum256([]byte(s.biz + "\x00" + string(from) + "\x00" + string(to)))
	key := hex.EncodeToString(sum[:16])
	body, err := json.Marshal(webhookBody{Biz: s.biz, IdempotencyKey: key, Receipts: receipts})
	if err != nil { // plain structs of strings and ints: cannot fail
		log.Error("webhook: encoding a batch", "err", err)
		return false
	}
	s.hooks.m.pending.WithLabelValues(s.biz).Set(float64(len(receipts)))
	defer s.hooks.m.pending.WithLabelValues(s.biz).Set(0)
	for attempt := 0; ; attempt++ {
		s.hooks.m.lag.WithLabelValues(s.biz).Set(time.Since(oldest).Seconds())
		err := s.post(ctx, key, body)
		if err == nil {
			s.hooks.m.sent.WithLabelValues(s.biz).Add(float64(len(receipts)))
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		s.hooks.m.failures.WithLabelValues(s.biz).Inc()
		log.Warn("webhook: POST failed, retrying", "receipts", len(receipts), "attempt", attempt+1, "err", err)
		if !s.sleep(ctx, attempt) {
			return false
		}
	}
}

func (s *webhookSender) post(ctx context.Context, key string, body []byte) error {
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "msync-webhook/1")
	req.Header.Set(HeaderIdempotencyKey, key)
	req.Header.Set(HeaderWebhookTimestamp, ts)
	req.Header.Set(HeaderWebhookSignature, WebhookSignature(s.cfg.Secret, ts, body))
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, webhookMaxResponse))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("receiver answered %s", resp.Status)
	}
	return nil
}

// sleep waits the backoff of a failed attempt (0-based): doubling from
// webhookMinBackoff, capped by max_backoff, with up to 25% jitter so the
// senders of many logic restarts do not retry in step. False if ctx ended.
func (s *webhookSender) sleep(ctx context.Context, attempt int) bool {
	d := min(webhookMinBackoff, s.cfg.MaxBackoff)
	for i := 0; i < attempt && d < s.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.cfg.MaxBackoff)
	d -= time.Duration(rand.Int64N(int64(d)/4 + 1))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
