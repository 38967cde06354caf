package logic

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// RateLimit is one API key's traffic budget on the publish endpoints
// (POST /v1/sync, /v1/sync/batch). Zero fields mean unlimited.
type RateLimit struct {
	// PublishesPerSecond is the sustained rate of published items (a batch
	// counts its items). The burst is one second's worth.
	PublishesPerSecond float64
	// BytesPerSecond is the sustained rate of payload bytes.
	BytesPerSecond float64
}

// bucket is a token bucket holding up to one second of its rate. A request
// larger than the bucket passes when the bucket is full and leaves it in
// debt, so a big batch is allowed at the average rate instead of never.
type bucket struct {
	mu     sync.Mutex
	rate   float64
	tokens float64
	last   time.Time
}

func newBucket(rate float64, now time.Time) *bucket {
	return &bucket{rate: rate, tokens: rate, last: now}
}

// take spends n tokens, or returns how long until it could.
func (b *bucket) take(n float64, now time.Time) (wait time.Duration, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.rate, b.tokens+d.Seconds()*b.rate)
		b.last = now
	}
	need := min(n, b.rate)
	if b.tokens >= need {
		b.tokens -= n
		return 0, true
	}
	return time.Duration((need - b.tokens) / b.rate * float64(time.Second)), false
}

// limiter is one key's buckets (nil: that dimension is unlimited).
type limiter struct{ items, bytes *bucket }

func newLimiters(limits map[string]RateLimit, now time.Time) map[string]*limiter {
	out := make(map[string]*limiter, len(limits))
	for key, rl := range limits {
		lm := &limiter{}
		if rl.PublishesPerSecond > 0 {
			lm.items = newBucket(rl.PublishesPerSecond, now)
		}
		if rl.BytesPerSecond > 0 {
			lm.bytes = newBucket(rl.BytesPerSecond, now)
		}
		if lm.items != nil || lm.bytes != nil {
			out[key] = lm
		}
	}
	return out
}

// allow charges key for items publishes of size payload bytes; over its
// budget it returns a 429 with Retry-After set on w. The key has been
// checked already, so the map lookup by it leaks nothing new.
func (l *Logic) allow(w http.ResponseWriter, key string, items, size int) *apiError {
	lm := l.limiters[key]
	if lm == nil {
		return nil
	}
	now := l.cfg.Now()
	for _, c := range []struct {
		b    *bucket
		n    float64
		kind string
	}{{lm.items, float64(items), "publishes"}, {lm.bytes, float64(size), "bytes"}} {
		if c.b == nil {
			continue
		}
		if wait, ok := c.b.take(c.n, now); !ok {
			l.m.rateLimited.WithLabelValues(c.kind).Inc()
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(max(wait.Seconds(), 1)))))
			return errorf(http.StatusTooManyRequests, CodeRateLimited, "this API key is over its %s budget: retry after %s", c.kind, w.Header().Get("Retry-After")+"s")
		}
	}
	return nil
}
