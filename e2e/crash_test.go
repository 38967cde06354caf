package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/msync/msync/internal/cluster"
	"github.com/msync/msync/pkg/auth"
	"github.com/msync/msync/pkg/config"
	"github.com/msync/msync/pkg/oplog"
)

// childEnv, when set, makes the test binary run an all-in-one server on that
// data directory instead of the tests: the crash test kill -9's it.
const childEnv = "MSYNC_E2E_CHILD_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		runChild(dir)
		return
	}
	os.Exit(m.Run())
}

func runChild(dir string) {
	f, err := config.Parse([]byte(testConfig))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	n, err := cluster.Start(cluster.Config{File: f, DataDir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Printf("READY %s %s\n", n.Comet.Addr(), n.Logic.HTTPAddr())
	select {} // until killed
}

type child struct {
	cmd       *exec.Cmd
	comet, ap string
}

func startChild(t *testing.T, dir string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "READY ") {
				lines <- sc.Text()
			}
		}
	}()
	select {
	case l := <-lines:
		f := strings.Fields(l)
		return &child{cmd: cmd, comet: f[1], ap: "http://" + f[2]}
	case <-time.After(30 * time.Second):
		t.Fatal("child server did not start")
	}
	return nil
}

// TestKill9KeepsEveryAcknowledgedOplog publishes from many goroutines, kills
// the server process with SIGKILL mid-stream, restarts it on the same data
// directory and checks that every acknowledged oplog is delivered and that
// ids continue without reuse.
func TestKill9KeepsEveryAcknowledgedOplog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := startChild(t, dir)

	var mu sync.Mutex
	acked := map[uint64]string{}
	var count atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p := fmt.Sprintf("w%d-%d", w, i)
				var res publishResult
				code, err := tryCall(c.ap+"/v1/sync", toUser("kim", p), &res)
				if err != nil || code != 200 {
					return // the server died: this call is not acknowledged
				}
				mu.Lock()
				acked[res.ID] = p
				mu.Unlock()
				count.Add(1)
			}
		}()
	}
	eventually(t, waitFor, "300 acknowledged publishes", func() bool { return count.Load() >= 300 })
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.cmd.Wait()
	close(stop)
	wg.Wait()

	var maxAcked uint64
	for id := range acked {
		maxAcked = max(maxAcked, id)
	}
	c2 := startChild(t, dir)
	n := &node{tokens: mustTokens(t)}
	d := dialAddr(t, c2.comet)
	d.auth(n.token(t, "kim"), "phone", "demo")
	got := d.waitGot(int(maxAcked), waitFor)
	byID := map[uint64]string{}
	for i, r := range got {
		if r.ID != uint64(i+1) {
			t.Fatalf("position %d has id %d: ids not dense", i, r.ID)
		}
		byID[r.ID] = r.Payload
	}
	for id, p := range acked {
		if byID[id] != p {
			t.Fatalf("acknowledged id %d: delivered %q, want %q", id, byID[id], p)
		}
	}
	var res publishResult
	if code, err := tryCall(c2.ap+"/v1/sync", toUser("kim", "after"), &res); err != nil || code != 200 {
		t.Fatalf("publish after restart: %d %v", code, err)
	}
	if res.ID <= uint64(len(got)) {
		t.Fatalf("id %d reused after restart (%d stored)", res.ID, len(got))
	}
	t.Logf("%d acknowledged before kill -9, %d stored, next id %d", len(acked), len(got), res.ID)
	_ = oplog.UserChannel
}

func mustTokens(t *testing.T) *auth.Tokens {
	tk, err := auth.NewTokens(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func tryCall(url string, body any, out *publishResult) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return postJSON(ctx, url, "test-key", body, out)
}
