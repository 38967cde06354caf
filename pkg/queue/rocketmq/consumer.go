package rocketmq

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	rmq "github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"

	"github.com/msync/msync/pkg/queue"
)

// Consumer is a queue.Consumer: an orderly CLUSTERING push consumer of the
// topic in the group.
//
// Lifecycle: NewConsumer only validates; Consume starts the client (it asks
// the name server for the topic's route, so the topic must exist); Shutdown
// stops handing messages to the handler, waits for the handler calls in
// flight, then stops the client (which commits the offsets of the batches
// that succeeded).
type Consumer struct {
	cfg Config
	log *slog.Logger
	// hctx is the context handlers get; cancelled when a Shutdown's ctx ends
	// before the handlers returned, so well-behaved handlers stop promptly.
	hctx    context.Context
	hcancel context.CancelFunc
	// inflight counts handler calls; Add happens under mu with closed false,
	// so once closed is set no new call starts and Wait is safe.
	inflight sync.WaitGroup
	done     chan struct{} // closed once the handlers returned and the client stopped

	mu struct {
		sync.Mutex
		consuming bool
		closed    bool
		pc        rmq.PushConsumer
		err       error // the client's Shutdown result
	}
}

var _ queue.Consumer = (*Consumer)(nil)

// NewConsumer validates cfg. It starts nothing: Consume does.
func NewConsumer(cfg Config) (*Consumer, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Consumer{cfg: cfg, log: cfg.Logger.With("topic", cfg.Topic, "group", cfg.Group), done: make(chan struct{})}
	c.hctx, c.hcancel = context.WithCancel(context.Background())
	return c, nil
}

// Consume starts the push consumer, calling h with batches (up to MaxBatch)
// of one queue, in queue order. Different queues call h concurrently, so h
// must be safe for concurrent use. An error or a panic from h suspends the
// queue and hands the same messages over again after a backoff,
// indefinitely: h must not fail on a message it can never process (log and
// skip it instead). Message.Key is the message's sharding key.
func (c *Consumer) Consume(h queue.Handler) error {
	if h == nil {
		return ErrNilHandler
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.mu.closed:
		return queue.ErrClosed
	case c.mu.consuming:
		return ErrConsuming
	}
	from := consumer.ConsumeFromLastOffset
	if c.cfg.ConsumeFrom == "first" {
		from = consumer.ConsumeFromFirstOffset
	} else {
		// Before the client's first offset query: see pin.go.
		ctx, cancel := context.WithTimeout(context.Background(), pinTimeout)
		_, err := c.pinStart(ctx)
		cancel()
		if err != nil {
			return err
		}
	}
	pc, err := consumer.NewPushConsumer(
		consumer.WithNameServer(primitive.NamesrvAddr(c.cfg.NameServers)),
		consumer.WithGroupName(c.cfg.Group),
		consumer.WithInstance(c.cfg.Instance+"-consumer"),
		consumer.WithConsumerModel(consumer.Clustering),
		consumer.WithConsumerOrder(true),
		consumer.WithConsumeFromWhere(from),
		consumer.WithConsumeMessageBatchMaxSize(c.cfg.MaxBatch),
		// Unlimited: in orderly mode a message over the limit goes to the
		// dead-letter queue and the queue moves on past it.
		consumer.WithMaxReconsumeTimes(-1),
		consumer.WithAutoCommit(true),
		consumer.WithRebalanceLockInterval(lockRenewInterval),
	)
	if err != nil {
		return fmt.Errorf("%w: new push consumer: %w", ErrClient, err)
	}
	cb := func(ctx context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
		return c.consume(ctx, h, msgs), nil
	}
	if err := pc.Subscribe(c.cfg.Topic, consumer.MessageSelector{}, cb); err != nil {
		_ = pc.Shutdown()
		return fmt.Errorf("%w: subscribe %s: %w", ErrClient, c.cfg.Topic, err)
	}
	if err := pc.Start(); err != nil {
		_ = pc.Shutdown() // idempotent in the client (closeOnce)
		if noRoute(err) {
			return c.cfg.noTopic(err)
		}
		return fmt.Errorf("%w: start push consumer %q: %w", ErrClient, c.cfg.Instance+"-consumer", err)
	}
	c.mu.consuming, c.mu.pc = true, pc
	return nil
}

