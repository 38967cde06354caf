// Package logic is the logic tier: the business HTTP API (publish, batch
// publish, device sync state, bizs, health, metrics) and the gRPC API comets
// call (pb.LogicServer: connect, disconnect, renew, sync pages, ack).
//
// Publishing: an oplog is acknowledged to the business only after
// store.Append returned, i.e. it is durable and has its id. Logic then puts
// it on the push stream (queue) keyed by channel, for job to push to online
// devices. A failure to queue is logged and counted but does not fail the
// call: the oplog is durable, and devices get it on their next sync (a
// reconnect, or the comet's gap check on the next live push).
//
// Logic does not own its dependencies (store, queue, directory): the caller
// creates them before New and closes them after Shutdown.
//
// A *Logic is safe for concurrent use.
package logic
