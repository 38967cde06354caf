package job

import "errors"

var (
	// ErrInvalidConfig wraps every configuration problem found by New.
	ErrInvalidConfig = errors.New("job: invalid config")
	// ErrStarted: Start was called twice.
	ErrStarted = errors.New("job: already started")
	// ErrClosed: Start after Shutdown.
	ErrClosed = errors.New("job: shut down")
)
