// Package queuetest is the conformance suite every queue backend passes:
// order per key across many keys and concurrent senders, at-least-once
// delivery when the handler fails, and bounded, idempotent shutdown. It
// assumes only the contract in package queue, so the memory backend runs it
// in unit tests and the rocketmq backend against a real broker.
package queuetest
