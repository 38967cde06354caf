package pebble

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/store"
)

var _ store.Store = (*Store)(nil)

// errClosed is returned by every call after Close. It wraps ErrUnavailable
// too, as store.ErrUnavailable documents: nothing of the failed call is
// visible, and logic answers it like any other outage.
var errClosed = fmt.Errorf("%w: %w", store.ErrClosed, store.ErrUnavailable)

// numShards spreads the per-channel watermark map over several locks, so a
// first-use load of one channel (a Pebble read under its shard lock) does not
// stall readers of the others.
const numShards = 64

// Store is the Pebble-backed store.Store. Create it with Open.
type Store struct {
	cfg   Config
	log   *slog.Logger
	db    *pebbledb.DB
	cache interface{ Unref() }

	// mu guards closed. Every call that touches db holds mu.RLock for its
	// duration (Append only while handing its request to the writer), so
	// Close, which takes mu.Lock, knows no call is still using db.
	mu     sync.RWMutex
	closed bool

	reqs       chan *appendReq
	quit       chan struct{} // closed by Close: the writer drains and exits
	writerDone chan struct{} // closed by the writer when it has exited

	closeOnce sync.Once
	closeErr  error

	seed     maphash.Seed
	shards   [numShards]shard
	perShard int // cfg.MaxChannels spread over the shards

	// syncMu serialises SaveSyncPoints: raising a point is read-compare-write.
	syncMu sync.Mutex
	// lastAck (guarded by syncMu; 0 = not loaded yet) is the last acked-at
	// unix ns handed out: the ack feed's order (receipts.go).
	lastAck uint64
	// ownerMu serialises device claims and revocation cut-offs
	// (principals.go), both read-compare-write.
	ownerMu sync.Mutex

	stats struct {
		commits, calls, ops, duplicates, evictions atomic.Uint64
		maxGroup                                   atomic.Int64
	}

	// disk caches the free-space check (diskspace.go).
	disk diskState

	// testHookCommitted, when set before the first Append, runs on the writer
	// goroutine after a group's synced commit returned and before the
	// watermark moves. Tests use it to hold a group in that window.
	testHookCommitted func()
}

type shard struct {
	mu sync.Mutex
	m  map[string]*chanState
}

// chanState is one channel's id state.
type chanState struct {
	channel string
	// durable is the highest id whose synced commit returned. Guarded by the
	// shard's mu. Read and MaxID never go past it.
	durable uint64
	// assigned and inGroup belong to the writer goroutine alone. assigned is
	// the last id handed out (> durable only while a group is committing).
	assigned uint64
	inGroup  bool
	// pinned (guarded by the shard's mu) keeps the state in the map while
	// the writer's current group uses it: the writer pins in state(create)
	// and unpins after the group. used is the CLOCK bit of the eviction:
	// set on every lookup, cleared by an eviction pass that spares it once.
	pinned, used bool
}

// Stats counts the writer's work since Open.
type Stats struct {
	Commits    uint64 // synced group commits that succeeded
	Calls      uint64 // Append calls answered with results (duplicates-only calls need no commit)
	Ops        uint64 // oplogs written
	Duplicates uint64 // ops answered with an existing id by their dedup key
	MaxGroup   int    // most oplogs written by one commit
	Evictions  uint64 // channel states dropped from memory by the MaxChannels cap
	Channels   int    // channel states in memory now
	LowDisk    bool   // writes are refused: free disk space below MinFreeBytes
}

// Open opens (or creates) the database in cfg.Dir and starts the writer.
func Open(cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Pebble reserves the memtables' memory from the block cache, so the
	// cache is sized for both: otherwise large memtables would leave no room
	// for blocks at all.
	cache := pebbledb.NewCache(cfg.CacheSize + memTableStopWrites*cfg.MemTableSize)
	db, err := pebbledb.Open(cfg.Dir, &pebbledb.Options{
		Cache:                       cache,
		FormatMajorVersion:          pebbledb.FormatNewest,
		Logger:                      pebbleLogger{cfg.Logger},
		MemTableSize:                uint64(cfg.MemTableSize),
		MemTableStopWritesThreshold: memTableStopWrites,
		FS:                          cfg.FS,
	})
	if err != nil {
		cache.Unref()
		return nil, fmt.Errorf("%w: open %q: %w", store.ErrUnavailable, cfg.Dir, err)
	}
	s := &Store{
		cfg:        cfg,
		log:        cfg.Logger,
		db:         db,
		cache:      cache,
		reqs:       make(chan *appendReq, cfg.QueueSize),
		quit:       make(chan struct{}),
		writerDone: make(chan struct{}),
		seed:       maphash.MakeSeed(),
		perShard:   max(cfg.MaxChannels/numShards, 1),
	}
	for i := range s.shards {
		s.shards[i].m = make(map[string]*chanState)
	}
	go s.writer()
	return s, nil
}

