package biz

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseDefaults(t *testing.T) {
	b, err := Parse(Spec{Name: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	if b.Target != TargetUser || b.Scope != ScopeAppointed || !b.MultiDevice || !b.Persistent ||
		b.TTL != DefaultTTL || b.LatestN != 0 || b.MaxPayload != DefaultMaxPayload {
		t.Fatalf("defaults: %+v", b)
	}
	if got := b.Channel("alice", "d1"); got != "demo/u/alice" {
		t.Fatalf("channel %q", got)
	}
}

func TestParseAllProblemsAtOnce(t *testing.T) {
	_, err := Parse(Spec{Name: "bad name", Target: "group", Scope: "x", TTL: "31d", Backlog: "latest:0", MaxPayload: -1})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{"bad name", "target", "scope", "ttl", "backlog", "max_payload"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestParseValues(t *testing.T) {
	f := false
	b, err := Parse(Spec{Name: "lock", Target: "device", Scope: "global", MultiDevice: &f, Persistent: &f, TTL: "36h", Backlog: "latest:5"})
	if err != nil {
		t.Fatal(err)
	}
	if b.TTL != 36*time.Hour || b.LatestN != 5 || b.MultiDevice || b.Persistent || b.Backlog() != "latest:5" {
		t.Fatalf("%+v", b)
	}
	if got := b.Channel("u", "d"); got != "lock/g" {
		t.Fatalf("channel %q", got)
	}
}

func TestRegistry(t *testing.T) {
	if _, err := NewRegistry([]Spec{{Name: "a"}, {Name: "a"}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("duplicate names: err = %v", err)
	}
	r, err := NewRegistry([]Spec{{Name: "b"}, {Name: "a"}})
	if err != nil {
		t.Fatal(err)
	}
	if all := r.All(); len(all) != 2 || all[0].Name != "a" {
		t.Fatalf("All = %v", all)
	}
	if _, err := r.Get("zz"); !errors.Is(err, ErrUnknown) {
		t.Fatalf("Get unknown: %v", err)
	}
}
