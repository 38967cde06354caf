package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

const fuzzSecret = "0123456789abcdef-fuzz-secret"

// FuzzVerify feeds Verify arbitrary tokens: malformed segments, huge
// tokens, mutated real tokens. It must never panic, fail only with the
// package's sentinel errors, and accept a token only if an independent
// check agrees: three segments, an HS256 header, an HMAC-SHA256 signature
// by the secret over the first two, a subject and a future expiry.
func FuzzVerify(f *testing.F) {
	tk, err := NewTokens(fuzzSecret)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	tk.now = func() time.Time { return now }
	for _, u := range []string{"alice", "u/with/slashes", "ü"} {
		tok, err := tk.Sign(u, time.Hour)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(tok)
	}
	expired, _ := tk.Sign("bob", time.Second)
	f.Add(expired + "x")
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.")                                                        // alg none
	f.Add("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIiwiZXhwIjoxZTMwMH0.AAAA")                                   // exp 1e300
	f.Add("a.b.c.d")                                                                                     // four segments
	f.Add(strings.Repeat("A", 1<<16) + "." + strings.Repeat("B", 1<<16) + "." + strings.Repeat("C", 43)) // huge
	f.Fuzz(func(t *testing.T, tok string) {
		user, err := tk.Verify(tok)
		if err != nil {
			if !errors.Is(err, ErrTokenInvalid) && !errors.Is(err, ErrTokenExpired) {
				t.Fatalf("Verify(%q): %v is not a sentinel error", tok, err)
			}
			if user != "" {
				t.Fatalf("Verify failed but returned user %q", user)
			}
			return
		}
		// Accepted: check it independently.
		seg := strings.Split(tok, ".")
		if len(seg) != 3 {
			t.Fatalf("accepted %q with %d segments", tok, len(seg))
		}
		sig, err := base64.RawURLEncoding.DecodeString(seg[2])
		if err != nil {
			t.Fatalf("accepted a token whose signature is not base64url: %q", tok)
		}
		mac := hmac.New(sha256.New, []byte(fuzzSecret))
		mac.Write([]byte(seg[0] + "." + seg[1]))
		if !hmac.Equal(sig, mac.Sum(nil)) {
			t.Fatalf("accepted a token not signed by the secret: %q", tok)
		}
		var hdr struct {
			Alg string `json:"alg"`
		}
		if b, err := base64.RawURLEncoding.DecodeString(seg[0]); err != nil || json.Unmarshal(b, &hdr) != nil || hdr.Alg != "HS256" {
			t.Fatalf("accepted header %q (alg %q)", seg[0], hdr.Alg)
		}
		var claims struct {
			Sub string   `json:"sub"`
			Exp *float64 `json:"exp"`
		}
		if b, err := base64.RawURLEncoding.DecodeString(seg[1]); err != nil || json.Unmarshal(b, &claims) != nil {
			t.Fatalf("accepted claims %q that do not decode", seg[1])
		}
		if user == "" || user != claims.Sub {
			t.Fatalf("user %q, claims.sub %q", user, claims.Sub)
		}
		if claims.Exp == nil || *claims.Exp <= float64(now.Unix()) {
			t.Fatalf("accepted a token without a future exp: %q", seg[1])
		}
	})
}

// FuzzSignVerify: a token signed for any usable user id verifies to exactly
// that user until it expires, and to ErrTokenExpired after.
func FuzzSignVerify(f *testing.F) {
	f.Add("alice", int64(3600))
	f.Add("用户", int64(1))
	f.Add("a\"b\\c", int64(86400*30))
	f.Fuzz(func(t *testing.T, user string, ttlSec int64) {
		if ttlSec <= 0 || ttlSec > int64(DefaultMaxLifetime/time.Second) {
			return
		}
		if user == "" || !utf8.ValidString(user) {
			tk, _ := NewTokens(fuzzSecret)
			if _, err := tk.Sign(user, time.Hour); !errors.Is(err, ErrTokenInvalid) {
				t.Fatalf("Sign(%q) = %v: JSON cannot carry it, it would be a token for another user", user, err)
			}
			return
		}
		if strings.ContainsFunc(user, unicode.IsControl) {
			return // not a user id logic hands to Sign
		}
		tk, err := NewTokens(fuzzSecret)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Unix(1_800_000_000, 0)
		tk.now = func() time.Time { return now }
		tok, err := tk.Sign(user, time.Duration(ttlSec)*time.Second)
		if err != nil {
			t.Fatalf("Sign(%q): %v", user, err)
		}
		if got, err := tk.Verify(tok); err != nil || got != user {
			t.Fatalf("Verify(Sign(%q)) = %q, %v", user, got, err)
		}
		now = now.Add(time.Duration(ttlSec+1)*time.Second + DefaultLeeway) // exp is checked with the leeway
		if _, err := tk.Verify(tok); !errors.Is(err, ErrTokenExpired) {
			t.Fatalf("after its ttl: %v", err)
		}
	})
}
