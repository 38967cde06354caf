package rocketmq

// The consumer's callback is tested directly here, as the client calls it
// from consumeMessageOrderly (an orderly context in ctx, the messages of one
// queue). consumer_scripted_test.go runs the real client end to end against
// the scripted name server and broker (pulls, locks, offsets), without -race.

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"

	"github.com/msync/msync/pkg/queue"
)

func newTestConsumer(t *testing.T, cfg Config) *Consumer {
	t.Helper()
	if cfg.NameServers == nil {
		cfg.NameServers = []string{"127.0.0.1:1"} // never dialled by the callback tests
	}
	if cfg.Topic == "" {
		cfg.Topic = "t1"
	}
	if cfg.Group == "" {
		cfg.Group = "msync_job"
	}
	cfg.Instance = uniqueInstance(t)
	c, err := NewConsumer(cfg)
	if err != nil {
		t.Fatalf("NewConsumer: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return c
}

// orderlyCtx is what consumeMessageOrderly passes to the callback.
func orderlyCtx() (context.Context, *primitive.ConsumeOrderlyContext) {
	oc := primitive.NewConsumeOrderlyContext()
	return primitive.WithOrderlyCtx(context.Background(), oc), oc
}

func ext(shardingKey, body string, reconsumed int32) *primitive.MessageExt {
	m := &primitive.MessageExt{Message: primitive.Message{Topic: "t1", Body: []byte(body),
		Queue: &primitive.MessageQueue{Topic: "t1", BrokerName: "b", QueueId: 3}}, ReconsumeTimes: reconsumed}
	if shardingKey != "" {
		m.WithShardingKey(shardingKey)
		m.WithKeys([]string{shardingKey})
	}
	return m
}

func TestCallbackSuccessMapsMessages(t *testing.T) {
	c := newTestConsumer(t, Config{})
	var got []queue.Message
	h := func(_ context.Context, msgs []queue.Message) error { got = append(got, msgs...); return nil }
	legacy := ext("", "from-another-producer", 0)
	legacy.WithKeys([]string{"only-keys"})
	ctx, oc := orderlyCtx()
	res := c.consume(ctx, h, []*primitive.MessageExt{ext("a/u/1", "one", 0), ext("a/u/1", "two", 0), legacy})
	if res != consumer.ConsumeSuccess {
		t.Fatalf("result %v, want ConsumeSuccess", res)
	}
	want := []queue.Message{{Key: "a/u/1", Value: []byte("one")}, {Key: "a/u/1", Value: []byte("two")}, {Key: "only-keys", Value: []byte("from-another-producer")}}
	if !slices.EqualFunc(got, want, func(a, b queue.Message) bool { return a.Key == b.Key && string(a.Value) == string(b.Value) }) {
		t.Fatalf("handler got %v, want %v", got, want)
	}
	if oc.SuspendCurrentQueueTimeMillis != -1 {
		t.Fatalf("success set a suspension of %dms", oc.SuspendCurrentQueueTimeMillis)
	}
}

// TestCallbackFailureSuspends: errors and panics suspend the queue (never
// ConsumeRetryLater, which would skip the messages in orderly mode) with a
// capped exponential backoff driven by the client's ReconsumeTimes.
func TestCallbackFailureSuspends(t *testing.T) {
	c := newTestConsumer(t, Config{MinBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second})
	for _, tt := range []struct {
		name       string
		reconsumed int32
		h          queue.Handler
		wantMillis int
	}{
		{"error first time", 0, func(context.Context, []queue.Message) error { return errors.New("comet down") }, 100},
		{"error second time", 1, func(context.Context, []queue.Message) error { return errors.New("comet down") }, 200},
		{"error fifth time", 4, func(context.Context, []queue.Message) error { return errors.New("comet down") }, 1600},
		{"error capped", 40, func(context.Context, []queue.Message) error { return errors.New("comet down") }, 5000},
		{"panic", 0, func(context.Context, []queue.Message) error { panic("boom") }, 100},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, oc := orderlyCtx()
			res := c.consume(ctx, tt.h, []*primitive.MessageExt{ext("k", "v", tt.reconsumed)})
			if res != consumer.SuspendCurrentQueueAMoment {
				t.Fatalf("result %v, want SuspendCurrentQueueAMoment (%v)", res, consumer.SuspendCurrentQueueAMoment)
			}
			if oc.SuspendCurrentQueueTimeMillis != tt.wantMillis {
				t.Fatalf("suspension %dms, want %dms", oc.SuspendCurrentQueueTimeMillis, tt.wantMillis)
			}
		})
	}
}

