package cassandra

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/gocql/gocql"
	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/store"
)

// maxCASRetries bounds the rounds one batch loses to other writers of the
// same channel (other logic processes) before Append gives up.
const maxCASRetries = 64

// pendingOp is one oplog on its way into a batch.
type pendingOp struct {
	body []byte
	uuid gocql.UUID
	ttl  int
	id   uint64 // set when committed
}

// appendReq is one caller's ops of one channel.
type appendReq struct {
	ctx  context.Context
	ops  []*pendingOp
	done chan error    // buffered 1: the outcome
	lead chan struct{} // buffered 1: the caller becomes the channel's leader
}

// chanQueue serialises one channel's appends in this process: a caller
// that finds no leader leads, committing queued requests in groups (one LWT
// batch per group and bucket) until its own is done, then hands leadership
// to the next waiter. No goroutine is started.
type chanQueue struct {
	pending []*appendReq
	busy    bool
	known   bool   // cur is trusted
	cur     uint64 // the channel's max id as of our last applied LWT
	shared  bool   // another writer was seen: a lost CAS round or a head that moved
}

// submit commits req's ops (one channel) and returns when they have ids.
func (s *Store) submit(ch string, req *appendReq) error {
	s.mu.Lock()
	q := s.chans[ch]
	if q == nil {
		q = &chanQueue{}
		// The cached head is a committed max id, so a lower bound: the
		// conditional batch checks it, and a stale one costs one lost CAS
		// round (which returns the current max id), never an id twice. It
		// is trusted only where this process's last commit saw no other
		// writer (no lost round, and its head read, if any, found the head
		// where we left it). There it saves the head read an append to an
		// idle channel otherwise pays (most appends to device channels);
		// where writers alternate, a read is cheaper than a lost LWT.
		if _, sole := s.sole[ch]; sole && !s.cfg.legacyAppend {
			q.cur, q.known = s.heads[ch], true
		}
		s.chans[ch] = q
	}
	q.pending = append(q.pending, req)
	lead := !q.busy
	q.busy = true
	s.mu.Unlock()
	if !lead {
		select {
		case err := <-req.done:
			return err
		case <-req.lead:
		}
	}
	for {
		select {
		case err := <-req.done:
			s.handOff(ch, q)
			return err
		default:
		}
		group := s.takeGroup(q)
		if len(group) == 0 {
			// Our own request was answered in takeGroup (cancelled).
			continue
		}
		var ops []*pendingOp
		for _, r := range group {
			ops = append(ops, r.ops...)
		}
		// The leader's ctx must not cut short other callers' writes, and an
		// LWT in flight must be resolved even if the caller gave up.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(req.ctx), 4*s.cfg.Timeout*time.Duration(1+len(ops)/s.cfg.MaxBatch))
		err := s.commit(ctx, ch, q, ops)
		cancel()
		for _, r := range group {
			r.done <- err
		}
	}
}

// takeGroup takes queued requests up to MaxBatch ops (at least one request);
// requests whose caller already gave up are answered and skipped.
func (s *Store) takeGroup(q *chanQueue) []*appendReq {
	s.mu.Lock()
	defer s.mu.Unlock()
	var group []*appendReq
	n := 0
	for len(q.pending) > 0 {
		r := q.pending[0]
		if err := r.ctx.Err(); err != nil {
			q.pending = q.pending[1:]
			r.done <- err
			continue
		}
		if len(group) > 0 && n+len(r.ops) > s.cfg.MaxBatch {
			break
		}
		q.pending = q.pending[1:]
		group = append(group, r)
		n += len(r.ops)
	}
	return group
}

func (s *Store) handOff(ch string, q *chanQueue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(q.pending) > 0 {
		q.pending[0].lead <- struct{}{}
		return
	}
	q.busy = false
	if q.known {
		if len(s.heads) >= maxHeads {
			clear(s.heads)
			clear(s.sole)
		}
		s.heads[ch] = max(s.heads[ch], q.cur)
	}
	if q.known && !q.shared {
		s.sole[ch] = struct{}{}
	} else {
		delete(s.sole, ch)
	}
	delete(s.chans, ch)
}

