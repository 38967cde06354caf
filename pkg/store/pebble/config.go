package pebble

import (
	"errors"
	"fmt"
	"log/slog"
)

// Config configures Open. Zero values take the defaults documented on each
// field.
type Config struct {
	// Dir is the Pebble directory; created if missing. Required.
	Dir string
	// Logger receives the store's and Pebble's log lines. Nil discards them.
	Logger *slog.Logger
	// MaxBatch is how many oplogs the writer collects into one group commit
	// before it stops draining waiting calls. A single call larger than this
	// is still committed whole. Zero means 1024.
	MaxBatch int
	// QueueSize bounds the Append calls waiting for the writer; further calls
	// block (honouring ctx) until it catches up. Zero means 4096.
	QueueSize int
	// CacheSize is Pebble's block cache in bytes. Zero means 64 MiB.
	CacheSize int64
}

const (
	defaultMaxBatch  = 1024
	defaultQueueSize = 4096
	defaultCacheSize = 64 << 20
)

// withDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = defaultMaxBatch
	}
	if c.QueueSize == 0 {
		c.QueueSize = defaultQueueSize
	}
	if c.CacheSize == 0 {
		c.CacheSize = defaultCacheSize
	}
	return c
}

// Validate reports every problem of c at once, each wrapping ErrInvalidConfig.
func (c Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, fmt.Errorf("%w: Dir is required", ErrInvalidConfig))
	}
	if c.MaxBatch < 0 {
		errs = append(errs, fmt.Errorf("%w: MaxBatch %d is negative", ErrInvalidConfig, c.MaxBatch))
	}
	if c.QueueSize < 0 {
		errs = append(errs, fmt.Errorf("%w: QueueSize %d is negative", ErrInvalidConfig, c.QueueSize))
	}
	if c.CacheSize < 0 {
		errs = append(errs, fmt.Errorf("%w: CacheSize %d is negative", ErrInvalidConfig, c.CacheSize))
	}
	return errors.Join(errs...)
}