// Close stops the writer (waiting for the group it is committing, failing
// calls still queued with store.ErrClosed) and closes the database. It is
// safe to call more than once; later calls return the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock() // waits for calls using db; later calls see closed
		s.closed = true
		s.mu.Unlock()
		close(s.quit)
		<-s.writerDone
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("%w: close: %w", store.ErrUnavailable, err)
		}
		s.cache.Unref()
	})
	return s.closeErr
}

// Stats returns counters of the writer's work.
func (s *Store) Stats() Stats {
	return Stats{
		Commits:    s.stats.commits.Load(),
		Calls:      s.stats.calls.Load(),
		Ops:        s.stats.ops.Load(),
		Duplicates: s.stats.duplicates.Load(),
		MaxGroup:   int(s.stats.maxGroup.Load()),
		Evictions:  s.stats.evictions.Load(),
		Channels:   s.channels(),
		LowDisk:    s.disk.low.Load(),
	}
}

func (s *Store) channels() int {
	n := 0
	for i := range s.shards {
		s.shards[i].mu.Lock()
		n += len(s.shards[i].m)
		s.shards[i].mu.Unlock()
	}
	return n
}

// Append implements store.Appender.
//
// The call is handed to the writer goroutine, which commits it with other
// waiting calls in one synced batch. If ctx ends before the writer takes the
// call, nothing is stored and ctx's error is returned. If ctx ends while the
// call's group is committing, Append returns ctx's error at once but the ops
// may still be committed; retrying with the same dedup keys returns their ids.
//
// On success every op's Id is set to its result's ID (for a duplicate, the
// id of the oplog first stored with that dedup key). The ops are not read or
// written by the store after Append returns.
func (s *Store) Append(ctx context.Context, ops []*oplog.Oplog) ([]store.AppendResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store/pebble: append: %w", err)
	}
	if len(ops) == 0 {
		if err := s.rlock(ctx); err != nil {
			return nil, err
		}
		s.mu.RUnlock()
		return []store.AppendResult{}, nil
	}
	if err := s.checkSpace(); err != nil {
		return nil, err
	}
	// Encode on the caller's goroutine: the writer never touches the caller's
	// messages, so a caller that gave up on ctx can reuse them safely.
	req := &appendReq{ctx: ctx, ops: make([]pendingOp, len(ops)), done: make(chan appendResp, 1)}
	for i, op := range ops {
		p, err := encodeOp(op)
		if err != nil {
			return nil, fmt.Errorf("op %d: %w", i, err)
		}
		req.ops[i] = p
	}

	if err := s.enqueue(ctx, req); err != nil {
		return nil, err
	}
	select {
	case resp := <-req.done:
		if resp.err != nil {
			return nil, resp.err
		}
		for i, op := range ops {
			op.Id = resp.results[i].ID
		}
		return resp.results, nil
	case <-ctx.Done():
		return nil, &lateAppend{req: req, cause: ctx.Err()}
	}
}

// lateAppend is the error of an Append that gave up while its group was
// committing: the ops may be stored. Wait gets the commit's outcome.
type lateAppend struct {
	req   *appendReq
	cause error
}

var _ store.LateAppend = (*lateAppend)(nil)

func (e *lateAppend) Error() string {
	return fmt.Sprintf("%v: store/pebble: append: gave up waiting for commit, the ops may be stored: %v", store.ErrOutcomeUnknown, e.cause)
}

func (e *lateAppend) Unwrap() []error { return []error{store.ErrOutcomeUnknown, e.cause} }

// Wait implements store.LateAppend. Call it at most once.
func (e *lateAppend) Wait(ctx context.Context) ([]store.AppendResult, error) {
	select {
	case resp := <-e.req.done:
		return resp.results, resp.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: store/pebble: append: %w", store.ErrOutcomeUnknown, ctx.Err())
	}
}

// enqueue hands req to the writer under mu.RLock, so that Close cannot slip
// between the closed check and the send and leave req unanswered.
func (s *Store) enqueue(ctx context.Context, req *appendReq) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errClosed
	}
	select {
	case s.reqs <- req:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("store/pebble: append: %w", ctx.Err())
	}
}

