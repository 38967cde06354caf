// Package rpc is the gRPC plumbing msync's tiers share in cluster mode:
//
//   - Server: a gRPC server with bounded message sizes, keepalive
//     enforcement, panic recovery and error mapping (every error leaves as a
//     gRPC status, so api.CodeOf works on the caller's side), with a
//     Listen/Start/Shutdown(ctx) life cycle.
//   - Dial: a client connection with keepalive, a default per-call timeout,
//     bounded message sizes, capped reconnect backoff and no automatic
//     retries (a retried Connect or Ack could be applied twice; callers
//     decide). Several addresses are balanced round robin.
//   - Comets: the job's view of the comet registry (api.Comets) — it lists
//     the registry every few seconds, dials joining comets, closes departed
//     ones, and answers Comet(id) from an immutable snapshot without
//     blocking. Only a call to a comet not listed yet (one that joined since
//     the last refresh) waits, inside that call and bounded by its context,
//     for one extra refresh.
//
// Server, Comets and the connections Dial returns are safe for concurrent use.
package rpc
