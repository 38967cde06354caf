//go:build integration

package rocketmq

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/msync/msync/pkg/queue"
	"github.com/msync/msync/pkg/queue/queuetest"
)

// warmupKey marks the message newQueue sends to create the topic; the
// consumer wrapper drops it so the suite sees only its own messages.
const warmupKey = "__msync_warmup__"

// TestConformanceRealBroker runs the queue conformance suite against a real
// RocketMQ (4.x or 5.x, remoting protocol) named by MSYNC_ROCKETMQ_NAMESRV
// ("host:9876[;host:9876]"). Each subtest uses a fresh topic, created by
// the broker on first send, so the broker needs autoCreateTopicEnable=true.
func TestConformanceRealBroker(t *testing.T) {
	ns := os.Getenv("MSYNC_ROCKETMQ_NAMESRV")
	if ns == "" {
		t.Skip("MSYNC_ROCKETMQ_NAMESRV is not set: no RocketMQ name server to run the conformance suite against (e.g. MSYNC_ROCKETMQ_NAMESRV=127.0.0.1:9876 make test-integration)")
	}
	queuetest.Timeout = 60 * time.Second // a fresh topic's first rebalance takes seconds
	run := 0
	queuetest.Run(t, func(t *testing.T) (queue.Producer, queue.Consumer) {
		run++
		id := fmt.Sprintf("%d_%d", time.Now().UnixNano(), run)
		cfg := Config{
			NameServers: strings.Split(ns, ";"),
			Topic:       "msync_conformance_" + id,
			Group:       "msync_conformance_" + id,
			Instance:    "conformance-" + id,
			ConsumeFrom: "first",          // messages sent before the first rebalance must not be skipped
			SendTimeout: 10 * time.Second, // a cold broker on a loaded machine
			MinBackoff:  10 * time.Millisecond,
			MaxBackoff:  200 * time.Millisecond,
		}
		p, err := NewProducer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := p.Shutdown(ctx); err != nil {
				t.Errorf("producer Shutdown: %v", err)
			}
		})
		// The consumer's Start needs the topic's route: create the topic.
		warmup(t, p)
		c, err := NewConsumer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return p, dropWarmup{c}
	})
}

// dropWarmup hides the warm-up message from the suite's handler.
type dropWarmup struct{ queue.Consumer }

func (d dropWarmup) Consume(h queue.Handler) error {
	return d.Consumer.Consume(func(ctx context.Context, msgs []queue.Message) error {
		kept := msgs[:0:0]
		for _, m := range msgs {
			if m.Key != warmupKey {
				kept = append(kept, m)
			}
		}
		if len(kept) == 0 {
			return nil
		}
		return h(ctx, kept)
	})
}

// warmup sends the message that makes the broker create p's topic. On a
// freshly started broker (cold JIT, loaded CI machine) the first send of a
// new topic can outlast one send timeout ("request timeout" seen in CI), so
// it is retried for up to a minute.
func warmup(t *testing.T, p *Producer) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := p.Send(ctx, queue.Message{Key: warmupKey, Value: []byte("warmup")})
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("warm-up send (is autoCreateTopicEnable=true?): %v", err)
		}
		t.Logf("warm-up send: %v (retrying)", err)
		time.Sleep(time.Second)
	}
}
