package cassandra

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gocql/gocql"
	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/store"
)

// Store is the Cassandra store.Store. See the package doc for the data model.
type Store struct {
	cfg    Config
	sess   *gocql.Session
	st     stmts
	cons   gocql.Consistency
	serial gocql.Consistency // SERIAL or LOCAL_SERIAL as a read consistency

	mu    sync.Mutex
	chans map[string]*chanQueue // channels with appends in flight
	heads map[string]uint64     // last max id seen per channel (a lower bound), bounded
	sole  map[string]struct{}   // channels whose last commit here lost no CAS round (heads exact so far)

	closed    atomic.Bool
	closeOnce sync.Once
}

var _ store.Store = (*Store)(nil)

// maxHeads bounds the head cache; it is cleared when full (a miss costs one
// read per bucket walked, never correctness: heads only lower-bound max ids).
const maxHeads = 100_000

// Open connects to the cluster. The schema must exist (Migrate / `msync migrate`).
func Open(cfg Config) (*Store, error) {
	c, err := Connect(cfg, "oplogs", "dedup", "sync_points", "receipts", "device_owners", "token_cutoffs")
	if err != nil {
		return nil, err
	}
	return newStore(c.Config, c.Session, c.Consistency, c.Serial), nil
}

func newStore(cfg Config, sess *gocql.Session, cons gocql.Consistency, serial gocql.SerialConsistency) *Store {
	return &Store{
		cfg:    cfg,
		sess:   sess,
		st:     newStmts(cfg.Keyspace),
		cons:   cons,
		serial: gocql.Consistency(serial),
		chans:  make(map[string]*chanQueue),
		heads:  make(map[string]uint64),
		sole:   make(map[string]struct{}),
	}
}

// Close closes the session; idempotent. Calls in flight fail with
// ErrUnavailable or ErrClosed.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.sess.Close()
	})
	return nil
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return ctx.Err()
}

// wrap maps a driver error to the store's sentinels.
func (s *Store) wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	if s.closed.Load() {
		return fmt.Errorf("%s: %w", what, store.ErrClosed)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, store.ErrInvalid) {
		return fmt.Errorf("store/cassandra: %s: %w", what, err)
	}
	return fmt.Errorf("store/cassandra: %s: %w: %w", what, store.ErrUnavailable, err)
}

func checkChannel(ch string) error {
	if ch == "" || len(ch) > 1024 {
		return fmt.Errorf("%w: channel of %d bytes", store.ErrInvalid, len(ch))
	}
	if _, _, _, err := oplog.ParseChannel(ch); err != nil {
		return fmt.Errorf("%w: %w", store.ErrInvalid, err)
	}
	return nil
}

// Ids: bucket b holds ids [b*B, (b+1)*B-1]; bucket 0 starts at 1.
func (s *Store) bucketOf(id uint64) int64 { return int64(id / uint64(s.cfg.BucketSize)) }
func (s *Store) bucketEnd(b int64) uint64 { return uint64(b+1)*uint64(s.cfg.BucketSize) - 1 }
func (s *Store) bucketStart(b int64) uint64 {
	if b == 0 {
		return 1
	}
	return uint64(b) * uint64(s.cfg.BucketSize)
}

func (s *Store) headHint(ch string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.heads[ch]
}

func (s *Store) noteHead(ch string, id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id <= s.heads[ch] {
		return
	}
	if len(s.heads) >= maxHeads {
		clear(s.heads)
		clear(s.sole)
	}
	s.heads[ch] = id
}

// readHead reads bucket b's static max_id; ok is false when it was never set.
func (s *Store) readHead(ctx context.Context, ch string, b int64, cons gocql.Consistency) (maxID uint64, ok bool, err error) {
	var m *int64
	err = s.sess.Query(s.st.selectHead, ch, b).WithContext(ctx).Consistency(cons).Scan(&m)
	if errors.Is(err, gocql.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, s.wrap("read max id", err)
	}
	if m == nil {
		return 0, false, nil
	}
	return uint64(*m), true, nil
}

