package job

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/panjf2000/ants/v2"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/api"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/directory"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/queue"
)

// Config configures a Job. Dependencies are required; other zero values take
// the defaults noted per field.
type Config struct {
	// Consumer is the push stream. Job calls its Consume in Start and its
	// Shutdown in Shutdown. Required.
	Consumer queue.Consumer
	// Directory resolves users and devices to sessions. Required.
	Directory directory.Directory
	// Comets resolves comet ids to push clients. Required.
	Comets api.Comets
	// Workers bounds concurrent comet calls (Push, Kick) across all batches.
	// Zero means 256.
	Workers int
	// PushTimeout bounds one comet call. Zero means 5s.
	PushTimeout time.Duration
	// Logger receives logs. Nil discards.
	Logger *slog.Logger
	// Registerer registers the metrics. Nil means a private registry.
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.Workers == 0 {
		c.Workers = 256
	}
	if c.PushTimeout == 0 {
		c.PushTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Registerer == nil {
		c.Registerer = prometheus.NewRegistry()
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.Consumer == nil {
		errs = append(errs, errors.New("Config.Consumer is required"))
	}
	if c.Directory == nil {
		errs = append(errs, errors.New("Config.Directory is required"))
	}
	if c.Comets == nil {
		errs = append(errs, errors.New("Config.Comets is required"))
	}
	if c.Workers < 0 {
		errs = append(errs, fmt.Errorf("Config.Workers %d: want > 0", c.Workers))
	}
	if c.PushTimeout < 0 {
		errs = append(errs, fmt.Errorf("PushTimeout %v: want > 0", c.PushTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

// Job is the job tier.
type Job struct {
	cfg Config
	log *slog.Logger
	m   *metrics

	mu struct {
		sync.Mutex
		started bool
		closed  bool
		// pool is created by Start (it runs goroutines) and released by Shutdown.
		pool *ants.Pool
	}
}

// New validates cfg and builds a Job; it starts nothing.
func New(cfg Config) (*Job, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Job{cfg: cfg, log: cfg.Logger, m: m}, nil
}

// antsLogger routes the pool's own log lines to slog.
type antsLogger struct{ log *slog.Logger }

func (a antsLogger) Printf(format string, args ...any) {
	a.log.Warn("ants pool", "msg", fmt.Sprintf(format, args...))
}

// Start creates the worker pool and starts consuming.
func (j *Job) Start() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	switch {
	case j.mu.closed:
		return ErrClosed
	case j.mu.started:
		return ErrStarted
	}
	pool, err := ants.NewPool(j.cfg.Workers,
		ants.WithLogger(antsLogger{j.log}),
		ants.WithPanicHandler(func(p any) {
			j.m.panics.Inc()
			j.log.Error("comet call panicked", "panic", fmt.Sprint(p))
		}))
	if err != nil {
		return fmt.Errorf("job: worker pool: %w", err)
	}
	j.mu.pool = pool
	j.mu.started = true // before Consume: handlers read the pool
	if err := j.cfg.Consumer.Consume(j.handle); err != nil {
		j.mu.started, j.mu.pool = false, nil
		pool.Release()
		return fmt.Errorf("job: consume: %w", err)
	}
	return nil
}

func (j *Job) pool() *ants.Pool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.mu.pool
}

// Shutdown stops consuming (waiting for in-flight batches, so their pushes
// finish) and releases the worker pool, bounded by ctx. Safe to call more
// than once.
func (j *Job) Shutdown(ctx context.Context) error {
	j.mu.Lock()
	started := j.mu.started
	j.mu.closed = true
	pool := j.mu.pool
	j.mu.Unlock()
	if !started {
		return nil
	}
	var errs []error
	if err := j.cfg.Consumer.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("job: consumer shutdown: %w", err))
	}
	// ReleaseContext reports ErrPoolClosed on repeat calls, which then
	// return at once: the first call did the waiting.
	if err := pool.ReleaseContext(ctx); err != nil && !errors.Is(err, ants.ErrPoolClosed) {
		errs = append(errs, fmt.Errorf("job: worker pool: %w", err))
	}
	return errors.Join(errs...)
}

type kickKey struct {
	comet  string
	code   uint32
	reason string
}

// batch is what one consumed batch turns into.
type batch struct {
	pushOrder []string // comets in first-seen order (deterministic logs/tests)
	pushes    map[string]*pb.PushReq
	kickOrder []kickKey
	kicks     map[kickKey]*pb.KickReq
	// globals are the batch's global-channel oplogs, in order (global.go).
	globals []*oplog.Oplog
	// per-batch directory lookups: one per owner, however many oplogs
	users   map[string][]directory.Session
	devices map[string][]directory.Session
	// rt holds the batch's room/all pushes and room changes (push.go).
	rt realtimeBatch
}

// handle is the queue handler. It always returns nil: see the package doc.
func (j *Job) handle(ctx context.Context, msgs []queue.Message) error {
	b := &batch{pushes: map[string]*pb.PushReq{}, kicks: map[kickKey]*pb.KickReq{},
		users: map[string][]directory.Session{}, devices: map[string][]directory.Session{}}
	decoded := make([]*pb.QueueMsg, 0, len(msgs))
	for _, msg := range msgs {
		qm := new(pb.QueueMsg)
		if err := proto.Unmarshal(msg.Value, qm); err != nil {
			j.bad("undecodable queue message", "key", msg.Key, "bytes", len(msg.Value), "err", err)
			continue
		}
		decoded = append(decoded, qm)
	}
	j.prefetch(ctx, b, decoded)
	for _, qm := range decoded {
		switch body := qm.Body.(type) {
		case *pb.QueueMsg_Oplog:
			j.routeOplog(ctx, b, body.Oplog)
		case *pb.QueueMsg_Kick:
			j.routeKick(b, body.Kick)
		case *pb.QueueMsg_Push:
			j.routePush(ctx, b, body.Push) // push.go
		case *pb.QueueMsg_Rooms:
			j.routeRooms(ctx, b, body.Rooms) // push.go
		default:
			j.bad("queue message without a body")
		}
	}
	j.applyRooms(ctx, b) // push.go: before the pushes that may target the rooms
	j.dispatch(ctx, b)
	j.broadcastPushes(ctx, b) // push.go
	return nil
}

// lookupParallel bounds the directory lookups one batch makes at once.
const lookupParallel = 16

// prefetch resolves the owners of the batch's user and device oplogs before
// routing, lookupParallel at a time: one lookup after the other (a network
// round trip each on the Cassandra directory) held live pushes to a few
// hundred oplogs/s. Routing then finds them in b; a failed lookup is left out
// and retried (and logged) by routeOplog.
func (j *Job) prefetch(ctx context.Context, b *batch, msgs []*pb.QueueMsg) {
	type key struct{ user, device string }
	var keys []key
	seen := map[key]bool{}
	for _, qm := range msgs {
		op := qm.GetOplog()
		if op == nil {
			continue
		}
		_, kind, owner, err := oplog.ParseChannel(op.Channel)
		if err != nil {
			continue
		}
		k := key{user: owner}
		switch kind {
		case oplog.KindUser:
		case oplog.KindDevice:
			k = key{device: owner}
		default:
			continue
		}
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	if len(keys) < 2 {
		return // routing looks the one key up itself
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, lookupParallel)
	for _, k := range keys {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			s, err := j.lookup(ctx, k.user, k.device)
			if err != nil {
				return
			}
			mu.Lock()
			if k.user != "" {
				b.users[k.user] = s
			} else {
				b.devices[k.device] = s
			}
			mu.Unlock()
		})
	}
	wg.Wait()
}

func (j *Job) bad(msg string, args ...any) {
	j.m.bad.Inc()
	j.log.Warn(msg, args...)
}

func (j *Job) routeOplog(ctx context.Context, b *batch, op *oplog.Oplog) {
	if op == nil || op.Id == 0 {
		j.bad("oplog queue message without an oplog or id")
		return
	}
	j.m.messages.WithLabelValues("oplog").Inc()
	_, kind, owner, err := oplog.ParseChannel(op.Channel)
	if err != nil {
		j.bad("oplog with a bad channel", "channel", op.Channel, "id", op.Id, "err", err)
		return
	}
	if kind != oplog.KindUser && kind != oplog.KindDevice {
		// Global channel: every comet gets it (Comet.Broadcast); each comet
		// delivers it to its sessions that sync the channel.
		b.globals = append(b.globals, op)
		return
	}
	user, device := owner, ""
	if kind == oplog.KindDevice {
		user, device = "", owner
	}
	sessions, err := j.sessionsOf(ctx, b, user, device) // push.go
	if err != nil {
		j.m.directoryErrors.Inc()
		j.log.Warn("directory lookup failed; devices will catch up by sync", "channel", op.Channel, "id", op.Id, "err", err)
		return
	}
	b.addPushItems(sessions, &pb.PushItem{Oplog: op})
}

// addPushItems adds item to the batch's Push call of every comet holding
// one of sessions, with that comet's session keys. One item per comet keeps
// each comet's items in the batch's order.
func (b *batch) addPushItems(sessions []directory.Session, item *pb.PushItem) {
	var comets []string
	keys := make(map[string][]string, len(sessions))
	for _, s := range sessions {
		if _, ok := keys[s.Comet]; !ok {
			comets = append(comets, s.Comet)
		}
		keys[s.Comet] = append(keys[s.Comet], s.Key)
	}
	for _, comet := range comets {
		req := b.pushes[comet]
		if req == nil {
			req = &pb.PushReq{}
			b.pushes[comet] = req
			b.pushOrder = append(b.pushOrder, comet)
		}
		req.Items = append(req.Items, &pb.PushItem{Keys: keys[comet], Oplog: item.Oplog, Push: item.Push})
	}
}

func (j *Job) routeKick(b *batch, k *pb.KickMsg) {
	if k == nil || k.Comet == "" || k.Key == "" {
		j.bad("kick queue message without comet or key")
		return
	}
	j.m.messages.WithLabelValues("kick").Inc()
	kk := kickKey{comet: k.Comet, code: k.Code, reason: k.Reason}
	req := b.kicks[kk]
	if req == nil {
		req = &pb.KickReq{Code: k.Code, Reason: k.Reason}
		b.kicks[kk] = req
		b.kickOrder = append(b.kickOrder, kk)
	}
	req.Keys = append(req.Keys, k.Key)
}

// cometCalls runs the comet calls of one batch on the worker pool.
type cometCalls struct {
	j    *Job
	pool *ants.Pool
	wg   sync.WaitGroup
}

func (j *Job) cometCalls() *cometCalls { return &cometCalls{j: j, pool: j.pool()} }

// submit runs call with comet's client on the pool; an unknown comet or a
// refused submission is counted under what and logged (the devices catch up
// by sync).
func (cs *cometCalls) submit(what, comet string, call func(pb.CometClient)) {
	c, ok := cs.j.cfg.Comets.Comet(comet)
	if !ok {
		cs.j.m.calls.WithLabelValues(what, "unknown_comet").Inc()
		cs.j.log.Warn("unknown comet; devices will catch up by sync", "op", what, "comet", comet)
		return
	}
	cs.wg.Add(1)
	if err := cs.pool.Submit(func() { defer cs.wg.Done(); call(c) }); err != nil {
		cs.wg.Done()
		cs.j.m.calls.WithLabelValues(what, "not_submitted").Inc()
		cs.j.log.Warn("comet call not submitted", "op", what, "comet", comet, "err", err)
	}
}

// wait returns when every submitted call has finished, so the next batch of
// the partition cannot overtake them.
func (cs *cometCalls) wait() { cs.wg.Wait() }

// dispatch sends every comet call of the batch on the pool and waits for
// all of them.
func (j *Job) dispatch(ctx context.Context, b *batch) {
	cs := j.cometCalls()
	for _, comet := range b.pushOrder {
		req := b.pushes[comet]
		cs.submit("push", comet, func(c pb.CometClient) { j.push(ctx, comet, c, req) })
	}
	for _, kk := range b.kickOrder {
		req := b.kicks[kk]
		cs.submit("kick", kk.comet, func(c pb.CometClient) { j.kickComet(ctx, kk.comet, c, req) })
	}
	if len(b.globals) > 0 {
		for _, comet := range j.cfg.Comets.IDs() {
			cs.submit("broadcast", comet, func(c pb.CometClient) { j.broadcastOplogs(ctx, comet, c, b.globals) })
		}
	}
	cs.wait()
}

func (j *Job) push(ctx context.Context, comet string, c pb.CometClient, req *pb.PushReq) {
	ctx, cancel := context.WithTimeout(ctx, j.cfg.PushTimeout)
	defer cancel()
	began := time.Now()
	reply, err := c.Push(ctx, req)
	j.m.pushSecs.Observe(time.Since(began).Seconds())
	pairs := 0
	for _, it := range req.Items {
		pairs += len(it.Keys)
	}
	if err != nil {
		j.m.calls.WithLabelValues("push", "error").Inc()
		j.log.Warn("push to comet failed; devices will catch up by sync", "comet", comet, "items", len(req.Items), "err", err)
		return
	}
	j.m.calls.WithLabelValues("push", "ok").Inc()
	j.m.pushed.Add(float64(pairs))
	j.m.delivered.Add(float64(reply.GetDelivered()))
}

func (j *Job) kickComet(ctx context.Context, comet string, c pb.CometClient, req *pb.KickReq) {
	ctx, cancel := context.WithTimeout(ctx, j.cfg.PushTimeout)
	defer cancel()
	if _, err := c.Kick(ctx, req); err != nil {
		j.m.calls.WithLabelValues("kick", "error").Inc()
		j.log.Warn("kick on comet failed", "comet", comet, "keys", len(req.Keys), "err", err)
		return
	}
	j.m.calls.WithLabelValues("kick", "ok").Inc()
}
