package auth

import (
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
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

// Security review #14: keys are matched by digest over every key; a key
// that is a prefix or an extension of a configured one does not match.
func TestAPIKeysExactMatchOnly(t *testing.T) {
	k := NewAPIKeys([]APIKey{{Key: "first-key-0123456789abcdef", Bizs: []string{"a"}}, {Key: "second-key-0123456789abcdef", Bizs: []string{"b"}}})
	for _, key := range []string{"first-key", "first-key-0123456789abcdef0", "second-key-0123456789abcde"} {
		if err := k.Check(key, ""); !errors.Is(err, ErrAPIKey) {
			t.Errorf("Check(%q) = %v, want ErrAPIKey", key, err)
		}
	}
	if err := k.Check("second-key-0123456789abcdef", "b"); err != nil {
		t.Errorf("second key for its biz: %v", err)
	}
	if err := k.Check("second-key-0123456789abcdef", "a"); !errors.Is(err, ErrAPIKey) {
		t.Errorf("second key for the first key's biz: %v", err)
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

// raw signs claims with secret as a business's JWT library would.
func raw(t *testing.T, secret string, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Security review #13: claims a verified signature alone used to let through.
func TestTokenClaimsChecked(t *testing.T) {
	const secret = "0123456789abcdef-secret"
	now := time.Now()
	tk, err := New(TokenConfig{Secret: secret, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	exp := now.Add(time.Hour).Unix()
	for _, tt := range []struct {
		name string
		c    jwt.MapClaims
		ok   bool
	}{
		{"plain", jwt.MapClaims{"sub": "alice", "exp": exp}, true},
		{"our aud", jwt.MapClaims{"sub": "alice", "exp": exp, "aud": "msync"}, true},
		{"aud list with ours", jwt.MapClaims{"sub": "alice", "exp": exp, "aud": []string{"billing", "msync"}}, true},
		{"foreign aud", jwt.MapClaims{"sub": "alice", "exp": exp, "aud": "billing"}, false},
		{"100 years", jwt.MapClaims{"sub": "alice", "exp": now.Add(100 * 365 * 24 * time.Hour).Unix()}, false},
		{"31 days from iat", jwt.MapClaims{"sub": "alice", "iat": now.Unix(), "exp": now.Add(31 * 24 * time.Hour).Unix()}, false},
		{"30 days from iat", jwt.MapClaims{"sub": "alice", "iat": now.Unix(), "exp": now.Add(30 * 24 * time.Hour).Unix()}, true},
		{"iat a day ahead", jwt.MapClaims{"sub": "alice", "iat": now.Add(24 * time.Hour).Unix(), "exp": now.Add(25 * time.Hour).Unix()}, false},
		{"iat within leeway", jwt.MapClaims{"sub": "alice", "iat": now.Add(10 * time.Second).Unix(), "exp": exp}, true},
		{"control char in sub", jwt.MapClaims{"sub": "a\x01b/../x", "exp": exp}, false},
		{"dev claim string", jwt.MapClaims{"sub": "alice", "exp": exp, "dev": "alice-phone"}, true},
		{"dev claim bad id", jwt.MapClaims{"sub": "alice", "exp": exp, "dev": "a\nb"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tk.VerifyClaims(raw(t, secret, tt.c))
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrTokenInvalid)) {
				t.Fatalf("VerifyClaims = %v, want ok=%v", err, tt.ok)
			}
		})
	}
	strict, _ := New(TokenConfig{Secret: secret, RequireAudience: true, Now: func() time.Time { return now }})
	if _, err := strict.VerifyClaims(raw(t, secret, jwt.MapClaims{"sub": "alice", "exp": exp})); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("RequireAudience let a token without aud through: %v", err)
	}
	if _, err := tk.Sign("alice", 31*24*time.Hour); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("Sign over the lifetime cap: %v", err)
	}
	tok, err := tk.Sign("alice", time.Hour, "alice-phone", "alice-tablet")
	if err != nil {
		t.Fatal(err)
	}
	c, err := strict.VerifyClaims(tok) // Sign sets our aud
	if err != nil || c.User != "alice" || !c.AllowsDevice("alice-tablet") || c.AllowsDevice("bob-phone") || c.IssuedAt.Unix() != now.Unix() {
		t.Fatalf("VerifyClaims = %+v, %v", c, err)
	}
}
