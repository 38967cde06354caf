package comet

import (
	"context"
	"net"
	"time"

	"github.com/msync/msync/pkg/protocol"
)

// Conn is what a session needs from its transport. *gateway.Conn implements
// it; tests use a fake, and a WebSocket transport can too.
//
// Every method must be safe for concurrent use and must not block: sessions
// call them from pool workers, Kick and Shutdown from API goroutines.
type Conn interface {
	// ID is unique per transport for the comet's lifetime; its decimal form
	// is the connection key.
	ID() uint64
	RemoteAddr() string
	// Write enqueues one whole frame; ownership of frame passes to the
	// transport. An overflowing queue closes the connection. A transport
	// must not modify frame: one PUSH frame is shared by every connection
	// of a broadcast.
	Write(frame []byte) error
	// Close writes what is queued, then final (may be nil), then closes. It is
	// idempotent; the transport then calls the session's onClose once.
	Close(final []byte, reason error)
	// SetDeadline (re)arms the liveness deadline now+d; on expiry the
	// transport writes ERROR(code) and closes.
	SetDeadline(d time.Duration, code protocol.Code)
	// Queued is how many written bytes the transport holds that the peer
	// has not taken yet; sessions pace their output on it.
	Queued() int
	// NotifyDrained asks for one session.onDrained call once Queued is
	// zero (at once if it is); nothing happens for a closing connection.
	NotifyDrained()
	// SetAckDeadline arms (d > 0) or clears (d == 0) the backlog ack deadline;
	// on expiry the transport writes ERROR 1003 and closes.
	SetAckDeadline(d time.Duration)
}

// transport is a started listener, as Shutdown sees it.
type transport interface {
	Addr() net.Addr
	Shutdown(ctx context.Context) error
}