// lockRenewInterval is how often the consumer renews its queue locks on the
// broker (the client's default is 20s). A lock not renewed for the broker's
// rocketmq.broker.rebalance.lockMaxLiveTime (60s by default) is free for
// another job instance: that lifetime is how long the queues of a killed
// job wait for a successor. Renewing every 5s lets brokers run it at 15s
// (scripts/engines.sh does) while a live owner keeps its locks through two
// missed renewals.
const lockRenewInterval = 5 * time.Second

// enter registers a handler call; false once Shutdown began.
func (c *Consumer) enter() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.closed {
		return false
	}
	c.inflight.Add(1)
	return true
}

// consume is the orderly callback. It returns only ConsumeSuccess or
// SuspendCurrentQueueAMoment: ConsumeRetryLater in orderly mode commits the
// offset, which skips the messages. It sets the suspension itself because
// v2.1.2 ignores WithSuspendCurrentQueueTimeMillis in orderly mode (the
// orderly context starts at -1ms, which would redeliver in a hot loop).
func (c *Consumer) consume(ctx context.Context, h queue.Handler, msgs []*primitive.MessageExt) consumer.ConsumeResult {
	if !c.enter() {
		// Shutting down: leave the messages uncommitted for the next owner
		// of the queue.
		suspend(ctx, c.cfg.MinBackoff)
		return consumer.SuspendCurrentQueueAMoment
	}
	defer c.inflight.Done()
	batch := make([]queue.Message, len(msgs))
	for i, m := range msgs {
		key := m.GetShardingKey()
		if key == "" {
			key = m.GetKeys()
		}
		batch[i] = queue.Message{Key: key, Value: m.Body}
	}
	err := c.call(h, batch)
	if err == nil {
		return consumer.ConsumeSuccess
	}
	attempt := msgs[0].ReconsumeTimes // incremented by the client per suspension
	wait := c.backoff(attempt)
	suspend(ctx, wait)
	c.log.Warn("handler failed; suspending the queue and redelivering", "queue", queueOf(msgs[0]),
		"messages", len(msgs), "attempt", attempt+1, "backoff", wait, "err", err)
	return consumer.SuspendCurrentQueueAMoment
}

func (c *Consumer) call(h queue.Handler, batch []queue.Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("rocketmq queue: handler panicked: %v", r)
		}
	}()
	return h(c.hctx, batch)
}

// backoff is MinBackoff doubled per earlier attempt, capped at MaxBackoff.
func (c *Consumer) backoff(attempt int32) time.Duration {
	d := c.cfg.MinBackoff
	for i := int32(0); i < attempt && d < c.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, c.cfg.MaxBackoff)
}

// suspend sets how long the client sleeps before redelivering.
func suspend(ctx context.Context, d time.Duration) {
	if oc, ok := primitive.GetOrderlyCtx(ctx); ok {
		oc.SuspendCurrentQueueTimeMillis = int(d.Milliseconds())
	}
}

func queueOf(m *primitive.MessageExt) string {
	if m.Queue == nil {
		return ""
	}
	return fmt.Sprintf("%s@%s#%d", m.Queue.Topic, m.Queue.BrokerName, m.Queue.QueueId)
}

// Shutdown stops handing messages to the handler, waits for in-flight
// handler calls, then stops the client, bounded by ctx. If ctx ends first,
// the handlers' context is cancelled and ctx's error is returned; the rest
// completes in the background and a later Shutdown waits for it again. Safe
// to call more than once and concurrently. See the package doc for the
// goroutines the client leaves behind.
func (c *Consumer) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	if !c.mu.closed {
		c.mu.closed = true
		pc := c.mu.pc
		// Owned by the consumer: ends once the handlers returned and the
		// client's Shutdown (bounded by its own request timeouts) did.
		go func() {
			c.inflight.Wait()
			var err error
			if pc != nil {
				err = pc.Shutdown()
			}
			c.hcancel()
			c.mu.Lock()
			if err != nil {
				c.mu.err = fmt.Errorf("%w: shutdown push consumer: %w", ErrClient, err)
			}
			c.mu.Unlock()
			close(c.done)
		}()
	}
	c.mu.Unlock()
	select {
	case <-c.done:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.mu.err
	case <-ctx.Done():
		c.hcancel()
		return fmt.Errorf("rocketmq queue: consumer shutdown: %w", ctx.Err())
	}
}
