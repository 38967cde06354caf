// Package cassandra is the cluster-mode online directory and comet registry
// (directory.Directory and directory.Comets) on Cassandra, in the store's
// keyspace: its tables are part of pkg/store/cassandra's Schema, so `msync
// migrate` creates them with the store's.
package cassandra

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gocql/gocql"

	"github.com/msync/msync/pkg/directory"
	"github.com/msync/msync/pkg/store"
	storecas "github.com/msync/msync/pkg/store/cassandra"
)

// Config configures Open: the store's cluster settings (hosts, keyspace,
// consistency, timeouts) and the entries' TTL.
type Config struct {
	storecas.Config
	// TTL of sessions and comet registrations. Zero means 3m.
	TTL time.Duration
}

// Directory is the cluster-mode online directory and comet registry:
// sessions by device and by user, and comets, all with native TTL.
//
// Put and Renew are plain writes: two Puts of one device racing from two
// logic processes end with the last writer's session, and a Renew racing a
// Delete can re-create the session until the TTL ends. Delete is an LWT
// (IF comet = ? AND conn_key = ?) so a late disconnect never removes a
// successor.
type Directory struct {
	cfg  Config
	sess *gocql.Session
	cons gocql.Consistency
	ser  gocql.SerialConsistency
	ks   string

	closed    bool
	mu        sync.Mutex
	closeOnce sync.Once
}

var (
	_ directory.Directory = (*Directory)(nil)
	_ directory.Comets    = (*Directory)(nil)
)

// Open connects to the cluster; the schema must exist.
func Open(cfg Config) (*Directory, error) {
	if cfg.TTL == 0 {
		cfg.TTL = 3 * time.Minute
	}
	if cfg.TTL < time.Second {
		return nil, fmt.Errorf("%w: TTL %v: want at least 1s", storecas.ErrInvalidConfig, cfg.TTL)
	}
	c, err := storecas.Connect(cfg.Config, "sessions", "user_sessions", "comets")
	if err != nil {
		return nil, err
	}
	cfg.Config = c.Config
	return &Directory{cfg: cfg, sess: c.Session, cons: c.Consistency, ser: c.Serial, ks: cfg.Keyspace}, nil
}

// Shutdown closes the session; idempotent.
func (d *Directory) Shutdown(context.Context) error { return d.Close() }

// Close closes the session; idempotent.
func (d *Directory) Close() error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closed = true
		d.mu.Unlock()
		d.sess.Close()
	})
	return nil
}

func (d *Directory) check(ctx context.Context) error {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return store.ErrClosed
	}
	return ctx.Err()
}

func (d *Directory) ttl() int { return int(max(d.cfg.TTL/time.Second, 1)) }

func (d *Directory) q(ctx context.Context, stmt string, args ...any) *gocql.Query {
	return d.sess.Query(fmt.Sprintf(stmt, d.ks), args...).WithContext(ctx).Consistency(d.cons)
}

func wrapDir(what string, err error) error {
	return fmt.Errorf("cassandra directory: %s: %w: %w", what, store.ErrUnavailable, err)
}

// Put implements directory.Directory.
func (d *Directory) Put(ctx context.Context, s directory.Session) (*directory.Session, error) {
	if s.Device == "" || s.User == "" {
		return nil, fmt.Errorf("cassandra directory: put: %w: empty device or user", store.ErrInvalid)
	}
	if err := d.check(ctx); err != nil {
		return nil, err
	}
	prev, err := d.ByDevice(ctx, s.Device)
	var prevp *directory.Session
	switch {
	case err == nil:
		prevp = &prev
	case !errors.Is(err, directory.ErrNotFound):
		return nil, err
	}
	b := d.sess.NewBatch(gocql.LoggedBatch).WithContext(ctx)
	b.SetConsistency(d.cons)
	if prevp != nil && prevp.User != s.User {
		b.Query(fmt.Sprintf("DELETE FROM %s.user_sessions WHERE user_id = ? AND device = ?", d.ks), prevp.User, s.Device)
	}
	b.Query(fmt.Sprintf("INSERT INTO %s.sessions (device, user_id, platform, app_version, comet, conn_key, since) VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?", d.ks),
		s.Device, s.User, s.Platform, s.AppVersion, s.Comet, s.Key, s.Since, d.ttl())
	b.Query(fmt.Sprintf("INSERT INTO %s.user_sessions (user_id, device, platform, app_version, comet, conn_key, since) VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?", d.ks),
		s.User, s.Device, s.Platform, s.AppVersion, s.Comet, s.Key, s.Since, d.ttl())
	if err := d.sess.ExecuteBatch(b); err != nil {
		return nil, wrapDir("put", err)
	}
	return prevp, nil
}

