//go:build unix

package pebble

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/store"
)

// crashDirEnv switches TestCrash into the child role: append to the store in
// that directory until killed.
const crashDirEnv = "MSYNC_PEBBLE_CRASH_DIR"

const (
	crashChannels = 4
	crashWriters  = 32
	crashAcks     = 1000 // acks the parent reads before it kills the child
)

func crashChannel(i int) string { return oplog.UserChannel("crash", fmt.Sprint(i)) }

// TestCrash re-executes this test binary as a child that appends from many
// goroutines and prints every acknowledged oplog, SIGKILLs it mid-stream,
// reopens the directory and checks that every acknowledged oplog is there,
// ids have no holes, and ids continue after the max.
//
// SIGKILL loses the process, not the page cache, so this checks the
// store's own bookkeeping across a crash (acks only after the commit, ids
// recovered from meta keys, dedup keys), not fsync on power loss.
func TestCrash(t *testing.T) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		crashChild(dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrash$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // a failed test must not leave the child running
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	// Kill the child if it has not produced enough acks in time; the scan
	// below then ends and the count check fails with its stderr.
	timeout := time.AfterFunc(2*time.Minute, func() { _ = cmd.Process.Kill() })
	defer timeout.Stop()

	// acked[channel][id] = payload
	acked := make(map[string]map[uint64]string)
	n := 0
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "ack ") {
			t.Logf("child: %s", line)
			continue
		}
		f := strings.Fields(line)
		if len(f) != 4 {
			t.Fatalf("bad ack line %q", line)
		}
		id, err := strconv.ParseUint(f[2], 10, 64)
		if err != nil {
			t.Fatalf("bad ack line %q: %v", line, err)
		}
		if acked[f[1]] == nil {
			acked[f[1]] = make(map[uint64]string)
		}
		if prev, ok := acked[f[1]][id]; ok {
			t.Fatalf("%s id %d acknowledged twice (%q, %q)", f[1], id, prev, f[3])
		}
		acked[f[1]][id] = f[3]
		if n++; n == crashAcks {
			// SIGKILL mid-stream; keep reading what it printed before dying.
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatalf("kill child: %v", err)
			}
		}
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want SIGKILL; stderr:\n%s", err, stderr.String())
	}
	if n < crashAcks {
		t.Fatalf("child acknowledged %d oplogs, want at least %d; stderr:\n%s", n, crashAcks, stderr.String())
	}

	s := openTest(t, dir)
	ctx := testContext(t)
	for c := range crashChannels {
		ch := crashChannel(c)
		ops, maxID, err := s.Read(ctx, ch, 0, 1<<20)
		if err != nil {
			t.Fatalf("Read(%s): %v", ch, err)
		}
		if uint64(len(ops)) != maxID {
			t.Fatalf("%s: %d oplogs, max id %d: holes after the crash", ch, len(ops), maxID)
		}
		for i, op := range ops {
			if op.Id != uint64(i+1) {
				t.Fatalf("%s: position %d holds id %d: holes after the crash", ch, i, op.Id)
			}
		}
		var maxAcked uint64
		for id, payload := range acked[ch] {
			maxAcked = max(maxAcked, id)
			if id > maxID {
				t.Fatalf("%s: acknowledged id %d lost (max id %d after reopen)", ch, id, maxID)
			}
			if got := string(ops[id-1].Payload); got != payload {
				t.Fatalf("%s id %d: payload %q, acknowledged %q", ch, id, got, payload)
			}
			// Dedup keys (= payload) survive too: a retry finds the id.
			res, err := s.Append(ctx, []*oplog.Oplog{{Channel: ch, DedupKey: payload}})
			if err != nil || res[0] != (store.AppendResult{ID: id, Duplicate: true}) {
				t.Fatalf("%s: retry of acknowledged %q = %+v, %v; want id %d duplicate", ch, payload, res, err, id)
			}
		}
		res, err := s.Append(ctx, []*oplog.Oplog{{Channel: ch, Payload: []byte("after")}})
		if err != nil || res[0].ID != maxID+1 {
			t.Fatalf("%s: next Append = %+v, %v; want id %d", ch, res, err, maxID+1)
		}
		t.Logf("%s: %d acknowledged, %d stored (the rest committed but not acknowledged before the kill)", ch, len(acked[ch]), maxID)
	}
}

// crashChild appends until it is killed (or, if the parent vanished without
// killing it, until a minute has passed), printing one line per ack.
func crashChild(dir string) {
	s, err := Open(Config{Dir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out sync.Mutex
	var wg sync.WaitGroup
	for w := range crashWriters {
		wg.Go(func() {
			ch := crashChannel(w % crashChannels)
			for i := 0; ctx.Err() == nil; i++ {
				payload := fmt.Sprintf("w%d-%d", w, i)
				res, err := s.Append(ctx, []*oplog.Oplog{{Channel: ch, Payload: []byte(payload), DedupKey: payload}})
				if err != nil {
					if ctx.Err() == nil {
						fmt.Fprintln(os.Stderr, "append:", err)
						os.Exit(2)
					}
					return
				}
				// Unbuffered, one write per line: a printed line is an ack
				// the parent may rely on.
				out.Lock()
				fmt.Fprintf(os.Stdout, "ack %s %d %s\n", ch, res[0].ID, payload)
				out.Unlock()
			}
		})
	}
	wg.Wait()
	fmt.Fprintln(os.Stderr, "child: parent never killed me")
	os.Exit(3)
}
