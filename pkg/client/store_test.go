package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

func TestFileStoreSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "points.json")
	s, err := NewFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	// The file exists from the start, so an unwritable path fails early.
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("NewFileStore did not create the file: %v", err)
	}
	want := map[string]uint64{"chat/u/alice": 7, "lock/d/dev1": 3, "news/g": 1 << 40}
	for ch, id := range want {
		if err := s.Save(ch, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Save("chat/u/alice", 9); err != nil {
		t.Fatal(err)
	}
	want["chat/u/alice"] = 9

	s2, err := NewFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s2.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, want) {
		t.Fatalf("after reopen %v, want %v", got, want)
	}
	// Load hands out a copy.
	got["chat/u/alice"] = 0
	if again, _ := s2.Load(); again["chat/u/alice"] != 9 {
		t.Fatal("Load returned the store's own map")
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Fatalf("directory holds %d entries, want only the store file", len(ents))
	}
}

// TestFileStoreAtomic reads the file while another goroutine saves: a store
// that truncated and rewrote in place would expose empty or half-written
// files; rename-over never does.
func TestFileStoreAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "points.json")
	s, err := NewFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	// Enough channels that one write is not a single tiny syscall.
	for i := range 200 {
		if err := s.Save(fmt.Sprintf("biz%d/u/someone-with-a-long-user-id", i), 1); err != nil {
			t.Fatal(err)
		}
	}
	const saves = 200
	var done atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		defer done.Store(true)
		for i := uint64(2); i < saves; i++ {
			if err := s.Save("chat/u/alice", i); err != nil {
				t.Error(err)
				return
			}
		}
	})
	reads, last := 0, uint64(0)
	for !done.Load() {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("read during save: %v", err)
		}
		var doc fileStoreDoc
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("torn file seen (%d bytes): %v", len(b), err)
		}
		if len(doc.Points) < 200 {
			t.Fatalf("file with %d points, want at least 200", len(doc.Points))
		}
		if id := doc.Points["chat/u/alice"]; id < last {
			t.Fatalf("point went back from %d to %d", last, id)
		} else {
			last = id
		}
		reads++
	}
	wg.Wait()
	if reads == 0 {
		t.Fatal("no concurrent reads happened")
	}
	s2, err := NewFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s2.Load(); got["chat/u/alice"] != saves-1 {
		t.Fatalf("final point %d, want %d", got["chat/u/alice"], saves-1)
	}
}

func TestFileStoreFailedSaveKeepsOldState(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "points.json")
	s, err := NewFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save("chat/u/alice", 1); err != nil {
		t.Fatal(err)
	}
	// Make the directory unusable for the temporary file.
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
	if f, err := os.CreateTemp(dir, "probe"); err == nil {
		// Running as root: permissions do not stop us. Use a path whose
		// directory is gone instead.
		_ = f.Close()
		_ = os.Remove(f.Name())
		s.path = filepath.Join(dir, "missing", "points.json")
	}
	if err := s.Save("chat/u/alice", 2); err == nil {
		t.Fatal("Save succeeded in an unwritable directory")
	}
	if got, _ := s.Load(); got["chat/u/alice"] != 1 {
		t.Fatalf("after a failed Save the store reports %d, want the durable 1", got["chat/u/alice"])
	}
}

func TestFileStoreRejectsCorruptFile(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"garbage":       "{not json",
		"wrong version": `{"version":99,"points":{}}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name+".json")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := NewFileStore(path); !errors.Is(err, ErrStoreFile) {
				t.Fatalf("NewFileStore: %v, want ErrStoreFile", err)
			}
		})
	}
	// A leftover temporary file from a crash does not matter.
	path := filepath.Join(dir, "ok.json")
	if err := os.WriteFile(path, []byte(`{"version":1,"points":{"a/g":4}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".ok.json.tmp-123"), []byte(`{"vers`), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := NewFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Load(); got["a/g"] != 4 {
		t.Fatalf("points %v", got)
	}
}

func TestMemoryStore(t *testing.T) {
	s := NewMemoryStore()
	if err := s.Save("a/g", 3); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Load()
	got["a/g"] = 0
	if again, _ := s.Load(); again["a/g"] != 3 {
		t.Fatalf("MemoryStore Load returned its own map or lost the point: %v", again)
	}
}
