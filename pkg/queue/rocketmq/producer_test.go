package rocketmq

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/pkg/queue"
)

var instanceSeq atomic.Int64

// uniqueInstance: the client caches its clients by IP and instance name in a
// process-wide map and refuses a second one with other name servers, so
// every test gets its own.
func uniqueInstance(t *testing.T) string {
	return fmt.Sprintf("test-%s-%d", strings.NewReplacer("/", "-").Replace(t.Name()), instanceSeq.Add(1))
}

func newTestProducer(t *testing.T, cfg Config) *Producer {
	t.Helper()
	if cfg.Group == "" {
		cfg.Group = "msync_job"
	}
	cfg.Instance = uniqueInstance(t)
	p, err := NewProducer(cfg)
	if err != nil {
		t.Fatalf("NewProducer: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return p
}

// wantQueue is the Go client's hash selector: FNV-1a of the sharding key
// modulo the queue count. (The Java client's SelectMessageQueueByHash uses
// String.hashCode, so Go and Java producers place a key differently: all
// producers of the push stream must be this package.)
func wantQueue(key string, queues int) int {
	h := fnv.New32a()
	h.Write([]byte(key))
	q := int(h.Sum32()) % queues
	if q < 0 {
		q = -q
	}
	return q
}

func TestProducerOnScriptedBroker(t *testing.T) {
	const topic, queues, keys, perKey = "msync_push", 8, 24, 12
	srv := startRemoting(t, topic, queues, nil)
	p := newTestProducer(t, Config{NameServers: []string{srv.nsAddr()}, Topic: topic, SendTimeout: 5 * time.Second})

	// Half the keys are sent by one goroutine each with single-message
	// Sends; the other half in multi-message Sends that interleave keys.
	ctx := context.Background()
	val := func(k, seq int) []byte { return fmt.Appendf(nil, "k%02d/%03d/body\x00\xff", k, seq) }
	key := func(k int) string { return fmt.Sprintf("chat/u/user-%02d", k) }
	var wg sync.WaitGroup
	errs := make(chan error, keys)
	for k := range keys / 2 {
		wg.Go(func() {
			for seq := 1; seq <= perKey; seq++ {
				if err := p.Send(ctx, queue.Message{Key: key(k), Value: val(k, seq)}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		for seq := 1; seq <= perKey; seq++ {
			var msgs []queue.Message
			for k := keys / 2; k < keys; k++ {
				msgs = append(msgs, queue.Message{Key: key(k), Value: val(k, seq)})
			}
			if err := p.Send(ctx, msgs...); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Send: %v", err)
	}

	reqs, sent := srv.snapshot()
	if len(sent) != keys*perKey {
		t.Fatalf("broker stored %d messages, want %d", len(sent), keys*perKey)
	}
	// Routing: the route was asked of the configured name server, never of
	// the broker, and sends went only to the broker the route named.
	var routeAsked bool
	for _, r := range reqs {
		switch {
		case r.Code == codeGetRouteInfo && r.Role == "namesrv" && r.ExtFields["topic"] == topic:
			routeAsked = true
		case r.Code == codeGetRouteInfo && r.Role == "broker":
			t.Errorf("route asked of the broker: %v", r.ExtFields)
		case (r.Code == codeSendMessage || r.Code == codeSendMessageV2 || r.Code == codeSendBatch) && r.Role != "broker":
			t.Errorf("send to the %s", r.Role)
		case r.Code == codeSendBatch:
			t.Errorf("a RocketMQ batch was sent: it would put several keys in one random queue")
		case r.Code == codeSendMessage && r.ExtFields["defaultTopicQueueNums"] != "4":
			// Config.Queues is capped at 4 because of this hard-coded value;
			// a client that sends another must revisit that limit.
			t.Errorf("send header defaultTopicQueueNums = %q, the documented v2.1.2 value is 4", r.ExtFields["defaultTopicQueueNums"])
		}
	}
	if !routeAsked {
		t.Fatal("the producer never asked the configured name server for the topic's route")
	}
	next := map[string]int{}    // key -> next seq expected
	queueOf := map[string]int{} // key -> queue it used
	usedQueues := map[int]bool{}
	for _, m := range sent {
		k := m.Properties["SHARDING_KEY"]
		if m.Topic != topic {
			t.Fatalf("message to topic %q, want %q", m.Topic, topic)
		}
		if m.Properties["KEYS"] != k {
			t.Errorf("KEYS %q, want the sharding key %q", m.Properties["KEYS"], k)
		}
		var kn, seq int
		if _, err := fmt.Sscanf(string(m.Body), "k%02d/%03d/", &kn, &seq); err != nil || k != key(kn) {
			t.Fatalf("body %q does not belong to sharding key %q", m.Body, k)
		}
		if string(m.Body) != string(val(kn, seq)) {
			t.Fatalf("body %q changed on the wire, want %q", m.Body, val(kn, seq))
		}
		if seq != next[k]+1 {
			t.Fatalf("key %s: seq %d arrived after %d: order per key broken", k, seq, next[k])
		}
		next[k] = seq
		if q, ok := queueOf[k]; ok && q != m.QueueID {
			t.Fatalf("key %s used queues %d and %d", k, q, m.QueueID)
		}
		queueOf[k] = m.QueueID
		usedQueues[m.QueueID] = true
		if want := wantQueue(k, queues); m.QueueID != want {
			t.Fatalf("key %s went to queue %d, the hash selector picks %d", k, m.QueueID, want)
		}
	}
	if len(usedQueues) < 4 {
		t.Fatalf("%d keys used only %d of %d queues: not spread by key", keys, len(usedQueues), queues)
	}
}

func TestProducerBoundedRetries(t *testing.T) {
	for _, tt := range []struct {
		name     string
		retries  int
		attempts int
	}{
		{"default", 0, 3},
		{"none", -1, 1},
		{"five", 5, 6},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// SYSTEM_ERROR is a code the client retries.
			srv := startRemoting(t, "t1", 4, func(sentMsg) (int, time.Duration) { return resSystemError, 0 })
			p := newTestProducer(t, Config{NameServers: []string{srv.nsAddr()}, Topic: "t1", Retries: tt.retries})
			err := p.Send(context.Background(), queue.Message{Key: "k", Value: []byte("v")})
			if !errors.Is(err, ErrSend) {
				t.Fatalf("Send = %v, want ErrSend", err)
			}
			reqs, _ := srv.snapshot()
			n := 0
			for _, r := range reqs {
				if r.Code == codeSendMessage || r.Code == codeSendMessageV2 {
					n++
				}
			}
			if n != tt.attempts {
				t.Fatalf("%d send attempts, want %d (1 + retries)", n, tt.attempts)
			}
		})
	}
}

// SYSTEM_BUSY (flow control) stores nothing: the producer backs off and
// resends until the broker accepts, within SendTimeout, and fails with
// ErrSend when the broker stays busy.
func TestProducerBrokerBusy(t *testing.T) {
	var busy atomic.Int32
	busy.Store(5) // refusals before the broker accepts
	srv := startRemoting(t, "t1", 4, func(sentMsg) (int, time.Duration) {
		if busy.Add(-1) >= 0 {
			return resSystemBusy, 0
		}
		return resSuccess, 0
	})
	p := newTestProducer(t, Config{NameServers: []string{srv.nsAddr()}, Topic: "t1", Retries: -1, SendTimeout: 5 * time.Second})
	if err := p.Send(context.Background(), queue.Message{Key: "k", Value: []byte("v")}); err != nil {
		t.Fatalf("Send after 5 busy answers = %v, want nil", err)
	}
	if _, sent := srv.snapshot(); len(sent) != 1 {
		t.Fatalf("%d messages stored, want 1", len(sent))
	}

	busy.Store(1 << 30) // busy for good
	p2 := newTestProducer(t, Config{NameServers: []string{srv.nsAddr()}, Topic: "t1", Retries: -1, SendTimeout: 300 * time.Millisecond})
	start := time.Now()
	err := p2.Send(context.Background(), queue.Message{Key: "k", Value: []byte("w")})
	// The last attempt may be cut by the timeout itself ("request timeout").
	if !errors.Is(err, ErrSend) {
		t.Fatalf("Send to a broker busy for good = %v, want ErrSend", err)
	}
	reqs, _ := srv.snapshot()
	attempts := 0
	for _, r := range reqs {
		if r.Code == codeSendMessage || r.Code == codeSendMessageV2 {
			attempts++
		}
	}
	if attempts < 6+2 { // 6 for the first Send, then at least 2 resends
		t.Fatalf("%d send attempts in all: the busy broker was not retried", attempts)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("Send took %v, want it bounded by SendTimeout (300ms)", el)
	}
}

func TestProducerSendTimeout(t *testing.T) {
	srv := startRemoting(t, "t1", 4, func(m sentMsg) (int, time.Duration) {
		if string(m.Body) == "slow" {
			return resSuccess, 2 * time.Second
		}
		return resSuccess, 0
	})
	p := newTestProducer(t, Config{NameServers: []string{srv.nsAddr()}, Topic: "t1", SendTimeout: 200 * time.Millisecond})
	// A fast Send works; on a loaded machine the first dial alone can take
	// longer than the 200ms SendTimeout, so it may take a few tries.
	testutil.Eventually(t, 30*time.Second, 10*time.Millisecond, func() error {
		if err := p.Send(context.Background(), queue.Message{Key: "a", Value: []byte("fast")}); err != nil {
			return fmt.Errorf("fast Send: %w", err)
		}
		return nil
	})
	began := time.Now()
	err := p.Send(context.Background(), queue.Message{Key: "a", Value: []byte("slow")})
	took := time.Since(began)
	if err == nil || !errors.Is(err, ErrSend) {
		t.Fatalf("slow Send = %v, want ErrSend", err)
	}
	if took > time.Second {
		t.Fatalf("slow Send took %v with a 200ms SendTimeout", took)
	}
}

// TestProducerMultiKeyFailure: a failing key stops its own later messages
// but the Send reports it; other keys are unaffected.
func TestProducerMultiKeyFailure(t *testing.T) {
	srv := startRemoting(t, "t1", 4, func(m sentMsg) (int, time.Duration) {
		if strings.HasPrefix(string(m.Body), "bad") {
			return resSystemError, 0
		}
		return resSuccess, 0
	})
	p := newTestProducer(t, Config{NameServers: []string{srv.nsAddr()}, Topic: "t1", Retries: -1})
	err := p.Send(context.Background(),
		queue.Message{Key: "good", Value: []byte("g1")},
		queue.Message{Key: "bad", Value: []byte("bad1")},
		queue.Message{Key: "bad", Value: []byte("b2")},
		queue.Message{Key: "good", Value: []byte("g2")},
	)
	if !errors.Is(err, ErrSend) || !strings.Contains(err.Error(), `key="bad"`) {
		t.Fatalf("Send = %v, want ErrSend naming key bad", err)
	}
	_, sent := srv.snapshot()
	for _, m := range sent {
		if string(m.Body) == "b2" {
			t.Fatal("a message after the failed one of the same key was stored: order broken")
		}
	}
}

func TestProducerUnknownTopicAndDeadNameServer(t *testing.T) {
	srv := startRemoting(t, "t1", 4, nil)
	p := newTestProducer(t, Config{NameServers: []string{srv.nsAddr()}, Topic: "other", SendTimeout: time.Second})
	if err := p.Send(context.Background(), queue.Message{Key: "k", Value: []byte("v")}); !errors.Is(err, ErrSend) {
		t.Fatalf("Send to a topic without route = %v, want ErrSend", err)
	}
	// A name server that refuses connections: a clear error, no fallback.
	dead := startRemoting(t, "t1", 4, nil)
	deadAddr := dead.nsAddr()
	dead.close()
	p2 := newTestProducer(t, Config{NameServers: []string{deadAddr}, Topic: "t1", SendTimeout: time.Second})
	began := time.Now()
	if err := p2.Send(context.Background(), queue.Message{Key: "k", Value: []byte("v")}); !errors.Is(err, ErrSend) {
		t.Fatalf("Send with a dead name server = %v, want ErrSend", err)
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Fatalf("Send with a dead name server took %v", took)
	}
}

func TestProducerShutdown(t *testing.T) {
	srv := startRemoting(t, "t1", 4, nil)
	p := newTestProducer(t, Config{NameServers: []string{srv.nsAddr()}, Topic: "t1"})
	ctx := context.Background()
	if err := p.Send(ctx, queue.Message{Key: "k", Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := p.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown #%d: %v", i+1, err)
		}
	}
	if err := p.Send(ctx, queue.Message{Key: "k", Value: []byte("v")}); !errors.Is(err, queue.ErrClosed) {
		t.Fatalf("Send after Shutdown = %v, want ErrClosed", err)
	}
}

func TestConfigValidation(t *testing.T) {
	_, err := NewProducer(Config{NameServers: []string{"nohost"}, Topic: "a b", Instance: "x@y", Retries: 17,
		MaxBatch: 2000, MinBackoff: time.Second, MaxBackoff: time.Millisecond, ConsumeFrom: "middle", Queues: -1})
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("NewProducer = %v, want ErrInvalidConfig", err)
	}
	for _, want := range []string{"name server", "Topic", "Group is required", "Instance", "Retries", "MaxBatch", "backoff", "ConsumeFrom", "Queues"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not list %q", err, want)
		}
	}
	if _, err := NewConsumer(Config{}); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "NameServers is required") {
		t.Fatalf("NewConsumer(zero) = %v", err)
	}
}
