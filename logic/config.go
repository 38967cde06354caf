package logic

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/msync/msync/pkg/auth"
	"github.com/msync/msync/pkg/biz"
	"github.com/msync/msync/pkg/directory"
	"github.com/msync/msync/pkg/queue"
	"github.com/msync/msync/pkg/store"
)

// Config configures a Logic. Dependencies are required; other zero values
// take the defaults noted per field.
type Config struct {
	// HTTPAddr is the business API listen address. Zero means ":3111"; port 0
	// picks a free port (see HTTPAddr after Start).
	HTTPAddr string
	// Store keeps oplogs and sync points. Required.
	Store store.Store
	// Health are the dependencies /healthz checks (the store, the
	// directory); none means /healthz reports only the queue's last sends.
	Health []HealthCheck
	// Queue receives push messages for job. Required.
	Queue queue.Producer
	// Directory is the online directory sessions are registered in. Required.
	Directory directory.Directory
	// Bizs is the set of configured bizs. Required.
	Bizs *biz.Registry
	// Tokens verifies device tokens on Connect. Required.
	Tokens *auth.Tokens
	// APIKeys checks business API keys. Required.
	APIKeys *auth.APIKeys
	// RateLimits are per API key budgets on the publish endpoints (429 with
	// Retry-After beyond them), keyed by the key. Zero: no limits.
	RateLimits map[string]RateLimit
	// DeviceBinding says how a session's device id is bound to its user
	// (principals.go): DeviceBindingOwner or DeviceBindingToken. Zero means
	// DeviceBindingOwner.
	DeviceBinding string
	// Owners records device owners for DeviceBindingOwner. Nil means the
	// Store if it implements DeviceOwners; with neither, owners are not
	// recorded (a warning is logged) and only dev claims bind devices.
	Owners DeviceOwners
	// Revocations keeps per-user token cut-offs (POST
	// /v1/users/{user}/revoke_tokens). Nil means the Store if it implements
	// TokenRevocations; with neither, revocation answers 501.
	Revocations TokenRevocations

	// HeartbeatInterval is returned to comets in ConnectReply. Zero means 0,
	// i.e. "use the comet's default".
	HeartbeatInterval time.Duration
	// PageLimit is the most oplogs scanned per channel per Sync page; a
	// comet's smaller limit is honoured, a larger one capped. Zero means 200.
	PageLimit int
	// MaxPageBytes ends a Sync page once its payloads reach this many bytes
	// (a page still carries at least one oplog). Zero means 256 KiB.
	MaxPageBytes int
	// MaxBatch is the most items in one POST /v1/sync/batch. Zero means 500.
	MaxBatch int
	// MaxPushPayload bounds the payload of POST /v1/push. Zero means
	// DefaultMaxPushPayload (32 KiB).
	MaxPushPayload int
	// MaxBodyBytes bounds an HTTP request body. Zero means 4 MiB.
	MaxBodyBytes int64
	// AppendTimeout bounds each store call made for a request (append, read,
	// sync points). Zero means 5s.
	AppendTimeout time.Duration
	// QueueTimeout bounds producing the push messages of one publish; on
	// timeout the publish still succeeds (see the package doc). Zero means 1s.
	QueueTimeout time.Duration
	// OrderWait bounds how long a publish call waits, before its queue
	// send, for this process's calls that may hold lower ids of its channels,
	// so the queue gets each channel's ids in order (order.go). Such waits
	// normally last until the other calls of the same group commit are
	// scheduled. Zero means 50ms; negative never waits.
	OrderWait time.Duration
	// RepairDelay is how long after a lost live push (queue send failed
	// after the append, or an append of unknown outcome) logic re-pushes
	// the channel's newest oplog so online devices catch up (repair.go).
	// Zero means 2s; negative disables the re-push.
	RepairDelay time.Duration
	// JanitorInterval is how often expired oplogs are deleted
	// (Store.DeleteExpired). Zero means 1m; negative disables the janitor.
	JanitorInterval time.Duration
	// JanitorBatch is the limit passed to each DeleteExpired call; a run
	// repeats calls until one deletes fewer. Zero means 1000.
	JanitorBatch int
	// Logger receives logs. Nil discards.
	Logger *slog.Logger
	// Registerer registers the metrics. Nil means a private registry (which
	// then is also the Gatherer).
	Registerer prometheus.Registerer
	// Gatherer is served on /metrics. Nil means the Registerer if it is a
	// Gatherer (a *prometheus.Registry is), else the private registry.
	Gatherer prometheus.Gatherer
	// Now is the clock used for validity and filters. Nil means time.Now.
	Now func() time.Time
	// TicketKey signs the session tickets Connect hands out and Sync, Ack
	// and Renew check (ticket.go). Every logic process of a cluster needs
	// the same key (comets call them round robin); the cluster assembly
	// derives it from the config's secret. Zero: a random key for this
	// process only. At least 32 bytes otherwise.
	TicketKey []byte
	// TicketTTL is how long a ticket is valid; Renew replaces a ticket past
	// half of it, so a live session never sees one expire. Zero means 24h.
	TicketTTL time.Duration
	// PublicOps serves /metrics and the Mount handlers to every caller.
	// False (zero): only to callers connecting from loopback, so exposing
	// the API port does not expose biz names, traffic or the development
	// page; scrape /metrics from this machine or set it.
	PublicOps bool
	// AckFeed is read by the delivery receipt webhooks (webhook.go). Nil
	// means the Store if it implements store.AckFeed; a biz with a webhook
	// needs one.
	AckFeed store.AckFeed
	// WebhookPoll is how often a webhook sender looks at the ack feed when
	// no ack woke it (acks saved by another process). Zero means 1s.
	WebhookPoll time.Duration
	// Mount serves extra handlers on the API's listener, keyed by a path
	// prefix that starts and ends with "/" (e.g. "/demo/" for the
	// development page of package web). A prefix may not be "/", hold
	// pattern wildcards or overlap the API (/v1/, /healthz, /metrics), so
	// it can never shadow or conflict with an API route. Zero: none.
	Mount map[string]http.Handler
}

