package memory

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestCometRegistry(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	d := newDir(t, Config{TTL: time.Minute, SweepInterval: -1, Now: clk.Now})
	list := func() string {
		t.Helper()
		cs, err := d.Comets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range cs {
			out = append(out, c.ID+"@"+c.Addr)
		}
		return fmt.Sprint(out)
	}
	if got := list(); got != "[]" {
		t.Fatalf("empty registry lists %s", got)
	}
	if err := d.RegisterComet(ctx, "c2", "10.0.0.2:3102"); err != nil {
		t.Fatal(err)
	}
	if err := d.RegisterComet(ctx, "c1", "10.0.0.1:3102"); err != nil {
		t.Fatal(err)
	}
	if got := list(); got != "[c1@10.0.0.1:3102 c2@10.0.0.2:3102]" {
		t.Fatalf("Comets = %s", got)
	}
	clk.Advance(40 * time.Second)
	// c1 renews (from a new address: it restarted elsewhere); c2 does not.
	if err := d.RegisterComet(ctx, "c1", "10.0.0.9:3102"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(30 * time.Second) // c2 is 70s old, c1 30s
	if got := list(); got != "[c1@10.0.0.9:3102]" {
		t.Fatalf("after c2's TTL: Comets = %s", got)
	}
	// Registering prunes expired entries, so the map does not grow with
	// comets that went away.
	if err := d.RegisterComet(ctx, "c3", "10.0.0.3:3102"); err != nil {
		t.Fatal(err)
	}
	d.comets.Lock()
	n := len(d.comets.m)
	d.comets.Unlock()
	if n != 2 {
		t.Fatalf("registry holds %d entries, want 2 (c2 pruned)", n)
	}
	if err := d.RegisterComet(ctx, "", "x:1"); err == nil {
		t.Fatal("RegisterComet with empty id succeeded")
	}
	if err := d.RegisterComet(ctx, "c4", ""); err == nil {
		t.Fatal("RegisterComet with empty addr succeeded")
	}
	if err := d.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.RegisterComet(ctx, "c1", "a:1"); !errors.Is(err, ErrClosed) {
		t.Fatalf("RegisterComet after Shutdown = %v, want ErrClosed", err)
	}
	if _, err := d.Comets(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Comets after Shutdown = %v, want ErrClosed", err)
	}
}
