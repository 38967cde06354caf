package dedupe

import "errors"

var (
	// ErrInvalidConfig wraps every configuration problem found by New.
	ErrInvalidConfig = errors.New("dedupe: invalid config")
	// ErrNilHandler: Consume was called with a nil handler.
	ErrNilHandler = errors.New("dedupe: nil handler")
)
