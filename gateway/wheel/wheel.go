// Package wheel is a sharded hashed timing wheel with lazy refresh, built for
// millions of connection deadlines (auth timeout, heartbeat, ack timeout) that
// are extended far more often than they expire.
//
// Extending a deadline is the hot path: a heartbeat arrives every few seconds
// per connection. Set therefore only stores the new deadline atomically when
// the entry already sits in a slot that comes due no later than the new
// deadline. When that slot comes due, Advance looks at the deadline again: if it
// moved, the entry is re-armed in the slot of the new deadline; if not, it
// expires. Only moving a deadline earlier, arming an unlinked entry and Remove
// take a shard lock.
//
// Deadlines are int64 nanoseconds on the wheel's own monotonic clock (Now).
// An entry expires on the first Advance whose time is at or past the end of
// the tick its deadline falls in: never early, at most one tick plus the
// caller's Advance latency late.
//
// All methods are goroutine-safe. Advance makes its calls to Expire one at a
// time, from the goroutine that called Advance, with no lock held, so Expire
// may call Set, Disarm or Remove (not Advance: calls are serialised).
package wheel

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// removed is the deadline of an entry that Remove took out for good: Set
// ignores it, so a Set racing a Remove cannot bring the entry back.
const removed = -1

// Entry is one deadline. Embed it in the owner (no allocation per entry) and
// call Wheel.Init once before using it. An Entry belongs to one Wheel.
type Entry struct {
	deadline atomic.Int64 // wheel-clock ns; 0 disarmed; removed after Remove
	when     atomic.Int64 // tick whose slot holds the entry; 0 = not linked. Written under the shard lock.

	prev, next *Entry // REQUIRES: the shard's mu.
	shard      uint32 // fixed by Init

	// Value is the owner's handle, set by Init, for Expire to find its way back.
	Value any
}

// Deadline returns the entry's current deadline on the wheel clock, or 0 if
// it is disarmed or removed.
func (e *Entry) Deadline() int64 {
	if d := e.deadline.Load(); d > 0 {
		return d
	}
	return 0
}

// Config configures a Wheel.
type Config struct {
	// Tick is the resolution; deadlines round up to it. Required, > 0.
	Tick time.Duration
	// Slots per shard, rounded up to a power of two. Zero means 1024. A
	// deadline further than Slots*Tick away is visited once per round.
	Slots int
	// Shards split the lock for arming and the per-tick walk. Zero means 32.
	Shards int
	// Expire is called for each entry whose deadline passed. Required.
	Expire func(e *Entry)
	// Now is the wheel's clock in nanoseconds: monotonic and > 0. Nil means
	// the time since New. Tests pass a clock they move by hand, so a
	// deadline passes when the test says so, not when a loaded machine
	// gets round to it.
	Now func() int64
}

// Wheel is a hashed timing wheel. See the package doc.
type Wheel struct {
	tick   int64
	mask   int64
	base   time.Time
	now    func() int64 // nil: since base
	expire func(*Entry)
	shards []shard
	next   atomic.Uint32 // round-robin shard assignment in Init

	adv struct {
		sync.Mutex
		cur     int64    // last tick processed; REQUIRES: adv.
		expired []*Entry // reused between ticks; REQUIRES: adv.
	}
}

type shard struct {
	mu    sync.Mutex
	cur   int64    // last tick this shard processed; REQUIRES: mu.
	slots []*Entry // list heads; REQUIRES: mu.
	n     int      // linked entries; REQUIRES: mu.
	_     [64]byte // keep shards on separate cache lines
}

// New returns a wheel whose clock starts now.
func New(cfg Config) (*Wheel, error) {
	var errs []error
	if cfg.Tick <= 0 {
		errs = append(errs, fmt.Errorf("tick %v must be > 0", cfg.Tick))
	}
	if cfg.Slots < 0 {
		errs = append(errs, fmt.Errorf("slots %d must be >= 0", cfg.Slots))
	}
	if cfg.Shards < 0 {
		errs = append(errs, fmt.Errorf("shards %d must be >= 0", cfg.Shards))
	}
	if cfg.Expire == nil {
		errs = append(errs, errors.New("expire callback is required"))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("wheel: invalid config: %w", errors.Join(errs...))
	}
	if cfg.Slots == 0 {
		cfg.Slots = 1024
	}
	if cfg.Shards == 0 {
		cfg.Shards = 32
	}
	slots := 1
	for slots < cfg.Slots {
		slots <<= 1
	}
	w := &Wheel{
		tick:   int64(cfg.Tick),
		mask:   int64(slots - 1),
		base:   time.Now(),
		now:    cfg.Now,
		expire: cfg.Expire,
		shards: make([]shard, cfg.Shards),
	}
	for i := range w.shards {
		w.shards[i].slots = make([]*Entry, slots)
	}
	return w, nil
}

// Now is the wheel clock: nanoseconds since New (or Config.Now), monotonic,
// always > 0.
func (w *Wheel) Now() int64 {
	if w.now != nil {
		return w.now()
	}
	return int64(time.Since(w.base)) + 1
}

// Tick returns the wheel's resolution.
func (w *Wheel) Tick() time.Duration { return time.Duration(w.tick) }

// Init prepares e for use with w and sets e.Value. It must be called once,
// before any other method gets e.
func (w *Wheel) Init(e *Entry, value any) {
	e.shard = w.next.Add(1) % uint32(len(w.shards))
	e.Value = value
}

// tickOf is the first tick whose end is at or after deadline d.
func (w *Wheel) tickOf(d int64) int64 { return (d + w.tick - 1) / w.tick }

