package auth

import (
	"errors"
	"testing"
	"time"
)

func TestTokens(t *testing.T) {
	if _, err := NewTokens("short"); !errors.Is(err, ErrWeakSecret) {
		t.Fatalf("weak secret: %v", err)
	}
	tk, err := NewTokens("0123456789abcdef-secret")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tk.Sign("alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if u, err := tk.Verify(tok); err != nil || u != "alice" {
		t.Fatalf("Verify = %q, %v", u, err)
	}
	other, _ := NewTokens("another-secret-0123456")
	if _, err := other.Verify(tok); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("wrong secret: %v", err)
	}
	if _, err := tk.Verify("not.a.token"); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("garbage: %v", err)
	}
	tk.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if _, err := tk.Verify(tok); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("expired: %v", err)
	}
}

func TestAPIKeys(t *testing.T) {
	k := NewAPIKeys([]APIKey{{Key: "all", Bizs: []string{"*"}}, {Key: "one", Bizs: []string{"demo"}}})
	for _, tt := range []struct {
		key, biz string
		ok       bool
	}{
		{"all", "x", true}, {"one", "demo", true}, {"one", "x", false}, {"", "demo", false}, {"nope", "demo", false}, {"one", "", true},
	} {
		if err := k.Check(tt.key, tt.biz); (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrAPIKey)) {
			t.Errorf("Check(%q, %q) = %v, want ok=%v", tt.key, tt.biz, err, tt.ok)
		}
	}
}
