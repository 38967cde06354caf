package cassandra

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gocql/gocql"
)

var (
	// ErrInvalidConfig wraps every problem Open finds in a Config.
	ErrInvalidConfig = errors.New("store/cassandra: invalid config")
	// ErrUnknownOutcome: a conditional write's outcome could not be resolved
	// (the SERIAL read that settles it failed too). It also wraps
	// store.ErrUnavailable; a retry with the same dedup keys is safe.
	ErrUnknownOutcome = errors.New("store/cassandra: outcome of a conditional write unknown")
)

// Config configures Open, Connect (pkg/directory/cassandra) and Migrate. Zero values take the
// defaults documented on each field.
type Config struct {
	// Hosts are the contact points ("host" or "host:port"). Required.
	Hosts []string
	// Keyspace holds every table. Zero means "msync".
	Keyspace string
	// Replication is the keyspace's replication map, used only by Migrate:
	// {"class": "SimpleStrategy", "replication_factor": "3"} or
	// {"class": "NetworkTopologyStrategy", "dc1": "3", ...}. Zero means
	// SimpleStrategy with factor 1 (development only).
	Replication map[string]string
	// Consistency of reads and plain writes, and the commit consistency of
	// LWTs. Zero means LOCAL_QUORUM.
	Consistency string
	// SerialConsistency of LWTs and of the reads that resolve their unknown
	// outcomes: SERIAL or LOCAL_SERIAL. Zero means LOCAL_SERIAL.
	SerialConsistency string
	// Timeout bounds each request. Zero means 5s.
	Timeout time.Duration
	// BucketSize is how many oplog ids share one partition. Zero means 10000.
	// Never change it for an existing keyspace: bucket = id / BucketSize.
	BucketSize int
	// ProtoVersion is the CQL native protocol version: 3 or 4 (gocql v1.7.0
	// has no v5 framing; Cassandra 5.0 serves v3-v5). Zero means 4.
	ProtoVersion int
	// MaxBatch bounds the oplogs of one channel put into one LWT batch. Zero
	// means 100 (Cassandra warns about batches above 5 KiB by default).
	MaxBatch int
	// ParallelChannels bounds how many channels of one Append call are
	// written at once (each channel is its own partition and LWT). Zero
	// means 16 (64 measured no faster for one writer and slower for two
	// writing the same channels: BenchmarkRealCassandra).
	ParallelChannels int
	// DedupLease is how long a dedup claim without an id is left to its
	// owner before another appender resolves and takes it over. It must
	// exceed the longest an Append can keep trying (its ctx) plus clock skew
	// between logic hosts. Zero means 1m.
	DedupLease time.Duration
	// Logger receives the store's log lines. Nil discards them.
	Logger *slog.Logger

	// disableHostLookup is set by tests whose scripted server has no
	// system.peers to discover.
	disableHostLookup bool
	// legacyAppend restores the appends as they were before the cached
	// head was trusted and lost CAS rounds paused (every append to an idle
	// channel reads its head; retries follow at once), so that
	// BenchmarkRealCassandra measures both in one run.
	legacyAppend bool
}

const (
	defaultBucketSize = 10000
	defaultMaxBatch   = 100
	// maxTTL is Cassandra's largest TTL (20 years).
	maxTTL = 20 * 365 * 24 * 3600
)

var identRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,47}$`)

func (c Config) withDefaults() Config {
	if c.Keyspace == "" {
		c.Keyspace = "msync"
	}
	if len(c.Replication) == 0 {
		c.Replication = map[string]string{"class": "SimpleStrategy", "replication_factor": "1"}
	}
	if c.Consistency == "" {
		c.Consistency = "LOCAL_QUORUM"
	}
	if c.SerialConsistency == "" {
		c.SerialConsistency = "LOCAL_SERIAL"
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	if c.BucketSize == 0 {
		c.BucketSize = defaultBucketSize
	}
	if c.ProtoVersion == 0 {
		c.ProtoVersion = 4
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = defaultMaxBatch
	}
	if c.DedupLease == 0 {
		c.DedupLease = time.Minute
	}
	if c.ParallelChannels == 0 {
		c.ParallelChannels = 16
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports every problem of c (after defaults) at once.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if len(c.Hosts) == 0 {
		bad("Hosts: at least one is required")
	}
	if !identRE.MatchString(c.Keyspace) {
		bad("Keyspace %q: want a CQL identifier ([A-Za-z][A-Za-z0-9_]*, at most 48)", c.Keyspace)
	}
	if _, err := c.replicationCQL(); err != nil {
		errs = append(errs, err)
	}
	if _, err := parseConsistency(c.Consistency); err != nil {
		bad("Consistency: %v", err)
	}
	if _, err := parseSerial(c.SerialConsistency); err != nil {
		bad("SerialConsistency: %v", err)
	}
	if c.Timeout < 0 {
		bad("Timeout %v is negative", c.Timeout)
	}
	if c.BucketSize < 2 {
		bad("BucketSize %d: want at least 2", c.BucketSize)
	}
	if c.ProtoVersion < 3 || c.ProtoVersion > 4 {
		// gocql v1.7.0 lacks v5's segment framing: against Cassandra 4+/5
		// a v5 session fails at connect ("unsupported protocol response
		// version"), so it is refused here with the setting's name.
		bad("ProtoVersion (store.cassandra.proto_version) %d: want 3 or 4 (this driver cannot speak v5)", c.ProtoVersion)
	}
	if c.MaxBatch < 1 {
		bad("MaxBatch %d: want at least 1", c.MaxBatch)
	}
	if c.ParallelChannels < 1 {
		bad("ParallelChannels %d: want at least 1", c.ParallelChannels)
	}
	if c.DedupLease < 0 {
		bad("DedupLease %v is negative", c.DedupLease)
	}
	return errors.Join(errs...)
}

// replicationCQL renders Replication as a CQL map literal, checking it so
// nothing but a class name and numbers reaches the statement.
func (c Config) replicationCQL() (string, error) {
	class := c.Replication["class"]
	var parts []string
	switch class {
	case "SimpleStrategy":
		if len(c.Replication) != 2 {
			return "", fmt.Errorf("%w: Replication: SimpleStrategy takes only replication_factor", ErrInvalidConfig)
		}
		n, err := strconv.Atoi(c.Replication["replication_factor"])
		if err != nil || n < 1 {
			return "", fmt.Errorf("%w: Replication: replication_factor %q: want a positive integer", ErrInvalidConfig, c.Replication["replication_factor"])
		}
		parts = append(parts, fmt.Sprintf("'replication_factor': %d", n))
	case "NetworkTopologyStrategy":
		if len(c.Replication) < 2 {
			return "", fmt.Errorf("%w: Replication: NetworkTopologyStrategy needs at least one data centre", ErrInvalidConfig)
		}
		for dc, v := range c.Replication {
			if dc == "class" {
				continue
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || !regexp.MustCompile(`^[A-Za-z0-9_.-]+$`).MatchString(dc) {
				return "", fmt.Errorf("%w: Replication: data centre %q factor %q: want a name and a non-negative integer", ErrInvalidConfig, dc, v)
			}
			parts = append(parts, fmt.Sprintf("'%s': %d", dc, n))
		}
	default:
		return "", fmt.Errorf("%w: Replication: class %q: want SimpleStrategy or NetworkTopologyStrategy", ErrInvalidConfig, class)
	}
	sortStrings(parts)
	return fmt.Sprintf("{'class': '%s', %s}", class, strings.Join(parts, ", ")), nil
}

func parseConsistency(s string) (gocql.Consistency, error) {
	switch s {
	case "ANY", "ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE":
		return gocql.ParseConsistencyWrapper(s)
	}
	return 0, fmt.Errorf("%q: want a write/read consistency such as LOCAL_QUORUM", s)
}

func parseSerial(s string) (gocql.SerialConsistency, error) {
	switch s {
	case "SERIAL":
		return gocql.Serial, nil
	case "LOCAL_SERIAL":
		return gocql.LocalSerial, nil
	}
	return 0, fmt.Errorf("%q: want SERIAL or LOCAL_SERIAL", s)
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}
