package rocketmq

import "errors"

var (
	// ErrInvalidConfig wraps every configuration problem found by the constructors.
	ErrInvalidConfig = errors.New("rocketmq queue: invalid config")
	// ErrConsuming: Consume was already called; a Consumer delivers to one handler.
	ErrConsuming = errors.New("rocketmq queue: already consuming")
	// ErrNilHandler: Consume was called with a nil handler.
	ErrNilHandler = errors.New("rocketmq queue: nil handler")
	// ErrSend wraps a message the broker did not accept.
	ErrSend = errors.New("rocketmq queue: send failed")
	// ErrNoTopic: the name servers know no route for the topic (it does not
	// exist and the broker does not auto-create it, or the name is wrong).
	ErrNoTopic = errors.New("rocketmq queue: topic not found")
	// ErrClient wraps failures of the RocketMQ client to start or stop.
	ErrClient = errors.New("rocketmq queue: client")
)
