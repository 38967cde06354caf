package rocketmq

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"
)

// Config configures a Producer or a Consumer. Zero values take the defaults
// noted per field.
type Config struct {
	// NameServers are the name servers, "host:port". Required: the client's
	// default resolver points at an internal address, so it is never used.
	NameServers []string
	// Topic is the push stream's topic. Required.
	Topic string
	// Group is the consumer group (all job instances share it) and the
	// producer group. Required.
	Group string
	// Instance names this process to the broker; "-producer" or "-consumer"
	// is appended, so the two roles never share one client. The client
	// caches clients by IP and instance name, so two producers (or two
	// consumers) in one process need distinct Instances. Zero means
	// "msync-<hostname>-<pid>".
	Instance string
	// SendTimeout bounds one message's send, retries included (the client
	// also caps each attempt at 3s). Zero means 3s.
	SendTimeout time.Duration
	// Retries is how many times the client resends a message the broker did
	// not accept. Zero means 2; -1 means never. At most 16.
	Retries int
	// Queues is the queue count the producer assumes for a topic the broker
	// does not have yet (autoCreateTopicEnable; the client then routes by the
	// broker's default topic TBW102). v2.1.2 hard-codes
	// defaultTopicQueueNums=4 in every send header, so an auto-created topic
	// gets at most 4 queues and the broker rejects queue ids above: hence at
	// most 4. Create the topic yourself instead, with 2–4× the job instances
	// (mqadmin updateTopic -t <topic> -r N -w N): the route then gives the
	// real count and this hint is unused. Zero means 4.
	Queues int
	// SendConcurrency bounds how many keys one Send sends concurrently (a
	// key's messages are always sent one at a time, in order). Zero means 16.
	SendConcurrency int
	// MaxBatch bounds the messages handed to the handler in one call (all
	// from one queue). Zero means 32; at most 1024.
	MaxBatch int
	// MinBackoff is the first suspension of a queue whose handler failed; it
	// doubles per consecutive failure of the same messages up to MaxBackoff.
	// Zero means 100ms.
	MinBackoff time.Duration
	// MaxBackoff caps the suspension. Zero means 5s.
	MaxBackoff time.Duration
	// ConsumeFrom is where a consumer group with no committed offset starts:
	// "last" (only new messages; the push stream is best effort, devices
	// catch up by sync) or "first" (everything the broker still retains).
	// Zero means "last".
	ConsumeFrom string
	// Logger receives this package's logs. Nil discards. The client's own
	// logs go through rlog: see SetClientLogger.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Instance == "" {
		host, _ := os.Hostname()
		c.Instance = fmt.Sprintf("msync-%s-%d", host, os.Getpid())
	}
	if c.SendTimeout == 0 {
		c.SendTimeout = 3 * time.Second
	}
	if c.Retries == 0 {
		c.Retries = 2
	}
	if c.Queues == 0 {
		c.Queues = 4
	}
	if c.SendConcurrency == 0 {
		c.SendConcurrency = 16
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 32
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = 100 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 5 * time.Second
	}
	if c.ConsumeFrom == "" {
		c.ConsumeFrom = "last"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) validate() error {
	var errs []error
	if len(c.NameServers) == 0 {
		errs = append(errs, errors.New("NameServers is required"))
	}
	for _, ns := range c.NameServers {
		if _, port, err := net.SplitHostPort(ns); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("name server %q: want host:port", ns))
		}
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("Topic is required"))
	} else if strings.ContainsAny(c.Topic, " /%|") || len(c.Topic) > 127 {
		errs = append(errs, fmt.Errorf("Topic %q: want at most 127 of [A-Za-z0-9_-]", c.Topic))
	}
	if c.Group == "" {
		errs = append(errs, errors.New("Group is required"))
	}
	if strings.Contains(c.Instance, "@") {
		errs = append(errs, fmt.Errorf("Instance %q: must not contain '@' (the client's id separator)", c.Instance))
	}
	if c.SendTimeout < 0 {
		errs = append(errs, fmt.Errorf("SendTimeout %v: want > 0", c.SendTimeout))
	}
	if c.Retries < -1 || c.Retries > 16 {
		errs = append(errs, fmt.Errorf("Retries %d: want -1..16", c.Retries))
	}
	if c.Queues < 0 || c.Queues > 4 {
		errs = append(errs, fmt.Errorf("Queues %d: want 1..4 (an auto-created topic has at most 4 queues with this client)", c.Queues))
	}
	if c.SendConcurrency < 0 {
		errs = append(errs, fmt.Errorf("SendConcurrency %d: want > 0", c.SendConcurrency))
	}
	if c.MaxBatch < 0 || c.MaxBatch > 1024 {
		errs = append(errs, fmt.Errorf("MaxBatch %d: want 1..1024", c.MaxBatch))
	}
	if c.MinBackoff < time.Millisecond || c.MaxBackoff < c.MinBackoff {
		errs = append(errs, fmt.Errorf("backoff %v..%v: want 1ms <= min <= max", c.MinBackoff, c.MaxBackoff))
	}
	if c.ConsumeFrom != "first" && c.ConsumeFrom != "last" {
		errs = append(errs, fmt.Errorf("ConsumeFrom %q: want first or last", c.ConsumeFrom))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

// retries is the client's RetryTimes.
func (c *Config) retries() int {
	if c.Retries < 0 {
		return 0
	}
	return c.Retries
}

// noRoute reports the client's "route info not found" (v2.1.2 has no
// sentinel for it): the name servers have no route for the topic.
func noRoute(err error) bool { return strings.Contains(err.Error(), "route info not found") }

// noTopic is the error for a topic the name servers do not know.
func (c *Config) noTopic(err error) error {
	return fmt.Errorf("%w: queue.rocketmq.topic %q: the name servers %v have no route for it: create it "+
		"(mqadmin updateTopic -n <namesrv> -c <cluster> -t %s -r 8 -w 8), let the broker create it on the first send "+
		"(autoCreateTopicEnable=true), or fix the setting: %w", ErrNoTopic, c.Topic, c.NameServers, c.Topic, err)
}
