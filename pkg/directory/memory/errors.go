package memory

import "errors"

// ErrInvalidConfig wraps every configuration problem found by New.
var ErrInvalidConfig = errors.New("memory directory: invalid config")

// ErrClosed is returned by calls after Shutdown.
var ErrClosed = errors.New("memory directory: closed")