// maxID finds the channel's max id: the max_id of the first bucket that is
// not full. Buckets fill in order (ids are dense), so "full" is monotone and
// the walk starts at the cached head's bucket. At SERIAL consistency the
// reads also complete any in-flight Paxos round of the head partition.
func (s *Store) maxID(ctx context.Context, ch string, cons gocql.Consistency) (uint64, error) {
	hint := s.headHint(ch)
	b := s.bucketOf(hint)
	last := hint
	for {
		m, ok, err := s.readHead(ctx, ch, b, cons)
		if err != nil {
			return 0, err
		}
		if !ok {
			// Never initialised: the channel ends where the previous bucket does.
			if b > 0 && last < s.bucketStart(b)-1 {
				last = s.bucketStart(b) - 1
			}
			s.noteHead(ch, last)
			return last, nil
		}
		last = m
		if m < s.bucketEnd(b) {
			s.noteHead(ch, m)
			return m, nil
		}
		b++
	}
}

// MaxID implements store.Reader.
func (s *Store) MaxID(ctx context.Context, ch string) (uint64, error) {
	if err := checkChannel(ch); err != nil {
		return 0, err
	}
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	return s.maxID(ctx, ch, s.cons)
}

// Read implements store.Reader: it reads max id first and never returns
// ids above it, walking buckets with `id > ? AND id <= ? LIMIT n`.
func (s *Store) Read(ctx context.Context, ch string, after uint64, limit int) ([]*oplog.Oplog, uint64, error) {
	if err := checkChannel(ch); err != nil {
		return nil, 0, err
	}
	if limit <= 0 {
		return nil, 0, fmt.Errorf("%w: limit %d", store.ErrInvalid, limit)
	}
	if err := s.check(ctx); err != nil {
		return nil, 0, err
	}
	maxID, err := s.maxID(ctx, ch, s.cons)
	if err != nil {
		return nil, 0, err
	}
	var out []*oplog.Oplog
	lo := after
	for b := s.bucketOf(after + 1); lo < maxID && len(out) < limit; b++ {
		hi := min(maxID, s.bucketEnd(b))
		iter := s.sess.Query(s.st.selectRange, ch, b, int64(lo), int64(hi), limit-len(out)).
			WithContext(ctx).Consistency(s.cons).Iter()
		var id int64
		var body []byte
		for iter.Scan(&id, &body) {
			op := new(oplog.Oplog)
			if err := proto.Unmarshal(body, op); err != nil {
				_ = iter.Close()
				return nil, 0, fmt.Errorf("store/cassandra: oplog %s/%d: %w", ch, id, err)
			}
			op.Id = uint64(id)
			out = append(out, op)
			body = nil
		}
		if err := iter.Close(); err != nil {
			return nil, 0, s.wrap("read oplogs", err)
		}
		lo = hi
	}
	return out, maxID, nil
}

// SaveSyncPoints implements store.SyncPoints. Each point is written with
// USING TIMESTAMP = id, so Cassandra's last-write-wins keeps the highest id:
// monotonic at the cost of one plain write (no read, no LWT). Consequence:
// nothing may write or delete sync_points with a wall-clock timestamp.
func (s *Store) SaveSyncPoints(ctx context.Context, points []store.SyncPoint) error {
	for _, p := range points {
		if p.Device == "" {
			return fmt.Errorf("%w: sync point device %q", store.ErrInvalid, p.Device)
		}
		if err := checkChannel(p.Channel); err != nil {
			return err
		}
		if p.ID > 1<<62 {
			return fmt.Errorf("%w: sync point id %d", store.ErrInvalid, p.ID)
		}
	}
	if err := s.check(ctx); err != nil {
		return err
	}
	byDevice := make(map[string][]store.SyncPoint)
	var order []string
	for _, p := range points {
		if _, ok := byDevice[p.Device]; !ok {
			order = append(order, p.Device)
		}
		byDevice[p.Device] = append(byDevice[p.Device], p)
	}
	for _, dev := range order {
		// One device is one partition: an unlogged batch is one mutation.
		b := s.sess.NewBatch(gocql.UnloggedBatch).WithContext(ctx)
		b.SetConsistency(s.cons)
		for _, p := range byDevice[dev] {
			b.Query(s.st.saveSyncPoint, p.Device, p.Channel, int64(p.ID), int64(p.ID))
		}
		if err := s.sess.ExecuteBatch(b); err != nil {
			return s.wrap("save sync points", err)
		}
	}
	// The receipts rows (partitioned by channel) after the points: a crash
	// between them leaves a receipt behind its point until the next ack,
	// never ahead of it.
	now := time.Now()
	for _, p := range points {
		if err := s.sess.Query(s.st.saveReceipt, p.Channel, p.Device, int64(p.ID), now, int64(p.ID)).
			WithContext(ctx).Consistency(s.cons).Exec(); err != nil {
			return s.wrap("save receipts", err)
		}
	}
	return nil
}

