package comet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/ants/v2"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/gateway"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
)

const (
	// renewBatch is the most sessions per Logic.Renew call.
	renewBatch = 1024
	// rescheduleDelay is how long the rescheduler waits before retrying drain
	// tasks the pool refused because every worker was busy.
	rescheduleDelay = time.Millisecond
	// releaseTimeout bounds the wait for pool workers on Shutdown when ctx
	// has no deadline.
	releaseTimeout = 5 * time.Second
)

// Comet is one connection-tier server. See doc.go for what is goroutine-safe.
type Comet struct {
	pb.UnimplementedCometServer

	cfg     Config
	log     *slog.Logger
	metrics *metrics
	buckets []bucket
	rooms   roomIndex // rooms.go
	pool    *ants.PoolWithFuncGeneric[*session]
	acks    ackBatcher
	global  globalIndex          // global channel -> sessions (global.go)
	rpc     *rpcRouter           // rpc.go: upstreams and their calls
	comp    *protocol.Compressor // compress.go; nil: compression off
	now     func() time.Time     // tests move the clock for validity windows

	// Traffic control (limits.go) and pacing: a session holds back live
	// pages past paceLive bytes queued on its connection and backlog pages
	// past paceBacklog (session.go, syncNeeded), below the transport's
	// write queue limit, so a burst a device is reading is paced, not cut.
	rates       rates
	epoch       time.Time // mono's zero
	authLimit   authLimiter
	limited     limitCounters
	paceLive    int
	paceBacklog int

	// baseCtx parents every logic call; it is cancelled at the end of
	// Shutdown, or early when Shutdown's ctx expires, to abort stuck calls.
	baseCtx    context.Context
	cancelBase context.CancelFunc
	quit       chan struct{} // closed by Shutdown: stops owned goroutines
	wg         sync.WaitGroup
	closing    atomic.Bool
	// live counts registered, unfinished sessions; drained is signalled when
	// it drops to zero during Shutdown.
	live    atomic.Int64
	drained chan struct{}

	starved struct {
		sync.Mutex
		list []*session // refused by a full pool; retried by the rescheduler
	}
	starvedKick chan struct{}

	gw *gateway.Server // built by New, started by Start

	life struct {
		sync.Mutex
		started   bool
		running   bool // pool and goroutines started (startBackgroundLocked)
		transport transport
		shutdown  bool
		done      chan struct{} // closed when the first Shutdown returns
		err       error
	}
}

// bucket is one shard of the session map.
type bucket struct {
	mu struct {
		sync.Mutex
		sessions map[string]*session
	}
}

// New builds a Comet from cfg: it validates cfg (every problem at once,
// each wrapping ErrInvalidConfig) and starts nothing, neither goroutines nor
// listeners, nor calls logic: Start does that. Shutdown is safe also when
// Start was never called.
func New(cfg Config) (*Comet, error) {
	cfg.setDefaults()
	// The gateway's config is checked here too, not first in Start:
	// gateway.New validates and binds nothing. Its handler learns the comet
	// below.
	gh := &gatewayHandler{}
	gw, gerr := gateway.New(cfg.Gateway, gh)
	if gerr != nil {
		gerr = fmt.Errorf("%w: Gateway: %w", ErrInvalidConfig, gerr)
	}
	if err := errors.Join(cfg.validate(), gerr); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer, cfg.ID)
	if err != nil {
		return nil, err
	}
	c := &Comet{
		gw:          gw,
		cfg:         cfg,
		log:         cfg.Logger.With("comet", cfg.ID),
		metrics:     m,
		buckets:     make([]bucket, cfg.Buckets),
		now:         time.Now,
		quit:        make(chan struct{}),
		starvedKick: make(chan struct{}, 1),
		drained:     make(chan struct{}, 1),
		rates:       newRates(cfg.Limits),
		epoch:       time.Now(),
	}
	wq := cfg.Gateway.WriteQueueBytes
	if wq <= 0 {
		wq = gateway.DefaultWriteQueueBytes
	}
	c.paceLive, c.paceBacklog = wq/2, wq/4
	if c.comp, err = newCompressor(cfg.Compression); err != nil {
		return nil, err
	}
	if c.rpc, err = newRPCRouter(c, cfg.Upstreams, wq/2); err != nil {
		return nil, err
	}
	for _, col := range []prometheus.Collector{
		newLimitsCollector(&c.limited, cfg.ID),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "msync_comet_connections",
			Help:        "Device connections open on this comet (authenticated or not).",
			ConstLabels: prometheus.Labels{"comet": cfg.ID}}, func() float64 { return float64(c.live.Load()) }),
	} {
		if err := cfg.Registerer.Register(col); err != nil {
			return nil, fmt.Errorf("comet: metrics: %w", err)
		}
	}
	for i := range c.buckets {
		c.buckets[i].mu.sessions = make(map[string]*session)
	}
	gh.c = c
	c.acks.init()
	c.life.done = make(chan struct{})
	c.baseCtx, c.cancelBase = context.WithCancel(context.Background())
	return c, nil
}

