package web_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestJSUnit runs the browser SDK's own tests (codec against the golden Go
// frames, client rules against a fake comet) with `node --test`, so `make
// test` covers them. Node.js 20+ is a test dependency like Chromium is; a
// machine without it fails here with a plain message.
func TestJSUnit(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found in PATH: the JS SDK tests (sdk/js/test) need Node.js >= 20; install it (apt-get install nodejs) and rerun")
	}
	files, err := filepath.Glob(filepath.Join("..", "sdk", "js", "test", "*.test.js"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no JS tests found under sdk/js/test: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := append([]string{"--test"}, files...)
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test failed: %v\n%s", err, out)
	}
	t.Logf("node --test:\n%s", tail(out, 12))
}

// tail returns the last n lines of b.
func tail(b []byte, n int) []byte {
	for i := len(b) - 2; i >= 0; i-- {
		if b[i] == '\n' {
			if n--; n == 0 {
				return b[i+1:]
			}
		}
	}
	return b
}
