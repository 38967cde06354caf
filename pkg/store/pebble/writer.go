package pebble

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/msync/msync/pkg/store"
)

// maxIDFieldLen is the most bytes the id field (tag 2, varint) takes.
const maxIDFieldLen = 1 + binary.MaxVarintLen64

// appendReq is one Append call waiting for the writer.
type appendReq struct {
	ctx  context.Context
	ops  []pendingOp
	done chan appendResp // buffered: the writer never blocks on a caller
}

type appendResp struct {
	results []store.AppendResult
	err     error
}

// pendingOp is a validated, encoded oplog without its id.
type pendingOp struct {
	channel      string
	dedupKey     string
	validUntilMs int64
	value        []byte // proto without channel and id; cap leaves room for the id
}

type dedupRef struct{ channel, key string }

// group is the writer's reusable scratch space for one group commit.
type group struct {
	reqs    []*appendReq
	results [][]store.AppendResult // per req; nil for a req dropped before assignment
	touched []*chanState           // channels that got new ids in this group
	pinned  []*chanState           // channels this group looked up (pinned in the map until it ends)
	seen    map[dedupRef]uint64    // dedup keys stored in this group
	ops     int                    // oplogs in reqs
}

// writer is the single goroutine that assigns ids and commits. Running groups
// one after another is what makes rollback simple: when a commit fails no
// later group has been assigned ids yet, so resetting each touched channel's
// assigned id to its durable one leaves no hole and reuses no visible id.
func (s *Store) writer() {
	defer close(s.writerDone)
	g := &group{seen: make(map[dedupRef]uint64)}
	for {
		// Check quit first: once Close has begun, queued calls are failed
		// rather than committed, so Close does not wait for a full queue.
		select {
		case <-s.quit:
			s.failQueued()
			return
		default:
		}
		select {
		case <-s.quit:
			s.failQueued()
			return
		case r := <-s.reqs:
			g.add(r)
		drain:
			// Everything that queued up during the previous commit joins
			// this one: that is where group commit gets its throughput.
			for g.ops < s.cfg.MaxBatch {
				select {
				case r := <-s.reqs:
					g.add(r)
				default:
					break drain
				}
			}
			s.commitGroup(g)
			g.reset()
		}
	}
}

// failQueued answers every queued call with errClosed. Close set closed
// before closing quit, so no call can be queued after this returns.
func (s *Store) failQueued() {
	for {
		select {
		case r := <-s.reqs:
			r.done <- appendResp{err: errClosed}
		default:
			return
		}
	}
}

func (g *group) add(r *appendReq) {
	g.reqs = append(g.reqs, r)
	g.ops += len(r.ops)
}

func (g *group) reset() {
	clear(g.reqs)
	g.reqs = g.reqs[:0]
	clear(g.results)
	g.results = g.results[:0]
	g.touched = g.touched[:0]
	clear(g.pinned)
	g.pinned = g.pinned[:0]
	clear(g.seen)
	g.ops = 0
}

