package logic

import "errors"

var (
	// ErrInvalidConfig wraps every configuration problem found by New.
	ErrInvalidConfig = errors.New("logic: invalid config")
	// ErrStarted: Start was called twice.
	ErrStarted = errors.New("logic: already started")
	// ErrClosed: Start after Shutdown.
	ErrClosed = errors.New("logic: shut down")
)