// startBackground starts the worker pool and the comet's own goroutines (ack
// flusher, renewer, rescheduler); Start calls it before binding, and the
// first Renew (cluster mode: I/O to logic) happens only then.
// Tests of sessions on fake connections call it without Start.
// REQUIRES: c.life held, not shut down.
func (c *Comet) startBackgroundLocked() error {
	if c.life.running {
		return nil
	}
	// Non-blocking: OnFrame and Push must never wait for a worker. A refused
	// drain task goes to the rescheduler, so overload delays sessions instead
	// of dropping their events.
	pool, err := ants.NewPoolWithFuncGeneric(c.cfg.Workers, (*session).drain,
		ants.WithNonblocking(true),
		ants.WithPanicHandler(func(p any) { c.log.Error("pool task panic", "panic", p) }))
	if err != nil {
		return fmt.Errorf("comet: pool: %w", err)
	}
	c.pool = pool
	c.life.running = true
	c.wg.Add(3)
	go c.runAcks()
	go c.runRenew()
	go c.runRescheduler()
	return nil
}

// ID returns the comet's id in the directory.
func (c *Comet) ID() string { return c.cfg.ID }

// Addr returns the listener's address once Start returned, else nil.
func (c *Comet) Addr() net.Addr {
	c.life.Lock()
	defer c.life.Unlock()
	if c.life.transport == nil {
		return nil
	}
	return c.life.transport.Addr()
}

// ---- sessions ----

// bucketFor shards by FNV-1a of the key, inlined: it runs for every pushed
// (key, oplog) pair and hash/fnv would allocate.
func (c *Comet) bucketFor(key string) *bucket {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return &c.buckets[h%uint32(len(c.buckets))]
}

// open registers a new connection and returns its session; the transport
// routes the connection's frames and close to it.
func (c *Comet) open(conn Conn) *session {
	// Random, not the transport's sequential id: a key is all a Push or
	// Kick names, so it must not be guessable (128 bits).
	var kb [16]byte
	_, _ = rand.Read(kb[:]) // never fails (crypto/rand)
	key := hex.EncodeToString(kb[:])
	s := newSession(c, conn, key)
	c.live.Add(1)
	b := c.bucketFor(key)
	b.mu.Lock()
	_, dup := b.mu.sessions[key]
	if !dup {
		b.mu.sessions[key] = s
	}
	b.mu.Unlock()
	switch {
	case dup:
		// Two transports handing out the same id would misroute pushes.
		c.log.Error("duplicate connection key", "conn", key)
		conn.Close(protocol.ErrorFrame(0, protocol.CodeUnavailable, "duplicate connection key"), ErrInvalidConfig)
	case c.closing.Load():
		// Shutdown may have taken its snapshot before this registration.
		conn.Close(protocol.ErrorFrame(0, protocol.CodeServerShutdown, "server shutting down"), ErrShutdown)
	}
	return s
}

func (c *Comet) lookup(key string) *session {
	b := c.bucketFor(key)
	b.mu.Lock()
	s := b.mu.sessions[key]
	b.mu.Unlock()
	return s
}

