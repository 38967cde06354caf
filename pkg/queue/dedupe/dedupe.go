package dedupe

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/msync/msync/pkg/queue"
)

// IDFunc extracts the dedup identity of a message: its channel and its id,
// strictly increasing per channel. ok=false means "not deduplicable": the
// message always passes.
type IDFunc func(m queue.Message) (channel string, id uint64, ok bool)

// Config configures a Consumer.
type Config struct {
	// Consumer is the wrapped consumer. Required.
	Consumer queue.Consumer
	// ID extracts (channel, id). Nil means OplogID (the push stream's
	// pb.QueueMsg).
	ID IDFunc
	// Channels bounds how many channels' highest ids are remembered (least
	// recently used are forgotten first). Zero means 65536 (about 100 bytes
	// each plus the channel name).
	Channels int
	// Logger receives a debug line per dropped repeat. Nil discards.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.ID == nil {
		c.ID = OplogID
	}
	if c.Channels == 0 {
		c.Channels = 65536
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.Consumer == nil {
		errs = append(errs, errors.New("Config.Consumer is required"))
	}
	if c.Channels < 0 {
		errs = append(errs, fmt.Errorf("Config.Channels %d: want > 0", c.Channels))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

// Consumer is a queue.Consumer that drops repeats before the handler.
type Consumer struct {
	cfg     Config
	dropped atomic.Int64

	mu struct {
		sync.Mutex
		lru  *list.List // of *entry, most recently used at the front
		byCh map[string]*list.Element
	}
}

type entry struct {
	channel string
	last    uint64
}

var _ queue.Consumer = (*Consumer)(nil)

// New wraps cfg.Consumer.
func New(cfg Config) (*Consumer, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Consumer{cfg: cfg}
	c.mu.lru = list.New()
	c.mu.byCh = make(map[string]*list.Element)
	return c, nil
}

// Consume starts the inner consumer with h wrapped: each batch is handed to
// h without the messages whose id is <= the highest id already handled for
// their channel (by an earlier successful batch or earlier in this batch).
// A batch left empty is acknowledged without calling h. The highest ids are
// recorded only when h succeeds, so a failed batch comes back whole.
func (c *Consumer) Consume(h queue.Handler) error {
	if h == nil {
		return ErrNilHandler
	}
	return c.cfg.Consumer.Consume(func(ctx context.Context, msgs []queue.Message) error {
		kept, seen := c.filter(msgs)
		if len(kept) == 0 {
			return nil
		}
		if err := h(ctx, kept); err != nil {
			return err
		}
		c.record(seen)
		return nil
	})
}

// Shutdown shuts the inner consumer down.
func (c *Consumer) Shutdown(ctx context.Context) error { return c.cfg.Consumer.Shutdown(ctx) }

// Dropped returns how many repeats were dropped so far.
func (c *Consumer) Dropped() int64 { return c.dropped.Load() }

// filter returns the messages to hand over and, per channel, the highest id
// among them. msgs itself is returned when nothing is dropped.
func (c *Consumer) filter(msgs []queue.Message) (kept []queue.Message, seen map[string]uint64) {
	for i, m := range msgs {
		ch, id, ok := c.cfg.ID(m)
		if !ok {
			if kept != nil {
				kept = append(kept, m)
			}
			continue
		}
		last, inBatch := seen[ch]
		if !inBatch {
			last = c.last(ch)
		}
		if id <= last {
			c.dropped.Add(1)
			c.cfg.Logger.Debug("dropping repeated queue message", "channel", ch, "id", id, "last", last)
			if kept == nil {
				kept = append(make([]queue.Message, 0, len(msgs)-1), msgs[:i]...)
			}
			continue
		}
		if seen == nil {
			seen = make(map[string]uint64)
		}
		seen[ch] = id
		if kept != nil {
			kept = append(kept, m)
		}
	}
	if kept == nil {
		// Nothing dropped (a drop makes kept non-nil, even if empty).
		return msgs, seen
	}
	return kept, seen
}

// last returns the highest id handled for ch, 0 if unknown.
func (c *Consumer) last(ch string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.mu.byCh[ch]; ok {
		c.mu.lru.MoveToFront(el)
		return el.Value.(*entry).last
	}
	return 0
}

// record raises the remembered highest ids (never lowers them: a concurrent
// batch may have recorded more) and evicts the least recently used channels
// beyond the bound.
func (c *Consumer) record(seen map[string]uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ch, id := range seen {
		if el, ok := c.mu.byCh[ch]; ok {
			e := el.Value.(*entry)
			e.last = max(e.last, id)
			c.mu.lru.MoveToFront(el)
			continue
		}
		c.mu.byCh[ch] = c.mu.lru.PushFront(&entry{channel: ch, last: id})
		for c.mu.lru.Len() > c.cfg.Channels {
			old := c.mu.lru.Remove(c.mu.lru.Back()).(*entry)
			delete(c.mu.byCh, old.channel)
		}
	}
}
