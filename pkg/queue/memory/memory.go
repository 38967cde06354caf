package memory

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"time"

	"github.com/msync/msync/pkg/queue"
)

// Config configures a Queue. Zero values take the defaults noted per field.
type Config struct {
	// Partitions is the number of ordered partitions; each has one delivery
	// goroutine, so it also bounds handler concurrency. Zero means 16.
	Partitions int
	// Buffer is the capacity of each partition in messages. Send blocks while
	// the chosen partition is full. Zero means 4096.
	Buffer int
	// MaxBatch bounds the messages handed to the handler in one call. Zero
	// means 256.
	MaxBatch int
	// MinBackoff is the first wait before redelivering a batch whose handler
	// failed; it doubles per consecutive failure up to MaxBackoff. Zero means
	// 10ms.
	MinBackoff time.Duration
	// MaxBackoff caps the redelivery wait. Zero means 1s.
	MaxBackoff time.Duration
	// Logger receives handler failures. Nil discards.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Partitions == 0 {
		c.Partitions = 16
	}
	if c.Buffer == 0 {
		c.Buffer = 4096
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 256
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = 10 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.Partitions < 0 {
		errs = append(errs, fmt.Errorf("partitions %d: want > 0", c.Partitions))
	}
	if c.Buffer < 0 {
		errs = append(errs, fmt.Errorf("buffer %d: want > 0", c.Buffer))
	}
	if c.MaxBatch < 0 {
		errs = append(errs, fmt.Errorf("max batch %d: want > 0", c.MaxBatch))
	}
	if c.MinBackoff < 0 || c.MaxBackoff < c.MinBackoff {
		errs = append(errs, fmt.Errorf("backoff %v..%v: want 0 < min <= max", c.MinBackoff, c.MaxBackoff))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

// Queue is an in-process queue.Producer and queue.Consumer.
//
// Lifecycle: Send works from New on (messages wait in their partition until
// Consume starts delivery). Shutdown stops both sides: later Sends return
// queue.ErrClosed, buffered messages are dropped, and the in-flight handler
// calls are waited for.
type Queue struct {
	cfg   Config
	seed  maphash.Seed
	parts []chan queue.Message
	// quit is closed by Shutdown: it unblocks Send and stops delivery.
	quit chan struct{}
	// hctx is the context handlers get; cancelled when a Shutdown's ctx ends
	// before the handlers returned, so well-behaved handlers stop promptly.
	hctx    context.Context
	hcancel context.CancelFunc
	// done is closed once every delivery goroutine has returned.
	done chan struct{}
	wg   sync.WaitGroup

	mu struct {
		sync.Mutex
		consuming bool
		closed    bool
	}
}

var (
	_ queue.Producer = (*Queue)(nil)
	_ queue.Consumer = (*Queue)(nil)
)

// New returns an empty queue. It starts no goroutine until Consume.
func New(cfg Config) (*Queue, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	q := &Queue{
		cfg:   cfg,
		seed:  maphash.MakeSeed(),
		parts: make([]chan queue.Message, cfg.Partitions),
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	for i := range q.parts {
		q.parts[i] = make(chan queue.Message, cfg.Buffer)
	}
	q.hctx, q.hcancel = context.WithCancel(context.Background())
	return q, nil
}

func (q *Queue) partition(key string) chan queue.Message {
	return q.parts[maphash.String(q.seed, key)%uint64(len(q.parts))]
}

// Send enqueues msgs in order. It blocks while a message's partition is full
// until ctx ends, then returns an error wrapping queue.ErrFull and ctx's
// error; after Shutdown it returns queue.ErrClosed. On error, a prefix of
// msgs may have been accepted (they will be delivered): callers that retry
// rely on consumers deduping, as the queue contract says.
//
// The queue keeps each Value as is: callers must not modify it after Send.
func (q *Queue) Send(ctx context.Context, msgs ...queue.Message) error {
	for i, m := range msgs {
		ch := q.partition(m.Key)
		// Check quit first: a select with both ready picks at random, and a
		// message accepted after Shutdown would be silently dropped.
		select {
		case <-q.quit:
			return queue.ErrClosed
		default:
		}
		select {
		case ch <- m:
			continue
		default:
		}
		select {
		case ch <- m:
		case <-q.quit:
			return queue.ErrClosed
		case <-ctx.Done():
			return fmt.Errorf("%w: message %d of %d: %w", queue.ErrFull, i+1, len(msgs), ctx.Err())
		}
	}
	return nil
}

// Len returns how many messages are buffered (not yet handed to a handler).
func (q *Queue) Len() int {
	n := 0
	for _, ch := range q.parts {
		n += len(ch)
	}
	return n
}

// Consume starts one delivery goroutine per partition, calling h with
// batches of up to MaxBatch messages of one partition, in order. Different
// partitions call h concurrently, so h must be safe for concurrent use. The
// msgs slice is reused after h returns: h must not keep it (the Values are
// not reused). A failing h gets the same batch again after a backoff,
// indefinitely, so a handler must not fail on a message it can never process
// (log and skip it instead). A panic in h is recovered and treated as an
// error.
func (q *Queue) Consume(h queue.Handler) error {
	if h == nil {
		return ErrNilHandler
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.mu.closed:
		return queue.ErrClosed
	case q.mu.consuming:
		return ErrConsuming
	}
	q.mu.consuming = true
	q.wg.Add(len(q.parts))
	for i, ch := range q.parts {
		go q.run(i, ch, h)
	}
	return nil
}

// run is partition i's delivery loop; it returns when quit is closed.
func (q *Queue) run(i int, ch chan queue.Message, h queue.Handler) {
	defer q.wg.Done()
	log := q.cfg.Logger.With("partition", i)
	batch := make([]queue.Message, 0, q.cfg.MaxBatch)
	for {
		// Prefer quit over a ready message (select is random otherwise), so
		// no new batch starts once Shutdown was called.
		select {
		case <-q.quit:
			return
		default:
		}
		select {
		case m := <-ch:
			batch = append(batch, m)
		case <-q.quit:
			return
		}
	fill:
		for len(batch) < q.cfg.MaxBatch {
			select {
			case m := <-ch:
				batch = append(batch, m)
			default:
				break fill
			}
		}
		if !q.deliver(log, h, batch) {
			return
		}
		clear(batch) // drop references to delivered values
		batch = batch[:0]
	}
}

// deliver calls h until it succeeds (true) or the queue shuts down (false).
func (q *Queue) deliver(log *slog.Logger, h queue.Handler, batch []queue.Message) bool {
	backoff := q.cfg.MinBackoff
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for attempt := 1; ; attempt++ {
		err := q.call(h, batch)
		if err == nil {
			return true
		}
		log.Warn("handler failed; redelivering batch", "messages", len(batch), "attempt", attempt, "backoff", backoff, "err", err)
		if timer == nil {
			timer = time.NewTimer(backoff)
		} else {
			timer.Reset(backoff)
		}
		select {
		case <-timer.C:
		case <-q.quit:
			return false
		}
		backoff = min(backoff*2, q.cfg.MaxBackoff)
	}
}

func (q *Queue) call(h queue.Handler, batch []queue.Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("memory queue: handler panicked: %v", r)
		}
	}()
	return h(q.hctx, batch)
}

// Shutdown stops accepting (Send returns queue.ErrClosed) and delivering, drops
// buffered messages, and waits for in-flight handler calls until ctx ends. If
// ctx ends first, the handlers' context is cancelled and ctx's error is
// returned; the delivery goroutines exit as soon as their handler returns.
// Safe to call more than once and concurrently; each call waits (bounded by
// its own ctx) for the same completion.
func (q *Queue) Shutdown(ctx context.Context) error {
	q.mu.Lock()
	if !q.mu.closed {
		q.mu.closed = true
		close(q.quit)
		// Owned by the queue: exits as soon as the delivery goroutines do.
		go func() {
			q.wg.Wait()
			q.hcancel()
			close(q.done)
		}()
	}
	q.mu.Unlock()
	select {
	case <-q.done:
		return nil
	case <-ctx.Done():
		q.hcancel()
		return fmt.Errorf("memory queue: shutdown: %w", ctx.Err())
	}
}

// Close is Shutdown without a deadline: it returns once in-flight handlers
// returned, however long that takes. Prefer Shutdown with a bounded ctx.
func (q *Queue) Close() error { return q.Shutdown(context.Background()) }