func (c *Comet) removeSession(s *session) {
	b := c.bucketFor(s.key)
	b.mu.Lock()
	if b.mu.sessions[s.key] == s {
		delete(b.mu.sessions, s.key)
	}
	b.mu.Unlock()
}

func (c *Comet) sessionDone() {
	if c.live.Add(-1) == 0 && c.closing.Load() {
		select {
		case c.drained <- struct{}{}:
		default:
		}
	}
}

// snapshot returns every registered session.
func (c *Comet) snapshot() []*session {
	var all []*session
	for i := range c.buckets {
		b := &c.buckets[i]
		b.mu.Lock()
		for _, s := range b.mu.sessions {
			all = append(all, s)
		}
		b.mu.Unlock()
	}
	return all
}

// submit hands a scheduled session to the pool.
func (c *Comet) submit(s *session) {
	err := c.pool.Invoke(s)
	if err == nil {
		return
	}
	if errors.Is(err, ants.ErrPoolOverload) {
		c.starved.Lock()
		c.starved.list = append(c.starved.list, s)
		c.starved.Unlock()
		select {
		case c.starvedKick <- struct{}{}:
		default:
		}
		return
	}
	// ErrPoolClosed: Shutdown finished or gave up; the session is gone.
	c.log.Warn("drain task refused", "conn", s.key, "err", err)
}

// runRescheduler retries drain tasks the pool refused. The list holds each
// session at most once (its scheduled flag stays set), so it is bounded by
// the number of sessions.
func (c *Comet) runRescheduler() {
	defer c.wg.Done()
	t := time.NewTimer(0)
	<-t.C
	for {
		select {
		case <-c.quit:
			return
		case <-c.starvedKick:
		}
		for {
			c.starved.Lock()
			list := c.starved.list
			c.starved.list = nil
			c.starved.Unlock()
			var refused []*session
			for i, s := range list {
				if err := c.pool.Invoke(s); err != nil {
					if !errors.Is(err, ants.ErrPoolOverload) {
						return // closed
					}
					refused = list[i:]
					break
				}
			}
			if len(refused) == 0 {
				break
			}
			c.starved.Lock()
			c.starved.list = append(refused, c.starved.list...)
			c.starved.Unlock()
			t.Reset(rescheduleDelay)
			select {
			case <-c.quit:
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// mono is the rate limits' clock: monotonic ns since New, so a wall clock
// step neither empties nor refills a bucket.
func (c *Comet) mono() int64 { return int64(time.Since(c.epoch)) }

func (c *Comet) callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.baseCtx, c.cfg.CallTimeout)
}

// runRenew keeps this comet's sessions alive in logic's directory.
func (c *Comet) runRenew() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.RenewInterval)
	defer t.Stop()
	if c.cfg.GRPCAddr != "" {
		c.renew() // register now: job pushes to a comet only once it is listed
	}
	for {
		select {
		case <-c.quit:
			return
		case <-t.C:
			c.renew()
		}
	}
}

// renew sends one batched Logic.Renew per renewBatch authenticated sessions.
func (c *Comet) renew() {
	refs := make([]*pb.SessionRef, 0, renewBatch)
	send := func() {
		ctx, cancel := c.callCtx()
		reply, err := c.cfg.Logic.Renew(ctx, &pb.RenewReq{Comet: c.cfg.ID, Sessions: refs, GrpcAddr: c.cfg.GRPCAddr})
		cancel()
		if err != nil {
			c.metrics.logicErrs.WithLabelValues("renew").Inc()
			c.log.Warn("logic renew failed", "sessions", len(refs), "err", err)
		}
		for _, t := range reply.GetTickets() {
			if s := c.lookup(t.Key); s != nil {
				s.setTicket(t.Ticket)
			}
		}
		refs = make([]*pb.SessionRef, 0, renewBatch)
	}
	for _, s := range c.snapshot() {
		id := s.ident.Load()
		if id == nil {
			continue
		}
		ref := &pb.SessionRef{Key: s.key, Device: id.device, User: id.user}
		if t := s.ticket.Load(); t != nil {
			ref.Ticket = *t
		}
		refs = append(refs, ref)
		if len(refs) == renewBatch {
			send()
		}
	}
	// A comet without sessions still renews its registration.
	if len(refs) > 0 || c.cfg.GRPCAddr != "" {
		send()
	}
}

