package pebble

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/store"
)

// FullDisk is the OS file system reporting Avail free bytes (settable), as
// a disk filling up would.
type FullDisk struct {
	vfs.FS
	Avail atomic.Uint64
}

func (d *FullDisk) GetDiskUsage(path string) (vfs.DiskUsage, error) {
	u, err := d.FS.GetDiskUsage(path)
	u.AvailBytes = d.Avail.Load()
	return u, err
}

// Security review #11: with the disk (nearly) full the store refuses writes
// with ErrInsufficientStorage before they reach the WAL (whose failure is
// fatal), serves reads meanwhile, and accepts writes again once space is
// back; the refused write stored nothing.
func TestFullDiskRefusesWritesKeepsReads(t *testing.T) {
	fs := &FullDisk{FS: vfs.Default}
	fs.Avail.Store(1 << 40)
	s, err := Open(Config{Dir: t.TempDir(), Logger: testLogger(t), FS: fs, MinFreeBytes: 64 << 20, DiskCheckInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	ch := oplog.UserChannel("disk", "alice")
	if _, err := s.Append(ctx, []*oplog.Oplog{{Channel: ch, Payload: []byte("1")}}); err != nil {
		t.Fatal(err)
	}
	fs.Avail.Store(10 << 20)
	var err2 error
	stored := uint64(1) // appends accepted before the next free-space check
	waitFor(t, "writes refused", func() bool {
		_, err2 = s.Append(ctx, []*oplog.Oplog{{Channel: ch, Payload: []byte("2")}})
		if err2 == nil {
			stored++
		}
		return err2 != nil
	})
	if !errors.Is(err2, store.ErrInsufficientStorage) || !errors.Is(err2, store.ErrUnavailable) {
		t.Fatalf("Append on a full disk = %v", err2)
	}
	if err := s.SaveSyncPoints(ctx, []store.SyncPoint{{Device: "d", Channel: ch, ID: 1}}); !errors.Is(err, store.ErrInsufficientStorage) {
		t.Fatalf("SaveSyncPoints on a full disk = %v", err)
	}
	if ops, maxID, err := s.Read(ctx, ch, 0, 10); err != nil || uint64(len(ops)) != stored || maxID != stored || !s.Stats().LowDisk {
		t.Fatalf("Read on a full disk = %d ops, max %d, %v, low %v", len(ops), maxID, err, s.Stats().LowDisk)
	}
	fs.Avail.Store(1 << 40)
	waitFor(t, "writes accepted again", func() bool {
		res, err := s.Append(ctx, []*oplog.Oplog{{Channel: ch, Payload: []byte("3")}})
		return err == nil && res[0].ID == stored+1 // the refused writes took no id
	})
}
