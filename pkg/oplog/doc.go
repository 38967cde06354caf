// Package oplog holds the oplog message (generated from oplog.proto), channel
// naming, and the per-device delivery rules (validity window, platform and app
// version filters) that logic applies to backlog pages and comet to live
// pushes. Everything here is pure and goroutine-safe.
package oplog