// ---- pb.CometServer ----

var _ pb.CometServer = (*Comet)(nil)

// Push delivers each item's oplog as a live push to the sessions with the
// item's connection keys. Delivered counts the (key, oplog) pairs a session
// took: queued, or folded into a resync of the channel when the session's
// queue is full. Unknown keys, sessions not yet authenticated and channels
// the session does not sync are not counted; the store still has the oplog
// for their next sync. Push never blocks on a session.
func (c *Comet) Push(_ context.Context, req *pb.PushReq) (*pb.PushReply, error) {
	if c.closing.Load() {
		return nil, ErrShutdown
	}
	var delivered uint32
	for _, it := range req.GetItems() {
		if m := it.GetPush(); m != nil {
			delivered += c.pushKeys(it.Keys, m) // rooms.go: non-persistent
			continue
		}
		if it.GetOplog() == nil {
			continue
		}
		var op *liveOp // cloned and encoded on first use: sessions keep it after Push returns
		for _, key := range it.Keys {
			s := c.lookup(key)
			if s == nil {
				continue
			}
			if op == nil {
				op = newLiveOp(proto.Clone(it.Oplog).(*oplog.Oplog))
			}
			delivered += s.push(op.op.Channel, op)
		}
	}
	return &pb.PushReply{Delivered: delivered}, nil
}

// Kick sends KICK{code, reason} to the sessions with req's keys and closes
// them. Code zero means 1007 (kicked by the business, reconnect allowed).
func (c *Comet) Kick(_ context.Context, req *pb.KickReq) (*pb.Empty, error) {
	code := protocol.Code(req.GetCode())
	if code == 0 {
		code = protocol.CodeKicked
	}
	for _, key := range req.GetKeys() {
		if s := c.lookup(key); s != nil {
			s.kick(code, req.GetReason())
		}
	}
	return &pb.Empty{}, nil
}

// ---- lifecycle ----

// Shutdown sends ERROR 1000 to every session and closes it, stops the
// listener, tells logic about each session (Logic.Disconnect), flushes acks
// and stops every goroutine. It waits for all that until ctx is done; then it
// aborts outstanding logic calls and returns ctx's error. It is idempotent:
// later calls wait for the first and return its result.
func (c *Comet) Shutdown(ctx context.Context) error {
	c.life.Lock()
	if c.life.shutdown {
		c.life.Unlock()
		select {
		case <-c.life.done:
			return c.life.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c.life.shutdown = true
	tr := c.life.transport
	c.life.Unlock()

	c.closing.Store(true)
	for _, s := range c.snapshot() {
		// A frame per connection: Close takes ownership of it.
		c.metrics.framesOut[opSlot(protocol.OpError)].Inc()
		s.conn.Close(protocol.ErrorFrame(0, protocol.CodeServerShutdown, "server shutting down"), ErrShutdown)
	}
	var errs []error
	if tr != nil {
		if err := tr.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("comet: transport shutdown: %w", err))
		}
	}

	// Sessions finish once their onClose is handled (Logic.Disconnect).
wait:
	for c.live.Load() > 0 {
		select {
		case <-c.drained:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("comet: waiting for %d sessions: %w", c.live.Load(), ctx.Err()))
			c.cancelBase() // unblock drain tasks stuck in logic calls
			break wait
		}
	}

	// Sessions ended cancel their calls; this waits for the goroutines.
	if err := c.rpc.stop(ctx); err != nil {
		errs = append(errs, err)
	}
	close(c.quit) // the ack flusher flushes a last time before it returns
	c.wg.Wait()
	c.cancelBase()
	timeout := releaseTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	if c.pool != nil { // nil when Start never ran
		if err := c.pool.ReleaseTimeout(timeout); err != nil {
			errs = append(errs, fmt.Errorf("comet: releasing pool: %w", err))
		}
	}
	err := errors.Join(errs...)
	c.life.Lock()
	c.life.err = err
	c.life.Unlock()
	close(c.life.done)
	if err == nil {
		c.log.Info("comet stopped")
	}
	return err
}
