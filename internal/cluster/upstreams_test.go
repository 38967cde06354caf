package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/msync/msync/internal/testutil"
)

// SIGHUP re-reads the upstreams of the file a node was started from; a file
// that does not validate leaves the running set alone.
func TestReloadUpstreamsOnHangup(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "msync.yaml")
	base := tierBase + "store: {dir: " + filepath.Join(dir, "data") + "}\n"
	base = strings.Replace(base, "http_addr: 127.0.0.1:0}", "http_addr: 127.0.0.1:0, ws_addr: ''}", 1)
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(base)
	f := parse(t, "")
	f.Comet.WSAddr = ""
	f.Store.Dir = filepath.Join(dir, "data")
	n, err := Start(Config{File: f})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(t, n.Shutdown) })
	if got := n.Comet.Upstreams(); len(got) != 0 {
		t.Fatalf("upstreams at start: %v", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ReloadOnHangup(ctx, n.Comet, path, discard())

	write(base + "upstreams: {orders: {url: 'http://127.0.0.1:1'}, users: {url: 'h2c://127.0.0.1:2'}}\n")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, func() error {
		if got := n.Comet.Upstreams(); !slices.Equal(got, []string{"orders", "users"}) {
			return fmt.Errorf("upstreams after SIGHUP: %v, want [orders users]", got)
		}
		return nil
	})

	write(base + "upstreams: {orders: {url: 'ftp://nope'}}\n")
	if err := ReloadUpstreams(n.Comet, path); err == nil || !strings.Contains(err.Error(), "ftp://nope") {
		t.Fatalf("reload of a bad file: %v", err)
	}
	if got := n.Comet.Upstreams(); !slices.Equal(got, []string{"orders", "users"}) {
		t.Fatalf("a bad file changed the upstreams: %v", got)
	}
}