// ChannelReceipts implements store.Receipts. AckedAt is the saving logic
// instance's clock (millisecond precision).
func (s *Store) ChannelReceipts(ctx context.Context, channel, after string, limit int) ([]store.Receipt, error) {
	if err := checkChannel(channel); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, fmt.Errorf("%w: limit %d", store.ErrInvalid, limit)
	}
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	iter := s.sess.Query(s.st.selectReceipts, channel, after, limit).WithContext(ctx).Consistency(s.cons).Iter()
	var out []store.Receipt
	var dev string
	var id int64
	var at time.Time
	for iter.Scan(&dev, &id, &at) {
		out = append(out, store.Receipt{Device: dev, Channel: channel, ID: uint64(id), AckedAt: at})
	}
	if err := iter.Close(); err != nil {
		return nil, s.wrap("read receipts", err)
	}
	return out, nil
}

// SyncPoints implements store.SyncPoints.
func (s *Store) SyncPoints(ctx context.Context, device string) (map[string]uint64, error) {
	if device == "" {
		return nil, fmt.Errorf("%w: sync point device %q", store.ErrInvalid, device)
	}
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	out := make(map[string]uint64)
	iter := s.sess.Query(s.st.selectSyncPoints, device).WithContext(ctx).Consistency(s.cons).Iter()
	var ch string
	var id int64
	for iter.Scan(&ch, &id) {
		out[ch] = uint64(id)
	}
	if err := iter.Close(); err != nil {
		return nil, s.wrap("read sync points", err)
	}
	return out, nil
}

// DeleteExpired implements store.Expirer: oplogs carry a native TTL (their
// ValidUntilMs), so there is nothing to sweep and it returns 0.
func (s *Store) DeleteExpired(ctx context.Context, _ time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("%w: limit %d", store.ErrInvalid, limit)
	}
	return 0, s.check(ctx)
}

// ttlOf is the Cassandra TTL (seconds, 0 = none) of an oplog at now.
func ttlOf(op *oplog.Oplog, now time.Time) int {
	if op.ValidUntilMs <= 0 {
		return 0
	}
	ms := op.ValidUntilMs - now.UnixMilli()
	if ms <= 0 {
		return 1 // already expired: stored (ids stay dense) and gone in a second
	}
	ttl := min((ms+999)/1000, maxTTL)
	// A node in storage_compatibility_mode CASSANDRA_4 (the 5.0 default, and
	// every 4.x) rejects the whole batch when now+TTL passes maxExpiry
	// ("exceeds maximum supported expiration date"): such oplogs expire at
	// the cap instead. The margin absorbs clock skew to the coordinator.
	if limit := maxExpiry.Unix() - expiryMargin - now.Unix(); ttl > limit {
		ttl = max(limit, 1)
	}
	return int(ttl)
}

// maxExpiry is Cassandra's latest expiry before 5.0's storage format
// (Cell.MAX_DELETION_TIME, 2^31-2 seconds: 2038-01-19T03:14:06Z).
var maxExpiry = time.Unix(1<<31-2, 0)

// expiryMargin (seconds) keeps capped TTLs clear of maxExpiry.
const expiryMargin = 24 * 3600
