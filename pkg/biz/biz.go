// Package biz holds sync configurations ("bizs"): what a biz syncs to, how,
// and for how long, parsed from config and validated. A Registry is immutable
// after New and safe for concurrent use.
package biz

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/msync/msync/pkg/oplog"
)

// ErrInvalid wraps every configuration problem.
var ErrInvalid = errors.New("biz: invalid configuration")

// ErrUnknown is returned for a biz that is not configured.
var ErrUnknown = errors.New("biz: unknown biz")

const (
	TargetUser   = "user"
	TargetDevice = "device"

	ScopeAppointed = "appointed"
	ScopeGlobal    = "global"

	// DefaultTTL is an oplog's validity when neither the biz nor the call sets one.
	DefaultTTL = 7 * 24 * time.Hour
	// MaxTTL caps any validity.
	MaxTTL = 30 * 24 * time.Hour
	// DefaultMaxPayload bounds one oplog's payload.
	DefaultMaxPayload = 64 << 10
	// MaxMaxPayload caps max_payload so a page still fits a frame.
	MaxMaxPayload = 1 << 20
)

// Spec is a biz as written in a config file. Zero values take the defaults
// documented on each field.
type Spec struct {
	Name string `yaml:"name" json:"name"`
	// Target: "user" (all the user's devices; default) or "device".
	Target string `yaml:"target" json:"target"`
	// Scope: "appointed" (one owner per oplog; default) or "global".
	Scope string `yaml:"scope" json:"scope"`
	// MultiDevice: every device of a user syncs the full channel. Nil means true.
	MultiDevice *bool `yaml:"multi_device" json:"multi_device"`
	// Persistent: store oplogs for offline devices. Nil means true.
	Persistent *bool `yaml:"persistent" json:"persistent"`
	// TTL like "7d", "12h", "90m". Empty means 7d; at most 30d.
	TTL string `yaml:"ttl" json:"ttl"`
	// Backlog: "all" (default) or "latest:N".
	Backlog string `yaml:"backlog" json:"backlog"`
	// Consistency: deliver user-target oplogs only to devices where that user
	// is the one logged in now.
	Consistency bool `yaml:"consistency" json:"consistency"`
	// MaxPayload in bytes. Zero means 64 KiB.
	MaxPayload int `yaml:"max_payload" json:"max_payload"`
	// Webhook, when set, receives the biz's delivery receipts (webhook.go).
	Webhook *WebhookSpec `yaml:"webhook" json:"webhook,omitempty"`
}

// Biz is a validated sync configuration.
type Biz struct {
	Name        string        `json:"name"`
	Target      string        `json:"target"`
	Scope       string        `json:"scope"`
	MultiDevice bool          `json:"multi_device"`
	Persistent  bool          `json:"persistent"`
	TTL         time.Duration `json:"-"`
	// LatestN > 0 means backlog "latest:N"; 0 means "all".
	LatestN     int  `json:"-"`
	Consistency bool `json:"consistency"`
	MaxPayload  int  `json:"max_payload"`
	// Webhook is nil when the biz has none.
	Webhook *Webhook `json:"-"`
}

