package memory

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msync/msync/pkg/directory"
)

// Config configures a Directory. Zero values take the defaults noted per field.
type Config struct {
	// TTL is how long a session stays without a Put or Renew. Zero means 3m.
	TTL time.Duration
	// Shards is the number of device shards and of user shards. Zero means 64.
	Shards int
	// SweepInterval is how often the sweeper removes expired entries. Zero
	// means TTL/2 (at most 1m); negative disables the sweeper (expiry then is
	// only checked on read and entries are removed when replaced).
	SweepInterval time.Duration
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.TTL == 0 {
		c.TTL = 3 * time.Minute
	}
	if c.Shards == 0 {
		c.Shards = 64
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = min(c.TTL/2, time.Minute)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.TTL < 0 {
		errs = append(errs, fmt.Errorf("ttl %v: want > 0", c.TTL))
	}
	if c.Shards < 0 {
		errs = append(errs, fmt.Errorf("shards %d: want > 0", c.Shards))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

type entry struct {
	s       directory.Session
	expires time.Time
}

type deviceShard struct {
	mu       sync.Mutex
	sessions map[string]*entry // device -> session
}

type userShard struct {
	mu      sync.Mutex
	devices map[string]userDevices // user -> devices
}

// userDevices is one user's devices: the first inline, any others in a set.
// Why not a set per user: most users have one or two online devices, and
// an own map per user cost ~0.2 KB per session (docs/benchmarks.md, conns).
type userDevices struct {
	one  string              // never empty in the index
	more map[string]struct{} // devices besides one; nil until a second
}

func (u *userDevices) add(device string) {
	switch {
	case u.one == "":
		u.one = device
	case u.one != device:
		if u.more == nil {
			u.more = make(map[string]struct{}, 1)
		}
		u.more[device] = struct{}{}
	}
}

// remove removes device and reports whether none is left.
func (u *userDevices) remove(device string) (empty bool) {
	if u.one == device {
		u.one = ""
		for d := range u.more { // promote any other device
			u.one = d
			delete(u.more, d)
			break
		}
	} else {
		delete(u.more, device)
	}
	if len(u.more) == 0 {
		u.more = nil
	}
	return u.one == ""
}

func (u userDevices) len() int {
	if u.one == "" {
		return 0
	}
	return 1 + len(u.more)
}

// Directory is an in-memory directory.Directory.
type Directory struct {
	cfg     Config
	seed    maphash.Seed
	devices []deviceShard
	users   []userShard

	// comets is the comet registry (comets.go); a leaf lock.
	comets struct {
		sync.Mutex
		m map[string]cometEntry
	}

	closed   atomic.Bool
	stopOnce sync.Once
	quit     chan struct{}
	done     chan struct{} // closed when the sweeper returned
}

var _ directory.Directory = (*Directory)(nil)

// New returns an empty directory and starts its sweeper (unless disabled);
// call Shutdown or Close to stop it.
func New(cfg Config) (*Directory, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	d := &Directory{
		cfg:     cfg,
		seed:    maphash.MakeSeed(),
		devices: make([]deviceShard, cfg.Shards),
		users:   make([]userShard, cfg.Shards),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	for i := range d.devices {
		d.devices[i].sessions = make(map[string]*entry)
		d.users[i].devices = make(map[string]userDevices)
	}
	if cfg.SweepInterval > 0 {
		go d.sweeper()
	} else {
		close(d.done)
	}
	return d, nil
}

func (d *Directory) deviceShard(device string) *deviceShard {
	return &d.devices[maphash.String(d.seed, device)%uint64(len(d.devices))]
}

func (d *Directory) userShard(user string) *userShard {
	return &d.users[maphash.String(d.seed, user)%uint64(len(d.users))]
}

// indexAddLocked adds device to user's index. REQUIRES: the device's shard lock.
func (d *Directory) indexAddLocked(user, device string) {
	us := d.userShard(user)
	us.mu.Lock()
	u := us.devices[user]
	u.add(device)
	us.devices[user] = u
	us.mu.Unlock()
}

// indexRemoveLocked removes device from user's index. REQUIRES: the device's shard lock.
func (d *Directory) indexRemoveLocked(user, device string) {
	us := d.userShard(user)
	us.mu.Lock()
	if u, ok := us.devices[user]; ok {
		if u.remove(device) {
			delete(us.devices, user)
		} else {
			us.devices[user] = u
		}
	}
	us.mu.Unlock()
}

// Put registers s (keyed by s.Device), replacing and returning the device's
// previous unexpired session. An expired previous session counts as absent.
func (d *Directory) Put(_ context.Context, s directory.Session) (*directory.Session, error) {
	if d.closed.Load() {
		return nil, ErrClosed
	}
	if s.Device == "" {
		return nil, fmt.Errorf("memory directory: put: empty device")
	}
	now := d.cfg.Now()
	ds := d.deviceShard(s.Device)
	ds.mu.Lock()
	defer ds.mu.Unlock()
	var prev *directory.Session
	if old := ds.sessions[s.Device]; old != nil {
		if now.Before(old.expires) {
			p := old.s
			prev = &p
		}
		if old.s.User != s.User {
			d.indexRemoveLocked(old.s.User, s.Device)
		}
	}
	ds.sessions[s.Device] = &entry{s: s, expires: now.Add(d.cfg.TTL)}
	d.indexAddLocked(s.User, s.Device)
	return prev, nil
}

// Delete removes the device's session if it is still (comet, key); it is a
// no-op (nil) otherwise, so a late disconnect of a replaced session cannot
// remove its successor.
func (d *Directory) Delete(_ context.Context, device, comet, key string) error {
	if d.closed.Load() {
		return ErrClosed
	}
	ds := d.deviceShard(device)
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if e := ds.sessions[device]; e != nil && e.s.Comet == comet && e.s.Key == key {
		delete(ds.sessions, device)
		d.indexRemoveLocked(e.s.User, device)
	}
	return nil
}

// Renew extends the TTL of the devices' sessions that are on comet and not
// yet expired. Devices now on another comet (they reconnected) are left alone;
// an expired session stays expired: its comet must register it again.
func (d *Directory) Renew(_ context.Context, comet string, devices []string) error {
	if d.closed.Load() {
		return ErrClosed
	}
	now := d.cfg.Now()
	for _, dev := range devices {
		ds := d.deviceShard(dev)
		ds.mu.Lock()
		if e := ds.sessions[dev]; e != nil && e.s.Comet == comet && now.Before(e.expires) {
			e.expires = now.Add(d.cfg.TTL)
		}
		ds.mu.Unlock()
	}
	return nil
}

// ByUser returns the user's unexpired sessions, sorted by device.
func (d *Directory) ByUser(_ context.Context, user string) ([]directory.Session, error) {
	if d.closed.Load() {
		return nil, ErrClosed
	}
	us := d.userShard(user)
	us.mu.Lock()
	u := us.devices[user]
	devs := make([]string, 0, u.len())
	if u.one != "" {
		devs = append(devs, u.one)
	}
	for dev := range u.more {
		devs = append(devs, dev)
	}
	us.mu.Unlock()
	sort.Strings(devs)
	now := d.cfg.Now()
	out := make([]directory.Session, 0, len(devs))
	for _, dev := range devs {
		// The index is read without the device locks, so it may be stale by
		// the time we look: the session itself is the truth.
		ds := d.deviceShard(dev)
		ds.mu.Lock()
		if e := ds.sessions[dev]; e != nil && e.s.User == user && now.Before(e.expires) {
			out = append(out, e.s)
		}
		ds.mu.Unlock()
	}
	return out, nil
}

// ByDevice returns the device's unexpired session or directory.ErrNotFound.
func (d *Directory) ByDevice(_ context.Context, device string) (directory.Session, error) {
	if d.closed.Load() {
		return directory.Session{}, ErrClosed
	}
	ds := d.deviceShard(device)
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if e := ds.sessions[device]; e != nil && d.cfg.Now().Before(e.expires) {
		return e.s, nil
	}
	return directory.Session{}, fmt.Errorf("%w: device %q", directory.ErrNotFound, device)
}

// Len returns the number of stored sessions, expired ones not yet swept included.
func (d *Directory) Len() int {
	n := 0
	for i := range d.devices {
		ds := &d.devices[i]
		ds.mu.Lock()
		n += len(ds.sessions)
		ds.mu.Unlock()
	}
	return n
}

// Sweep removes every expired session now and returns how many. The sweeper
// calls it periodically.
func (d *Directory) Sweep() int {
	now := d.cfg.Now()
	removed := 0
	for i := range d.devices {
		ds := &d.devices[i]
		ds.mu.Lock()
		for dev, e := range ds.sessions {
			if !now.Before(e.expires) {
				delete(ds.sessions, dev)
				d.indexRemoveLocked(e.s.User, dev)
				removed++
			}
		}
		ds.mu.Unlock()
	}
	return removed
}

func (d *Directory) sweeper() {
	defer close(d.done)
	t := time.NewTicker(d.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			d.Sweep()
		case <-d.quit:
			return
		}
	}
}

// Shutdown stops the sweeper and waits for it (bounded by ctx); later calls
// return ErrClosed. Safe to call more than once.
func (d *Directory) Shutdown(ctx context.Context) error {
	d.stopOnce.Do(func() {
		d.closed.Store(true)
		close(d.quit)
	})
	select {
	case <-d.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("memory directory: shutdown: %w", ctx.Err())
	}
}

// Close is Shutdown without a deadline (the sweeper returns within one sweep).
func (d *Directory) Close() error { return d.Shutdown(context.Background()) }
