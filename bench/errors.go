package bench

import "errors"

var (
	// ErrConfig wraps invalid scenario settings.
	ErrConfig = errors.New("bench: invalid config")
	// ErrServer wraps failures of the server under test (start, readiness, API).
	ErrServer = errors.New("bench: server")
	// ErrClients wraps failures of the load-client children.
	ErrClients = errors.New("bench: load clients")
	// ErrTimeout is returned when a phase does not finish within its bound.
	ErrTimeout = errors.New("bench: timed out")
)