// commit assigns ids cur+1.. to ops and writes them, one single-partition
// conditional batch per bucket: UPDATE max_id IF max_id = cur (or IF max_id
// = null for a bucket's first ids) plus the INSERTs of the rows. Paxos on
// the partition commits id n+1 only after n: readers never see a hole.
// On error ops before the failing bucket may be committed (their ids set).
func (s *Store) commit(ctx context.Context, ch string, q *chanQueue, ops []*pendingOp) error {
	retries := 0
	for len(ops) > 0 {
		if !q.known {
			cached := s.headHint(ch)
			cur, err := s.maxID(ctx, ch, s.cons)
			if err != nil {
				return err
			}
			if cur != cached {
				q.shared = true // someone else appended since we last did
			}
			q.cur, q.known = cur, true
		}
		first := q.cur + 1
		b := s.bucketOf(first)
		n := int(min(uint64(len(ops)), s.bucketEnd(b)-q.cur))
		part := ops[:n]
		applied, current, err := s.casBatch(ctx, ch, b, q.cur, part)
		switch {
		case err != nil && rejected(err):
			// Refused before any Paxos round: nothing was written, and
			// the same batch would be refused again.
			return fmt.Errorf("store/cassandra: append to %s: %w: the node rejected the batch: %w", ch, store.ErrInvalid, err)
		case err != nil:
			// Unknown outcome: settle it by a SERIAL read, never by
			// allocating again.
			s.cfg.Logger.Warn("cassandra append: LWT outcome unknown, resolving at serial consistency",
				"channel", ch, "bucket", b, "first_id", first, "err", err)
			applied, current, err = s.resolve(ctx, ch, b, q.cur, part)
			if err != nil {
				q.known = false
				return fmt.Errorf("%w: %w: %w", ErrUnknownOutcome, store.ErrUnavailable, err)
			}
		}
		if applied {
			for i, op := range part {
				op.id = first + uint64(i)
			}
			q.cur += uint64(n)
			ops = ops[n:]
			retries = 0
			continue
		}
		retries++
		q.shared = true
		if retries > maxCASRetries {
			q.known = false
			return fmt.Errorf("store/cassandra: append to %s: %w: lost %d LWT rounds in a row", ch, store.ErrUnavailable, retries-1)
		}
		// Another writer of the channel (another logic process) won the
		// round. Retrying at once keeps losing to a writer that commits back
		// to back, which never has to read the head; a short random pause
		// lets our round land between two of its rounds.
		if err := s.pause(ctx, retries); err != nil {
			q.known = false
			return fmt.Errorf("store/cassandra: append to %s: %w: %w", ch, store.ErrUnavailable, err)
		}
		if current == nil {
			// The bucket we took for the head is not initialised: our
			// idea of the head is wrong; look again.
			q.known = false
			continue
		}
		q.cur = *current
		if q.cur >= s.bucketEnd(b) {
			// The bucket is full: we are at least a bucket behind. A head
			// read walks the buckets faster than lost rounds would.
			q.known = false
		}
	}
	return nil
}

