package wheel

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const ms = int64(time.Millisecond)

// recorder collects expiries with the wheel time they happened at.
type recorder struct {
	mu  sync.Mutex
	got map[*Entry]int64 // entry -> Advance time of expiry
	n   int              // expiries, counting repeats
	now int64
}

func newTestWheel(t testing.TB, slots int) (*Wheel, *recorder) {
	t.Helper()
	r := &recorder{got: map[*Entry]int64{}}
	w, err := New(Config{Tick: 10 * time.Millisecond, Slots: slots, Shards: 4, Expire: func(e *Entry) {
		r.mu.Lock()
		r.got[e] = r.now
		r.n++
		r.mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	return w, r
}

func (r *recorder) advance(w *Wheel, now int64) int {
	r.mu.Lock()
	r.now = now
	r.mu.Unlock()
	return w.Advance(now)
}

func (r *recorder) expiredAt(e *Entry) (int64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.got[e]
	return at, ok
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Config{Tick: 0, Slots: -1, Shards: -1}); err == nil {
		t.Fatal("want error")
	} else {
		for _, want := range []string{"tick", "slots", "shards", "expire"} {
			if !contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestExpireNeverEarlyAtMostOneTickLate(t *testing.T) {
	w, r := newTestWheel(t, 64)
	var e Entry
	w.Init(&e, "x")
	w.Set(&e, 95*ms) // falls in tick 10 (90..100ms]
	for now := int64(0); now < 100*ms; now += ms {
		r.advance(w, now)
		if _, ok := r.expiredAt(&e); ok {
			t.Fatalf("expired early at %dms", now/ms)
		}
	}
	if n := r.advance(w, 100*ms); n != 1 {
		t.Fatalf("Advance(100ms) expired %d, want 1", n)
	}
	if e.Value != "x" || e.Deadline() != 0 {
		t.Fatalf("value %v deadline %d after expiry", e.Value, e.Deadline())
	}
	if w.Len() != 0 {
		t.Fatalf("Len %d after expiry", w.Len())
	}
}

func TestExtendLazily(t *testing.T) {
	w, r := newTestWheel(t, 64)
	var e Entry
	w.Init(&e, nil)
	w.Set(&e, 50*ms)
	// Heartbeats every 30ms keep pushing the deadline 50ms out.
	now := int64(0)
	for i := 0; i < 20; i++ {
		now += 30 * ms
		r.advance(w, now)
		if _, ok := r.expiredAt(&e); ok {
			t.Fatalf("expired at %dms despite extension", now/ms)
		}
		w.Set(&e, now+50*ms)
	}
	last := e.Deadline()
	r.advance(w, last-ms)
	if _, ok := r.expiredAt(&e); ok {
		t.Fatal("expired before the extended deadline")
	}
	r.advance(w, last+10*ms)
	if at, ok := r.expiredAt(&e); !ok || at < last {
		t.Fatalf("expiredAt=%d ok=%v, want >= %d", at, ok, last)
	}
}

func TestShortenMovesEarlier(t *testing.T) {
	w, r := newTestWheel(t, 64)
	var e Entry
	w.Init(&e, nil)
	w.Set(&e, 500*ms)
	w.Set(&e, 40*ms) // the lazy path would only see it at 500ms
	r.advance(w, 40*ms)
	if _, ok := r.expiredAt(&e); !ok {
		t.Fatal("shortened deadline did not expire at 40ms")
	}
}

func TestPastDeadlineExpiresNextAdvance(t *testing.T) {
	w, r := newTestWheel(t, 64)
	r.advance(w, 200*ms)
	var e Entry
	w.Init(&e, nil)
	w.Set(&e, 10*ms)
	if n := r.advance(w, 210*ms); n != 1 {
		t.Fatalf("expired %d, want 1", n)
	}
}

func TestRemoveAndDisarm(t *testing.T) {
	w, r := newTestWheel(t, 64)
	var a, b Entry
	w.Init(&a, nil)
	w.Init(&b, nil)
	w.Set(&a, 20*ms)
	w.Set(&b, 20*ms)
	w.Remove(&a)
	w.Disarm(&b)
	if w.Set(&a, 30*ms) {
		t.Fatal("Set after Remove reported true")
	}
	r.advance(w, time.Second.Nanoseconds())
	if r.n != 0 {
		t.Fatalf("%d expiries after Remove/Disarm", r.n)
	}
	if w.Len() != 0 {
		t.Fatalf("Len %d, want 0", w.Len())
	}
	// A disarmed entry can be armed again.
	w.Set(&b, 1100*ms)
	r.advance(w, 1100*ms)
	if _, ok := r.expiredAt(&b); !ok {
		t.Fatal("re-armed entry did not expire")
	}
}

func TestBeyondOneRound(t *testing.T) {
	w, r := newTestWheel(t, 8) // 8 slots x 10ms = 80ms per round
	var e Entry
	w.Init(&e, nil)
	w.Set(&e, 1000*ms)
	for now := int64(0); now < 1000*ms; now += 10 * ms {
		r.advance(w, now)
	}
	if _, ok := r.expiredAt(&e); ok {
		t.Fatal("expired a round early")
	}
	r.advance(w, 1000*ms)
	if _, ok := r.expiredAt(&e); !ok {
		t.Fatal("did not expire")
	}
}

func TestLongPauseCatchesUp(t *testing.T) {
	w, r := newTestWheel(t, 8)
	es := make([]Entry, 100)
	for i := range es {
		w.Init(&es[i], i)
		w.Set(&es[i], int64(i+1)*7*ms)
	}
	if n := r.advance(w, 10*time.Second.Nanoseconds()); n != len(es) {
		t.Fatalf("expired %d, want %d", n, len(es))
	}
}

func TestExpireMayRearm(t *testing.T) {
	var w *Wheel
	var count atomic.Int32
	w, err := New(Config{Tick: 10 * time.Millisecond, Slots: 16, Expire: func(e *Entry) {
		if count.Add(1) < 3 {
			w.Set(e, e.Value.(func() int64)()+30*ms)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	var now int64
	var e Entry
	w.Init(&e, func() int64 { return now })
	w.Set(&e, 30*ms)
	for now = 0; now <= 500*ms; now += 10 * ms {
		w.Advance(now)
	}
	if c := count.Load(); c != 3 {
		t.Fatalf("expired %d times, want 3", c)
	}
}

// TestManyEntries arms 200k entries at random deadlines, extends half of
// them, removes a tenth, and checks each expires exactly once, in its tick.
func TestManyEntries(t *testing.T) {
	w, r := newTestWheel(t, 256)
	const n = 200_000
	es := make([]Entry, n)
	want := make([]int64, n) // 0 = must not expire
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range es {
		w.Init(&es[i], i)
		want[i] = int64(rng.IntN(3000)+1) * ms
		w.Set(&es[i], want[i])
	}
	for i := 0; i < n; i += 2 {
		want[i] += int64(rng.IntN(5000)) * ms
		w.Set(&es[i], want[i])
	}
	for i := 0; i < n; i += 10 {
		w.Remove(&es[i])
		want[i] = 0
	}
	for now := int64(0); now <= 9*time.Second.Nanoseconds(); now += 10 * ms {
		r.advance(w, now)
	}
	expected := 0
	for i := range es {
		at, ok := r.expiredAt(&es[i])
		switch {
		case want[i] == 0 && ok:
			t.Fatalf("entry %d removed but expired", i)
		case want[i] == 0:
		case !ok:
			t.Fatalf("entry %d (deadline %dms) never expired", i, want[i]/ms)
		case at < want[i] || at >= want[i]+20*ms:
			t.Fatalf("entry %d deadline %dms expired at %dms", i, want[i]/ms, at/ms)
		default:
			expected++
		}
	}
	if r.n != expected {
		t.Fatalf("%d expiries, want %d (an entry expired twice)", r.n, expected)
	}
	if w.Len() != 0 {
		t.Fatalf("Len %d after everything expired", w.Len())
	}
}

// TestConcurrentSetAdvance races extensions against a ticking goroutine:
// entries that keep being extended far ahead must never expire, and the
// ones left alone must.
func TestConcurrentSetAdvance(t *testing.T) {
	w, r := newTestWheel(t, 64)
	const n = 4096
	es := make([]Entry, n)
	var clock atomic.Int64
	for i := range es {
		w.Init(&es[i], i)
		w.Set(&es[i], 50*ms)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	const setters = 4
	var passed [setters]atomic.Int64 // clock value at the start of each setter's last full pass
	for g := 0; g < setters; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := clock.Load()
				if passed[g].Load() == start && start != 0 {
					// Done with this clock value: yield rather than spin, or
					// the ticking goroutine waits for a preemption (10ms).
					runtime.Gosched()
					continue
				}
				for i := g; i < n; i += 8 { // i%8 in 0..3 are extended, 4..7 left alone
					w.Set(&es[i], clock.Load()+50*ms)
				}
				passed[g].Store(start)
			}
		}(g)
	}
	for now := int64(0); now < 2*time.Second.Nanoseconds(); now += 5 * ms {
		clock.Store(now)
		// Advance only once every setter finished a pass begun at this clock
		// value, so no extension can honestly be late; the setters keep
		// running during Advance, which is the race under test.
		for g := range passed {
			for passed[g].Load() < now {
				runtime.Gosched()
			}
		}
		r.advance(w, now)
	}
	close(stop)
	wg.Wait()
	for i := range es {
		_, ok := r.expiredAt(&es[i])
		extended := i%8 < 4
		if extended && ok {
			t.Fatalf("extended entry %d expired", i)
		}
		if !extended && !ok {
			t.Fatalf("idle entry %d never expired", i)
		}
	}
}
