// Package directory is the online directory: which device is connected to
// which comet under which connection key, and which comets exist. Logic writes
// it (connect, disconnect, renew); job reads it to route pushes. Backends:
// memory (one process) and, in cluster mode, a shared store with TTLs.
//
// Implementations are safe for concurrent use.
package directory

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound: no such session.
var ErrNotFound = errors.New("directory: not found")

// Session is one online device.
type Session struct {
	User       string
	Device     string
	Platform   string
	AppVersion string
	Comet      string // comet id
	Key        string // connection key on that comet
	Since      time.Time
}

// Directory maps users and devices to their sessions.
type Directory interface {
	// Put registers s, replacing the device's previous session, which it
	// returns (nil if none) so the caller can kick it. Entries expire after
	// the directory's TTL unless renewed.
	Put(ctx context.Context, s Session) (prev *Session, err error)
	// Delete removes the device's session only if it is still (comet, key):
	// a late disconnect of a replaced session must not remove its successor.
	Delete(ctx context.Context, device, comet, key string) error
	// Renew extends the TTL of the given sessions of a comet.
	Renew(ctx context.Context, comet string, devices []string) error
	// ByUser returns the user's online sessions.
	ByUser(ctx context.Context, user string) ([]Session, error)
	// ByDevice returns the device's session or ErrNotFound.
	ByDevice(ctx context.Context, device string) (Session, error)
}

// CometInfo is one registered comet.
type CometInfo struct {
	ID   string
	Addr string // gRPC address of its Comet service
	Seen time.Time
}

// Comets is the comet registry of cluster mode: comets register (through
// logic's Renew) with a TTL and job discovers them here, noticing joins and
// departures without a restart.
type Comets interface {
	// RegisterComet adds comet id at addr, or renews it, for the TTL.
	RegisterComet(ctx context.Context, id, addr string) error
	// Comets lists the comets registered and not expired.
	Comets(ctx context.Context) ([]CometInfo, error)
}