// encodeOp validates op and marshals it without channel and id: the channel
// is in the key, and the writer appends the id field once it is assigned.
func encodeOp(op *oplog.Oplog) (pendingOp, error) {
	if op == nil {
		return pendingOp{}, fmt.Errorf("%w: nil oplog", store.ErrInvalid)
	}
	if err := checkChannel(op.Channel); err != nil {
		return pendingOp{}, err
	}
	if op.Id != 0 {
		return pendingOp{}, fmt.Errorf("%w: id %d already set", store.ErrInvalid, op.Id)
	}
	ch := op.Channel
	op.Channel = ""
	size := proto.Size(op)
	val, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(make([]byte, 0, size+maxIDFieldLen), op)
	op.Channel = ch
	if err != nil {
		return pendingOp{}, fmt.Errorf("%w: marshal: %w", store.ErrInvalid, err)
	}
	return pendingOp{channel: ch, dedupKey: op.DedupKey, validUntilMs: op.ValidUntilMs, value: val}, nil
}

func checkChannel(ch string) error {
	if len(ch) > maxNameLen {
		return fmt.Errorf("%w: channel of %d bytes", store.ErrInvalid, len(ch))
	}
	if _, _, _, err := oplog.ParseChannel(ch); err != nil {
		return fmt.Errorf("%w: %w", store.ErrInvalid, err)
	}
	return nil
}

// rlock takes mu.RLock unless the store is closed or ctx ended. On nil the
// caller must RUnlock.
func (s *Store) rlock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store/pebble: %w", err)
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return errClosed
	}
	return nil
}

// state returns ch's state, loading its max id from the meta key on first
// use. It holds the shard lock across the load: the writer registers a
// channel here before it writes anything of it, so a channel absent from the
// map has no commit in flight and its stored meta value is durable. With
// create false a channel with nothing stored returns nil, so reads of empty
// channels do not grow the map.
func (s *Store) state(ch string, create bool) (st *chanState, durable uint64, err error) {
	sh := s.shard(ch)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if st, ok := sh.m[ch]; ok {
		st.used = true
		st.pinned = st.pinned || create
		return st, st.durable, nil
	}
	stored, _, err := s.getUint64(metaKey(ch))
	if err != nil {
		return nil, 0, err
	}
	if stored == 0 && !create {
		return nil, 0, nil
	}
	if len(sh.m) >= s.perShard {
		s.evictLocked(sh)
	}
	st = &chanState{channel: ch, durable: stored, assigned: stored, pinned: create, used: true}
	sh.m[ch] = st
	return st, stored, nil
}

// evictLocked drops states of sh until it is 1/8 below its cap, sparing
// pinned ones and, once, recently used ones (CLOCK, an LRU approximation
// that needs no list update on the read path). A dropped state is reloaded
// from its meta key on next use: it holds nothing else, since only pinned
// states can have ids assigned above their durable watermark.
// REQUIRES: sh.mu.
func (s *Store) evictLocked(sh *shard) {
	target := s.perShard - max(s.perShard/8, 1)
	for pass := 0; pass < 2 && len(sh.m) > target; pass++ {
		for ch, st := range sh.m {
			if len(sh.m) <= target {
				break
			}
			switch {
			case st.pinned:
			case st.used && pass == 0:
				st.used = false
			default:
				delete(sh.m, ch)
				s.stats.evictions.Add(1)
			}
		}
	}
}

// unpin releases the states of the writer's finished group.
func (s *Store) unpin(states []*chanState) {
	for _, st := range states {
		sh := s.shard(st.channel)
		sh.mu.Lock()
		st.pinned = false
		sh.mu.Unlock()
	}
}

func (s *Store) shard(ch string) *shard {
	return &s.shards[maphash.String(s.seed, ch)%numShards]
}

// durable returns ch's durable watermark.
func (s *Store) durable(ch string) (uint64, error) {
	_, d, err := s.state(ch, false)
	return d, err
}

// getUint64 reads a uint64 value; found is false if the key is absent.
func (s *Store) getUint64(key []byte) (v uint64, found bool, err error) {
	b, closer, err := s.db.Get(key)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("%w: get %q: %w", store.ErrUnavailable, key, err)
	}
	defer closer.Close()
	v, err = decodeUint64(b)
	if err != nil {
		return 0, false, fmt.Errorf("%w: key %q: %w", store.ErrUnavailable, key, err)
	}
	return v, true, nil
}

