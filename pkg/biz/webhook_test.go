package biz

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestWebhookDefaults(t *testing.T) {
	b, err := Parse(Spec{Name: "demo", Webhook: &WebhookSpec{URL: "https://biz.example/receipts", Secret: "0123456789abcdef"}})
	if err != nil {
		t.Fatal(err)
	}
	w := b.Webhook
	if w == nil || w.Batch != DefaultWebhookBatch || w.Timeout != DefaultWebhookTimeout || w.MaxBackoff != DefaultWebhookMaxBackoff ||
		string(w.Secret) != "0123456789abcdef" {
		t.Fatalf("webhook defaults: %+v", w)
	}
	if b, err := Parse(Spec{Name: "plain"}); err != nil || b.Webhook != nil {
		t.Fatalf("no webhook: %+v, %v", b.Webhook, err)
	}
	b, err = Parse(Spec{Name: "demo", Webhook: &WebhookSpec{URL: "http://127.0.0.1:9/r", Secret: "0123456789abcdef",
		Batch: 7, Timeout: "2s", MaxBackoff: "10s"}})
	if err != nil || b.Webhook.Batch != 7 || b.Webhook.Timeout != 2*time.Second || b.Webhook.MaxBackoff != 10*time.Second {
		t.Fatalf("webhook values: %+v, %v", b.Webhook, err)
	}
}

func TestWebhookAllProblemsAtOnce(t *testing.T) {
	_, err := Parse(Spec{Name: "demo", Webhook: &WebhookSpec{URL: "ftp://x", Secret: "short", Batch: 5000, Timeout: "soon", MaxBackoff: "2h"}})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{"url", "secret", "batch", "timeout", "max_backoff"} {
		if !strings.Contains(err.Error(), "webhook "+want) {
			t.Errorf("error %q does not mention webhook %s", err, want)
		}
	}
}
