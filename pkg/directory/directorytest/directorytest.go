// Package directorytest is the conformance suite every online directory
// backend runs (directory.Directory and directory.Comets): call Run from the
// backend's tests. It uses only the interfaces, so it assumes nothing about
// the backend; expiry is driven through Instance.Wait, which a backend with
// an injected clock advances and one with native TTLs (Cassandra) sleeps.
package directorytest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msync/msync/pkg/directory"
)

// Backend is a directory under test.
type Backend interface {
	directory.Directory
	directory.Comets
	// Close releases it; calls after Close fail. Idempotent.
	Close() error
}

// Instance is one new, empty directory.
type Instance struct {
	Dir Backend
	// Wait lets d of the directory's time pass (advance a test clock, or
	// sleep for a backend on real time).
	Wait func(d time.Duration)
}

// Options describes the backend.
type Options struct {
	// TTL the expiry tests open directories with. Zero means 1m (fine for a
	// test clock); a real-time backend wants it short, but long enough that
	// a loaded machine finishes a few calls well inside it (10s).
	TTL time.Duration
}

// Run runs the suite. open(t, ttl) must return a new, empty directory whose
// entries expire after ttl; the suite closes it.
func Run(t *testing.T, open func(t *testing.T, ttl time.Duration) Instance, opt Options) {
	if opt.TTL == 0 {
		opt.TTL = time.Minute
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, in Instance, ttl time.Duration)
	}{
		{"PutReplaceDelete", testPutReplaceDelete},
		{"StaleDeleteKeepsSuccessor", testStaleDelete},
		{"UserSwitchOnDevice", testUserSwitch},
		{"ManyDevicesOfAUser", testManyDevices},
		{"SessionFields", testSessionFields},
		{"ExpiryAndRenew", testExpiryAndRenew},
		{"CometRegistry", testCometRegistry},
		{"CometExpiry", testCometExpiry},
		{"ConcurrentPutsAgree", testConcurrentPuts},
		{"InvalidInput", testInvalidInput},
		{"Close", testClose},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := open(t, opt.TTL)
			t.Cleanup(func() {
				if err := in.Dir.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tt.fn(t, in, opt.TTL)
		})
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func sess(user, device, comet, key string) directory.Session {
	// Since at millisecond precision: what every backend keeps.
	return directory.Session{User: user, Device: device, Platform: "ios", AppVersion: "1.0", Comet: comet, Key: key,
		Since: time.Unix(1_700_000_000, 123_000_000)}
}

func put(t *testing.T, d Backend, s directory.Session) *directory.Session {
	t.Helper()
	prev, err := d.Put(testContext(t), s)
	if err != nil {
		t.Fatalf("Put(%s on %s/%s): %v", s.Device, s.Comet, s.Key, err)
	}
	return prev
}

func del(t *testing.T, d Backend, device, comet, key string) {
	t.Helper()
	if err := d.Delete(testContext(t), device, comet, key); err != nil {
		t.Fatalf("Delete(%s, %s, %s): %v", device, comet, key, err)
	}
}

// byUser returns the user's sessions as sorted "device@comet/key" strings.
func byUser(t *testing.T, d Backend, user string) string {
	t.Helper()
	ss, err := d.ByUser(testContext(t), user)
	if err != nil {
		t.Fatalf("ByUser(%s): %v", user, err)
	}
	out := make([]string, 0, len(ss))
	for _, s := range ss {
		if s.User != user {
			t.Fatalf("ByUser(%s) returned a session of %q", user, s.User)
		}
		out = append(out, s.Device+"@"+s.Comet+"/"+s.Key)
	}
	sort.Strings(out)
	return "[" + strings.Join(out, " ") + "]"
}

// deviceAt returns "comet/key" of the device's session, or "none".
func deviceAt(t *testing.T, d Backend, device string) string {
	t.Helper()
	s, err := d.ByDevice(testContext(t), device)
	if errors.Is(err, directory.ErrNotFound) {
		return "none"
	}
	if err != nil {
		t.Fatalf("ByDevice(%s): %v", device, err)
	}
	return s.Comet + "/" + s.Key
}

func testPutReplaceDelete(t *testing.T, in Instance, _ time.Duration) {
	d := in.Dir
	if prev := put(t, d, sess("alice", "d1", "c1", "k1")); prev != nil {
		t.Fatalf("first Put returned a previous session %+v", prev)
	}
	put(t, d, sess("alice", "d2", "c2", "k9"))
	prev := put(t, d, sess("alice", "d1", "c2", "k2"))
	if prev == nil || prev.Comet != "c1" || prev.Key != "k1" || prev.User != "alice" {
		t.Fatalf("replacing Put returned %+v; want the c1/k1 session of alice (to kick it)", prev)
	}
	if got := byUser(t, d, "alice"); got != "[d1@c2/k2 d2@c2/k9]" {
		t.Fatalf("ByUser = %s", got)
	}
	del(t, d, "d1", "c2", "k2")
	if got := deviceAt(t, d, "d1"); got != "none" {
		t.Fatalf("ByDevice after Delete = %s; want ErrNotFound", got)
	}
	if got := byUser(t, d, "alice"); got != "[d2@c2/k9]" {
		t.Fatalf("ByUser after Delete = %s", got)
	}
	del(t, d, "never-seen", "c1", "k1") // deleting nothing is no error
	if got := byUser(t, d, "nobody"); got != "[]" {
		t.Fatalf("ByUser of an unknown user = %s", got)
	}
}

// A late disconnect of a replaced session must not remove its successor.
func testStaleDelete(t *testing.T, in Instance, _ time.Duration) {
	d := in.Dir
	put(t, d, sess("alice", "d1", "c1", "k1"))
	put(t, d, sess("alice", "d1", "c2", "k2"))
	del(t, d, "d1", "c1", "k1") // the old comet reports the old connection gone
	del(t, d, "d1", "c2", "k1") // right comet, wrong key
	del(t, d, "d1", "c1", "k2") // right key, wrong comet
	if got := deviceAt(t, d, "d1"); got != "c2/k2" {
		t.Fatalf("ByDevice after stale Deletes = %s; want c2/k2", got)
	}
	if got := byUser(t, d, "alice"); got != "[d1@c2/k2]" {
		t.Fatalf("ByUser after stale Deletes = %s", got)
	}
}

// A device that changes hands leaves its old user's list.
func testUserSwitch(t *testing.T, in Instance, _ time.Duration) {
	d := in.Dir
	put(t, d, sess("alice", "d1", "c1", "k1"))
	prev := put(t, d, sess("bob", "d1", "c1", "k2"))
	if prev == nil || prev.User != "alice" {
		t.Fatalf("Put by bob returned %+v; want alice's session", prev)
	}
	if got := byUser(t, d, "alice"); got != "[]" {
		t.Fatalf("alice still listed on d1: %s", got)
	}
	if got := byUser(t, d, "bob"); got != "[d1@c1/k2]" {
		t.Fatalf("ByUser(bob) = %s", got)
	}
	put(t, d, sess("alice", "d1", "c1", "k3")) // and back
	if a, b := byUser(t, d, "alice"), byUser(t, d, "bob"); a != "[d1@c1/k3]" || b != "[]" {
		t.Fatalf("after switching back: alice %s, bob %s", a, b)
	}
}

func testManyDevices(t *testing.T, in Instance, _ time.Duration) {
	d := in.Dir
	for _, dev := range []string{"d1", "d2", "d3"} {
		put(t, d, sess("alice", dev, "c1", "k-"+dev))
	}
	want := []string{"[d1@c1/k-d1 d2@c1/k-d2 d3@c1/k-d3]", "[d2@c1/k-d2 d3@c1/k-d3]", "[d2@c1/k-d2]", "[]"}
	for i, dev := range []string{"", "d1", "d3", "d2"} {
		if dev != "" {
			del(t, d, dev, "c1", "k-"+dev)
		}
		if got := byUser(t, d, "alice"); got != want[i] {
			t.Fatalf("after deleting %q: ByUser = %s, want %s", dev, got, want[i])
		}
	}
	put(t, d, sess("alice", "d1", "c1", "k1")) // re-adding after the list emptied
	if got := byUser(t, d, "alice"); got != "[d1@c1/k1]" {
		t.Fatalf("ByUser after re-adding = %s", got)
	}
}

// Every field of a session comes back as it was put, by device and by user.
func testSessionFields(t *testing.T, in Instance, _ time.Duration) {
	d := in.Dir
	s := directory.Session{User: "u-ß", Device: "dev/1", Platform: "android", AppVersion: "2.3.4", Comet: "comet-7",
		Key: "0123456789abcdef", Since: time.Unix(1_700_000_123, 456_000_000)}
	put(t, d, s)
	got, err := d.ByDevice(testContext(t), s.Device)
	if err != nil || !sameSession(got, s) {
		t.Fatalf("ByDevice = %+v, %v; want %+v", got, err, s)
	}
	list, err := d.ByUser(testContext(t), s.User)
	if err != nil || len(list) != 1 || !sameSession(list[0], s) {
		t.Fatalf("ByUser = %+v, %v; want [%+v]", list, err, s)
	}
}

func sameSession(a, b directory.Session) bool {
	at, bt := a.Since, b.Since
	a.Since, b.Since = time.Time{}, time.Time{}
	return a == b && at.Equal(bt)
}

// Sessions expire after the TTL unless renewed, and Renew touches only
// the sessions still on the renewing comet.
func testExpiryAndRenew(t *testing.T, in Instance, ttl time.Duration) {
	d := in.Dir
	put(t, d, sess("alice", "d1", "c1", "k1"))
	put(t, d, sess("alice", "d2", "c2", "k2"))
	in.Wait(ttl * 6 / 10)
	if err := d.Renew(testContext(t), "c1", []string{"d1", "d2", "unknown"}); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	in.Wait(ttl * 6 / 10) // d2 is past its TTL; d1 was renewed
	waitFor(t, ttl, "d2 to expire", func() error {
		if got := deviceAt(t, d, "d2"); got != "none" {
			return fmt.Errorf("ByDevice(d2) = %s, want ErrNotFound", got)
		}
		return nil
	})
	if got := deviceAt(t, d, "d1"); got != "c1/k1" {
		t.Fatalf("renewed d1 = %s; want c1/k1", got)
	}
	if got := byUser(t, d, "alice"); got != "[d1@c1/k1]" {
		t.Fatalf("ByUser = %s; want only the renewed d1", got)
	}
	// An expired session is absent: a new Put does not report it as a
	// previous session to kick.
	if prev := put(t, d, sess("alice", "d2", "c3", "k3")); prev != nil {
		t.Fatalf("Put over an expired session returned %+v", prev)
	}
}

func testCometRegistry(t *testing.T, in Instance, _ time.Duration) {
	d := in.Dir
	ctx := testContext(t)
	if cs, err := d.Comets(ctx); err != nil || len(cs) != 0 {
		t.Fatalf("Comets of a new directory = %+v, %v", cs, err)
	}
	for _, c := range [][2]string{{"c2", "127.0.0.1:3104"}, {"c1", "127.0.0.1:3102"}, {"c2", "127.0.0.1:3106"}} {
		if err := d.RegisterComet(ctx, c[0], c[1]); err != nil {
			t.Fatalf("RegisterComet(%s, %s): %v", c[0], c[1], err)
		}
	}
	if got := comets(t, d); got != "[c1=127.0.0.1:3102 c2=127.0.0.1:3106]" {
		t.Fatalf("Comets = %s; want c1 and c2 at its new address", got)
	}
}

func comets(t *testing.T, d Backend) string {
	t.Helper()
	cs, err := d.Comets(testContext(t))
	if err != nil {
		t.Fatalf("Comets: %v", err)
	}
	var out []string
	for _, c := range cs {
		if c.Seen.IsZero() {
			t.Fatalf("comet %s has no Seen time", c.ID)
		}
		out = append(out, c.ID+"="+c.Addr)
	}
	slices.Sort(out)
	return "[" + strings.Join(out, " ") + "]"
}

func testCometExpiry(t *testing.T, in Instance, ttl time.Duration) {
	d := in.Dir
	ctx := testContext(t)
	for _, id := range []string{"c1", "c2"} {
		if err := d.RegisterComet(ctx, id, "127.0.0.1:3102"); err != nil {
			t.Fatal(err)
		}
	}
	in.Wait(ttl * 6 / 10)
	if err := d.RegisterComet(ctx, "c1", "127.0.0.1:3102"); err != nil { // c1 renews, c2 does not
		t.Fatal(err)
	}
	in.Wait(ttl * 6 / 10)
	waitFor(t, ttl, "c2 to expire", func() error {
		if got := comets(t, d); got != "[c1=127.0.0.1:3102]" {
			return fmt.Errorf("comets listed: %s; want only the renewed c1", got)
		}
		return nil
	})
}

// Puts of one device racing (two logic processes, a reconnect storm) leave
// the device under exactly one of the racing sessions, and a later Put
// replaces it. (A race may leave a stale entry in a former user's list until
// the TTL: the Cassandra directory reads the previous session before writing,
// without a lock, so that is not checked.)
func testConcurrentPuts(t *testing.T, in Instance, _ time.Duration) {
	d := in.Dir
	users := []string{"u0", "u1", "u2"}
	const writers, rounds = 8, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range rounds {
				dev := fmt.Sprint("d", i%4)
				if _, err := d.Put(testContext(t), sess(users[(w+i)%3], dev, "c", fmt.Sprintf("k%d-%d", w, i))); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Put: %v", err)
	}
	for i := range 4 {
		dev := fmt.Sprint("d", i)
		s, err := d.ByDevice(testContext(t), dev)
		var w, r int
		if err != nil || s.Comet != "c" {
			t.Fatalf("ByDevice(%s) after the race = %+v, %v", dev, s, err)
		}
		if _, scanErr := fmt.Sscanf(s.Key, "k%d-%d", &w, &r); scanErr != nil || r%4 != i || s.User != users[(w+r)%3] {
			t.Fatalf("ByDevice(%s) = %+v: not one of the sessions put for it", dev, s)
		}
		if prev := put(t, d, sess("final", dev, "c", "last")); prev == nil || prev.Key != s.Key {
			t.Fatalf("Put after the race returned %+v; want the session ByDevice showed (%s)", prev, s.Key)
		}
	}
	if got := byUser(t, d, "final"); got != "[d0@c/last d1@c/last d2@c/last d3@c/last]" {
		t.Fatalf("ByUser(final) = %s", got)
	}
}

func testInvalidInput(t *testing.T, in Instance, _ time.Duration) {
	d := in.Dir
	ctx := testContext(t)
	if _, err := d.Put(ctx, directory.Session{User: "u", Comet: "c", Key: "k"}); err == nil {
		t.Error("Put without a device: no error")
	}
	for _, c := range [][2]string{{"", "127.0.0.1:1"}, {"c1", ""}} {
		if err := d.RegisterComet(ctx, c[0], c[1]); err == nil {
			t.Errorf("RegisterComet(%q, %q): no error", c[0], c[1])
		}
	}
	if got := comets(t, d); got != "[]" {
		t.Errorf("refused registrations were stored: %s", got)
	}
}

func testClose(t *testing.T, in Instance, _ time.Duration) {
	d := in.Dir
	put(t, d, sess("alice", "d1", "c1", "k1"))
	for range 2 {
		if err := d.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	ctx := testContext(t)
	if _, err := d.Put(ctx, sess("alice", "d2", "c1", "k2")); err == nil {
		t.Error("Put after Close: no error")
	}
	if _, err := d.ByUser(ctx, "alice"); err == nil {
		t.Error("ByUser after Close: no error")
	}
	if _, err := d.ByDevice(ctx, "d1"); err == nil {
		t.Error("ByDevice after Close: no error")
	}
	if err := d.RegisterComet(ctx, "c1", "127.0.0.1:1"); err == nil {
		t.Error("RegisterComet after Close: no error")
	}
}

// waitFor polls cond until it returns nil, for at most ttl plus a minute
// (a real-time backend's expiry lands on its own schedule); the failure
// names what was seen last.
func waitFor(t *testing.T, ttl time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(ttl + time.Minute)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
