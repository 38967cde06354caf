package memory

import "errors"

var (
	// ErrInvalidConfig wraps every configuration problem found by New.
	ErrInvalidConfig = errors.New("memory queue: invalid config")
	// ErrConsuming: Consume was already called; a Queue delivers to one handler.
	ErrConsuming = errors.New("memory queue: already consuming")
	// ErrNilHandler: Consume was called with a nil handler.
	ErrNilHandler = errors.New("memory queue: nil handler")
)
