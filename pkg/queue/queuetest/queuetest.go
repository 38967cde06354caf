package queuetest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msync/msync/pkg/queue"
)

// NewQueue returns a fresh, empty queue (for a broker: a new topic or
// consumer group) as its producer and consumer sides. The suite calls the
// consumer's Shutdown; anything else (a separate producer, a connection) the
// function must release with t.Cleanup.
type NewQueue func(t *testing.T) (queue.Producer, queue.Consumer)

// Timeout bounds every wait in the suite; brokers are slower than memory.
var Timeout = 30 * time.Second

// Run runs the conformance suite as subtests of t.
func Run(t *testing.T, newQueue NewQueue) {
	t.Run("OrderPerKey", func(t *testing.T) { testOrderPerKey(t, newQueue) })
	t.Run("AtLeastOnceWithHandlerErrors", func(t *testing.T) { testAtLeastOnce(t, newQueue) })
	t.Run("ShutdownWaitsForInFlight", func(t *testing.T) { testShutdownWaits(t, newQueue) })
	t.Run("ShutdownBoundedByContext", func(t *testing.T) { testShutdownBounded(t, newQueue) })
	t.Run("ShutdownIdempotent", func(t *testing.T) { testShutdownIdempotent(t, newQueue) })
}

func start(t *testing.T, newQueue NewQueue, h queue.Handler) queue.Producer {
	t.Helper()
	p, c := newQueue(t)
	if err := c.Consume(h); err != nil {
		t.Fatalf("Consume: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		defer cancel()
		if err := c.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return p
}

// waitFor polls cond until it holds or Timeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", Timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recorder checks order per (key, sender) under at-least-once delivery: each
// sender sends seq 1, 2, 3 ... per key, so a received seq may repeat an old
// one (redelivery) but must never jump ahead of last+1 (loss or reorder).
type recorder struct {
	mu        sync.Mutex
	last      map[string]int // key + "|" + sender -> highest seq in order
	unique    int
	dups      int
	violation []string
}

func newRecorder() *recorder { return &recorder{last: make(map[string]int)} }

func value(sender, seq int) []byte { return []byte(strconv.Itoa(sender) + "/" + strconv.Itoa(seq)) }

func (r *recorder) record(m queue.Message) {
	s, q, ok := strings.Cut(string(m.Value), "/")
	seq, err := strconv.Atoi(q)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !ok || err != nil {
		r.violation = append(r.violation, fmt.Sprintf("key %q: garbled value %q", m.Key, m.Value))
		return
	}
	k := m.Key + "|" + s
	switch last := r.last[k]; {
	case seq == last+1:
		r.last[k] = seq
		r.unique++
	case seq <= last:
		r.dups++
	default:
		r.violation = append(r.violation, fmt.Sprintf("key %q sender %s: got seq %d after %d", m.Key, s, seq, last))
	}
}

func (r *recorder) counts() (unique, dups int, violations []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unique, r.dups, append([]string(nil), r.violation...)
}

// send has `senders` goroutines each send seq 1..perKey for every key, half
// of the rounds as one multi-message Send and half as single Sends, so keys
// interleave within and across calls.
func send(t *testing.T, p queue.Producer, senders, keys, perKey int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for s := range senders {
		wg.Go(func() {
			for seq := 1; seq <= perKey; seq++ {
				msgs := make([]queue.Message, keys)
				for k := range keys {
					msgs[k] = queue.Message{Key: fmt.Sprintf("key-%03d", k), Value: value(s, seq)}
				}
				if seq%2 == 0 {
					if err := p.Send(ctx, msgs...); err != nil {
						errs <- fmt.Errorf("sender %d seq %d: %w", s, seq, err)
						return
					}
					continue
				}
				for _, m := range msgs {
					if err := p.Send(ctx, m); err != nil {
						errs <- fmt.Errorf("sender %d seq %d: %w", s, seq, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Send: %v", err)
	}
}

func testOrderPerKey(t *testing.T, newQueue NewQueue) {
	const senders, keys, perKey = 4, 48, 40
	rec := newRecorder()
	p := start(t, newQueue, func(_ context.Context, msgs []queue.Message) error {
		for _, m := range msgs {
			rec.record(m)
		}
		return nil
	})
	send(t, p, senders, keys, perKey)
	waitFor(t, "every message", func() bool {
		u, _, v := rec.counts()
		return u == senders*keys*perKey || len(v) > 0
	})
	if _, _, v := rec.counts(); len(v) > 0 {
		t.Fatalf("order violated (%d), first: %s", len(v), v[0])
	}
}

func testAtLeastOnce(t *testing.T, newQueue NewQueue) {
	const senders, keys, perKey, maxFailures = 2, 16, 30, 20
	rec := newRecorder()
	var calls, failures atomic.Int64
	p := start(t, newQueue, func(_ context.Context, msgs []queue.Message) error {
		// Every third call processes half its batch and then fails: the
		// processed half must come again (duplicates are fine) and the rest
		// must not be lost or overtaken by later messages.
		if calls.Add(1)%3 == 0 && failures.Load() < maxFailures {
			failures.Add(1)
			for _, m := range msgs[:len(msgs)/2] {
				rec.record(m)
			}
			return errors.New("queuetest: injected failure")
		}
		for _, m := range msgs {
			rec.record(m)
		}
		return nil
	})
	send(t, p, senders, keys, perKey)
	waitFor(t, "every message despite handler errors", func() bool {
		u, _, v := rec.counts()
		return u == senders*keys*perKey || len(v) > 0
	})
	u, dups, v := rec.counts()
	if len(v) > 0 {
		t.Fatalf("at-least-once/order violated (%d), first: %s", len(v), v[0])
	}
	if failures.Load() == 0 {
		t.Fatalf("no failure was injected (%d handler calls): the test proved nothing", calls.Load())
	}
	t.Logf("%d unique, %d redelivered, %d injected failures", u, dups, failures.Load())
}

// blockingConsumer starts a consumer whose handler blocks until release is
// closed, and sends one message so a handler call is in flight.
func blockingConsumer(t *testing.T, newQueue NewQueue) (c queue.Consumer, started, release, returned chan struct{}) {
	t.Helper()
	p, c := newQueue(t)
	started, release, returned = make(chan struct{}), make(chan struct{}), make(chan struct{})
	var once sync.Once
	h := func(_ context.Context, _ []queue.Message) error {
		first := false
		once.Do(func() { first = true })
		if !first {
			return nil
		}
		close(started)
		<-release // deliberately ignores ctx: the worst case for Shutdown
		close(returned)
		return nil
	}
	if err := c.Consume(h); err != nil {
		t.Fatalf("Consume: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := p.Send(ctx, queue.Message{Key: "k", Value: []byte("v")}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	select {
	case <-started:
	case <-time.After(Timeout):
		t.Fatal("handler never called")
	}
	return c, started, release, returned
}

func testShutdownWaits(t *testing.T, newQueue NewQueue) {
	c, _, release, returned := blockingConsumer(t, newQueue)
	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		defer cancel()
		res <- c.Shutdown(ctx)
	}()
	// Shutdown must not return while the handler is still running. A window
	// of 100ms cannot prove it never would, but catches one that doesn't wait.
	select {
	case err := <-res:
		close(release)
		t.Fatalf("Shutdown returned (%v) while a handler was in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(Timeout):
		t.Fatal("Shutdown did not return after the handler did")
	}
	select {
	case <-returned:
	default:
		t.Fatal("Shutdown returned before the in-flight handler")
	}
}

func testShutdownBounded(t *testing.T, newQueue NewQueue) {
	c, _, release, _ := blockingConsumer(t, newQueue)
	defer func() {
		close(release)
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		defer cancel()
		if err := c.Shutdown(ctx); err != nil {
			t.Errorf("second Shutdown after release: %v", err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	err := c.Shutdown(ctx)
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("Shutdown took %v with a 100ms context", took)
	}
	if err == nil {
		t.Fatal("Shutdown returned nil while a handler was still in flight")
	}
}

func testShutdownIdempotent(t *testing.T, newQueue NewQueue) {
	_, c := newQueue(t)
	if err := c.Consume(func(context.Context, []queue.Message) error { return nil }); err != nil {
		t.Fatalf("Consume: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	for i := range 3 {
		if err := c.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown #%d: %v", i+1, err)
		}
	}
}
