// Package auth signs and verifies client tokens and checks business API keys.
// Tokens are HS256 JWTs whose subject is the user id; businesses may mint them
// with any JWT library and the shared secret (docs/protocol.md, "Tokens").
// Safe for concurrent use.
package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/msync/msync/pkg/oplog"
)

var (
	// ErrTokenInvalid: the token is malformed, its signature does not
	// verify, or a claim is refused (audience, lifetime, iat, subject).
	ErrTokenInvalid = errors.New("auth: invalid token")
	// ErrTokenExpired: the token verified but its expiry has passed.
	ErrTokenExpired = errors.New("auth: token expired")
	// ErrWeakSecret: the configured secret is too short.
	ErrWeakSecret = errors.New("auth: secret must be at least 16 bytes")
	// ErrAPIKey: the API key is missing, unknown, or not allowed the biz.
	ErrAPIKey = errors.New("auth: API key not allowed")
)

// Defaults of TokenConfig.
const (
	DefaultAudience    = "msync"
	DefaultMaxLifetime = 30 * 24 * time.Hour
	DefaultLeeway      = 30 * time.Second
)

// TokenConfig configures Tokens. Zero values take the defaults noted.
type TokenConfig struct {
	// Secret is the HS256 key; at least 16 bytes. Required.
	Secret string
	// Audience is the aud msync signs into its tokens and accepts: a token
	// whose aud names only other services is refused, so a token minted
	// for another service that shares the secret does not open a session.
	// Zero means "msync".
	Audience string
	// RequireAudience refuses tokens that carry no aud at all. False keeps
	// tokens minted before aud existed working.
	RequireAudience bool
	// MaxLifetime caps exp - iat (exp - now for a token without iat): a
	// token valid for longer is refused. Zero means 30 days.
	MaxLifetime time.Duration
	// Leeway is the clock skew tolerated on exp, nbf and iat. Zero means
	// 30s; negative means none.
	Leeway time.Duration
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
}

// Tokens signs and verifies client tokens.
type Tokens struct {
	cfg TokenConfig
	key []byte
	now func() time.Time
}

// NewTokens returns a Tokens for secret with the default TokenConfig.
func NewTokens(secret string) (*Tokens, error) { return New(TokenConfig{Secret: secret}) }

// New returns a Tokens for cfg.
func New(cfg TokenConfig) (*Tokens, error) {
	if len(cfg.Secret) < 16 {
		return nil, ErrWeakSecret
	}
	if cfg.Audience == "" {
		cfg.Audience = DefaultAudience
	}
	if cfg.MaxLifetime == 0 {
		cfg.MaxLifetime = DefaultMaxLifetime
	}
	if cfg.MaxLifetime < 0 {
		return nil, fmt.Errorf("%w: MaxLifetime %v: want > 0", ErrTokenInvalid, cfg.MaxLifetime)
	}
	switch {
	case cfg.Leeway == 0:
		cfg.Leeway = DefaultLeeway
	case cfg.Leeway < 0:
		cfg.Leeway = 0
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Tokens{cfg: cfg, key: []byte(cfg.Secret), now: cfg.Now}, nil
}

// MaxLifetime is the longest validity Verify accepts (and Sign mints).
func (t *Tokens) MaxLifetime() time.Duration { return t.cfg.MaxLifetime }

// claims is the JWT body: the registered claims plus dev, the device ids the
// token may open sessions for (a string or an array of strings).
type claims struct {
	jwt.RegisteredClaims
	Dev jwt.ClaimStrings `json:"dev,omitempty"`
}

// Claims is what a verified token says.
type Claims struct {
	User string
	// Devices is the token's dev claim: the devices it may connect as. Empty
	// means the token names none (device ownership decides, see logic).
	Devices []string
	// IssuedAt is the token's iat; zero when it has none.
	IssuedAt time.Time
}

// AllowsDevice reports whether the token's dev claim names device.
func (c Claims) AllowsDevice(device string) bool { return slices.Contains(c.Devices, device) }

// Sign returns a token for user valid for ttl (at most MaxLifetime) with the
// configured audience; devices, when given, become its dev claim.
func (t *Tokens) Sign(user string, ttl time.Duration, devices ...string) (string, error) {
	if user == "" || ttl <= 0 {
		return "", fmt.Errorf("%w: need a user and a positive ttl", ErrTokenInvalid)
	}
	if ttl > t.cfg.MaxLifetime {
		return "", fmt.Errorf("%w: ttl %v is over the maximum lifetime %v", ErrTokenInvalid, ttl, t.cfg.MaxLifetime)
	}
	if !utf8.ValidString(user) { // JSON would turn it into U+FFFD: a token for another user
		return "", fmt.Errorf("%w: user is not UTF-8", ErrTokenInvalid)
	}
	now := t.now()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   user,
			Audience:  jwt.ClaimStrings{t.cfg.Audience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Dev: devices,
	})
	s, err := tok.SignedString(t.key)
	if err != nil {
		return "", fmt.Errorf("auth: sign: %w", err)
	}
	return s, nil
}

