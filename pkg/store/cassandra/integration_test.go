//go:build integration

package cassandra

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msync/msync/pkg/store"
	"github.com/msync/msync/pkg/store/storetest"
)

// These tests need a real Cassandra: MSYNC_CASSANDRA_HOSTS=host1,host2.
// Each store gets a fresh keyspace, dropped afterwards. `make
// test-integration` runs them (they are plain tests that skip without it).

var ksSeq atomic.Int64

func needHosts(t testing.TB) string {
	t.Helper()
	hosts := os.Getenv("MSYNC_CASSANDRA_HOSTS")
	if hosts == "" {
		t.Skip("MSYNC_CASSANDRA_HOSTS is not set: no Cassandra server to run the conformance suite against " +
			"(none can be installed here; the scripted wire tests in this package still run)")
	}
	return hosts
}

func realConfig(t testing.TB) Config {
	t.Helper()
	hosts := needHosts(t)
	ks := fmt.Sprintf("msync_test_%d_%d", time.Now().Unix()%100000, ksSeq.Add(1))
	cfg := Config{Hosts: strings.Split(hosts, ","), Keyspace: ks, BucketSize: 5, Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := Migrate(ctx, cfg); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	t.Cleanup(func() {
		c, err := newCluster(cfg.withDefaults())
		if err != nil {
			return
		}
		if sess, err := c.CreateSession(); err == nil {
			_ = sess.Query("DROP KEYSPACE IF EXISTS " + ks).Exec()
			sess.Close()
		}
	})
	return cfg
}

func TestConformanceRealCassandra(t *testing.T) {
	needHosts(t)
	open := func(t *testing.T) store.Store {
		s, err := Open(realConfig(t))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	}
	// BucketSize 5 makes the suite cross partition buckets constantly.
	storetest.RunWith(t, open, storetest.Options{NativeTTL: true})
}

// Two stores on one keyspace stand for two logic processes.
func TestPrincipalsRealCassandra(t *testing.T) {
	needHosts(t)
	storetest.RunPrincipals(t, func(t *testing.T, n int) []storetest.Principals {
		cfg := realConfig(t)
		ps := make([]storetest.Principals, n)
		for i := range ps {
			ps[i] = openReal(t, cfg)
		}
		return ps
	})
}
