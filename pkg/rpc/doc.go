// Package rpc is the gRPC plumbing msync's tiers share in cluster mode:
//
//   - Server: a gRPC server with bounded message sizes, keepalive
//     enforcement, panic recovery and error mapping (every error leaves as a
//     gRPC status, so api.CodeOf works on the caller's side), with a
//     Listen/Start/Shutdown(ctx) life cycle.
//
//   - Dial: a client connection with keepalive, a default per-call timeout,
//     bounded message sizes, capped reconnect backoff and no automatic
//     retries (a retried Connect or Ack could be applied twice; callers
//     decide). Several addresses are balanced round robin.
//
//   - Comets: the job's view of the comet registry (api.Comets) — it lists
//     the registry every few seconds, dials joining comets, closes departed
//     ones, and answers Comet(id) from an immutable snapshot without
//     blocking. Only a call to a comet not listed yet (one that joined since
//     the last refresh) waits, inside that call and bounded by its context,
//     for one extra refresh.
//
//   - TLS (tls.go, certs.go): mutual TLS between tiers. Certificates name
//     their holder's role in a URI SAN (spiffe://msync/logic, .../job,
//     .../comet/<id>); the server allows each method to one role (comets
//     call Logic, job calls Comet), clients check the server's role (and,
//     for job, the comet id of the registry entry). Without TLS a Server
//     listens on loopback only. CA and WriteDevCerts issue certificates
//     (`msync certs`).
//
// Server, Comets and the connections Dial returns are safe for concurrent use.
package rpc
