// Package queue is the push stream between logic (producer) and job
// (consumer). Backends: memory (in-process, all-in-one mode) and rocketmq
// (cluster mode); both pass the conformance suite in queuetest.
//
// Delivery is at least once and ordered per key: messages with the same key
// are handed to the handler in the order Send accepted them. Consumers dedupe
// (oplog ids are monotonic per channel, so id <= last seen is a repeat).
package queue

import (
	"context"
	"errors"
)

var (
	// ErrClosed: the queue was closed.
	ErrClosed = errors.New("queue: closed")
	// ErrFull: a bounded backend could not accept the message before ctx ended.
	ErrFull = errors.New("queue: full")
)

// Message is one message. Key is the ordering (sharding) key.
type Message struct {
	Key   string
	Value []byte
}

// Producer sends messages.
type Producer interface {
	// Send enqueues msgs (in order per key) and returns once the backend
	// accepted them, or an error (ErrFull, ErrClosed, ...).
	Send(ctx context.Context, msgs ...Message) error
}

// Handler processes a batch of messages that share an ordering partition, in
// order. Returning an error redelivers the same batch after a backoff.
type Handler func(ctx context.Context, msgs []Message) error

// Consumer delivers messages to one handler.
type Consumer interface {
	// Consume starts delivering to h until Shutdown; it returns at once.
	Consume(h Handler) error
	// Shutdown stops delivery and waits for in-flight handlers (bounded by
	// ctx). Safe to call more than once.
	Shutdown(ctx context.Context) error
}
