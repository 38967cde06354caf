package memory

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/pkg/directory"
	"github.com/msync/msync/pkg/directory/directorytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable test clock.
type clock struct{ ns atomic.Int64 }

func newClock() *clock                   { c := &clock{}; c.ns.Store(time.Unix(1_700_000_000, 0).UnixNano()); return c }
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func newDir(t *testing.T, cfg Config) *Directory {
	t.Helper()
	d, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return d
}

func sess(user, device, comet, key string) directory.Session {
	return directory.Session{User: user, Device: device, Platform: "ios", AppVersion: "1.0", Comet: comet, Key: key}
}

func devices(ss []directory.Session) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Device+"@"+s.Comet+"/"+s.Key)
	}
	return out
}

// The user index keeps a user's first device inline and others in a set:
// removing the inline one must promote another, in any order of removal.
func TestUserIndexManyDevices(t *testing.T) {
	ctx := context.Background()
	d := newDir(t, Config{})
	for _, dev := range []string{"d1", "d2", "d3"} {
		if _, err := d.Put(ctx, sess("alice", dev, "c1", "k-"+dev)); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"[d1@c1/k-d1 d2@c1/k-d2 d3@c1/k-d3]", "[d2@c1/k-d2 d3@c1/k-d3]", "[d2@c1/k-d2]", "[]"}
	for i, dev := range []string{"", "d1", "d3", "d2"} {
		if dev != "" {
			if err := d.Delete(ctx, dev, "c1", "k-"+dev); err != nil {
				t.Fatal(err)
			}
		}
		got, _ := d.ByUser(ctx, "alice")
		if g := fmt.Sprint(devicesOrEmpty(got)); g != want[i] {
			t.Fatalf("after deleting %q: ByUser = %v, want %v", dev, g, want[i])
		}
	}
	us := d.userShard("alice")
	us.mu.Lock()
	_, left := us.devices["alice"]
	us.mu.Unlock()
	if left {
		t.Fatal("user index keeps an entry for a user with no devices")
	}
	// Re-adding after the index emptied, and a device moving to another user.
	if _, err := d.Put(ctx, sess("alice", "d1", "c1", "k1")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Put(ctx, sess("bob", "d1", "c1", "k2")); err != nil {
		t.Fatal(err)
	}
	if a, _ := d.ByUser(ctx, "alice"); len(a) != 0 {
		t.Fatalf("ByUser(alice) = %v after d1 moved to bob", devices(a))
	}
}

func devicesOrEmpty(ss []directory.Session) []string {
	if out := devices(ss); out != nil {
		return out
	}
	return []string{}
}

func TestExpiryAndRenew(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	d := newDir(t, Config{TTL: time.Minute, SweepInterval: -1, Now: clk.Now})
	d.Put(ctx, sess("alice", "d1", "c1", "k1"))
	d.Put(ctx, sess("alice", "d2", "c2", "k2"))
	clk.Advance(50 * time.Second)
	// Renew only touches sessions of the named comet.
	if err := d.Renew(ctx, "c1", []string{"d1", "d2", "unknown"}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(20 * time.Second) // d2 is 70s old, d1 was renewed 20s ago
	if _, err := d.ByDevice(ctx, "d2"); !errors.Is(err, directory.ErrNotFound) {
		t.Fatalf("expired d2: %v, want ErrNotFound", err)
	}
	if got, _ := d.ByUser(ctx, "alice"); fmt.Sprint(devices(got)) != "[d1@c1/k1]" {
		t.Fatalf("ByUser = %v, want only d1", devices(got))
	}
	// An expired session is absent: renewing it does not revive it, and a new
	// Put does not report it as a previous session to kick.
	d.Renew(ctx, "c2", []string{"d2"})
	if _, err := d.ByDevice(ctx, "d2"); !errors.Is(err, directory.ErrNotFound) {
		t.Fatalf("renewed expired d2: %v, want ErrNotFound", err)
	}
	if prev, _ := d.Put(ctx, sess("alice", "d2", "c3", "k3")); prev != nil {
		t.Fatalf("Put over expired session returned prev %+v", prev)
	}
	if n := d.Len(); n != 2 {
		t.Fatalf("Len = %d, want 2", n)
	}
	clk.Advance(2 * time.Minute)
	if n := d.Sweep(); n != 2 {
		t.Fatalf("Sweep removed %d, want 2", n)
	}
	if n := d.Len(); n != 0 {
		t.Fatalf("Len after Sweep = %d", n)
	}
}

func TestSweeperRuns(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	d := newDir(t, Config{TTL: time.Minute, SweepInterval: time.Millisecond, Now: clk.Now})
	d.Put(ctx, sess("alice", "d1", "c1", "k1"))
	clk.Advance(time.Hour)
	testutil.Eventually(t, 10*time.Second, time.Millisecond, func() error {
		if n := d.Len(); n != 0 {
			return fmt.Errorf("sweeper left %d expired sessions", n)
		}
		return nil
	})
}

func TestShutdown(t *testing.T) {
	ctx := context.Background()
	d, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := d.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Put(ctx, sess("a", "d", "c", "k")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Shutdown = %v", err)
	}
	if _, err := d.ByUser(ctx, "a"); !errors.Is(err, ErrClosed) {
		t.Fatalf("ByUser after Shutdown = %v", err)
	}
	if _, err := New(Config{TTL: -1, Shards: -1}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("New(bad) = %v", err)
	}
}

// TestConcurrentConsistency hammers a few devices with Puts (switching users)
// and Deletes, then checks the user index agrees with the sessions.
func TestConcurrentConsistency(t *testing.T) {
	ctx := context.Background()
	d := newDir(t, Config{Shards: 4})
	users := []string{"u0", "u1", "u2"}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 500 {
				dev := fmt.Sprintf("d%d", i%5)
				key := fmt.Sprintf("k%d-%d", w, i)
				if _, err := d.Put(ctx, sess(users[(w+i)%3], dev, "c", key)); err != nil {
					t.Error(err)
					return
				}
				if i%3 == 0 {
					d.Delete(ctx, dev, "c", key)
				}
				d.ByUser(ctx, users[i%3])
			}
		})
	}
	wg.Wait()
	online := map[string]string{}
	for i := range 5 {
		dev := fmt.Sprintf("d%d", i)
		if s, err := d.ByDevice(ctx, dev); err == nil {
			online[dev] = s.User
		}
	}
	seen := 0
	for _, u := range users {
		ss, _ := d.ByUser(ctx, u)
		for _, s := range ss {
			if online[s.Device] != u {
				t.Errorf("ByUser(%s) lists %s, whose session is user %q", u, s.Device, online[s.Device])
			}
			seen++
		}
	}
	if seen != len(online) {
		t.Errorf("user index lists %d sessions, devices have %d: %v", seen, len(online), online)
	}
}

func TestConformance(t *testing.T) {
	directorytest.Run(t, func(t *testing.T, ttl time.Duration) directorytest.Instance {
		clk := newClock()
		d, err := New(Config{TTL: ttl, SweepInterval: -1, Now: clk.Now})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		return directorytest.Instance{Dir: d, Wait: clk.Advance}
	}, directorytest.Options{})
}
