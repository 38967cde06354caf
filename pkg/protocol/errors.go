package protocol

import "errors"

var (
	// ErrShortFrame means b does not yet hold a whole frame; read more.
	ErrShortFrame = errors.New("protocol: short frame")
	// ErrFrameTooLarge means the header announces more than the reader's limit.
	ErrFrameTooLarge = errors.New("protocol: frame too large")
	// ErrBadHeader means the header is inconsistent (length, header length or version).
	ErrBadHeader = errors.New("protocol: bad frame header")
	// ErrBadBody means the body is not a valid message for its op.
	ErrBadBody = errors.New("protocol: bad frame body")
)
