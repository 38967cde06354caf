package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/msync/msync/pkg/rpc"
)

// TestCertsCommand: `msync certs` writes a CA and per-tier certificates the
// tiers load, naming their roles; a second run refuses to overwrite them.
func TestCertsCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs-dev")
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"certs", "--dir", dir, "--comets", "c-1, c-2"}, &out, &errOut); err != nil {
		t.Fatalf("certs: %v\n%s", err, errOut.String())
	}
	if n := strings.Count(out.String(), "\n"); n != 10 {
		t.Fatalf("listed %d files:\n%s", n, out.String())
	}
	m, err := rpc.LoadTLS(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "c-2.crt"), filepath.Join(dir, "c-2.key"))
	if err != nil {
		t.Fatal(err)
	}
	if id := m.Identity(); id.Comet != "c-2" || !id.Has(rpc.RoleComet) {
		t.Fatalf("c-2.crt names %v", id)
	}
	if err := run(context.Background(), []string{"certs", "--dir", dir}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "already holds a CA") {
		t.Fatalf("second run = %v, want a refusal", err)
	}
}
