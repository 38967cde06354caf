package cassandra

import (
	"context"
	"fmt"
	"time"

	"github.com/gocql/gocql"

	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/store"
)

// maxDedupScan bounds how many ids a dedup resolution scans for an op uuid.
const maxDedupScan = 1_000_000

// claim takes (ch, key) for the op with uuid u (INSERT ... IF NOT EXISTS).
// It returns dup and the first op's id when the key is already used. A
// claim left without an id by an appender that failed or died is settled
// here: see the package doc.
func (s *Store) claim(ctx context.Context, ch, key string, u gocql.UUID) (id uint64, dup bool, err error) {
	from := s.headHint(ch) // a lower bound of the id the op will get
	dest := make(map[string]any)
	applied, err := s.mapScanCAS(s.sess.Query(s.st.dedupClaim, ch, key, u, int64(from), time.Now()).
		WithContext(ctx).Consistency(s.cons).SerialConsistency(gocql.SerialConsistency(s.serial)), dest)
	if err != nil {
		// Unknown: the claim may exist with our uuid; the lookup below
		// treats a claim holding u as ours.
		s.cfg.Logger.Warn("cassandra dedup claim outcome unknown", "channel", ch, "err", err)
	} else if applied {
		return 0, false, nil
	}
	for {
		row, found, err := s.dedupRow(ctx, ch, key)
		if err != nil {
			return 0, false, err
		}
		if !found {
			return 0, false, fmt.Errorf("store/cassandra: dedup key %q of %s: %w: claim neither applied nor found", key, ch, store.ErrUnavailable)
		}
		if row.uuid == u {
			return 0, false, nil // our own claim (its first attempt's outcome was unknown)
		}
		if row.id != nil {
			return *row.id, true, nil
		}
		// Claimed, no id: did the claimer's op commit?
		if got, ok, err := s.findUUID(ctx, ch, row.from, row.uuid); err != nil {
			return 0, false, err
		} else if ok {
			s.setDedupID(ctx, ch, key, got)
			return got, true, nil
		}
		if time.Since(row.claimedAt) > s.cfg.DedupLease {
			// The claimer's lease is over and its op is not in the channel
			// after a SERIAL read: it can no longer commit. Take over.
			applied, err := s.mapScanCAS(s.sess.Query(s.st.dedupTakeover, u, int64(s.headHint(ch)), time.Now(), ch, key, row.uuid).
				WithContext(ctx).Consistency(s.cons).SerialConsistency(gocql.SerialConsistency(s.serial)), make(map[string]any))
			if err == nil && applied {
				s.cfg.Logger.Warn("cassandra dedup claim taken over", "channel", ch, "key", key)
				return 0, false, nil
			}
			continue // re-read: someone else moved it, or the outcome is unknown
		}
		// The claimer may still be appending: wait a little, bounded by ctx.
		t := time.NewTimer(min(200*time.Millisecond, s.cfg.DedupLease))
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, false, fmt.Errorf("store/cassandra: dedup key %q of %s is claimed by an append in progress: %w", key, ch, ctx.Err())
		case <-t.C:
		}
	}
}

type dedupRow struct {
	uuid      gocql.UUID
	from      uint64
	claimedAt time.Time
	id        *uint64
}

// dedupRow reads a claim at SERIAL, so an in-flight claim is settled first.
func (s *Store) dedupRow(ctx context.Context, ch, key string) (dedupRow, bool, error) {
	var r dedupRow
	var from, id *int64
	err := s.sess.Query(s.st.dedupGet, ch, key).WithContext(ctx).Consistency(s.serial).Scan(&r.uuid, &from, &r.claimedAt, &id)
	if err == gocql.ErrNotFound {
		return r, false, nil
	}
	if err != nil {
		return r, false, s.wrap("read dedup key", err)
	}
	if from != nil {
		r.from = uint64(*from)
	}
	if id != nil {
		v := uint64(*id)
		r.id = &v
	}
	return r, true, nil
}

// findUUID looks for op uuid u among ids > from, after a SERIAL read of the
// head that completes any in-flight append.
func (s *Store) findUUID(ctx context.Context, ch string, from uint64, u gocql.UUID) (uint64, bool, error) {
	head, err := s.maxID(ctx, ch, s.serial)
	if err != nil {
		return 0, false, err
	}
	if head-min(head, from) > maxDedupScan {
		return 0, false, fmt.Errorf("store/cassandra: dedup resolution of %s would scan %d ids: %w", ch, head-from, store.ErrUnavailable)
	}
	for b := s.bucketOf(from + 1); from < head; b++ {
		hi := min(head, s.bucketEnd(b))
		got, err := s.uuidsIn(ctx, ch, b, from, hi, s.cons)
		if err != nil {
			return 0, false, err
		}
		for id, v := range got {
			if v == u {
				return id, true, nil
			}
		}
		from = hi
	}
	return 0, false, nil
}

// setDedupID records the committed id on a claim. Failing is logged, not
// returned: the op is durable, and a later duplicate finds the id by uuid.
func (s *Store) setDedupID(ctx context.Context, ch, key string, id uint64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Timeout)
	defer cancel()
	if err := s.sess.Query(s.st.dedupSetID, int64(id), ch, key).WithContext(ctx).Consistency(s.cons).Exec(); err != nil {
		s.cfg.Logger.Warn("cassandra dedup id not recorded; a duplicate will resolve it by op uuid",
			"channel", ch, "key", key, "id", id, "err", err)
	}
}

// release drops claims of ops that definitely were not stored, so a retry
// need not wait for the lease. Failing is logged: the lease settles them.
func (s *Store) release(ctx context.Context, ch string, ops []*oplog.Oplog, pend []*pendingOp, claimed []int) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Timeout)
	defer cancel()
	for _, i := range claimed {
		if pend[i].id != 0 {
			continue // committed before the failure: keep (setDedupID runs for it)
		}
		_, err := s.mapScanCAS(s.sess.Query(s.st.dedupRelease, ch, ops[i].DedupKey, pend[i].uuid).
			WithContext(ctx).Consistency(s.cons).SerialConsistency(gocql.SerialConsistency(s.serial)), make(map[string]any))
		if err != nil {
			s.cfg.Logger.Warn("cassandra dedup claim not released; it expires with the lease", "channel", ch, "err", err)
		}
	}
}

// mapScanCAS guards gocql's MapScanCAS against a result without [applied].
func (s *Store) mapScanCAS(q *gocql.Query, dest map[string]any) (applied bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			applied, err = false, fmt.Errorf("conditional result without [applied]: %v", r)
		}
	}()
	return q.MapScanCAS(dest)
}
