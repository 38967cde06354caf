package cluster

import (
	"testing"

	"github.com/msync/msync/pkg/config"
)

// The store section's sizes reach the Pebble store in bytes; zero keeps the
// store's defaults.
func TestPebbleConfig(t *testing.T) {
	c := PebbleConfig(config.Store{CacheMB: 8, MemtableMB: 2}, "d", nil)
	if c.Dir != "d" || c.CacheSize != 8<<20 || c.MemTableSize != 2<<20 {
		t.Fatalf("PebbleConfig = %+v", c)
	}
	if c := PebbleConfig(config.Store{}, "d", nil); c.CacheSize != 0 || c.MemTableSize != 0 {
		t.Fatalf("zero sizes mapped to %d / %d, want 0 (store defaults)", c.CacheSize, c.MemTableSize)
	}
}
