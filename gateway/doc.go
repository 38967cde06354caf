// Package gateway is msync's connection engine: a TCP server on the
// cloudwego/netpoll event loop that reads length-prefixed protocol frames,
// hands them to a Handler, and writes frames back through bounded
// per-connection queues. It knows nothing of users, sessions or oplogs; the
// comet builds those on top.
//
// What it does for every connection:
//
//   - Reads: frames are parsed with protocol.ParseHeader against
//     Config.MaxFrame. A bad or oversized header gets ERROR
//     protocol.CodeBadFrame / CodeFrameTooLarge and a close. A frame whose
//     first byte arrived must complete within Config.ReadTimeout.
//   - Writes: Conn.Write only enqueues (it never blocks). One drain task per
//     connection at a time, on a bounded ants pool, batches everything queued
//     into as few socket writes as possible. More than Config.WriteQueueBytes
//     queued closes the connection as a slow consumer (ERROR
//     protocol.CodeSlowConsumer): the client resyncs on reconnect, so a
//     laggard never holds unbounded memory.
//   - Deadlines: a liveness deadline (initially Config.AuthTimeout, then
//     whatever the handler sets for heartbeats) and an ack deadline live in
//     one timing wheel (package gateway/wheel) ticked by one goroutine.
//     Expiry sends an ERROR frame with the deadline's code and closes.
//   - Shutdown sends ERROR protocol.CodeServerShutdown to every connection,
//     closes them, and waits for every goroutine the Server started.
//
// Listeners: besides TCP (Config.Addr) a Server can serve WebSocket on
// netpoll (Config.WSAddr; ws.go: one frame per binary message, upgrade path
// Config.WSPath) and, since netpoll has no TLS, TLS and WebSocket over TLS
// on crypto/tls with a goroutine per connection (Config.TLSAddr,
// TLSWSAddr; tls.go). Every listener feeds the same Handler with the same
// write queue, deadlines and close semantics, and connection IDs come from
// one counter. A WebSocket or TLS connection reaches OnOpen only after its
// upgrade or handshake succeeded (both bounded by AuthTimeout); one that
// fails never reaches the Handler. Memory per idle connection and the
// alternative of terminating TLS in front: docs/transports.md.
//
// When the drain pool is saturated (Config.Workers drains in flight), a
// connection with new data is parked on a backlog instead of being dropped
// or drained inline: the next worker to finish takes it, and the wheel's
// tick retries the backlog as a backstop. Its queue stays bounded by
// WriteQueueBytes while it waits, so overload degrades into latency and, for
// connections that fall too far behind, slow-consumer closes.
//
// Goroutine safety: Server methods and Conn methods are safe for concurrent
// use. Handler callbacks follow the order documented on Handler.
//
// Linux only (netpoll's epoll backend); BSD may work, Windows does not.
package gateway