// TestCallbackRedeliveryLoop drives the callback the way the client's
// orderly loop does (a suspended batch comes back with ReconsumeTimes+1,
// nothing later is taken before it succeeds) and checks the handler sees
// every message in order despite failures.
func TestCallbackRedeliveryLoop(t *testing.T) {
	c := newTestConsumer(t, Config{MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond})
	var pending []*primitive.MessageExt
	for _, b := range []string{"1", "2", "3", "4", "5", "6", "7"} {
		pending = append(pending, ext("k", b, 0))
	}
	var seen []string
	calls := 0
	h := func(_ context.Context, msgs []queue.Message) error {
		calls++
		if calls%2 == 1 {
			return errors.New("every other call fails")
		}
		for _, m := range msgs {
			seen = append(seen, string(m.Value))
		}
		return nil
	}
	var suspensions []int
	for len(pending) > 0 {
		batch := pending[:min(3, len(pending))]
		ctx, oc := orderlyCtx()
		switch res := c.consume(ctx, h, batch); res {
		case consumer.ConsumeSuccess:
			pending = pending[len(batch):]
		case consumer.SuspendCurrentQueueAMoment:
			suspensions = append(suspensions, oc.SuspendCurrentQueueTimeMillis)
			for _, m := range batch {
				m.ReconsumeTimes++
			}
		default:
			t.Fatalf("unexpected result %v", res)
		}
	}
	if want := []string{"1", "2", "3", "4", "5", "6", "7"}; !slices.Equal(seen, want) {
		t.Fatalf("handler saw %v, want %v", seen, want)
	}
	if len(suspensions) != 3 {
		t.Fatalf("%d suspensions, want 3 (one per batch)", len(suspensions))
	}
}

func TestCallbackAfterShutdownDoesNotCallHandler(t *testing.T) {
	c := newTestConsumer(t, Config{})
	if err := c.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	called := false
	ctx, _ := orderlyCtx()
	res := c.consume(ctx, func(context.Context, []queue.Message) error { called = true; return nil }, []*primitive.MessageExt{ext("k", "v", 0)})
	if res != consumer.SuspendCurrentQueueAMoment || called {
		t.Fatalf("after Shutdown: result %v, handler called %v; want suspend without a call", res, called)
	}
	if err := c.Consume(func(context.Context, []queue.Message) error { return nil }); !errors.Is(err, queue.ErrClosed) {
		t.Fatalf("Consume after Shutdown = %v, want ErrClosed", err)
	}
	if err := c.Consume(nil); !errors.Is(err, ErrNilHandler) {
		t.Fatalf("Consume(nil) = %v", err)
	}
}

// TestShutdownWaitsForCallback: Shutdown waits for a handler call in flight,
// is bounded by ctx (and then cancels the handlers' context), and a later
// Shutdown succeeds once the handler returned.
func TestShutdownWaitsForCallback(t *testing.T) {
	c := newTestConsumer(t, Config{})
	started, release := make(chan struct{}), make(chan struct{})
	var handlerCtx context.Context
	var wg sync.WaitGroup
	wg.Go(func() {
		ctx, _ := orderlyCtx()
		c.consume(ctx, func(ctx context.Context, _ []queue.Message) error {
			handlerCtx = ctx
			close(started)
			<-release // ignores ctx: the worst case
			return nil
		}, []*primitive.MessageExt{ext("k", "v", 0)})
	})
	<-started
	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	if err := c.Shutdown(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a handler in flight = %v, want DeadlineExceeded", err)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Fatalf("Shutdown took %v with a 100ms context", took)
	}
	if handlerCtx.Err() == nil {
		t.Fatal("the handlers' context was not cancelled when Shutdown gave up")
	}
	res := make(chan error, 1)
	go func() { res <- c.Shutdown(context.Background()) }()
	select {
	case err := <-res:
		t.Fatalf("second Shutdown returned (%v) while the handler was in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	wg.Wait()
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("second Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the handler did")
	}
}
