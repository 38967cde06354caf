package memory

import (
	"context"
	"fmt"
	"sort"

	"github.com/msync/msync/pkg/directory"
)

var _ directory.Comets = (*Directory)(nil)

// cometEntry is one registered comet and when its registration lapses.
type cometEntry struct {
	info    directory.CometInfo
	expires int64 // unix ns
}

// RegisterComet adds or renews comet id at addr for the directory's TTL. A
// comet that comes back on another address replaces its old entry. Expired
// entries are pruned here: the set is small (one per comet process), so a
// scan per registration is cheaper than a sweeper.
func (d *Directory) RegisterComet(_ context.Context, id, addr string) error {
	if d.closed.Load() {
		return ErrClosed
	}
	if id == "" || addr == "" {
		return fmt.Errorf("memory directory: register comet: id %q and addr %q must not be empty", id, addr)
	}
	now := d.cfg.Now()
	d.comets.Lock()
	defer d.comets.Unlock()
	if d.comets.m == nil {
		d.comets.m = make(map[string]cometEntry)
	}
	for k, e := range d.comets.m {
		if e.expires <= now.UnixNano() {
			delete(d.comets.m, k)
		}
	}
	d.comets.m[id] = cometEntry{
		info:    directory.CometInfo{ID: id, Addr: addr, Seen: now},
		expires: now.Add(d.cfg.TTL).UnixNano(),
	}
	return nil
}

// Comets lists the comets registered within the TTL, sorted by id.
func (d *Directory) Comets(_ context.Context) ([]directory.CometInfo, error) {
	if d.closed.Load() {
		return nil, ErrClosed
	}
	now := d.cfg.Now().UnixNano()
	d.comets.Lock()
	out := make([]directory.CometInfo, 0, len(d.comets.m))
	for _, e := range d.comets.m {
		if now < e.expires {
			out = append(out, e.info)
		}
	}
	d.comets.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
