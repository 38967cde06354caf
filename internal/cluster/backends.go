package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/msync/msync/pkg/config"
	"github.com/msync/msync/pkg/directory"
	dircas "github.com/msync/msync/pkg/directory/cassandra"
	dirmem "github.com/msync/msync/pkg/directory/memory"
	"github.com/msync/msync/pkg/queue"
	"github.com/msync/msync/pkg/queue/dedupe"
	queuemem "github.com/msync/msync/pkg/queue/memory"
	"github.com/msync/msync/pkg/queue/rocketmq"
	"github.com/msync/msync/pkg/store"
	"github.com/msync/msync/pkg/store/cassandra"
	"github.com/msync/msync/pkg/store/pebble"
)

// ErrBackendNotBuiltIn: the configuration selects a store, queue or
// directory backend this binary cannot open.
var ErrBackendNotBuiltIn = errors.New("cluster: backend not built in")

// ErrLayout: the configuration asks for a process layout that cannot work,
// e.g. a standalone job on an in-process queue nobody else can write to.
var ErrLayout = errors.New("cluster: unsupported layout")

// closer is what backends need at shutdown.
type closer = func(ctx context.Context) error

// PebbleConfig maps the file's store section to the Pebble store's config
// (dir: the directory after --data).
func PebbleConfig(s config.Store, dir string, log *slog.Logger) pebble.Config {
	return pebble.Config{Dir: dir, Logger: log,
		CacheSize: int64(s.CacheMB) << 20, MemTableSize: int64(s.MemtableMB) << 20,
		MinFreeBytes: int64(s.MinFreeMB) << 20, MaxChannels: s.MaxChannels}
}

// openStore opens the store selected by store.backend.
func openStore(f *config.File, dataDir string, log *slog.Logger) (store.Store, closer, error) {
	switch f.Store.Backend {
	case "pebble":
		dir := f.Store.Dir
		if dataDir != "" {
			dir = dataDir
		}
		st, err := pebble.Open(PebbleConfig(f.Store, dir, log))
		if err != nil {
			return nil, nil, fmt.Errorf("cluster: store: %w", err)
		}
		return st, func(context.Context) error { return st.Close() }, nil
	case "cassandra":
		cfg := CassandraConfig(f.Store.Cassandra)
		cfg.Logger = log
		st, err := cassandra.Open(cfg)
		if err != nil {
			return nil, nil, fmt.Errorf("cluster: store: %w", err)
		}
		return st, func(context.Context) error { return st.Close() }, nil
	}
	return nil, nil, fmt.Errorf("%w: store.backend %q", ErrBackendNotBuiltIn, f.Store.Backend)
}

// CassandraConfig maps store.cassandra onto the backend's Config (also
// used by `msync migrate`).
func CassandraConfig(c config.Cassandra) cassandra.Config {
	return cassandra.Config{
		Hosts:             c.Hosts,
		Keyspace:          c.Keyspace,
		Replication:       c.Replication,
		Consistency:       c.Consistency,
		SerialConsistency: c.SerialConsistency,
		Timeout:           time.Duration(c.Timeout),
		BucketSize:        c.BucketSize,
		ProtoVersion:      c.ProtoVersion,
	}
}

// sharedDirectory reports whether the configured backends give the online
// directory a home several processes can share (the Cassandra store holds it
// in cluster mode); otherwise the directory is in-process memory.
func sharedDirectory(f *config.File) bool { return f.Store.Backend != "pebble" }

// dirBackend is an online directory that also keeps the comet registry.
type dirBackend interface {
	directory.Directory
	directory.Comets
}

// openDirectory opens the online directory with the comet registry: memory
// next to the Pebble store (one logic+job process), the Cassandra tables
// next to the Cassandra store (any number of logic and job processes).
func openDirectory(f *config.File, log *slog.Logger) (dirBackend, closer, error) {
	switch f.Store.Backend {
	case "pebble":
		d, err := dirmem.New(dirmem.Config{})
		if err != nil {
			return nil, nil, fmt.Errorf("cluster: directory: %w", err)
		}
		return d, d.Shutdown, nil
	case "cassandra":
		cfg := CassandraConfig(f.Store.Cassandra)
		cfg.Logger = log
		d, err := dircas.Open(dircas.Config{Config: cfg})
		if err != nil {
			return nil, nil, fmt.Errorf("cluster: directory: %w", err)
		}
		return d, d.Shutdown, nil
	}
	return nil, nil, fmt.Errorf("%w: directory on store.backend %q", ErrBackendNotBuiltIn, f.Store.Backend)
}

// openQueue opens the push stream selected by queue.backend: the producer
// (logic) and/or the consumer (job), with one closer for what it opened.
// The memory queue is one in-process object serving as both ends, so it
// only works when logic and job share a process (job.embedded). Consumers
// of a broker are wrapped in dedupe: brokers deliver at least once.
func openQueue(f *config.File, produce, consume bool, log *slog.Logger) (queue.Producer, queue.Consumer, closer, error) {
	switch f.Queue.Backend {
	case "memory":
		if !produce || !consume {
			return nil, nil, nil, fmt.Errorf("%w: queue.backend memory is in-process: run job inside logic (job.embedded: true) or use queue.backend rocketmq", ErrLayout)
		}
		q, err := queuemem.New(queuemem.Config{})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("cluster: queue: %w", err)
		}
		return q, q, q.Shutdown, nil
	case "rocketmq":
		// The client logs to stdout at info by default (every rebalance and
		// heartbeat); route it into the process's structured log instead.
		rocketmq.SetClientLogger(log.With("component", "rocketmq-client"))
		r := f.Queue.RocketMQ
		cfg := rocketmq.Config{
			NameServers: r.NameServers, Topic: r.Topic, Group: r.Group, Instance: r.Instance,
			SendTimeout: time.Duration(r.SendTimeout), Retries: r.Retries, Queues: r.Queues,
			MaxBatch: r.MaxBatch, ConsumeFrom: r.ConsumeFrom, Logger: log,
		}
		var (
			prod  queue.Producer
			cons  queue.Consumer
			steps []closer
		)
		closeAll := func(ctx context.Context) error {
			var errs []error
			for i := len(steps) - 1; i >= 0; i-- {
				errs = append(errs, steps[i](ctx))
			}
			return errors.Join(errs...)
		}
		if produce {
			p, err := rocketmq.NewProducer(cfg)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("cluster: queue producer: %w", err)
			}
			prod, steps = p, append(steps, p.Shutdown)
		}
		if consume {
			c, err := rocketmq.NewConsumer(cfg)
			if err != nil {
				_ = closeAll(context.Background())
				return nil, nil, nil, fmt.Errorf("cluster: queue consumer: %w", err)
			}
			steps = append(steps, c.Shutdown)
			d, err := dedupe.New(dedupe.Config{Consumer: c, Logger: log})
			if err != nil {
				_ = closeAll(context.Background())
				return nil, nil, nil, fmt.Errorf("cluster: queue dedupe: %w", err)
			}
			cons = d
		}
		return prod, cons, closeAll, nil
	}
	return nil, nil, nil, fmt.Errorf("%w: queue.backend %q", ErrBackendNotBuiltIn, f.Queue.Backend)
}
