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
	// ErrBadCompression means a compressed body does not decompress
	// (corrupt stream, trailing bytes, or no compression negotiated).
	ErrBadCompression = errors.New("protocol: bad compressed body")
	// ErrInflateTooLarge means a compressed body decompresses past the
	// reader's frame limit (a decompression bomb): CodeInflateTooLarge.
	ErrInflateTooLarge = errors.New("protocol: decompressed frame too large")
)