// Read implements store.Reader.
func (s *Store) Read(ctx context.Context, ch string, after uint64, limit int) ([]*oplog.Oplog, uint64, error) {
	if err := checkChannel(ch); err != nil {
		return nil, 0, err
	}
	if limit <= 0 {
		return nil, 0, fmt.Errorf("%w: limit %d", store.ErrInvalid, limit)
	}
	if err := s.rlock(ctx); err != nil {
		return nil, 0, err
	}
	defer s.mu.RUnlock()
	maxID, err := s.durable(ch)
	if err != nil || after >= maxID {
		return nil, maxID, err
	}
	// Bounds: ids after+1 .. maxID. A channel's oplog keys are its prefix
	// plus exactly 8 bytes, so key(maxID)+0x00 is the least key above key(maxID).
	it, err := s.db.NewIterWithContext(ctx, &pebbledb.IterOptions{
		LowerBound: oplogKey(ch, after+1),
		UpperBound: append(oplogKey(ch, maxID), 0),
	})
	if err != nil {
		return nil, 0, fmt.Errorf("%w: read %q: %w", store.ErrUnavailable, ch, err)
	}
	n := min(uint64(limit), maxID-after)
	ops := make([]*oplog.Oplog, 0, min(n, 256))
	dec := newPageDecoder(int(n))
	for ok := it.First(); ok && len(ops) < limit; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			break // it.Error() reports it below
		}
		op, err := dec.decode(v) // copies v
		if err != nil {
			key := append([]byte(nil), it.Key()...)
			it.Close()
			return nil, 0, fmt.Errorf("%w: decode %q at %x: %w", store.ErrUnavailable, ch, key, err)
		}
		op.Channel = ch
		ops = append(ops, op)
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, 0, fmt.Errorf("%w: read %q: %w", store.ErrUnavailable, ch, err)
	}
	return ops, maxID, nil
}

// MaxID implements store.Reader.
func (s *Store) MaxID(ctx context.Context, ch string) (uint64, error) {
	if err := checkChannel(ch); err != nil {
		return 0, err
	}
	if err := s.rlock(ctx); err != nil {
		return 0, err
	}
	defer s.mu.RUnlock()
	return s.durable(ch)
}

// SaveSyncPoints implements store.SyncPoints. Points are written without
// fsync: the SDK keeps its own, these are a fallback.
func (s *Store) SaveSyncPoints(ctx context.Context, points []store.SyncPoint) error {
	for _, p := range points {
		if p.Device == "" || len(p.Device) > maxNameLen {
			return fmt.Errorf("%w: sync point device %q", store.ErrInvalid, p.Device)
		}
		if err := checkChannel(p.Channel); err != nil {
			return err
		}
	}
	if err := s.rlock(ctx); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	s.syncMu.Lock()
	defer s.syncMu.Unlock()

	// Highest requested id per key (a call may name one key twice).
	want := make(map[string]uint64, len(points))
	for _, p := range points {
		k := string(syncPointKey(p.Device, p.Channel))
		want[k] = max(want[k], p.ID)
	}
	b := s.db.NewBatch()
	defer b.Close()
	acks, err := s.newAckClock()
	if err != nil {
		return err
	}
	for _, p := range points {
		k := string(syncPointKey(p.Device, p.Channel))
		id, ok := want[k]
		if !ok {
			continue // done: the key was named twice
		}
		delete(want, k)
		cur, _, err := s.getUint64([]byte(k))
		if err != nil {
			return err
		}
		if id > cur {
			if err := b.Set([]byte(k), encodeUint64(id), nil); err != nil {
				return fmt.Errorf("%w: sync points: %w", store.ErrUnavailable, err)
			}
			if err := s.setReceiptLocked(b, p.Device, p.Channel, id, acks.next()); err != nil {
				return err
			}
		}
	}
	if b.Empty() {
		return nil
	}
	if err := b.Set([]byte{kindLastAck}, encodeUint64(acks.last), nil); err != nil {
		return fmt.Errorf("%w: sync points: %w", store.ErrUnavailable, err)
	}
	if err := s.checkSpace(); err != nil {
		return err
	}
	if err := b.Commit(pebbledb.NoSync); err != nil {
		return fmt.Errorf("%w: sync points: %w", store.ErrUnavailable, err)
	}
	s.lastAck = acks.last
	return nil
}

