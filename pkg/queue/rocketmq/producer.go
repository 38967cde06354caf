package rocketmq

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	rmq "github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"

	"github.com/msync/msync/pkg/queue"
)

// Producer is a queue.Producer on a RocketMQ topic.
//
// Lifecycle: NewProducer starts the client (it dials lazily, on the first
// Send); Shutdown waits for in-flight Sends (bounded by ctx), then stops the
// client. Sends after Shutdown return queue.ErrClosed.
type Producer struct {
	cfg Config
	p   rmq.Producer
	// sends tracks in-flight Send calls so Shutdown lets them finish.
	sends sync.WaitGroup
	// Until one message was sent, sends go one at a time (warm held): on the
	// first route lookup v2.1.2 publishes the topic's queues to the producer
	// before it stores the broker's address, so concurrent first sends fail
	// with "route info not found" (seen in TestProducerOnScriptedBroker).
	warm  sync.Mutex
	ready atomic.Bool
	done  chan struct{} // closed when the client is shut down

	mu struct {
		sync.Mutex
		closed bool
		err    error // the client's Shutdown result
	}
}

var _ queue.Producer = (*Producer)(nil)

// NewProducer validates cfg and starts a producer.
func NewProducer(cfg Config) (*Producer, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p, err := producer.NewDefaultProducer(
		producer.WithNameServer(primitive.NamesrvAddr(cfg.NameServers)),
		producer.WithGroupName(cfg.Group),
		producer.WithInstanceName(cfg.Instance+"-producer"),
		producer.WithQueueSelector(producer.NewHashQueueSelector()),
		producer.WithSendMsgTimeout(cfg.SendTimeout),
		producer.WithRetry(cfg.retries()),
		producer.WithDefaultTopicQueueNums(cfg.Queues),
	)
	if err != nil {
		return nil, fmt.Errorf("%w: new producer: %w", ErrClient, err)
	}
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("%w: start producer %q: %w", ErrClient, cfg.Instance+"-producer", err)
	}
	return &Producer{cfg: cfg, p: p, done: make(chan struct{})}, nil
}

// Send sends msgs and returns once the broker stored every one of them. The
// messages of one key are sent one at a time in order; different keys are
// sent concurrently (at most SendConcurrency). On error, some messages may
// have been stored, including later messages of other keys (never a later
// message of the key that failed): callers that retry rely on consumers
// deduping.
func (p *Producer) Send(ctx context.Context, msgs ...queue.Message) error {
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		return queue.ErrClosed
	}
	p.sends.Add(1)
	p.mu.Unlock()
	defer p.sends.Done()

	if len(msgs) == 1 {
		return p.sendOne(ctx, msgs[0])
	}
	// Group by key in first-seen order.
	var keys []string
	byKey := make(map[string][]queue.Message)
	for _, m := range msgs {
		if _, ok := byKey[m.Key]; !ok {
			keys = append(keys, m.Key)
		}
		byKey[m.Key] = append(byKey[m.Key], m)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, p.cfg.SendConcurrency)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	launched := 0
	for _, k := range keys {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		launched++
		wg.Go(func() {
			defer func() { <-sem }()
			for _, m := range byKey[k] {
				if err := p.sendOne(ctx, m); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	if launched < len(keys) {
		return fmt.Errorf("%w: %d of %d keys not sent: %w", ErrSend, len(keys)-launched, len(keys), context.Cause(ctx))
	}
	return nil
}

func (p *Producer) sendOne(ctx context.Context, m queue.Message) error {
	if !p.ready.Load() {
		p.warm.Lock()
		defer p.warm.Unlock()
		if !p.ready.Load() {
			err := p.send(ctx, m)
			p.ready.Store(err == nil)
			return err
		}
	}
	return p.send(ctx, m)
}

func (p *Producer) send(ctx context.Context, m queue.Message) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.SendTimeout)
	defer cancel()
	msg := primitive.NewMessage(p.cfg.Topic, m.Value)
	if m.Key != "" {
		// The sharding key drives the hash selector; KEYS lets operators find
		// a channel's messages with the broker's key index.
		msg.WithShardingKey(m.Key)
		msg.WithKeys([]string{m.Key})
	}
	res, err := p.p.SendSync(ctx, msg)
	// A broker that is behind (its send queue waited longer than
	// waitTimeMillsInSendQueue, or the page cache is busy) answers
	// SYSTEM_BUSY without storing: "start flow control for a while". The
	// client's own retries follow at once and meet the same; back off and
	// resend until SendTimeout instead (seen on a loaded machine).
	for wait := busyBackoff; err != nil && brokerBusy(err); wait = min(2*wait, maxBusyBackoff) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: topic=%s key=%q: broker busy until the send timeout: %w", ErrSend, p.cfg.Topic, m.Key, err)
		case <-time.After(wait):
		}
		res, err = p.p.SendSync(ctx, msg)
	}
	if err != nil && noRoute(err) {
		return fmt.Errorf("%w: %w", ErrSend, p.cfg.noTopic(err))
	}
	if err != nil {
		return fmt.Errorf("%w: topic=%s key=%q: %w", ErrSend, p.cfg.Topic, m.Key, err)
	}
	if res.Status != primitive.SendOK {
		// FLUSH_DISK/SLAVE timeouts: the master has it, but not as durably as
		// configured. Report it: the caller decides whether to resend.
		return fmt.Errorf("%w: topic=%s key=%q: status %d", ErrSend, p.cfg.Topic, m.Key, res.Status)
	}
	return nil
}

// busyBackoff and maxBusyBackoff bound the pause before resending a message
// the broker refused as busy.
const (
	busyBackoff    = 20 * time.Millisecond
	maxBusyBackoff = 500 * time.Millisecond
)

// brokerBusy reports the broker's SYSTEM_BUSY (response code 2; v2.1.2
// returns it as "CODE: 2, DESC: ..." with no type).
func brokerBusy(err error) bool { return strings.Contains(err.Error(), "CODE: 2, DESC:") }

// Shutdown rejects new Sends, waits for in-flight ones and stops the client,
// bounded by ctx (on expiry it returns ctx's error; the client is stopped in
// the background once the Sends return). Safe to call more than once.
func (p *Producer) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	if !p.mu.closed {
		p.mu.closed = true
		// Owned by the producer: ends once in-flight Sends (each bounded by
		// SendTimeout) have returned and the client stopped.
		go func() {
			p.sends.Wait()
			err := p.p.Shutdown()
			p.mu.Lock()
			if err != nil {
				p.mu.err = fmt.Errorf("%w: shutdown producer: %w", ErrClient, err)
			}
			p.mu.Unlock()
			close(p.done)
		}()
	}
	p.mu.Unlock()
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.mu.err
	case <-ctx.Done():
		return fmt.Errorf("rocketmq queue: producer shutdown: %w", ctx.Err())
	}
}
