package comet

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalidConfig wraps every problem New finds in a Config (all of
	// them, joined).
	ErrInvalidConfig = errors.New("comet: invalid config")
	// ErrNoLogic is one of them: Config.Logic is nil.
	ErrNoLogic = fmt.Errorf("%w: Logic is required", ErrInvalidConfig)
	// ErrShutdown is returned by calls made after Shutdown began, and is the
	// close reason of connections closed by Shutdown.
	ErrShutdown = errors.New("comet: shut down")
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("comet: already started")
	// ErrKicked is the close reason of a session closed by Kick.
	ErrKicked = errors.New("comet: session kicked")
	// ErrProtocol is the close reason of a session that broke the protocol
	// (op before AUTH, unknown op, bad body, ack beyond what was sent ...);
	// the wire code travels in a *protocol.WireError wrapped with it.
	ErrProtocol = errors.New("comet: protocol violation")
	// ErrRejected is the close reason of a session logic refused (bad token,
	// bad fields) or could not serve (logic unavailable).
	ErrRejected = errors.New("comet: session rejected")
	// ErrOverload is the close reason of a session whose client sent more
	// frames than its queue holds while earlier ones were still processed.
	ErrOverload = errors.New("comet: too many frames in flight")
)

// ErrBadRequest is returned by the push API for a request it cannot serve.
var ErrBadRequest = errors.New("comet: bad request")
