package rpc

import "errors"

var (
	// ErrInvalidConfig wraps every configuration problem.
	ErrInvalidConfig = errors.New("rpc: invalid config")
	// ErrClosed is returned by calls made after Shutdown.
	ErrClosed = errors.New("rpc: closed")
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("rpc: already started")
	// ErrInsecureListen is returned by Listen for a non-loopback address
	// without TLS.
	ErrInsecureListen = errors.New("rpc: insecure listen address")
)
