package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/msync/msync/pkg/store"
)

// Principals is what a store keeps about users and devices: device owners
// and per-user token cut-offs (logic's DeviceOwners and TokenRevocations).
type Principals interface {
	// ClaimDevice makes user the owner of device if it has none, or if
	// takeover is set, and returns the owner after the call.
	ClaimDevice(ctx context.Context, device, user string, takeover bool) (string, error)
	// SetTokensNotBefore raises user's cut-off to t (never lowers it).
	SetTokensNotBefore(ctx context.Context, user string, t time.Time) error
	// TokensNotBefore returns user's cut-off (whole seconds), zero if none.
	TokensNotBefore(ctx context.Context, user string) (time.Time, error)
}

// RunPrincipals runs the device-owner and token cut-off conformance tests.
// open(t, n) must return n handles on one new, empty data set, as n logic
// processes of one deployment would hold (an embedded backend returns the
// same store n times); open's cleanup closes them.
func RunPrincipals(t *testing.T, open func(t *testing.T, n int) []Principals) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open func(t *testing.T, n int) []Principals)
	}{
		{"ClaimAndHandOver", testClaimAndHandOver},
		{"ConcurrentFirstClaims", testConcurrentFirstClaims},
		{"ConcurrentHandOvers", testConcurrentHandOvers},
		{"NotBeforeOnlyMovesForward", testNotBeforeForward},
		{"ConcurrentNotBefore", testConcurrentNotBefore},
		{"InvalidInput", testPrincipalsInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open) })
	}
}

func claimAs(t *testing.T, p Principals, device, user string, takeover bool, want string) {
	t.Helper()
	if got, err := p.ClaimDevice(testContext(t), device, user, takeover); err != nil || got != want {
		t.Fatalf("ClaimDevice(%s, %s, takeover %v) = %q, %v; want %q", device, user, takeover, got, err, want)
	}
}

func testClaimAndHandOver(t *testing.T, open func(t *testing.T, n int) []Principals) {
	ps := open(t, 2)
	a, b := ps[0], ps[1]
	claimAs(t, a, "tab", "jo", false, "jo")  // the first claim records
	claimAs(t, b, "tab", "kim", false, "jo") // a foreign claim is refused, also by another process
	claimAs(t, b, "tab", "jo", false, "jo")
	claimAs(t, b, "tab", "kim", true, "kim") // a vouched hand-over
	claimAs(t, a, "tab", "jo", false, "kim")
	claimAs(t, a, "tab", "kim", true, "kim") // a hand-over to the owner changes nothing
	claimAs(t, a, "phone", "kim", false, "kim")
	claimAs(t, b, "phone", "jo", true, "jo") // takeover of a device with an owner
	claimAs(t, a, "new", "lee", true, "lee") // takeover of a device without one
}

