package cassandra

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gocql/gocql"

	"github.com/msync/msync/pkg/store"
)

// Device ownership and token revocation cut-offs (logic's DeviceOwners and
// TokenRevocations). A device id is chosen by the client, so the first user
// to claim it must win exactly once even when two logic processes see the
// first sessions of two users at the same moment: the claim is an LWT
// (INSERT ... IF NOT EXISTS), a hand-over an LWT on the owner we saw. The
// common case, the owner reconnecting, is one QUORUM read: owners are only
// ever written through Paxos, so a QUORUM read returns a committed owner.

// maxClaimRounds bounds the LWT rounds one ClaimDevice loses to concurrent
// hand-overs of the same device.
const maxClaimRounds = 8

// maxPrincipalLen is the longest device or user id these tables take
// (Cassandra's partition key limit).
const maxPrincipalLen = 1<<16 - 1

func checkPrincipal(what, s string) error {
	if s == "" || len(s) > maxPrincipalLen {
		return fmt.Errorf("%w: %s of %d bytes", store.ErrInvalid, what, len(s))
	}
	return nil
}

// ClaimDevice records user as device's owner if the device has none, or if
// takeover is set (the caller verified that the business allowed this user
// the device), and returns the owner after the call: a caller whose user is
// not the returned owner is refused the device.
func (s *Store) ClaimDevice(ctx context.Context, device, user string, takeover bool) (string, error) {
	if err := errors.Join(checkPrincipal("device", device), checkPrincipal("user", user)); err != nil {
		return "", err
	}
	if err := s.check(ctx); err != nil {
		return "", err
	}
	cons := s.cons // a SERIAL read after an unknown LWT outcome settles it
	for range maxClaimRounds {
		owner, found, err := s.deviceOwner(ctx, device, cons)
		if err != nil {
			return "", err
		}
		if found && (owner == user || !takeover) {
			return owner, nil
		}
		var q *gocql.Query
		if !found {
			q = s.sess.Query(s.st.ownerClaim, device, user)
		} else {
			q = s.sess.Query(s.st.ownerHandOver, user, device, owner)
		}
		dest := make(map[string]any)
		applied, err := s.mapScanCAS(q.WithContext(ctx).Consistency(s.cons).SerialConsistency(gocql.SerialConsistency(s.serial)), dest)
		switch {
		case err != nil && rejected(err):
			return "", fmt.Errorf("store/cassandra: device owner: %w: %w", store.ErrInvalid, err)
		case err != nil:
			s.cfg.Logger.Warn("cassandra device claim outcome unknown, re-reading at serial consistency", "device", device, "err", err)
			if ctx.Err() != nil {
				return "", s.wrap("device owner", err)
			}
			cons = s.serial
			continue
		case applied:
			return user, nil
		}
		// Lost to another claim or hand-over: dest holds the owner now.
		if cur, ok := dest["user_id"].(string); ok && cur != "" && (cur == user || !takeover) {
			return cur, nil
		}
		cons = s.cons
	}
	return "", fmt.Errorf("store/cassandra: device owner of %q: %w: lost %d LWT rounds in a row", device, store.ErrUnavailable, maxClaimRounds)
}

func (s *Store) deviceOwner(ctx context.Context, device string, cons gocql.Consistency) (string, bool, error) {
	var owner string
	err := s.sess.Query(s.st.ownerGet, device).WithContext(ctx).Consistency(cons).Scan(&owner)
	if errors.Is(err, gocql.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, s.wrap("read device owner", err)
	}
	return owner, true, nil
}

// maxNotBefore keeps a cut-off's microsecond write timestamp inside int64.
const maxNotBefore = 1 << 42 // seconds, ~139,000 years

// SetTokensNotBefore makes tokens of user issued before t invalid. A cut-off
// only moves forward: it is written USING TIMESTAMP = its own value (µs), so
// last-write-wins keeps the latest cut-off with one plain write, whatever
// the order two logic processes' writes land in. Nothing may write that
// table with wall-clock timestamps.
func (s *Store) SetTokensNotBefore(ctx context.Context, user string, t time.Time) error {
	if err := checkPrincipal("user", user); err != nil {
		return err
	}
	sec := t.Unix()
	if sec <= 0 || sec > maxNotBefore {
		return fmt.Errorf("%w: not-before %v", store.ErrInvalid, t)
	}
	if err := s.check(ctx); err != nil {
		return err
	}
	err := s.sess.Query(s.st.notBeforeSet, user, sec, sec*1_000_000).WithContext(ctx).Consistency(s.cons).Exec()
	return s.wrap("save tokens not-before", err)
}

// TokensNotBefore returns user's cut-off (whole seconds), zero if none.
func (s *Store) TokensNotBefore(ctx context.Context, user string) (time.Time, error) {
	if err := checkPrincipal("user", user); err != nil {
		return time.Time{}, err
	}
	if err := s.check(ctx); err != nil {
		return time.Time{}, err
	}
	var sec int64
	err := s.sess.Query(s.st.notBeforeGet, user).WithContext(ctx).Consistency(s.cons).Scan(&sec)
	if errors.Is(err, gocql.ErrNotFound) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, s.wrap("read tokens not-before", err)
	}
	return time.Unix(sec, 0), nil
}
