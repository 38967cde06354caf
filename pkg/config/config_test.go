package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExampleConfigs loads every file in configs/ so the examples never go stale.
func TestExampleConfigs(t *testing.T) {
	files, err := filepath.Glob("../../configs/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example configs found: %v", err)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			f, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(f.Bizs) == 0 || len(f.APIKeys) == 0 {
				t.Fatalf("%s: no bizs or keys", path)
			}
		})
	}
}

func TestDefaultConfigValues(t *testing.T) {
	f, err := Load("../../configs/msync.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if f.Comet.Addr != "127.0.0.1:3101" || f.Logic.HTTPAddr != "127.0.0.1:3111" || !f.HasDevKey() || !f.Dev {
		t.Fatalf("defaults drifted: comet %q logic %q devkey %v", f.Comet.Addr, f.Logic.HTTPAddr, f.HasDevKey())
	}
	if time.Duration(f.Comet.Heartbeat) != 30*time.Second {
		t.Fatalf("heartbeat %v", time.Duration(f.Comet.Heartbeat))
	}
	if f.Store.CacheMB != 64 || f.Store.MemtableMB != 64 {
		t.Fatalf("store cache %d MiB, memtable %d MiB", f.Store.CacheMB, f.Store.MemtableMB)
	}
	if f.Bizs[0].Name != "demo" {
		t.Fatalf("first biz %q", f.Bizs[0].Name)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown key", "secret: 0123456789abcdefgh\nbogus: 1\n", []string{"bogus"}},
		{"everything wrong", "secret: short\nlog: {level: loud, format: xml}\nstore: {backend: mysql}\nbizs: [{name: 'a b'}]\ncomet: {page_limit: -1}\n",
			[]string{"secret", "log.level", "log.format", "api_keys", "store.backend", "a b", "page_limit"}},
		{"bad duration", "secret: 0123456789abcdefgh\ncomet: {heartbeat: soon}\n", []string{"soon"}},
		{"bad pebble sizes", "secret: 0123456789abcdefgh\nstore: {cache_mb: -1, memtable_mb: 4096}\n", []string{"store.cache_mb -1", "memtable_mb 4096"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q: %v", w, err)
				}
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "none.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v", err)
	}
}

// Security review #8/#14: outside dev mode the published secret, dev-key
// and short API keys are refused.
func TestDevOnlyCredentials(t *testing.T) {
	const base = "bizs: [{name: demo}]\n"
	for _, tt := range []struct {
		name, yaml, want string
	}{
		{"published secret", "secret: " + DevSecret + "\napi_keys: [{key: 0123456789abcdef01234567, bizs: ['*']}]\n", "published development secret"},
		{"dev key", "secret: a-private-secret-0123\napi_keys: [{key: dev-key, bizs: ['*']}]\n", "published development key"},
		{"short key", "secret: a-private-secret-0123\napi_keys: [{key: short-key, bizs: ['*']}]\n", "want at least 24"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml + base))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse = %v, want an error with %q", err, tt.want)
			}
			if _, err := Parse([]byte("dev: true\n" + tt.yaml + base)); err != nil {
				t.Fatalf("with dev: true: %v", err)
			}
		})
	}
	if _, err := Parse([]byte("secret: a-private-secret-0123\napi_keys: [{key: 0123456789abcdef01234567, bizs: ['*']}]\n" + base)); err != nil {
		t.Fatalf("production config: %v", err)
	}
}

// Security review #15: pprof serves profiles and the command line, so it
// may bind loopback only.
func TestPprofLoopbackOnly(t *testing.T) {
	const rest = "dev: true\nsecret: a-private-secret-0123\napi_keys: [{key: k, bizs: ['*']}]\nbizs: [{name: demo}]\n"
	for addr, ok := range map[string]bool{"127.0.0.1:6060": true, "[::1]:6060": true, "localhost:6060": true, ":6060": false, "0.0.0.0:6060": false, "10.1.2.3:6060": false} {
		if _, err := Parse([]byte("pprof: \"" + addr + "\"\n" + rest)); (err == nil) != ok {
			t.Errorf("pprof %q: err %v, want ok=%v", addr, err, ok)
		}
	}
}
