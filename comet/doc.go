// Package comet is msync's connection tier: it authenticates devices through
// logic, keeps their sessions in buckets sharded by connection key, runs the
// per-channel sync state machine (backlog pages with ACK flow control, then
// live pushes in id order), forwards acks to logic in batches, and serves the
// push API (pb.CometServer) that job calls.
//
// # Goroutine safety
//
// A *Comet is safe for concurrent use: Push, Kick, Shutdown and the transport
// callbacks may be called from any goroutine. Sessions are not shared: each
// session's events (client frames, live pushes, close) go into a bounded
// per-session queue and are processed serially by one drain task at a time on
// a bounded ants pool, so the state machine in session.go and channel.go runs
// without locks. Only the queue itself (session.mu) is touched by other
// goroutines.
//
// # Transport
//
// Sessions talk to a Conn (transport.go), not to a socket. transport_gateway.go
// plugs in the netpoll gateway; tests use a fake Conn; a WebSocket transport
// can plug in the same way. The transport must call open once per connection,
// then onFrame serially per connection, then onClose exactly once.
//
// # Goroutines
//
// Owned by the Comet and stopped by Shutdown: the ack flusher (acks.go), the
// renewer, the rescheduler that retries drain tasks the pool refused, and the
// pool's workers. Shutdown is idempotent.
//
// # Lock order
//
// No lock in this package is held while another is acquired: bucket.mu,
// session.mu, ackBatcher.mu, Comet.starved and Comet.life are leaves. The one
// exception is rooms (rooms.go): a session's sessionRooms.mu is held while a
// roomShard.mu is taken, never the other way round, and roomShard.mu is a leaf. In
// particular a session is looked up under bucket.mu, the lock is released, and
// only then is session.mu taken; Conn methods are never called with a lock
// held (a transport may call back into onClose synchronously).
package comet