func (c *Config) setDefaults() {
	if c.HTTPAddr == "" {
		c.HTTPAddr = ":3111"
	}
	if len(c.TicketKey) == 0 {
		c.TicketKey = make([]byte, 32)
		_, _ = rand.Read(c.TicketKey) // never fails (crypto/rand)
	}
	if c.TicketTTL == 0 {
		c.TicketTTL = 24 * time.Hour
	}
	if c.MaxPageBytes == 0 {
		c.MaxPageBytes = 256 << 10
	}
	if c.PageLimit == 0 {
		c.PageLimit = 200
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 500
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 4 << 20
	}
	if c.AppendTimeout == 0 {
		c.AppendTimeout = 5 * time.Second
	}
	if c.QueueTimeout == 0 {
		c.QueueTimeout = time.Second
	}
	if c.OrderWait == 0 {
		c.OrderWait = 50 * time.Millisecond
	}
	if c.RepairDelay == 0 {
		c.RepairDelay = 2 * time.Second
	}
	if c.JanitorInterval == 0 {
		c.JanitorInterval = time.Minute
	}
	if c.JanitorBatch == 0 {
		c.JanitorBatch = 1000
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.DeviceBinding == "" {
		c.DeviceBinding = DeviceBindingOwner
	}
	if o, ok := c.Store.(DeviceOwners); ok && c.Owners == nil {
		c.Owners = o
	}
	if f, ok := c.Store.(store.AckFeed); ok && c.AckFeed == nil {
		c.AckFeed = f
	}
	if c.WebhookPoll == 0 {
		c.WebhookPoll = time.Second
	}
	if r, ok := c.Store.(TokenRevocations); ok && c.Revocations == nil {
		c.Revocations = r
	}
}

// validate lists every problem at once.
func (c *Config) validate() error {
	var errs []error
	for _, dep := range []struct {
		name string
		nil  bool
	}{
		{"Store", c.Store == nil}, {"Queue", c.Queue == nil}, {"Directory", c.Directory == nil},
		{"Bizs", c.Bizs == nil}, {"Tokens", c.Tokens == nil}, {"APIKeys", c.APIKeys == nil},
	} {
		if dep.nil {
			errs = append(errs, fmt.Errorf("%s is required", dep.name))
		}
	}
	if c.HeartbeatInterval < 0 {
		errs = append(errs, fmt.Errorf("HeartbeatInterval %v: want >= 0", c.HeartbeatInterval))
	}
	if c.MaxPageBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxPageBytes %d: want > 0", c.MaxPageBytes))
	}
	if (len(c.TicketKey) > 0 && len(c.TicketKey) < 32) || c.TicketTTL < 0 {
		errs = append(errs, fmt.Errorf("TicketKey (%d bytes) / TicketTTL %v: want >= 32 bytes and >= 0", len(c.TicketKey), c.TicketTTL))
	}
	if c.PageLimit < 0 {
		errs = append(errs, fmt.Errorf("PageLimit %d: want > 0", c.PageLimit))
	}
	if c.MaxBatch < 0 {
		errs = append(errs, fmt.Errorf("MaxBatch %d: want > 0", c.MaxBatch))
	}
	if c.MaxPushPayload < 0 {
		errs = append(errs, fmt.Errorf("MaxPushPayload %d: want > 0", c.MaxPushPayload))
	}
	if c.MaxBodyBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxBodyBytes %d: want > 0", c.MaxBodyBytes))
	}
	if c.AppendTimeout < 0 || c.QueueTimeout < 0 {
		errs = append(errs, fmt.Errorf("AppendTimeout %v, QueueTimeout %v: want > 0", c.AppendTimeout, c.QueueTimeout))
	}
	if c.DeviceBinding != DeviceBindingOwner && c.DeviceBinding != DeviceBindingToken {
		errs = append(errs, fmt.Errorf("DeviceBinding %q: want %q or %q", c.DeviceBinding, DeviceBindingOwner, DeviceBindingToken))
	}
	for _, rl := range c.RateLimits {
		if rl.PublishesPerSecond < 0 || rl.BytesPerSecond < 0 {
			errs = append(errs, errors.New("RateLimits: rates must not be negative"))
			break
		}
	}
	if c.JanitorBatch < 0 {
		errs = append(errs, fmt.Errorf("JanitorBatch %d: want > 0", c.JanitorBatch))
	}
	for prefix, h := range c.Mount {
		first, _, _ := strings.Cut(strings.Trim(prefix, "/"), "/")
		switch {
		case h == nil:
			errs = append(errs, fmt.Errorf("Config.Mount[%q]: nil handler", prefix))
		case len(prefix) < 3 || prefix[0] != '/' || prefix[len(prefix)-1] != '/' || strings.ContainsAny(prefix, "{} \t"):
			errs = append(errs, fmt.Errorf("Config.Mount[%q]: want a literal path prefix like /demo/", prefix))
		case first == "v1" || first == "healthz" || first == "metrics":
			errs = append(errs, fmt.Errorf("Config.Mount[%q]: overlaps the API", prefix))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}
