//go:build integration

package cassandra

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msync/msync/pkg/directory/directorytest"
	storecas "github.com/msync/msync/pkg/store/cassandra"
)

// These tests need a real Cassandra: MSYNC_CASSANDRA_HOSTS=host1,host2
// (`make test-integration`). Each directory gets a fresh keyspace, dropped
// afterwards.

var ksSeq atomic.Int64

func needHosts(t *testing.T) []string {
	t.Helper()
	hosts := os.Getenv("MSYNC_CASSANDRA_HOSTS")
	if hosts == "" {
		t.Skip("MSYNC_CASSANDRA_HOSTS is not set: no Cassandra server to run the directory suite against")
	}
	return strings.Split(hosts, ",")
}

func realConfig(t *testing.T) storecas.Config {
	t.Helper()
	ks := fmt.Sprintf("msync_dirtest_%d_%d", time.Now().Unix()%100000, ksSeq.Add(1))
	cfg := storecas.Config{Hosts: needHosts(t), Keyspace: ks, Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := storecas.Migrate(ctx, cfg); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	t.Cleanup(func() {
		c, err := storecas.Connect(cfg)
		if err != nil {
			return
		}
		_ = c.Session.Query("DROP KEYSPACE IF EXISTS " + ks).Exec()
		c.Session.Close()
	})
	return cfg
}

// Native TTLs run on real time: Wait sleeps. The TTL must outlast the steps
// between writes and checks on a loaded machine (2s did not: a first session
// expired before the second Put).
func TestConformanceRealCassandra(t *testing.T) {
	needHosts(t)
	directorytest.Run(t, func(t *testing.T, ttl time.Duration) directorytest.Instance {
		d, err := Open(Config{Config: realConfig(t), TTL: ttl})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return directorytest.Instance{Dir: d, Wait: time.Sleep}
	}, directorytest.Options{TTL: 10 * time.Second})
}

// A keyspace that was never migrated is a configuration error found at
// Open, naming the setting, not an "unconfigured table" at the first write.
func TestMissingKeyspaceRealCassandra(t *testing.T) {
	cfg := storecas.Config{Hosts: needHosts(t), Keyspace: "msync_never_migrated", Timeout: 10 * time.Second}
	_, err := Open(Config{Config: cfg})
	if !errors.Is(err, storecas.ErrInvalidConfig) || !strings.Contains(err.Error(), "store.cassandra.keyspace") {
		t.Fatalf("Open on a missing keyspace = %v; want ErrInvalidConfig naming store.cassandra.keyspace", err)
	}
}

func TestConfigRefusesShortTTL(t *testing.T) {
	_, err := Open(Config{Config: storecas.Config{Hosts: needHosts(t), Keyspace: "x"}, TTL: time.Millisecond})
	if !errors.Is(err, storecas.ErrInvalidConfig) || !strings.Contains(err.Error(), "TTL") {
		t.Fatalf("Open with TTL 1ms = %v; want ErrInvalidConfig naming TTL", err)
	}
}