// Verify returns the token's user, ErrTokenExpired or ErrTokenInvalid.
func (t *Tokens) Verify(token string) (string, error) {
	c, err := t.VerifyClaims(token)
	return c.User, err
}

// VerifyClaims checks the signature (HS256 only), exp (required), nbf, the
// audience, the lifetime cap, that iat is not in the future and that the
// subject is a valid id, and returns the claims.
func (t *Tokens) VerifyClaims(token string) (Claims, error) {
	var c claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return t.key, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithTimeFunc(t.now),
		jwt.WithLeeway(t.cfg.Leeway))
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return Claims{}, ErrTokenExpired
	case err != nil:
		return Claims{}, fmt.Errorf("%w: %v", ErrTokenInvalid, err)
	case c.Subject == "":
		return Claims{}, fmt.Errorf("%w: no subject", ErrTokenInvalid)
	}
	if err := oplog.ValidID("user", c.Subject); err != nil {
		return Claims{}, fmt.Errorf("%w: subject: %w", ErrTokenInvalid, err)
	}
	switch {
	case len(c.Audience) == 0 && t.cfg.RequireAudience:
		return Claims{}, fmt.Errorf("%w: no aud (want %q)", ErrTokenInvalid, t.cfg.Audience)
	case len(c.Audience) > 0 && !slices.Contains(c.Audience, t.cfg.Audience):
		return Claims{}, fmt.Errorf("%w: aud %q is not %q", ErrTokenInvalid, []string(c.Audience), t.cfg.Audience)
	}
	now := t.now()
	start := now
	var iat time.Time
	if c.IssuedAt != nil {
		iat = c.IssuedAt.Time
		if iat.After(now.Add(t.cfg.Leeway)) {
			return Claims{}, fmt.Errorf("%w: issued in the future (iat %s)", ErrTokenInvalid, iat.UTC().Format(time.RFC3339))
		}
		start = iat
	}
	if life := c.ExpiresAt.Sub(start); life > t.cfg.MaxLifetime+t.cfg.Leeway {
		return Claims{}, fmt.Errorf("%w: valid for %v, over the maximum lifetime %v", ErrTokenInvalid, life.Round(time.Second), t.cfg.MaxLifetime)
	}
	for _, d := range c.Dev {
		if err := oplog.ValidID("device", d); err != nil {
			return Claims{}, fmt.Errorf("%w: dev: %w", ErrTokenInvalid, err)
		}
	}
	return Claims{User: c.Subject, Devices: c.Dev, IssuedAt: iat}, nil
}

// MinAPIKeyLen is the shortest API key a configuration may hold (the
// development key of the shipped config excepted, see pkg/config).
const MinAPIKeyLen = 24

// APIKey is one business API key and the bizs it may publish to ("*" = all).
type APIKey struct {
	Key  string   `yaml:"key"`
	Bizs []string `yaml:"bizs"`
	// PublishesPerS and BytesPerS budget the key's publishes (items per
	// second, payload bytes per second; 429 beyond). Zero: unlimited.
	PublishesPerS float64 `yaml:"publishes_per_s"`
	BytesPerS     float64 `yaml:"bytes_per_s"`
}

// APIKeys checks bearer keys.
type APIKeys struct {
	keys []hashedKey
}

type hashedKey struct {
	sum  [sha256.Size]byte
	bizs []string
}

// NewAPIKeys returns a checker over keys.
func NewAPIKeys(keys []APIKey) *APIKeys {
	a := &APIKeys{keys: make([]hashedKey, 0, len(keys))}
	for _, k := range keys {
		a.keys = append(a.keys, hashedKey{sum: sha256.Sum256([]byte(k.Key)), bizs: append([]string(nil), k.Bizs...)})
	}
	return a
}

// Check returns nil if key exists and may use biz (biz "" checks the key only).
// The key's SHA-256 digest is compared with every configured key's digest in
// constant time, without stopping at a match: the time taken says nothing
// about the keys' lengths or which key matched.
func (a *APIKeys) Check(key, biz string) error {
	if key == "" {
		return fmt.Errorf("%w: missing", ErrAPIKey)
	}
	sum := sha256.Sum256([]byte(key))
	match := -1
	for i := range a.keys {
		eq := subtle.ConstantTimeCompare(a.keys[i].sum[:], sum[:])
		match = subtle.ConstantTimeSelect(eq, i, match)
	}
	if match < 0 {
		return fmt.Errorf("%w: unknown key", ErrAPIKey)
	}
	if biz == "" {
		return nil
	}
	for _, b := range a.keys[match].bizs {
		if b == "*" || b == biz {
			return nil
		}
	}
	return fmt.Errorf("%w: not for biz %q", ErrAPIKey, biz)
}
