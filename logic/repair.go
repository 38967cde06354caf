package logic

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/queue"
	"github.com/msync/msync/pkg/store"
)

// The tail re-push bounds how long an online device stays stale after a live
// push was lost on logic's side: a queue send that failed after the append,
// or an append whose outcome is unknown (its commit may complete after the
// call gave up). Such a channel is remembered, and after RepairDelay logic
// reads the channel's newest oplog and queues it again. The comet treats it
// like any live push: the next id is delivered, a higher one makes it resync
// the channel (its gap check), one already sent is dropped. So a device gets
// what it missed within about RepairDelay, without another publish on the
// channel or a reconnect, and nothing is sent twice to the app.
const (
	// repairPasses is how many times a channel's tail is re-pushed: more
	// than once, because a commit of unknown outcome may land after the
	// first pass.
	repairPasses = 3
	// maxRepairChannels bounds the channels waiting for a re-push; beyond
	// it new ones are dropped (counted): their devices catch up at their
	// next reconnect or the channel's next publish, as before.
	maxRepairChannels = 10000
)

// maxRepairFailures bounds the failed re-push attempts of a channel (the
// queue or store still down); then it is dropped (counted, logged).
const maxRepairFailures = 30

// repairs is the set of channels whose tail is to be re-pushed.
type repairs struct {
	mu      sync.Mutex
	pending map[string]repairState
}

type repairState struct {
	passes   int // successful re-pushes still to do
	failures int // failed attempts so far
}

// scheduleRepair remembers channels for the tail re-push.
func (l *Logic) scheduleRepair(channels ...string) {
	if l.cfg.RepairDelay < 0 {
		return
	}
	l.repair.mu.Lock()
	defer l.repair.mu.Unlock()
	for _, ch := range channels {
		if _, ok := l.repair.pending[ch]; !ok && len(l.repair.pending) >= maxRepairChannels {
			l.m.repairs.WithLabelValues("dropped").Inc()
			continue
		}
		l.repair.pending[ch] = repairState{passes: repairPasses}
	}
}

// repairer runs the tail re-pushes every RepairDelay until Shutdown.
func (l *Logic) repairer() { l.every(l.cfg.RepairDelay, l.repairPass) }

// repairPass re-pushes the tail of every pending channel once.
func (l *Logic) repairPass(ctx context.Context) {
	l.repair.mu.Lock()
	batch := l.repair.pending
	l.repair.pending = make(map[string]repairState)
	l.repair.mu.Unlock()
	for ch, st := range batch {
		if ctx.Err() != nil {
			return
		}
		if l.repushTail(ctx, ch) {
			l.m.repairs.WithLabelValues("pushed").Inc()
			st.passes--
		} else {
			l.m.repairs.WithLabelValues("failed").Inc()
			st.failures++
		}
		switch {
		case st.failures >= maxRepairFailures:
			l.m.repairs.WithLabelValues("dropped").Inc()
			l.log.Warn("tail re-push: giving up on the channel; its devices catch up at their next sync", "channel", ch)
		case st.passes > 0:
			l.requeueRepair(ch, st)
		}
	}
}

// requeueRepair puts ch back unless a new failure rescheduled it meanwhile.
func (l *Logic) requeueRepair(ch string, st repairState) {
	l.repair.mu.Lock()
	defer l.repair.mu.Unlock()
	if _, ok := l.repair.pending[ch]; !ok {
		l.repair.pending[ch] = st
	}
}

// repushTail queues the newest oplog of ch again; false if that failed.
func (l *Logic) repushTail(ctx context.Context, ch string) bool {
	sctx, cancel := l.storeCtx(ctx)
	defer cancel()
	maxID, err := l.cfg.Store.MaxID(sctx, ch)
	if err != nil {
		l.log.Warn("tail re-push: reading the max id failed", "channel", ch, "err", err)
		return false
	}
	if maxID == 0 {
		return true
	}
	ops, _, err := l.cfg.Store.Read(sctx, ch, maxID-1, 1)
	if err != nil {
		l.log.Warn("tail re-push: reading the tail failed", "channel", ch, "err", err)
		return false
	}
	if len(ops) == 0 {
		return true // expired and deleted: nothing to deliver
	}
	v, err := proto.Marshal(&pb.QueueMsg{Body: &pb.QueueMsg_Oplog{Oplog: ops[0]}})
	if err != nil {
		return false
	}
	qctx, qcancel := context.WithTimeout(ctx, l.cfg.QueueTimeout)
	defer qcancel()
	if err := l.cfg.Queue.Send(qctx, queue.Message{Key: ch, Value: v}); err != nil {
		l.m.queueFailures.Inc()
		l.log.Warn("tail re-push: queue send failed", "channel", ch, "err", err)
		return false
	}
	return true
}

// maxLateAppends bounds the goroutines waiting for commits of unknown
// outcome; beyond it the tail re-push covers the channels instead.
const maxLateAppends = 256

// lateAppendWait bounds how long a commit of unknown outcome is waited for.
const lateAppendWait = time.Minute

// awaitLateAppend handles an append that gave up while its write was in
// flight: when the store can still tell the outcome (store.LateAppend), an
// owned goroutine waits for it and queues the stored ops like any publish;
// otherwise, or when that wait fails, the channels' tails are re-pushed.
func (l *Logic) awaitLateAppend(err error, ops []*oplog.Oplog) {
	var late store.LateAppend
	if !errors.As(err, &late) {
		l.scheduleRepair(distinctChannels(ops)...)
		return
	}
	select {
	case l.lateSlots <- struct{}{}:
	default:
		l.scheduleRepair(distinctChannels(ops)...)
		return
	}
	l.wg.Go(func() {
		defer func() { <-l.lateSlots }()
		ctx, cancel := context.WithTimeout(l.bg, lateAppendWait)
		defer cancel()
		results, err := late.Wait(ctx)
		if err == nil && len(results) != len(ops) {
			err = errors.New("store returned a result count different from the ops")
		}
		if err != nil {
			l.log.Warn("late append: no outcome; re-pushing the channels' tails", "err", err)
			l.scheduleRepair(distinctChannels(ops)...)
			return
		}
		l.m.lateAppends.Inc()
		l.log.Info("late append: the write landed after its call gave up; queueing it", "ops", len(ops))
		l.produce(ctx, ops, results, nil)
	})
}
