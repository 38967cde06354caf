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
	if f.Comet.Addr != ":3101" || f.Logic.HTTPAddr != ":3111" || !f.HasDevKey() {
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
