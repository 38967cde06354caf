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

	"github.com/msync/msync/pkg/directory"
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

func TestDirectoryRealCassandra(t *testing.T) {
	// The TTL must outlast the steps before the expiry check: with 2s a
	// loaded CI node let the first session expire before the second Put.
	d, err := OpenDirectory(DirectoryConfig{Config: realConfig(t), TTL: 10 * time.Second})
	if err != nil {
		t.Fatalf("OpenDirectory: %v", err)
	}
	defer d.Close()
	ctx := context.Background()
	s1 := directory.Session{User: "u1", Device: "d1", Platform: "ios", Comet: "c1", Key: "k1", Since: time.Now().Truncate(time.Millisecond)}
	if prev, err := d.Put(ctx, s1); err != nil || prev != nil {
		t.Fatalf("Put = %v, %v; want nil, nil", prev, err)
	}
	s2 := s1
	s2.Comet, s2.Key = "c2", "k2"
	prev, err := d.Put(ctx, s2)
	if err != nil || prev == nil || prev.Comet != "c1" {
		t.Fatalf("second Put = %v, %v; want previous session on c1", prev, err)
	}
	// A late disconnect of the replaced session must not remove s2.
	if err := d.Delete(ctx, "d1", "c1", "k1"); err != nil {
		t.Fatal(err)
	}
	if got, err := d.ByDevice(ctx, "d1"); err != nil || got.Comet != "c2" {
		t.Fatalf("ByDevice after stale delete = %+v, %v", got, err)
	}
	if got, err := d.ByUser(ctx, "u1"); err != nil || len(got) != 1 || got[0].Key != "k2" {
		t.Fatalf("ByUser = %+v, %v", got, err)
	}
	if err := d.RegisterComet(ctx, "c2", "127.0.0.1:3102"); err != nil {
		t.Fatal(err)
	}
	if cs, err := d.Comets(ctx); err != nil || len(cs) != 1 || cs[0].Addr != "127.0.0.1:3102" {
		t.Fatalf("Comets = %+v, %v", cs, err)
	}
	// Without renewal everything expires by TTL.
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := d.ByDevice(ctx, "d1")
		cs, cerr := d.Comets(ctx)
		if errors.Is(err, directory.ErrNotFound) && cerr == nil && len(cs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("session/comet still present after TTL: %v, %v", err, cs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
