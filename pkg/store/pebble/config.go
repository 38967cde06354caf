package pebble

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
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
	// CacheSize is Pebble's block cache in bytes, not counting memtables
	// (Open adds their reservation on top). Zero means 64 MiB.
	CacheSize int64
	// MemTableSize is the size of one Pebble memtable in bytes; up to two
	// exist at once (one filling, one flushing). Zero means 64 MiB. Pebble's
	// own default (4 MiB) turns a backlog written round robin over many
	// channels into hundreds of flushes, each spanning every channel, so
	// every L0 compaction rewrites the whole bottom level (write
	// amplification 3.4 against 1.5 in BenchmarkReconnectStorm), a read of
	// one channel seeks in dozens of L0 files, and the compaction debt left
	// by a publish burst is paid during the reconnect storm that follows.
	// 64 MiB used a quarter less server CPU in that storm than 32 MiB.
	MemTableSize int64
	// MaxChannels caps the channels whose id state (max id, about 230 bytes
	// each) is kept in memory; beyond it the least recently used are
	// dropped and re-read from disk on next use (one Get). Zero means
	// 262144 (about 60 MiB).
	MaxChannels int
	// MinFreeBytes is the free disk space below which writes (appends, sync
	// points, owners) are refused with store.ErrInsufficientStorage while
	// reads go on: a full disk would otherwise fail a WAL write, which
	// Pebble treats as fatal (the process stops, and crash-loops while the
	// disk stays full). Zero means 128 MiB; negative disables the check.
	MinFreeBytes int64
	// DiskCheckInterval is how often free space is re-read (statfs).
	// Zero means 1s.
	DiskCheckInterval time.Duration
	// FS is the file system Pebble runs on. Nil means the OS's (vfs.Default);
	// tests inject one reporting a full disk.
	FS vfs.FS
}

const (
	defaultMaxBatch  = 1024
	defaultQueueSize = 4096
	defaultCacheSize = 64 << 20
	defaultMemTable  = 64 << 20

	// memTableStopWrites is Pebble's MemTableStopWritesThreshold: how many
	// memtables (filling plus queued for flush) may exist before writes stall.
	memTableStopWrites = 2
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
	if c.MemTableSize == 0 {
		c.MemTableSize = defaultMemTable
	}
	if c.MinFreeBytes == 0 {
		c.MinFreeBytes = 128 << 20
	}
	if c.DiskCheckInterval == 0 {
		c.DiskCheckInterval = time.Second
	}
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.MaxChannels == 0 {
		c.MaxChannels = 1 << 18
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
	if c.MaxChannels < 0 {
		errs = append(errs, fmt.Errorf("%w: MaxChannels %d is negative", ErrInvalidConfig, c.MaxChannels))
	}
	if c.CacheSize < 0 {
		errs = append(errs, fmt.Errorf("%w: CacheSize %d is negative", ErrInvalidConfig, c.CacheSize))
	}
	// Pebble requires a memtable below 4 GiB; 64 KiB keeps a typo (a size in
	// MiB instead of bytes) from making every write a flush.
	if c.MemTableSize != 0 && (c.MemTableSize < 64<<10 || c.MemTableSize >= 4<<30) {
		errs = append(errs, fmt.Errorf("%w: MemTableSize %d: want 64 KiB to 4 GiB", ErrInvalidConfig, c.MemTableSize))
	}
	return errors.Join(errs...)
}
