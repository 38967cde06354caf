package logic

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// A call whose lower id is held by another pending call waits for it; the
// lower one goes first.
func TestSendOrderWaitsForLowerID(t *testing.T) {
	o := newSendOrder(time.Minute)
	a := o.enter([]string{"c"})
	b := o.enter([]string{"c"})
	sent := make(chan string, 2)
	bLeft := make(chan struct{})
	go func() {
		o.wait(b, map[string]uint64{"c": 6})
		sent <- "b"
		o.leave(b)
		close(bLeft)
	}()
	select {
	case s := <-sent:
		t.Fatalf("%s handed over while a (unresolved) may hold a lower id", s)
	case <-time.After(50 * time.Millisecond):
	}
	o.wait(a, map[string]uint64{"c": 5}) // lowest: must not wait
	sent <- "a"
	o.leave(a)
	if got := []string{<-sent, <-sent}; !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("hand-over order %v, want [a b]", got)
	}
	<-bLeft
	if len(o.pending) != 0 {
		t.Fatalf("pending not empty after both left: %v", o.pending)
	}
}

// Other channels, and channels where a call stored only duplicates, never
// make a call wait.
func TestSendOrderIndependentChannels(t *testing.T) {
	o := newSendOrder(time.Minute)
	x := o.enter([]string{"x", "y"})
	o.wait(x, map[string]uint64{"x": 9}) // y: duplicates only
	y := o.enter([]string{"y"})
	z := o.enter([]string{"z"})
	done := make(chan struct{})
	go func() {
		o.wait(y, map[string]uint64{"y": 1}) // x resolved with nothing new on y
		o.wait(z, map[string]uint64{"z": 1})
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("calls on other channels waited")
	}
	o.leave(x)
	o.leave(y)
	o.leave(z)
}

// A call stuck before its ids are known (a slow Append) delays the others
// at most maxWait.
func TestSendOrderBoundedWait(t *testing.T) {
	o := newSendOrder(20 * time.Millisecond)
	stuck := o.enter([]string{"c"})
	defer o.leave(stuck)
	c := o.enter([]string{"c"})
	done := make(chan struct{})
	go func() { o.wait(c, map[string]uint64{"c": 3}); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("wait did not end at maxWait")
	}
	o.leave(c)
}

// Many concurrent calls whose ids are assigned in one order (as by the
// store's commit) but which resume in random order hand over in id order.
func TestSendOrderConcurrent(t *testing.T) {
	o := newSendOrder(time.Minute)
	var (
		mu     sync.Mutex
		next   = map[string]uint64{}
		sent   = map[string][]uint64{}
		wg     sync.WaitGroup
		chans  = []string{"a", "b", "c"}
		assign sync.Mutex // the "commit": enter and id assignment in one order
	)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch := chans[rand.IntN(len(chans))]
			assign.Lock()
			call := o.enter([]string{ch})
			next[ch]++
			id := next[ch]
			assign.Unlock()
			time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond) // scheduler noise
			o.wait(call, map[string]uint64{ch: id})
			mu.Lock()
			sent[ch] = append(sent[ch], id)
			mu.Unlock()
			o.leave(call)
		}()
	}
	wg.Wait()
	for ch, ids := range sent {
		if !slices.IsSorted(ids) || uint64(len(ids)) != next[ch] {
			t.Fatalf("channel %s handed over %v, want 1..%d ascending", ch, ids, next[ch])
		}
	}
}
