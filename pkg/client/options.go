package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/msync/msync/pkg/oplog"
)

// Defaults for the zero values of Options.
const (
	DefaultPlatform       = "unknown"
	DefaultBackoffMin     = 500 * time.Millisecond
	DefaultBackoffMax     = 30 * time.Second
	DefaultDialTimeout    = 10 * time.Second
	DefaultMaxFrame       = 4 << 20
	DefaultHandlerRetries = 5
)

// Options configures a Client. Only TokenProvider and Device are required;
// every other zero value means the default written next to it.
type Options struct {
	// TokenProvider returns the signed client token of the current user. It
	// is called before the first connection, after the server rejected the
	// token (codes 2xxx) and by UpdateUser; other reconnects reuse the last
	// token. It is called with a context bounded by DialTimeout. Required.
	TokenProvider func(ctx context.Context) (string, error)
	// Device is this installation's stable id (1-128 bytes UTF-8). Required.
	Device string
	// Platform is reported to the server for platform filters: ios, android,
	// harmony, web ... (lower-cased by New). Zero: "unknown", which matches
	// no platform-filtered oplog.
	Platform string
	// AppVersion is dotted numeric ("5.12.1"). Zero: not reported; the
	// server then delivers no oplog that carries an app version range.
	AppVersion string
	// Store keeps sync points. Zero: NewMemoryStore(), so points are lost
	// when the process exits and the server's stored points are used on the
	// next start; pass a FileStore (NewFileStore) to keep them.
	Store SyncPointStore
	// BackoffMin and BackoffMax bound the reconnect delay and the delay
	// between handler retries: capped exponential with full jitter. Zero:
	// 500ms and 30s.
	BackoffMin, BackoffMax time.Duration
	// DialTimeout bounds dialing, the AUTH/AUTH_REPLY handshake, each write
	// and each TokenProvider call. Zero: 10s.
	DialTimeout time.Duration
	// Logger receives the SDK's logs. Zero: discarded.
	Logger *slog.Logger
	// OnEvent, when set, is called for connection events (see EventKind). It
	// is called synchronously from SDK goroutines, possibly from several at
	// once (skipped events come from channel workers): be goroutine-safe,
	// return quickly, and do not call Close or Shutdown from it (the other
	// methods are fine).
	OnEvent func(Event)
	// MaxFrame bounds the size of a frame read from the server; a bigger
	// frame closes the connection. Zero: 4 MiB.
	MaxFrame int
	// OnPush, when set, receives the non-persistent pushes (PUSH frames: to
	// this user, this device, a joined room or everyone). It is called from
	// the connection's read loop, in arrival order: return quickly. Zero:
	// pushes are dropped.
	OnPush func(Push)
	// Heartbeat is the heartbeat interval this client would like (sent in
	// AUTH); the server clamps it into its bounds and the client follows
	// whatever the server answers. Zero: no preference, the server's default.
	Heartbeat time.Duration
	// HandlerRetries is how many times a failing oplog is retried in place
	// (with backoff) before the SDK drops the page and asks the server to
	// resend from the sync point. Zero: 5.
	HandlerRetries int
	// TLSConfig configures tls:// and wss:// addresses (a copy is used;
	// ServerName defaults to the address's host). Zero: the system roots.
	TLSConfig *tls.Config
	// DisableCompression stops the client from offering body compression in
	// AUTH (docs/protocol.md §18), so every frame stays plain both ways.
	// Zero: raw deflate is offered; the server decides.
	DisableCompression bool
}

// withDefaults returns a validated copy of o with defaults filled in.
func (o Options) withDefaults() (Options, error) {
	if o.TokenProvider == nil {
		return o, fmt.Errorf("%w: TokenProvider is required", ErrBadOptions)
	}
	if err := oplog.ValidID("device", o.Device); err != nil {
		return o, fmt.Errorf("%w: %w", ErrBadOptions, err)
	}
	o.Platform = strings.ToLower(strings.TrimSpace(o.Platform))
	if o.Platform == "" {
		o.Platform = DefaultPlatform
	}
	if len(o.Platform) > 32 || strings.ContainsAny(o.Platform, " /\t\r\n") {
		return o, fmt.Errorf("%w: platform %q: one short word like ios or android", ErrBadOptions, o.Platform)
	}
	// Checked here because the server would answer 4004 and the client
	// would stop: better to fail at New, where the developer looks.
	if o.AppVersion != "" && !oplog.ValidVersion(o.AppVersion) {
		return o, fmt.Errorf("%w: app version %q is not dotted numeric", ErrBadOptions, o.AppVersion)
	}
	if o.Store == nil {
		o.Store = NewMemoryStore()
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = DefaultBackoffMin
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = DefaultBackoffMax
	}
	if o.BackoffMax < o.BackoffMin {
		return o, fmt.Errorf("%w: BackoffMax %s < BackoffMin %s", ErrBadOptions, o.BackoffMax, o.BackoffMin)
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxFrame <= 0 {
		o.MaxFrame = DefaultMaxFrame
	}
	if o.Heartbeat < 0 || o.Heartbeat/time.Millisecond > 1<<31 {
		return o, fmt.Errorf("%w: Heartbeat %s out of range", ErrBadOptions, o.Heartbeat)
	}
	if o.HandlerRetries <= 0 {
		o.HandlerRetries = DefaultHandlerRetries
	}
	return o, nil
}
