package gateway

import (
	"errors"
	"fmt"
	"io"
)

// Errors reported by Conn methods and passed to Handler.OnClose. Test them
// with errors.Is: OnClose errors may wrap a sentinel with detail.
var (
	// ErrClosed is returned by Write on a closed or closing connection, and
	// passed to OnClose when Close was called with a nil reason.
	ErrClosed = errors.New("gateway: connection closed")
	// ErrSlowConsumer means the connection's write queue overflowed
	// Config.WriteQueueBytes, or a flush timed out: the peer does not read
	// fast enough. The peer gets ERROR protocol.CodeSlowConsumer if its socket
	// still takes it.
	ErrSlowConsumer = errors.New("gateway: slow consumer")
	// ErrDeadline means the liveness deadline (SetDeadline, or the initial
	// auth timeout) expired.
	ErrDeadline = errors.New("gateway: deadline expired")
	// ErrAckDeadline means the ack deadline (SetAckDeadline) expired.
	ErrAckDeadline = errors.New("gateway: ack deadline expired")
	// ErrShutdown is the OnClose reason for connections closed by Shutdown,
	// and what Start returns after Shutdown.
	ErrShutdown = errors.New("gateway: server shut down")

	// ErrPeerClosed is the OnClose reason when the peer closed the connection
	// or the socket failed. It also matches io.EOF.
	ErrPeerClosed = fmt.Errorf("gateway: closed by peer: %w", io.EOF)
	// ErrBadFrame is the OnClose reason for a malformed or oversized inbound
	// frame; it also wraps protocol.ErrBadHeader or protocol.ErrFrameTooLarge.
	ErrBadFrame = errors.New("gateway: bad frame")
	// ErrReadTimeout is the OnClose reason when a started frame was not
	// completed within Config.ReadTimeout (slowloris).
	ErrReadTimeout = errors.New("gateway: read timeout in a partial frame")
	// ErrInvalidConfig wraps every problem New finds in a Config (all of
	// them, joined).
	ErrInvalidConfig = errors.New("gateway: invalid config")
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("gateway: already started")
)
