package biz

import (
	"errors"
	"fmt"
	"net/url"
	"time"
)

// Webhook defaults and limits.
const (
	DefaultWebhookBatch      = 100
	MaxWebhookBatch          = 1000
	DefaultWebhookTimeout    = 5 * time.Second
	DefaultWebhookMaxBackoff = time.Minute
	// MinWebhookSecret is the shortest accepted secret, in bytes.
	MinWebhookSecret = 16
)

// WebhookSpec is a biz's delivery receipt webhook as written in a config
// file: logic POSTs batches of acknowledged sync points to URL.
type WebhookSpec struct {
	// URL receives the POSTs (http or https). Required.
	URL string `yaml:"url" json:"url"`
	// Secret keys the HMAC-SHA256 signature of every POST; at least 16 bytes.
	// Required.
	Secret string `yaml:"secret" json:"-"`
	// Batch is the most receipts in one POST. Zero means 100; at most 1000.
	Batch int `yaml:"batch" json:"batch"`
	// Timeout bounds one POST, like "5s". Empty means 5s.
	Timeout string `yaml:"timeout" json:"timeout"`
	// MaxBackoff caps the wait between retries of a failed POST, like "1m".
	// Empty means 1m.
	MaxBackoff string `yaml:"max_backoff" json:"max_backoff"`
}

// Webhook is a validated WebhookSpec.
type Webhook struct {
	URL        string
	Secret     []byte
	Batch      int
	Timeout    time.Duration
	MaxBackoff time.Duration
}

// parseWebhook validates s; nil means no webhook.
func parseWebhook(s *WebhookSpec) (*Webhook, error) {
	if s == nil {
		return nil, nil
	}
	var errs []error
	w := &Webhook{URL: s.URL, Secret: []byte(s.Secret), Batch: s.Batch,
		Timeout: DefaultWebhookTimeout, MaxBackoff: DefaultWebhookMaxBackoff}
	if u, err := url.Parse(s.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("webhook url %q: want an http or https URL", s.URL))
	}
	if len(s.Secret) < MinWebhookSecret {
		errs = append(errs, fmt.Errorf("webhook secret: want at least %d bytes", MinWebhookSecret))
	}
	if w.Batch == 0 {
		w.Batch = DefaultWebhookBatch
	}
	if w.Batch < 0 || w.Batch > MaxWebhookBatch {
		errs = append(errs, fmt.Errorf("webhook batch %d: want 1..%d", s.Batch, MaxWebhookBatch))
	}
	for _, d := range []struct {
		name, v string
		dst     *time.Duration
	}{{"timeout", s.Timeout, &w.Timeout}, {"max_backoff", s.MaxBackoff, &w.MaxBackoff}} {
		if d.v == "" {
			continue
		}
		v, err := ParseDuration(d.v)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("webhook %s: %w", d.name, err))
		case v <= 0 || v > time.Hour:
			errs = append(errs, fmt.Errorf("webhook %s %q: want more than 0 and at most 1h", d.name, d.v))
		default:
			*d.dst = v
		}
	}
	return w, errors.Join(errs...)
}