// Set arms e to expire at deadline (wheel clock; see Now), replacing any
// earlier or later deadline. A deadline in the past expires on the next
// Advance. It reports false if e was removed.
func (w *Wheel) Set(e *Entry, deadline int64) bool {
	if deadline <= 0 {
		deadline = 1
	}
	for {
		old := e.deadline.Load()
		if old == removed {
			return false
		}
		if e.deadline.CompareAndSwap(old, deadline) {
			break
		}
	}
	// Fast path: the slot holding e comes due no later than the deadline, so
	// Advance will see the new value there and re-arm. The load must come
	// after the store above: Advance unlinks (when=0) before it reads the
	// deadline, so one of the two always sees the other's write.
	if wh := e.when.Load(); wh != 0 && wh <= w.tickOf(deadline) {
		return true
	}
	sh := &w.shards[e.shard]
	sh.mu.Lock()
	w.placeLocked(sh, e)
	sh.mu.Unlock()
	return true
}

// placeLocked links e in the slot of its current deadline, or moves it there
// if it sits in a later slot. An entry in an earlier slot stays (lazy).
// REQUIRES: sh.mu.
func (w *Wheel) placeLocked(sh *shard, e *Entry) {
	d := e.deadline.Load()
	if d <= 0 { // disarmed or removed meanwhile
		return
	}
	t := w.tickOf(d)
	if t <= sh.cur {
		t = sh.cur + 1
	}
	wh := e.when.Load()
	switch {
	case wh == 0:
		w.linkLocked(sh, e, t)
	case wh > t:
		w.unlinkLocked(sh, e)
		w.linkLocked(sh, e, t)
	}
}

// Disarm cancels e's deadline without a lock; the entry leaves its slot
// when the slot comes due. Set may re-arm it.
func (w *Wheel) Disarm(e *Entry) {
	for {
		old := e.deadline.Load()
		if old == removed || old == 0 || e.deadline.CompareAndSwap(old, 0) {
			return
		}
	}
}

// Remove takes e out of the wheel for good: it will not expire, and later
// Sets are ignored. Call it when the owner goes away so the wheel drops its
// reference at once.
func (w *Wheel) Remove(e *Entry) {
	e.deadline.Store(removed)
	sh := &w.shards[e.shard]
	sh.mu.Lock()
	if e.when.Load() != 0 {
		w.unlinkLocked(sh, e)
	}
	sh.mu.Unlock()
}

// Len returns the number of linked entries, armed or waiting for their slot
// to notice they were disarmed.
func (w *Wheel) Len() int {
	n := 0
	for i := range w.shards {
		sh := &w.shards[i]
		sh.mu.Lock()
		n += sh.n
		sh.mu.Unlock()
	}
	return n
}

// Advance processes every tick that ended at or before now (wheel clock),
// calling Expire for each entry whose deadline passed. It returns the number
// expired. Calls are serialised; one goroutine normally calls it every Tick.
func (w *Wheel) Advance(now int64) int {
	w.adv.Lock()
	defer w.adv.Unlock()
	target := now / w.tick
	if target <= w.adv.cur {
		return 0
	}
	start := w.adv.cur + 1
	// After a long pause every slot comes due at most once: visiting slot s
	// at the last tick that maps to it also covers entries due earlier.
	if span := w.mask + 1; target-start >= span {
		start = target - span + 1
	}
	total := 0
	for t := start; t <= target; t++ {
		exp := w.adv.expired[:0]
		for i := range w.shards {
			exp = w.processLocked(&w.shards[i], t, exp)
		}
		w.adv.cur = t
		for i, e := range exp {
			exp[i] = nil // drop the reference before the callback may free the owner
			w.expire(e)
		}
		total += len(exp)
		w.adv.expired = exp[:0]
	}
	return total
}

// processLocked handles slot t of sh and appends expired entries to exp.
// REQUIRES: w.adv (taken here: sh.mu).
func (w *Wheel) processLocked(sh *shard, t int64, exp []*Entry) []*Entry {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.cur = t
	slot := t & w.mask
	for e := sh.slots[slot]; e != nil; {
		next := e.next
		if e.when.Load() > t { // a later round
			e = next
			continue
		}
		// Unlink before reading the deadline: see Set's fast path.
		w.unlinkLocked(sh, e)
		for {
			d := e.deadline.Load()
			if d <= 0 { // disarmed or removed
				break
			}
			if nt := w.tickOf(d); nt > t {
				// Re-linking at the head of this same list (nt = t + k*slots)
				// is safe: iteration continues from next.
				w.linkLocked(sh, e, nt)
				break
			}
			if e.deadline.CompareAndSwap(d, 0) {
				exp = append(exp, e)
				break
			}
			// A concurrent Set moved the deadline: look again.
		}
		e = next
	}
	return exp
}

// REQUIRES: sh.mu.
func (w *Wheel) linkLocked(sh *shard, e *Entry, t int64) {
	slot := t & w.mask
	e.when.Store(t)
	e.prev = nil
	e.next = sh.slots[slot]
	if e.next != nil {
		e.next.prev = e
	}
	sh.slots[slot] = e
	sh.n++
}

// REQUIRES: sh.mu, e linked in sh.
func (w *Wheel) unlinkLocked(sh *shard, e *Entry) {
	slot := e.when.Load() & w.mask
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		sh.slots[slot] = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	}
	e.prev, e.next = nil, nil
	e.when.Store(0)
	sh.n--
}