// SyncPoints implements store.SyncPoints.
func (s *Store) SyncPoints(ctx context.Context, device string) (map[string]uint64, error) {
	if device == "" || len(device) > maxNameLen {
		return nil, fmt.Errorf("%w: sync point device %q", store.ErrInvalid, device)
	}
	if err := s.rlock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	prefix := syncPointPrefix(device)
	it, err := s.db.NewIterWithContext(ctx, &pebbledb.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("%w: sync points: %w", store.ErrUnavailable, err)
	}
	points := make(map[string]uint64)
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			break
		}
		id, err := decodeUint64(v)
		if err != nil {
			key := string(it.Key())
			it.Close()
			return nil, fmt.Errorf("%w: sync point %q: %w", store.ErrUnavailable, key, err)
		}
		points[string(it.Key()[len(prefix):])] = id
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, fmt.Errorf("%w: sync points: %w", store.ErrUnavailable, err)
	}
	return points, nil
}

// deleteChunk is how many expired oplogs one delete batch removes.
const deleteChunk = 1024

// DeleteExpired implements store.Expirer: it scans the expiry index from
// the start to before and deletes each oplog with its dedup key and index
// entry, in batches committed without fsync (a delete lost in a crash is
// simply redone by the next sweep). Max ids are kept, so ids continue.
// Oplogs with ValidUntilMs <= 0 never expire (oplog.Evaluate treats them as
// valid forever).
func (s *Store) DeleteExpired(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("%w: limit %d", store.ErrInvalid, limit)
	}
	if err := s.rlock(ctx); err != nil {
		return 0, err
	}
	defer s.mu.RUnlock()
	cut := before.UnixMilli()
	if cut <= 1 { // indexed oplogs have valid_until_ms >= 1
		return 0, nil
	}
	it, err := s.db.NewIterWithContext(ctx, &pebbledb.IterOptions{
		LowerBound: []byte{kindExpiry},
		UpperBound: expiryKey(cut, "", 0)[:9], // x | cut: every entry with valid_until_ms < cut
	})
	if err != nil {
		return 0, fmt.Errorf("%w: delete expired: %w", store.ErrUnavailable, err)
	}
	defer it.Close()

	// deleted counts committed deletes; pending those in b.
	deleted, pending := 0, 0
	b := s.db.NewBatch()
	defer func() { b.Close() }()
	commit := func() error {
		if pending == 0 {
			return nil
		}
		if err := b.Commit(pebbledb.NoSync); err != nil {
			return fmt.Errorf("%w: delete expired: %w", store.ErrUnavailable, err)
		}
		deleted, pending = deleted+pending, 0
		b.Close()
		b = s.db.NewBatch()
		return nil
	}
	for ok := it.First(); ok && deleted+pending < limit; ok = it.Next() {
		ch, id, err := parseExpiryKey(it.Key())
		if err != nil {
			return deleted, fmt.Errorf("%w: delete expired: %w", store.ErrUnavailable, err)
		}
		key, err := it.ValueAndErr()
		if err != nil {
			break // it.Error() reports it below
		}
		// Batch.Delete copies its key, so the iterator's buffers can be reused.
		err = errors.Join(b.Delete(oplogKey(ch, id), nil), b.Delete(it.Key(), nil))
		if len(key) > 0 {
			err = errors.Join(err, b.Delete(dedupKey(ch, string(key)), nil))
		}
		if err != nil {
			return deleted, fmt.Errorf("%w: delete expired: %w", store.ErrUnavailable, err)
		}
		pending++
		if pending == deleteChunk {
			if err := commit(); err != nil {
				return deleted, err
			}
			if err := ctx.Err(); err != nil {
				return deleted, fmt.Errorf("store/pebble: delete expired: %w", err)
			}
		}
	}
	if err := it.Error(); err != nil {
		return deleted, fmt.Errorf("%w: delete expired: %w", store.ErrUnavailable, err)
	}
	if err := commit(); err != nil {
		return deleted, err
	}
	return deleted, nil
}

// pebbleLogger routes Pebble's log lines to slog.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	if p.l.Enabled(context.Background(), slog.LevelInfo) {
		p.l.Info(fmt.Sprintf(format, args...), "component", "pebble")
	}
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

// Fatalf must not return: Pebble calls it when its commit pipeline is
// broken (e.g. a failed WAL sync) and goes on as if the commit succeeded.
// Returning would acknowledge writes that are not durable, so it panics like
// Pebble's own test loggers (its default logger calls os.Exit).
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, "component", "pebble", "fatal", true)
	panic(msg)
}
