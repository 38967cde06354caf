// Package auth signs and verifies client tokens and checks business API keys.
// Tokens are HS256 JWTs whose subject is the user id; businesses may mint them
// with any JWT library and the shared secret. Safe for concurrent use.
package auth

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

var (
	// ErrTokenInvalid: the token is malformed or its signature does not verify.
	ErrTokenInvalid = errors.New("auth: invalid token")
	// ErrTokenExpired: the token verified but its expiry has passed.
	ErrTokenExpired = errors.New("auth: token expired")
	// ErrWeakSecret: the configured secret is too short.
	ErrWeakSecret = errors.New("auth: secret must be at least 16 bytes")
	// ErrAPIKey: the API key is missing, unknown, or not allowed the biz.
	ErrAPIKey = errors.New("auth: API key not allowed")
)

// Tokens signs and verifies client tokens.
type Tokens struct {
	key []byte
	now func() time.Time
}

// NewTokens returns a Tokens for secret.
func NewTokens(secret string) (*Tokens, error) {
	if len(secret) < 16 {
		return nil, ErrWeakSecret
	}
	return &Tokens{key: []byte(secret), now: time.Now}, nil
}

// Sign returns a token for user valid for ttl.
func (t *Tokens) Sign(user string, ttl time.Duration) (string, error) {
	if user == "" || ttl <= 0 {
		return "", fmt.Errorf("%w: need a user and a positive ttl", ErrTokenInvalid)
	}
	if !utf8.ValidString(user) { // JSON would turn it into U+FFFD: a token for another user
		return "", fmt.Errorf("%w: user is not UTF-8", ErrTokenInvalid)
	}
	now := t.now()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Subject:   user,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	})
	s, err := tok.SignedString(t.key)
	if err != nil {
		return "", fmt.Errorf("auth: sign: %w", err)
	}
	return s, nil
}

// Verify returns the token's user, ErrTokenExpired or ErrTokenInvalid.
func (t *Tokens) Verify(token string) (string, error) {
	var claims jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return t.key, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithTimeFunc(t.now))
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "", ErrTokenExpired
	case err != nil:
		return "", fmt.Errorf("%w: %v", ErrTokenInvalid, err)
	case claims.Subject == "":
		return "", fmt.Errorf("%w: no subject", ErrTokenInvalid)
	}
	return claims.Subject, nil
}

// APIKey is one business API key and the bizs it may publish to ("*" = all).
type APIKey struct {
	Key  string   `yaml:"key"`
	Bizs []string `yaml:"bizs"`
}

// APIKeys checks bearer keys.
type APIKeys struct {
	keys []APIKey
}

// NewAPIKeys returns a checker over keys.
func NewAPIKeys(keys []APIKey) *APIKeys { return &APIKeys{keys: append([]APIKey(nil), keys...)} }

// Check returns nil if key exists and may use biz (biz "" checks the key only).
// Keys are compared in constant time.
func (a *APIKeys) Check(key, biz string) error {
	if key == "" {
		return fmt.Errorf("%w: missing", ErrAPIKey)
	}
	for _, k := range a.keys {
		if subtle.ConstantTimeCompare([]byte(k.Key), []byte(key)) != 1 {
			continue
		}
		if biz == "" {
			return nil
		}
		for _, b := range k.Bizs {
			if b == "*" || b == biz {
				return nil
			}
		}
		return fmt.Errorf("%w: not for biz %q", ErrAPIKey, biz)
	}
	return fmt.Errorf("%w: unknown key", ErrAPIKey)
}