// Parse validates s and fills in defaults, listing every problem at once.
func Parse(s Spec) (*Biz, error) {
	var errs []error
	b := &Biz{Name: s.Name, Target: s.Target, Scope: s.Scope, MultiDevice: true, Persistent: true,
		TTL: DefaultTTL, Consistency: s.Consistency, MaxPayload: s.MaxPayload}
	if err := oplog.ValidBizName(s.Name); err != nil {
		errs = append(errs, err)
	}
	if b.Target == "" {
		b.Target = TargetUser
	}
	if b.Target != TargetUser && b.Target != TargetDevice {
		errs = append(errs, fmt.Errorf("target %q: want user or device", s.Target))
	}
	if b.Scope == "" {
		b.Scope = ScopeAppointed
	}
	if b.Scope != ScopeAppointed && b.Scope != ScopeGlobal {
		errs = append(errs, fmt.Errorf("scope %q: want appointed or global", s.Scope))
	}
	if s.MultiDevice != nil {
		b.MultiDevice = *s.MultiDevice
	}
	if s.Persistent != nil {
		b.Persistent = *s.Persistent
	}
	if s.TTL != "" {
		d, err := ParseDuration(s.TTL)
		switch {
		case err != nil:
			errs = append(errs, err)
		case d <= 0 || d > MaxTTL:
			errs = append(errs, fmt.Errorf("ttl %q: want more than 0 and at most 30d", s.TTL))
		default:
			b.TTL = d
		}
	}
	switch {
	case s.Backlog == "" || s.Backlog == "all":
	case strings.HasPrefix(s.Backlog, "latest:"):
		n, err := strconv.Atoi(strings.TrimPrefix(s.Backlog, "latest:"))
		if err != nil || n <= 0 {
			errs = append(errs, fmt.Errorf("backlog %q: want latest:N with N > 0", s.Backlog))
		}
		b.LatestN = n
	default:
		errs = append(errs, fmt.Errorf("backlog %q: want all or latest:N", s.Backlog))
	}
	if b.MaxPayload == 0 {
		b.MaxPayload = DefaultMaxPayload
	}
	if b.MaxPayload < 0 || b.MaxPayload > MaxMaxPayload {
		errs = append(errs, fmt.Errorf("max_payload %d: want 1..%d", s.MaxPayload, MaxMaxPayload))
	}
	if w, err := parseWebhook(s.Webhook); err != nil {
		errs = append(errs, err)
	} else {
		b.Webhook = w
	}
	if s.Consistency && b.Target != TargetUser {
		errs = append(errs, fmt.Errorf("consistency applies only to target user"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w: biz %q: %w", ErrInvalid, s.Name, err)
	}
	return b, nil
}

// Channel names the channel an oplog of this biz goes to, for a publish to
// user or device (appointed scope) or to everyone (global scope).
func (b *Biz) Channel(user, device string) string {
	switch {
	case b.Scope == ScopeGlobal:
		return oplog.GlobalChannel(b.Name)
	case b.Target == TargetDevice:
		return oplog.DeviceChannel(b.Name, device)
	default:
		return oplog.UserChannel(b.Name, user)
	}
}

// Backlog renders the backlog policy as configured.
func (b *Biz) Backlog() string {
	if b.LatestN > 0 {
		return "latest:" + strconv.Itoa(b.LatestN)
	}
	return "all"
}

// ParseDuration accepts Go durations plus a "d" (24h) suffix: "7d", "36h".
func ParseDuration(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseFloat(d, 64)
		if err != nil {
			return 0, fmt.Errorf("duration %q: %w", s, err)
		}
		// Converting NaN, infinities or more than ~106751 days to an int64
		// wraps around (to a huge negative duration on amd64): refuse them.
		ns := n * float64(24*time.Hour)
		if !(ns > math.MinInt64 && ns < math.MaxInt64) {
			return 0, fmt.Errorf("duration %q: out of range", s)
		}
		return time.Duration(ns), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: %w", s, err)
	}
	return d, nil
}

// Registry is the set of configured bizs.
type Registry struct {
	byName map[string]*Biz
	names  []string
}

// NewRegistry parses every spec; names must be unique.
func NewRegistry(specs []Spec) (*Registry, error) {
	r := &Registry{byName: make(map[string]*Biz, len(specs))}
	var errs []error
	for _, s := range specs {
		b, err := Parse(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, dup := r.byName[b.Name]; dup {
			errs = append(errs, fmt.Errorf("%w: biz %q configured twice", ErrInvalid, b.Name))
			continue
		}
		r.byName[b.Name] = b
		r.names = append(r.names, b.Name)
	}
	sort.Strings(r.names)
	return r, errors.Join(errs...)
}

// Get returns the biz named name, or ErrUnknown.
func (r *Registry) Get(name string) (*Biz, error) {
	if b, ok := r.byName[name]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknown, name)
}

// All returns the bizs sorted by name.
func (r *Registry) All() []*Biz {
	out := make([]*Biz, 0, len(r.names))
	for _, n := range r.names {
		out = append(out, r.byName[n])
	}
	return out
}