// Two processes see the first sessions of many users for the same devices
// at once: each device gets exactly one owner, and every caller is told it.
func testConcurrentFirstClaims(t *testing.T, open func(t *testing.T, n int) []Principals) {
	ps := open(t, 2)
	const devices, users = 4, 8
	got := make([][]string, devices)
	errs := make(chan error, devices*users)
	var wg sync.WaitGroup
	for d := range devices {
		got[d] = make([]string, users)
		for u := range users {
			wg.Go(func() {
				owner, err := ps[u%len(ps)].ClaimDevice(testContext(t), fmt.Sprint("dev-", d), fmt.Sprint("user-", u), false)
				if err != nil {
					errs <- err
				}
				got[d][u] = owner
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("ClaimDevice: %v", err)
	}
	for d := range devices {
		owner := got[d][0]
		for u, o := range got[d] {
			if o != owner {
				t.Fatalf("dev-%d: caller %d was told owner %q, caller 0 %q: two owners", d, u, o, owner)
			}
		}
		claimAs(t, ps[1], fmt.Sprint("dev-", d), "someone-else", false, owner)
	}
}

// Concurrent vouched hand-overs each succeed at their moment; the device
// ends with one of them, which both processes then agree on.
func testConcurrentHandOvers(t *testing.T, open func(t *testing.T, n int) []Principals) {
	ps := open(t, 2)
	claimAs(t, ps[0], "shared", "first", false, "first")
	const users = 6
	var wg sync.WaitGroup
	errs := make(chan error, users)
	for u := range users {
		wg.Go(func() {
			user := fmt.Sprint("user-", u)
			owner, err := ps[u%len(ps)].ClaimDevice(testContext(t), "shared", user, true)
			if err == nil && owner != user {
				err = fmt.Errorf("hand-over to %s returned owner %q", user, owner)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("ClaimDevice takeover: %v", err)
	}
	final, err := ps[0].ClaimDevice(testContext(t), "shared", "first", false)
	if err != nil || final == "first" {
		t.Fatalf("owner after hand-overs = %q, %v; want one of the new users", final, err)
	}
	claimAs(t, ps[1], "shared", "first", false, final)
}

func testNotBeforeForward(t *testing.T, open func(t *testing.T, n int) []Principals) {
	ps := open(t, 2)
	ctx := testContext(t)
	if nb, err := ps[0].TokensNotBefore(ctx, "jo"); err != nil || !nb.IsZero() {
		t.Fatalf("cut-off of a new user = %v, %v; want zero", nb, err)
	}
	t1 := time.Unix(1_800_000_000, 0)
	steps := []struct {
		set  time.Time
		want time.Time
	}{
		{t1, t1},
		{t1.Add(-time.Hour), t1}, // never lowered
		{t1, t1},
		{t1.Add(90 * time.Second), t1.Add(90 * time.Second)},
	}
	for i, st := range steps {
		if err := ps[i%2].SetTokensNotBefore(ctx, "jo", st.set); err != nil {
			t.Fatalf("SetTokensNotBefore(%v): %v", st.set, err)
		}
		for _, p := range ps {
			if nb, err := p.TokensNotBefore(ctx, "jo"); err != nil || !nb.Equal(st.want) {
				t.Fatalf("after setting %v: cut-off %v, %v; want %v", st.set, nb, err, st.want)
			}
		}
	}
	if nb, err := ps[1].TokensNotBefore(ctx, "kim"); err != nil || !nb.IsZero() {
		t.Fatalf("another user's cut-off = %v, %v; want zero", nb, err)
	}
}

// Cut-offs written by two processes in any order: the latest one stays.
func testConcurrentNotBefore(t *testing.T, open func(t *testing.T, n int) []Principals) {
	ps := open(t, 2)
	base := time.Unix(1_800_000_000, 0)
	const writes = 16
	var wg sync.WaitGroup
	errs := make(chan error, writes)
	for i := range writes {
		wg.Go(func() {
			// Interleave high and low values so a last-write-wins on
			// arrival would keep a lower one.
			at := base.Add(time.Duration((i*7)%writes) * time.Second)
			if err := ps[i%2].SetTokensNotBefore(testContext(t), "jo", at); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("SetTokensNotBefore: %v", err)
	}
	want := base.Add((writes - 1) * time.Second)
	for _, p := range ps {
		if nb, err := p.TokensNotBefore(testContext(t), "jo"); err != nil || !nb.Equal(want) {
			t.Fatalf("cut-off = %v, %v; want the latest, %v", nb, err, want)
		}
	}
}

func testPrincipalsInvalid(t *testing.T, open func(t *testing.T, n int) []Principals) {
	p := open(t, 1)[0]
	ctx := testContext(t)
	for _, c := range []struct{ device, user string }{{"", "jo"}, {"tab", ""}} {
		if _, err := p.ClaimDevice(ctx, c.device, c.user, false); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("ClaimDevice(%q, %q) = %v; want store.ErrInvalid", c.device, c.user, err)
		}
	}
	if err := p.SetTokensNotBefore(ctx, "", time.Unix(1_800_000_000, 0)); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("SetTokensNotBefore without user = %v; want store.ErrInvalid", err)
	}
	if err := p.SetTokensNotBefore(ctx, "jo", time.Time{}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("SetTokensNotBefore(zero time) = %v; want store.ErrInvalid", err)
	}
	if _, err := p.TokensNotBefore(ctx, ""); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("TokensNotBefore without user = %v; want store.ErrInvalid", err)
	}
	if nb, err := p.TokensNotBefore(ctx, "jo"); err != nil || !nb.IsZero() {
		t.Errorf("a refused cut-off was stored: %v, %v", nb, err)
	}
}
