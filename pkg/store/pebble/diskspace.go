package pebble

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/msync/msync/pkg/store"
)

// errNoSpace answers writes while free disk space is below MinFreeBytes.
var errNoSpace = fmt.Errorf("%w: %w: store/pebble: free disk space below the minimum", store.ErrInsufficientStorage, store.ErrUnavailable)

// diskState is the cached result of the free-space check.
type diskState struct {
	checkedNs atomic.Int64 // when the last check ran (unix ns); 0: never
	low       atomic.Bool
	avail     atomic.Uint64
}

// checkSpace returns errNoSpace while the disk is below the watermark. It
// re-reads free space at most once per DiskCheckInterval (one statfs), so
// the write path pays an atomic load in between. A failed statfs does not
// refuse writes: the check exists to avoid the fatal WAL error, not to add
// a new way to fail.
func (s *Store) checkSpace() error {
	if s.cfg.MinFreeBytes < 0 {
		return nil
	}
	now := time.Now().UnixNano()
	last := s.disk.checkedNs.Load()
	if now-last >= int64(s.cfg.DiskCheckInterval) && s.disk.checkedNs.CompareAndSwap(last, now) {
		if u, err := s.cfg.FS.GetDiskUsage(s.cfg.Dir); err == nil {
			low := u.AvailBytes < uint64(s.cfg.MinFreeBytes)
			s.disk.avail.Store(u.AvailBytes)
			if was := s.disk.low.Swap(low); was != low {
				if low {
					s.log.Error("free disk space below the minimum: refusing writes, reads go on",
						"avail_bytes", u.AvailBytes, "min_free_bytes", s.cfg.MinFreeBytes, "dir", s.cfg.Dir)
				} else {
					s.log.Info("free disk space above the minimum again: accepting writes", "avail_bytes", u.AvailBytes)
				}
			}
		} else {
			s.log.Warn("reading free disk space failed", "dir", s.cfg.Dir, "err", err)
		}
	}
	if s.disk.low.Load() {
		return errNoSpace
	}
	return nil
}
