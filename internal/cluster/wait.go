package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/msync/msync/pkg/config"
	"github.com/msync/msync/pkg/queue/rocketmq"
	"github.com/msync/msync/pkg/store"
)

// ErrDependencyWait: a dependency (Cassandra, the broker) did not come up
// within TierConfig.StartupWait.
var ErrDependencyWait = errors.New("cluster: dependency not available")

// Startup backoff: the first retry after startupMinDelay, doubling up to
// startupMaxDelay. Cassandra and RocketMQ take 30-60 s to start on a small
// machine, so a tier started with them waits instead of exiting.
const (
	startupMinDelay = 500 * time.Millisecond
	startupMaxDelay = 10 * time.Second
)

// transient reports whether a start-up failure may go away by itself: the
// store or directory unreachable, or the broker client not starting (broker
// down, or the topic not created yet — the first publish auto-creates it).
// Configuration errors are never transient.
func transient(err error) bool {
	return errors.Is(err, store.ErrUnavailable) || errors.Is(err, rocketmq.ErrClient) ||
		// No route yet: a new topic until the first publish creates it, or
		// a broker that restarted and has not re-registered it.
		errors.Is(err, rocketmq.ErrNoTopic)
}

// waitFor calls try until it succeeds, fails with a non-transient error, or
// cfg.StartupWait (or cfg.Context) runs out, logging each wait with what it
// waits for. StartupWait zero means try once.
func waitFor(cfg TierConfig, log *slog.Logger, what string, try func() error) error {
	err := try()
	if err == nil || !transient(err) || cfg.StartupWait <= 0 {
		return err
	}
	ctx := cfg.Context
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.StartupWait)
	defer cancel()
	began, delay := time.Now(), startupMinDelay
	for attempt := 2; ; attempt++ {
		log.Warn("waiting for a dependency", "waiting_for", what, "attempt", attempt, "retry_in", delay.String(), "err", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: %s after %s (startup wait %s): %w", ErrDependencyWait, what,
				time.Since(began).Round(time.Second), cfg.StartupWait, err)
		case <-t.C:
		}
		if err = try(); err == nil {
			log.Info("dependency available", "dependency", what, "waited", time.Since(began).Round(time.Millisecond).String())
			return nil
		}
		if !transient(err) {
			return err
		}
		delay = min(2*delay, startupMaxDelay)
	}
}

// storeDep and queueDep name what a tier waits for, for the log.
func storeDep(f *config.File) string {
	if f.Store.Backend == "cassandra" {
		return fmt.Sprintf("cassandra store.cassandra.hosts %v keyspace %s", f.Store.Cassandra.Hosts, f.Store.Cassandra.Keyspace)
	}
	return "store " + f.Store.Backend
}

func queueDep(f *config.File) string {
	if f.Queue.Backend == "rocketmq" {
		r := f.Queue.RocketMQ
		return fmt.Sprintf("rocketmq queue.rocketmq.name_servers %v topic %s", r.NameServers, r.Topic)
	}
	return "queue " + f.Queue.Backend
}

// waitDirectory opens the online directory, waiting for its store.
func waitDirectory(cfg TierConfig, f *config.File, log *slog.Logger) (d dirBackend, c closer, err error) {
	err = waitFor(cfg, log, "directory on "+storeDep(f), func() (err error) {
		d, c, err = openDirectory(f, log.With("tier", "directory"))
		return err
	})
	return d, c, err
}
