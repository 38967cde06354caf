package memory

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/msync/msync/pkg/queue"
	"github.com/msync/msync/pkg/queue/queuetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newQueue(t *testing.T, cfg Config) *Queue {
	t.Helper()
	q, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := q.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return q
}

func TestConformance(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) (queue.Producer, queue.Consumer) {
		// Small buffers so senders really block on full partitions.
		q := newQueue(t, Config{Partitions: 8, Buffer: 64, MaxBatch: 16, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
		return q, q
	})
}

func TestConformanceDefaults(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) (queue.Producer, queue.Consumer) {
		q := newQueue(t, Config{})
		return q, q
	})
}

func TestConfigValidation(t *testing.T) {
	_, err := New(Config{Partitions: -1, Buffer: -2, MaxBatch: -3, MinBackoff: time.Second, MaxBackoff: time.Millisecond})
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("New = %v, want ErrInvalidConfig", err)
	}
	for _, want := range []string{"partitions", "buffer", "max batch", "backoff"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not list %q", err, want)
		}
	}
}

func TestSendBlocksWhileFullThenErrFull(t *testing.T) {
	q := newQueue(t, Config{Partitions: 1, Buffer: 2})
	ctx := context.Background()
	if err := q.Send(ctx, queue.Message{Key: "a"}, queue.Message{Key: "b"}); err != nil {
		t.Fatalf("Send to capacity: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err := q.Send(short, queue.Message{Key: "c"})
	if !errors.Is(err, queue.ErrFull) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send to a full queue = %v, want ErrFull wrapping DeadlineExceeded", err)
	}
	if n := q.Len(); n != 2 {
		t.Fatalf("Len = %d, want 2", n)
	}
	// A blocked Send proceeds as soon as the consumer makes room.
	got := make(chan string, 3)
	if err := q.Consume(func(_ context.Context, msgs []queue.Message) error {
		for _, m := range msgs {
			got <- m.Key
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := q.Send(ctx, queue.Message{Key: "c"}); err != nil {
		t.Fatalf("Send after room: %v", err)
	}
	var keys []string
	for range 3 {
		select {
		case k := <-got:
			keys = append(keys, k)
		case <-time.After(5 * time.Second):
			t.Fatalf("got %v, want 3 messages", keys)
		}
	}
	if !slices.Equal(keys, []string{"a", "b", "c"}) {
		t.Fatalf("delivered %v, want [a b c] (one partition keeps Send order)", keys)
	}
}

func TestShutdownUnblocksSendAndRejectsLater(t *testing.T) {
	q := newQueue(t, Config{Partitions: 1, Buffer: 1})
	if err := q.Send(context.Background(), queue.Message{Key: "a"}); err != nil {
		t.Fatal(err)
	}
	blocked := make(chan error, 1)
	go func() { blocked <- q.Send(context.Background(), queue.Message{Key: "b"}) }()
	if err := q.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-blocked:
		if !errors.Is(err, queue.ErrClosed) {
			t.Fatalf("blocked Send = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not unblock a Send")
	}
	if err := q.Send(context.Background(), queue.Message{Key: "c"}); !errors.Is(err, queue.ErrClosed) {
		t.Fatalf("Send after Shutdown = %v, want ErrClosed", err)
	}
	if err := q.Consume(func(context.Context, []queue.Message) error { return nil }); !errors.Is(err, queue.ErrClosed) {
		t.Fatalf("Consume after Shutdown = %v, want ErrClosed", err)
	}
	if err := q.Close(); err != nil {
		t.Fatalf("Close after Shutdown = %v", err)
	}
}

func TestConsumeTwice(t *testing.T) {
	q := newQueue(t, Config{})
	h := func(context.Context, []queue.Message) error { return nil }
	if err := q.Consume(nil); !errors.Is(err, ErrNilHandler) {
		t.Fatalf("Consume(nil) = %v", err)
	}
	if err := q.Consume(h); err != nil {
		t.Fatal(err)
	}
	if err := q.Consume(h); !errors.Is(err, ErrConsuming) {
		t.Fatalf("second Consume = %v, want ErrConsuming", err)
	}
}

// TestRedeliversSameBatch checks the memory-specific promise: the very same
// batch comes back after a failure (or a panic), bounded by MaxBatch.
func TestRedeliversSameBatch(t *testing.T) {
	q := newQueue(t, Config{Partitions: 1, MaxBatch: 3, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond})
	var msgs []queue.Message
	for _, k := range []string{"1", "2", "3", "4", "5"} {
		msgs = append(msgs, queue.Message{Key: "same", Value: []byte(k)})
	}
	// Everything is buffered before delivery starts, so batching is deterministic.
	if err := q.Send(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var calls [][]string
	done := make(chan struct{})
	if err := q.Consume(func(_ context.Context, b []queue.Message) error {
		var vals []string
		for _, m := range b {
			vals = append(vals, string(m.Value))
		}
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, vals)
		switch len(calls) {
		case 1:
			return errors.New("fail once")
		case 2:
			panic("and panic once")
		}
		if vals[len(vals)-1] == "5" {
			close(done)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("not all delivered")
	}
	mu.Lock()
	defer mu.Unlock()
	want := [][]string{{"1", "2", "3"}, {"1", "2", "3"}, {"1", "2", "3"}, {"4", "5"}}
	if !slices.EqualFunc(calls, want, slices.Equal[[]string]) {
		t.Fatalf("handler calls %v, want %v", calls, want)
	}
}
