package client

import "errors"

var (
	// ErrClosed is returned by methods called after Close or Shutdown, and is
	// the cause of the last disconnect event.
	ErrClosed = errors.New("client: closed")
	// ErrStarted is returned by RegisterBiz and Start after Start.
	ErrStarted = errors.New("client: already started")
	// ErrNoBiz is returned by Start when no biz was registered.
	ErrNoBiz = errors.New("client: no biz registered")
	// ErrDuplicateBiz is returned by RegisterBiz for a biz registered twice.
	ErrDuplicateBiz = errors.New("client: biz already registered")
	// ErrBadOptions wraps every Options validation failure of New.
	ErrBadOptions = errors.New("client: bad options")
	// ErrUnsupportedTransport is returned by New for an address scheme this
	// SDK cannot dial yet (ws://, wss://).
	ErrUnsupportedTransport = errors.New("client: unsupported transport")
	// ErrToken wraps a TokenProvider failure.
	ErrToken = errors.New("client: token provider failed")
	// ErrProtocol means the server sent something this SDK cannot follow
	// (an unexpected op during the handshake, a bad body); the SDK
	// reconnects.
	ErrProtocol = errors.New("client: protocol violation")
	// ErrServer wraps a *protocol.WireError received in an ERROR frame.
	ErrServer = errors.New("client: server closed the session")
	// ErrKicked wraps a *protocol.WireError received in a KICK frame.
	ErrKicked = errors.New("client: kicked")
	// ErrHandlerPanic wraps a panic recovered from a Handler; it is treated
	// like a returned error (the oplog is retried).
	ErrHandlerPanic = errors.New("client: handler panicked")
	// ErrBackground is the cause of a disconnect made by Background.
	ErrBackground = errors.New("client: in background")
	// ErrUserCleared is the cause of a disconnect made by ClearUser.
	ErrUserCleared = errors.New("client: user cleared")
	// ErrUserUpdated is the cause of a disconnect made by UpdateUser.
	ErrUserUpdated = errors.New("client: user updated")
	// ErrStoreFile is returned by NewFileStore for a file it cannot parse.
	// The SDK never silently resets points: delete the file to start over.
	ErrStoreFile = errors.New("client: bad sync point file")
)
