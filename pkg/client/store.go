package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sync"
)

// SyncPointStore keeps the sync point (highest processed oplog id) of every
// channel the client has seen. The Client calls Load once at Start and Save
// from its channel goroutines, concurrently for different channels and with
// increasing ids per channel; implementations must be goroutine-safe.
//
// The SDK acknowledges an oplog to the server only after Save returned, so
// a Save that is durable when it returns (FileStore) keeps an app from
// seeing an oplog twice across restarts.
type SyncPointStore interface {
	// Load returns every stored point, channel -> id. The caller owns the map.
	Load() (map[string]uint64, error)
	// Save records that channel has been processed up to id.
	Save(channel string, id uint64) error
}

// MemoryStore is a SyncPointStore that forgets everything when the process
// exits. Useful for tests and for apps that keep no local state.
type MemoryStore struct {
	mu     sync.Mutex
	points map[string]uint64
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore { return &MemoryStore{points: map[string]uint64{}} }

// Load implements SyncPointStore.
func (s *MemoryStore) Load() (map[string]uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.points), nil
}

// Save implements SyncPointStore.
func (s *MemoryStore) Save(channel string, id uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.points[channel] = id
	return nil
}

// fileStoreVersion is written into the file so a later format can be told
// apart instead of misread.
const fileStoreVersion = 1

type fileStoreDoc struct {
	Version int               `json:"version"`
	Points  map[string]uint64 `json:"points"`
}

// FileStore is a SyncPointStore in one JSON file. Every Save rewrites the
// file atomically (write a temporary file in the same directory, fsync,
// rename over the old one, fsync the directory), so after a crash or power
// loss the file holds either the old or the new points, never a torn mix.
// One file belongs to one Client (one device); two processes sharing a file
// would overwrite each other's points.
type FileStore struct {
	path string
	mu   sync.Mutex
	// points mirrors what is on disk: Save only changes it after the
	// rename succeeded.
	points map[string]uint64
}

// NewFileStore opens the store at path, creating the file (and nothing
// else: the directory must exist) when it is missing, so a path that cannot
// be written fails here rather than at the first acknowledgement. A file
// that does not parse yields ErrStoreFile.
func NewFileStore(path string) (*FileStore, error) {
	s := &FileStore{path: path, points: map[string]uint64{}}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := s.writeLocked(s.points); err != nil {
			return nil, err
		}
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("client: read sync points: %w", err)
	}
	var doc fileStoreDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrStoreFile, path, err)
	}
	if doc.Version != fileStoreVersion {
		return nil, fmt.Errorf("%w: %s: version %d, want %d", ErrStoreFile, path, doc.Version, fileStoreVersion)
	}
	if doc.Points != nil {
		s.points = doc.Points
	}
	return s, nil
}

// Path returns the file the store writes.
func (s *FileStore) Path() string { return s.path }

// Load implements SyncPointStore.
func (s *FileStore) Load() (map[string]uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.points), nil
}

// Save implements SyncPointStore. It returns after the new file is durable.
func (s *FileStore) Save(channel string, id uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.points[channel]; ok && cur == id {
		return nil
	}
	next := maps.Clone(s.points)
	next[channel] = id
	if err := s.writeLocked(next); err != nil {
		return err
	}
	s.points = next
	return nil
}

// writeLocked replaces the file with points. REQUIRES: s.mu (or s not yet
// shared).
func (s *FileStore) writeLocked(points map[string]uint64) (err error) {
	b, err := json.Marshal(fileStoreDoc{Version: fileStoreVersion, Points: points})
	if err != nil {
		return fmt.Errorf("client: encode sync points: %w", err)
	}
	dir := filepath.Dir(s.path)
	// The temporary file lives in the same directory because rename is
	// only atomic within one file system.
	f, err := os.CreateTemp(dir, "."+filepath.Base(s.path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("client: save sync points: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err = f.Write(b); err != nil {
		return fmt.Errorf("client: save sync points: %w", err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("client: save sync points: fsync: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("client: save sync points: %w", err)
	}
	if err = os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("client: save sync points: %w", err)
	}
	// Without the directory fsync the rename itself may not survive a
	// power loss. Some platforms cannot fsync a directory; the file's data
	// is durable anyway, so that failure is not reported.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
