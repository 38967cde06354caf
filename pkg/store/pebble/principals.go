package pebble

import (
	"context"
	"errors"
	"fmt"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/msync/msync/pkg/store"
)

// Device ownership and token revocation cut-offs (security review: a device
// id is chosen by the client, so it is no credential; and a leaked token
// must be revocable). Both are small, rarely written records, committed with
// fsync so a crash cannot forget an owner or a revocation.

func ownerKey(device string) []byte { return appendName([]byte{kindOwner}, device) }

func notBeforeKey(user string) []byte { return appendName([]byte{kindNotBefore}, user) }

func checkName(what, s string) error {
	if s == "" || len(s) > maxNameLen {
		return fmt.Errorf("%w: %s %q", store.ErrInvalid, what, s)
	}
	return nil
}

// ClaimDevice records user as device's owner if the device has none, or if
// takeover is set (the caller verified that the business allowed this user
// the device), and returns the owner after the call: a caller whose user is
// not the returned owner is refused the device.
func (s *Store) ClaimDevice(ctx context.Context, device, user string, takeover bool) (string, error) {
	if err := errors.Join(checkName("device", device), checkName("user", user)); err != nil {
		return "", err
	}
	if err := s.rlock(ctx); err != nil {
		return "", err
	}
	defer s.mu.RUnlock()
	s.ownerMu.Lock() // read-compare-write
	defer s.ownerMu.Unlock()
	key := ownerKey(device)
	v, closer, err := s.db.Get(key)
	switch {
	case err == nil:
		owner := string(v)
		closer.Close()
		if owner == user || !takeover {
			return owner, nil
		}
	case !errors.Is(err, pebbledb.ErrNotFound):
		return "", fmt.Errorf("%w: device owner: %w", store.ErrUnavailable, err)
	}
	if err := s.checkSpace(); err != nil {
		return "", err
	}
	if err := s.db.Set(key, []byte(user), pebbledb.Sync); err != nil {
		return "", fmt.Errorf("%w: device owner: %w", store.ErrUnavailable, err)
	}
	return user, nil
}

// SetTokensNotBefore makes tokens of user issued before t invalid. A cut-off
// only moves forward: an earlier t than the stored one is ignored.
func (s *Store) SetTokensNotBefore(ctx context.Context, user string, t time.Time) error {
	if err := checkName("user", user); err != nil {
		return err
	}
	if t.Unix() <= 0 {
		return fmt.Errorf("%w: not-before %v", store.ErrInvalid, t)
	}
	if err := s.rlock(ctx); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	s.ownerMu.Lock()
	defer s.ownerMu.Unlock()
	key := notBeforeKey(user)
	cur, _, err := s.getUint64(key)
	if err != nil {
		return err
	}
	if uint64(t.Unix()) <= cur {
		return nil
	}
	if err := s.checkSpace(); err != nil {
		return err
	}
	if err := s.db.Set(key, encodeUint64(uint64(t.Unix())), pebbledb.Sync); err != nil {
		return fmt.Errorf("%w: tokens not-before: %w", store.ErrUnavailable, err)
	}
	return nil
}

// TokensNotBefore returns user's cut-off (whole seconds), zero if none.
func (s *Store) TokensNotBefore(ctx context.Context, user string) (time.Time, error) {
	if err := checkName("user", user); err != nil {
		return time.Time{}, err
	}
	if err := s.rlock(ctx); err != nil {
		return time.Time{}, err
	}
	defer s.mu.RUnlock()
	v, found, err := s.getUint64(notBeforeKey(user))
	if err != nil || !found {
		return time.Time{}, err
	}
	return time.Unix(int64(v), 0), nil
}