// Delete implements directory.Directory.
func (d *Directory) Delete(ctx context.Context, device, comet, key string) error {
	if err := d.check(ctx); err != nil {
		return err
	}
	s, err := d.ByDevice(ctx, device)
	if errors.Is(err, directory.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if s.Comet != comet || s.Key != key {
		return nil
	}
	applied, err := d.q(ctx, "DELETE FROM %s.sessions WHERE device = ? IF comet = ? AND conn_key = ?", device, comet, key).
		SerialConsistency(d.ser).MapScanCAS(make(map[string]any))
	if err != nil {
		return wrapDir("delete", err)
	}
	if applied {
		if _, err := d.q(ctx, "DELETE FROM %s.user_sessions WHERE user_id = ? AND device = ? IF comet = ? AND conn_key = ?", s.User, device, comet, key).
			SerialConsistency(d.ser).MapScanCAS(make(map[string]any)); err != nil {
			return wrapDir("delete by user", err)
		}
	}
	return nil
}

// Renew implements directory.Directory: sessions still on comet are
// rewritten with a fresh TTL.
func (d *Directory) Renew(ctx context.Context, comet string, devices []string) error {
	if err := d.check(ctx); err != nil {
		return err
	}
	for _, dev := range devices {
		s, err := d.ByDevice(ctx, dev)
		if errors.Is(err, directory.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if s.Comet != comet {
			continue
		}
		b := d.sess.NewBatch(gocql.LoggedBatch).WithContext(ctx)
		b.SetConsistency(d.cons)
		b.Query(fmt.Sprintf("INSERT INTO %s.sessions (device, user_id, platform, app_version, comet, conn_key, since) VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?", d.ks),
			s.Device, s.User, s.Platform, s.AppVersion, s.Comet, s.Key, s.Since, d.ttl())
		b.Query(fmt.Sprintf("INSERT INTO %s.user_sessions (user_id, device, platform, app_version, comet, conn_key, since) VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?", d.ks),
			s.User, s.Device, s.Platform, s.AppVersion, s.Comet, s.Key, s.Since, d.ttl())
		if err := d.sess.ExecuteBatch(b); err != nil {
			return wrapDir("renew", err)
		}
	}
	return nil
}

// ByUser implements directory.Directory.
func (d *Directory) ByUser(ctx context.Context, user string) ([]directory.Session, error) {
	if err := d.check(ctx); err != nil {
		return nil, err
	}
	iter := d.q(ctx, "SELECT device, platform, app_version, comet, conn_key, since FROM %s.user_sessions WHERE user_id = ?", user).Iter()
	var out []directory.Session
	s := directory.Session{User: user}
	for iter.Scan(&s.Device, &s.Platform, &s.AppVersion, &s.Comet, &s.Key, &s.Since) {
		out = append(out, s)
		s = directory.Session{User: user}
	}
	if err := iter.Close(); err != nil {
		return nil, wrapDir("by user", err)
	}
	return out, nil
}

// ByDevice implements directory.Directory.
func (d *Directory) ByDevice(ctx context.Context, device string) (directory.Session, error) {
	if err := d.check(ctx); err != nil {
		return directory.Session{}, err
	}
	s := directory.Session{Device: device}
	err := d.q(ctx, "SELECT user_id, platform, app_version, comet, conn_key, since FROM %s.sessions WHERE device = ?", device).
		Scan(&s.User, &s.Platform, &s.AppVersion, &s.Comet, &s.Key, &s.Since)
	if errors.Is(err, gocql.ErrNotFound) {
		return directory.Session{}, directory.ErrNotFound
	}
	if err != nil {
		return directory.Session{}, wrapDir("by device", err)
	}
	return s, nil
}

// RegisterComet implements directory.Comets.
func (d *Directory) RegisterComet(ctx context.Context, id, addr string) error {
	if id == "" || addr == "" {
		return fmt.Errorf("cassandra directory: register comet: %w: empty id or addr", store.ErrInvalid)
	}
	if err := d.check(ctx); err != nil {
		return err
	}
	if err := d.q(ctx, "INSERT INTO %s.comets (shard, id, addr, seen) VALUES (0, ?, ?, ?) USING TTL ?", id, addr, time.Now(), d.ttl()).Exec(); err != nil {
		return wrapDir("register comet", err)
	}
	return nil
}

// Comets implements directory.Comets.
func (d *Directory) Comets(ctx context.Context) ([]directory.CometInfo, error) {
	if err := d.check(ctx); err != nil {
		return nil, err
	}
	iter := d.q(ctx, "SELECT id, addr, seen FROM %s.comets WHERE shard = 0").Iter()
	var out []directory.CometInfo
	var c directory.CometInfo
	for iter.Scan(&c.ID, &c.Addr, &c.Seen) {
		out = append(out, c)
	}
	if err := iter.Close(); err != nil {
		return nil, wrapDir("comets", err)
	}
	return out, nil
}