// commitGroup assigns ids to g's ops, writes them in one synced batch and
// answers every request of g.
func (s *Store) commitGroup(g *group) {
	b := s.db.NewBatch()
	defer b.Close()
	defer func() { s.unpin(g.pinned) }() // after the watermarks moved (or rolled back)
	written, dups := 0, 0
	err := func() error {
		for _, r := range g.reqs {
			if r.ctx.Err() != nil {
				// The caller gave up before its ops got ids: store nothing.
				g.results = append(g.results, nil)
				continue
			}
			res := make([]store.AppendResult, len(r.ops))
			for i := range r.ops {
				var dup bool
				var err error
				res[i], dup, err = s.assign(g, b, &r.ops[i])
				if err != nil {
					return err
				}
				if dup {
					dups++
				} else {
					written++
				}
			}
			g.results = append(g.results, res)
		}
		for _, st := range g.touched {
			if err := b.Set(metaKey(st.channel), encodeUint64(st.assigned), nil); err != nil {
				return fmt.Errorf("%w: batch: %w", store.ErrUnavailable, err)
			}
		}
		if b.Empty() {
			return nil // only duplicates (or dropped calls): nothing to write
		}
		if err := b.Commit(pebbledb.Sync); err != nil {
			return fmt.Errorf("%w: commit: %w", store.ErrUnavailable, err)
		}
		return nil
	}()

	if err != nil {
		s.log.Error("append group failed", "calls", len(g.reqs), "ops", g.ops, "err", err)
		for _, st := range g.touched {
			st.assigned = st.durable // safe unlocked: only the writer writes durable
			st.inGroup = false
		}
		for _, r := range g.reqs {
			r.done <- appendResp{err: err}
		}
		return
	}

	if s.testHookCommitted != nil {
		s.testHookCommitted()
	}
	// Durable now: move the watermarks, then answer.
	for _, st := range g.touched {
		sh := s.shard(st.channel)
		sh.mu.Lock()
		st.durable = st.assigned
		sh.mu.Unlock()
		st.inGroup = false
	}
	calls := 0
	for i, r := range g.reqs {
		if g.results[i] == nil {
			r.done <- appendResp{err: fmt.Errorf("store/pebble: append: %w", r.ctx.Err())}
			continue
		}
		calls++
		r.done <- appendResp{results: g.results[i]}
	}
	if written > 0 {
		s.stats.commits.Add(1)
	}
	s.stats.calls.Add(uint64(calls))
	s.stats.ops.Add(uint64(written))
	s.stats.duplicates.Add(uint64(dups))
	if int64(written) > s.stats.maxGroup.Load() {
		s.stats.maxGroup.Store(int64(written)) // only the writer stores it
	}
}

// assign gives op its id (or finds it a duplicate) and adds its writes to b.
func (s *Store) assign(g *group, b *pebbledb.Batch, op *pendingOp) (res store.AppendResult, dup bool, err error) {
	st, _, err := s.state(op.channel, true)
	if err != nil {
		return res, false, err
	}
	if !st.inGroup && !slices.Contains(g.pinned[max(len(g.pinned)-8, 0):], st) {
		g.pinned = append(g.pinned, st) // a duplicate unpinned twice is harmless
	}
	if op.dedupKey != "" {
		ref := dedupRef{op.channel, op.dedupKey}
		if id, ok := g.seen[ref]; ok {
			return store.AppendResult{ID: id, Duplicate: true}, true, nil
		}
		// Only the writer stores dedup keys and every earlier group has
		// committed, so what Get sees here is durable.
		id, found, err := s.getUint64(dedupKey(op.channel, op.dedupKey))
		if err != nil {
			return res, false, err
		}
		if found {
			g.seen[ref] = id
			return store.AppendResult{ID: id, Duplicate: true}, true, nil
		}
	}
	if !st.inGroup {
		st.inGroup = true
		g.touched = append(g.touched, st)
	}
	st.assigned++
	id := st.assigned

	// The id goes last in the value: protobuf allows fields in any order.
	val := protowire.AppendVarint(protowire.AppendTag(op.value, 2, protowire.VarintType), id)
	err = b.Set(oplogKey(op.channel, id), val, nil)
	if err == nil && op.dedupKey != "" {
		g.seen[dedupRef{op.channel, op.dedupKey}] = id
		err = b.Set(dedupKey(op.channel, op.dedupKey), encodeUint64(id), nil)
	}
	if err == nil && op.validUntilMs > 0 {
		err = b.Set(expiryKey(op.validUntilMs, op.channel, id), []byte(op.dedupKey), nil)
	}
	if err != nil {
		return res, false, fmt.Errorf("%w: batch: %w", store.ErrUnavailable, err)
	}
	return store.AppendResult{ID: id}, false, nil
}
