package gateway

import "github.com/msync/msync/pkg/protocol"

// Handler receives a Server's connection events.
//
// The callback sequence of one connection:
//
//	| Connection state                  | Callback | Goroutine                                      |
//	|   accepted, registered            | OnOpen   | a netpoll handler goroutine                    |
//	|   a whole frame arrived           | OnFrame  | a netpoll handler goroutine, one at a time     |
//	|   closed by either side, or timed | OnClose  | whichever goroutine saw the close: netpoll's   |
//	|   out, or Shutdown                |          | poller or handler, a write drain, the wheel    |
//
//	Execution order:  OnOpen => OnFrame* => OnClose
//
// On the TLS listeners (crypto/tls on std net) "a netpoll handler
// goroutine" is the connection's own read goroutine; the order is the same.
//
// OnOpen returns before the first OnFrame starts; OnFrame calls of one
// connection never overlap and come in arrival order; OnClose is called
// exactly once for every connection that got OnOpen, after its last OnFrame
// returned, and nothing is called for that connection afterwards. Callbacks
// of different connections run concurrently.
//
// No callback may block: they run on netpoll's goroutines (OnClose may even run
// on a poller, which serves thousands of connections). Hand slow work (RPC,
// storage) to a queue and answer later with Conn.Write.
type Handler interface {
	// OnOpen is called once per accepted connection, before any OnFrame.
	// The connection's liveness deadline is already Config.AuthTimeout.
	OnOpen(c *Conn)
	// OnFrame is called for each inbound frame, serially per connection, in
	// arrival order. f.Body is a copy owned by the callee. It is not called
	// after c.Close, nor for frames that fail protocol.ParseHeader: those get
	// an ERROR frame and close the connection (OnClose gets ErrBadFrame).
	OnFrame(c *Conn, f protocol.Frame)
	// OnClose is called exactly once per opened connection with the reason
	// (never nil), after which nothing else is called for it. Writes to c
	// fail with ErrClosed from then on.
	OnClose(c *Conn, err error)
}

// DrainHandler is implemented by a Handler that wants Conn.NotifyDrained
// calls: OnDrained runs on the connection's write drain (or the caller of
// NotifyDrained) and, like the other callbacks, must not block.
type DrainHandler interface {
	OnDrained(c *Conn)
}