// pause sleeps a random time below 1ms << (retries-1), at most 32ms, or
// until ctx ends.
func (s *Store) pause(ctx context.Context, retries int) error {
	if s.cfg.legacyAppend {
		return nil
	}
	t := time.NewTimer(rand.N(time.Millisecond << min(retries-1, 5)))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// casBatch runs one conditional batch on partition (ch, b). current is the
// partition's max_id reported by a not-applied result (nil if unset).
func (s *Store) casBatch(ctx context.Context, ch string, b int64, cur uint64, part []*pendingOp) (applied bool, current *uint64, err error) {
	// A fresh *Batch per execution: gocql batches must not be reused.
	batch := s.sess.NewBatch(gocql.LoggedBatch).WithContext(ctx)
	batch.SetConsistency(s.cons)
	batch.SerialConsistency(gocql.SerialConsistency(s.serial))
	batch.RetryPolicy(nil) // a retried CAS could apply twice
	newMax := int64(cur) + int64(len(part))
	if cur+1 == s.bucketStart(b) {
		batch.Query(s.st.casInit, newMax, ch, b)
	} else {
		batch.Query(s.st.casAdvance, newMax, ch, b, int64(cur))
	}
	for i, op := range part {
		batch.Query(s.st.insertOp, ch, b, int64(cur)+1+int64(i), op.uuid, op.body, op.ttl)
	}
	dest := make(map[string]any)
	applied, iter, err := s.mapExecuteBatchCAS(batch, dest)
	if err != nil {
		return false, nil, err
	}
	if err := iter.Close(); err != nil {
		return false, nil, err
	}
	if applied {
		return true, nil, nil
	}
	if m, ok := dest["max_id"].(int64); ok {
		v := uint64(m)
		return false, &v, nil
	}
	return false, nil, nil
}

// rejected reports whether err is the server refusing a statement outright
// (invalid, syntax, unauthorized, bad configuration): such a request never
// ran, so its outcome is known and retrying cannot help.
func rejected(err error) bool {
	var re gocql.RequestError
	if !errors.As(err, &re) {
		return false
	}
	switch re.Code() {
	case gocql.ErrCodeInvalid, gocql.ErrCodeSyntax, gocql.ErrCodeUnauthorized, gocql.ErrCodeConfig:
		return true
	}
	return false
}

// mapExecuteBatchCAS guards gocql's MapExecuteBatchCAS, which panics when a
// result lacks [applied]; such a result is an unknown outcome.
func (s *Store) mapExecuteBatchCAS(b *gocql.Batch, dest map[string]any) (applied bool, iter *gocql.Iter, err error) {
	defer func() {
		if r := recover(); r != nil {
			applied, iter, err = false, nil, fmt.Errorf("conditional batch result without [applied]: %v", r)
		}
	}()
	applied, iter, err = s.sess.MapExecuteBatchCAS(b, dest)
	if err == nil && iter == nil {
		err = errors.New("conditional batch: no result")
	}
	return applied, iter, err
}

// resolve settles an LWT batch whose outcome is unknown. A SERIAL read of
// the partition first completes (or forever invalidates) any in-flight
// Paxos proposal; then the batch applied iff row cur+1 carries part[0]'s
// uuid. If not, current is the partition's max_id now.
func (s *Store) resolve(ctx context.Context, ch string, b int64, cur uint64, part []*pendingOp) (applied bool, current *uint64, err error) {
	m, ok, err := s.readHead(ctx, ch, b, s.serial)
	if err != nil {
		return false, nil, err
	}
	if !ok {
		return false, nil, nil
	}
	if m > cur {
		got, err := s.uuidsIn(ctx, ch, b, cur, cur+1, s.serial)
		if err != nil {
			return false, nil, err
		}
		if u, found := got[cur+1]; found && u == part[0].uuid {
			return true, nil, nil
		}
	}
	return false, &m, nil
}

// uuidsIn reads the op uuids of ids (lo, hi] in bucket b.
func (s *Store) uuidsIn(ctx context.Context, ch string, b int64, lo, hi uint64, cons gocql.Consistency) (map[uint64]gocql.UUID, error) {
	out := make(map[uint64]gocql.UUID)
	iter := s.sess.Query(s.st.selectUUIDs, ch, b, int64(lo), int64(hi)).WithContext(ctx).Consistency(cons).Iter()
	var id int64
	var u gocql.UUID
	for iter.Scan(&id, &u) {
		out[uint64(id)] = u
	}
	if err := iter.Close(); err != nil {
		return nil, s.wrap("read op uuids", err)
	}
	return out, nil
}

// appendChannel claims the dedup keys of ops idx (all of channel ch), appends
// the new ones and fills their results (res entries of idx only).
func (s *Store) appendChannel(ctx context.Context, ch string, idx []int, ops []*oplog.Oplog, pend []*pendingOp, res []store.AppendResult) error {
	var claimed []int
	var toWrite []*pendingOp
	var written []int
	for _, i := range idx {
		op := ops[i]
		if op.DedupKey != "" {
			id, dup, err := s.claim(ctx, ch, op.DedupKey, pend[i].uuid)
			if err != nil {
				s.release(ctx, ch, ops, pend, claimed)
				return err
			}
			if dup {
				res[i] = store.AppendResult{ID: id, Duplicate: true}
				continue
			}
			claimed = append(claimed, i)
		}
		toWrite = append(toWrite, pend[i])
		written = append(written, i)
	}
	if len(toWrite) > 0 {
		req := &appendReq{ctx: ctx, ops: toWrite, done: make(chan error, 1), lead: make(chan struct{}, 1)}
		if err := s.submit(ch, req); err != nil {
			if !errors.Is(err, ErrUnknownOutcome) {
				s.release(ctx, ch, ops, pend, claimed)
			}
			return s.wrap("append", err)
		}
		for _, i := range written {
			res[i] = store.AppendResult{ID: pend[i].id}
		}
	}
	for _, i := range claimed {
		s.setDedupID(ctx, ch, ops[i].DedupKey, pend[i].id)
	}
	return nil
}

// Append implements store.Appender. See the package doc for what a failed
// call may leave visible.
func (s *Store) Append(ctx context.Context, ops []*oplog.Oplog) ([]store.AppendResult, error) {
	now := time.Now()
	pend := make([]*pendingOp, len(ops))
	for i, op := range ops {
		if op == nil {
			return nil, fmt.Errorf("%w: nil oplog", store.ErrInvalid)
		}
		if err := checkChannel(op.Channel); err != nil {
			return nil, err
		}
		if op.Id != 0 {
			return nil, fmt.Errorf("%w: id %d already set", store.ErrInvalid, op.Id)
		}
		body, err := proto.Marshal(op)
		if err != nil {
			return nil, fmt.Errorf("%w: marshal: %w", store.ErrInvalid, err)
		}
		u, err := gocql.RandomUUID()
		if err != nil {
			return nil, fmt.Errorf("store/cassandra: uuid: %w", err)
		}
		pend[i] = &pendingOp{body: body, uuid: u, ttl: ttlOf(op, now)}
	}
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if len(ops) == 0 {
		return []store.AppendResult{}, nil
	}

	res := make([]store.AppendResult, len(ops))
	dupOf := make([]int, len(ops)) // index of the earlier op with the same key, or -1
	byChan := make(map[string][]int)
	var chans []string
	seen := make(map[[2]string]int)
	for i, op := range ops {
		dupOf[i] = -1
		if op.DedupKey != "" {
			k := [2]string{op.Channel, op.DedupKey}
			if j, ok := seen[k]; ok {
				dupOf[i] = j
				continue
			}
			seen[k] = i
		}
		if _, ok := byChan[op.Channel]; !ok {
			chans = append(chans, op.Channel)
		}
		byChan[op.Channel] = append(byChan[op.Channel], i)
	}

	// Channels are independent partitions, each its own Paxos rounds: run
	// them concurrently (ParallelChannels), not one chain after another.
	if len(chans) == 1 {
		if err := s.appendChannel(ctx, chans[0], byChan[chans[0]], ops, pend, res); err != nil {
			return nil, err
		}
	} else {
		sem := make(chan struct{}, s.cfg.ParallelChannels)
		errs := make([]error, len(chans))
		var wg sync.WaitGroup
		for k, ch := range chans {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				errs[k] = s.appendChannel(ctx, ch, byChan[ch], ops, pend, res)
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return nil, err
			}
		}
	}
	for i, j := range dupOf {
		if j >= 0 {
			res[i] = store.AppendResult{ID: res[j].ID, Duplicate: true}
		}
	}
	for i, op := range ops {
		if !res[i].Duplicate {
			op.Id = res[i].ID
		}
	}
	return res, nil
}
