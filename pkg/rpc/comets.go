package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/msync/msync/pkg/api"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/directory"
)

// CometsConfig configures Comets. Zero values take the defaults noted.
type CometsConfig struct {
	// Registry is where comets register (through logic's Renew). Required.
	Registry directory.Comets
	// Refresh is how often the registry is listed. Zero means 2s. A push to
	// an id not in the current list also triggers a refresh (at most one per
	// MinRefresh), so a joining comet is found sooner.
	Refresh time.Duration
	// MinRefresh is the least time between two refreshes triggered by
	// unknown ids. Zero means 200ms.
	MinRefresh time.Duration
	// Dial configures the connections to comets.
	Dial DialConfig
	// Logger receives logs. Nil discards.
	Logger *slog.Logger
}

// remote is one dialed comet.
type remote struct {
	addr   string
	conn   *grpc.ClientConn
	client pb.CometClient
}

// Comets is an api.Comets backed by the comet registry. Comet never blocks:
// it reads an immutable snapshot that the refresher goroutine replaces.
type Comets struct {
	cfg  CometsConfig
	log  *slog.Logger
	snap atomic.Pointer[map[string]*remote]

	kick chan struct{} // unknown id seen: refresh soon
	quit chan struct{}
	wg   sync.WaitGroup

	refreshMu sync.Mutex // serialises refreshes (the goroutine, tests)
	// gen counts finished refreshes (successful or not); refreshed is closed
	// and replaced after each, waking callers in await.
	genMu     sync.Mutex
	gen       uint64
	refreshed chan struct{}

	mu struct {
		sync.Mutex
		started, closed bool
	}
	once sync.Once
}

var _ api.Comets = (*Comets)(nil)

// NewComets validates cfg; nothing is dialed until Start.
func NewComets(cfg CometsConfig) (*Comets, error) {
	if cfg.Registry == nil {
		return nil, fmt.Errorf("%w: Comets: Registry is required", ErrInvalidConfig)
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = 2 * time.Second
	}
	if cfg.MinRefresh == 0 {
		cfg.MinRefresh = 200 * time.Millisecond
	}
	if cfg.Refresh < 0 || cfg.MinRefresh < 0 {
		return nil, fmt.Errorf("%w: Comets: refresh intervals must not be negative", ErrInvalidConfig)
	}
	if cfg.Dial.TLS != nil {
		cfg.Dial.ServerRole = RoleComet // per comet, Refresh adds the id
	}
	if err := cfg.Dial.setDefaults(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Comets{cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1), quit: make(chan struct{}), refreshed: make(chan struct{})}
	empty := map[string]*remote{}
	c.snap.Store(&empty)
	return c, nil
}

// Start lists the registry once (a failure is logged, not fatal: comets may
// register later) and starts the refresher.
func (c *Comets) Start() error {
	c.mu.Lock()
	switch {
	case c.mu.closed:
		c.mu.Unlock()
		return ErrClosed
	case c.mu.started:
		c.mu.Unlock()
		return ErrStarted
	}
	c.mu.started = true
	c.wg.Add(1) // under mu: Shutdown then waits for the refresher
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Refresh)
	if err := c.Refresh(ctx); err != nil {
		c.log.Warn("comet discovery: first refresh failed; retrying", "err", err)
	}
	cancel()
	go c.run()
	return nil
}

// Comet implements api.Comets without blocking: the client for a known
// comet, or, for an id not in the current list, a client whose calls first
// wait for the next refresh (asked for now, at most MinRefresh away) and
// fail with codes.Unavailable if the comet is still not registered then.
//
// Why not just report false: a device reaches a comet that just joined
// before the next periodic refresh, and its live pushes would be dropped
// until something made its channel resync. Ids are learned from the online
// directory, so an unknown one is almost always a comet that registered a
// moment ago; the wait runs in the caller's worker and is bounded by its
// context (job's PushTimeout).
func (c *Comets) Comet(id string) (pb.CometClient, bool) {
	if r, ok := (*c.snap.Load())[id]; ok {
		return r.client, true
	}
	c.askRefresh()
	return pendingComet{c: c, id: id}, true
}

func (c *Comets) askRefresh() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// await returns id's client once a refresh that began after the call lists
// it, or an error when one did not, or ctx ended.
func (c *Comets) await(ctx context.Context, id string) (pb.CometClient, error) {
	c.genMu.Lock()
	want := c.gen + 2 // the refresh in progress may have listed before id registered
	c.genMu.Unlock()
	for {
		if r, ok := (*c.snap.Load())[id]; ok {
			return r.client, nil
		}
		c.genMu.Lock()
		gen, ch := c.gen, c.refreshed
		c.genMu.Unlock()
		if gen >= want {
			return nil, status.Errorf(codes.Unavailable, "comet %q is not registered", id)
		}
		c.askRefresh()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-c.quit:
			return nil, status.Error(codes.Unavailable, ErrClosed.Error())
		}
	}
}

// pendingComet is the client of a comet not discovered yet (see Comet).
type pendingComet struct {
	c  *Comets
	id string
}

func (p pendingComet) Push(ctx context.Context, in *pb.PushReq, opts ...grpc.CallOption) (*pb.PushReply, error) {
	cl, err := p.c.await(ctx, p.id)
	if err != nil {
		return nil, err
	}
	return cl.Push(ctx, in, opts...)
}

func (p pendingComet) Broadcast(ctx context.Context, in *pb.BroadcastReq, opts ...grpc.CallOption) (*pb.PushReply, error) {
	cl, err := p.c.await(ctx, p.id)
	if err != nil {
		return nil, err
	}
	return cl.Broadcast(ctx, in, opts...)
}

func (p pendingComet) Rooms(ctx context.Context, in *pb.RoomsReq, opts ...grpc.CallOption) (*pb.Empty, error) {
	cl, err := p.c.await(ctx, p.id)
	if err != nil {
		return nil, err
	}
	return cl.Rooms(ctx, in, opts...)
}

func (p pendingComet) Kick(ctx context.Context, in *pb.KickReq, opts ...grpc.CallOption) (*pb.Empty, error) {
	cl, err := p.c.await(ctx, p.id)
	if err != nil {
		return nil, err
	}
	return cl.Kick(ctx, in, opts...)
}

// IDs returns the ids of the comets currently known, sorted.
func (c *Comets) IDs() []string {
	m := *c.snap.Load()
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Addr returns the address the comet id is dialed at ("" if unknown).
func (c *Comets) Addr(id string) string {
	if r, ok := (*c.snap.Load())[id]; ok {
		return r.addr
	}
	return ""
}

func (c *Comets) run() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.Refresh)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-c.quit:
			return
		case <-t.C:
		case <-c.kick:
			// Bound the registry load callers can cause: at most one
			// requested refresh per MinRefresh.
			if wait := c.cfg.MinRefresh - time.Since(last); wait > 0 {
				timer := time.NewTimer(wait)
				select {
				case <-c.quit:
					timer.Stop()
					return
				case <-timer.C:
				}
			}
		}
		last = time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Refresh)
		if err := c.Refresh(ctx); err != nil {
			c.log.Warn("comet discovery: refresh failed; keeping the last list", "err", err)
		}
		cancel()
	}
}

// Refresh lists the registry now and applies the changes: new comets are
// dialed, comets whose address changed are redialed, departed comets are
// closed. On a registry error the current list is kept.
func (c *Comets) Refresh(ctx context.Context) error {
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	defer func() {
		c.genMu.Lock()
		c.gen++
		close(c.refreshed)
		c.refreshed = make(chan struct{})
		c.genMu.Unlock()
	}()
	c.mu.Lock()
	closed := c.mu.closed
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	infos, err := c.cfg.Registry.Comets(ctx)
	if err != nil {
		return fmt.Errorf("rpc: listing comets: %w", err)
	}
	old := *c.snap.Load()
	next := make(map[string]*remote, len(infos))
	var stale []*remote
	for _, in := range infos {
		if r, ok := old[in.ID]; ok && r.addr == in.Addr {
			next[in.ID] = r
			continue
		}
		dc := c.cfg.Dial
		if dc.TLS != nil {
			// The registry entry is only as good as the certificate: the
			// server at in.Addr must hold comet in.ID's.
			dc.ServerRole, dc.ServerComet = RoleComet, in.ID
		}
		conn, err := Dial([]string{in.Addr}, dc)
		if err != nil {
			c.log.Warn("comet discovery: dial failed", "comet", in.ID, "addr", in.Addr, "err", err)
			continue
		}
		next[in.ID] = &remote{addr: in.Addr, conn: conn, client: pb.NewCometClient(conn)}
		c.log.Info("comet joined", "comet", in.ID, "addr", in.Addr)
	}
	for id, r := range old {
		if n, ok := next[id]; !ok || n != r {
			stale = append(stale, r)
			if !ok {
				c.log.Info("comet departed", "comet", id, "addr", r.addr)
			}
		}
	}
	c.snap.Store(&next)
	// Closing after the swap: a push that loaded the old snapshot fails
	// with Canceled/Unavailable, and its devices catch up by sync.
	for _, r := range stale {
		_ = r.conn.Close()
	}
	return nil
}

// Shutdown stops the refresher and closes every connection. Idempotent.
func (c *Comets) Shutdown(ctx context.Context) error {
	var err error
	c.once.Do(func() {
		c.mu.Lock()
		c.mu.closed = true
		c.mu.Unlock()
		close(c.quit)
		done := make(chan struct{})
		go func() { c.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			err = fmt.Errorf("rpc: comets shutdown: %w", ctx.Err())
		}
		c.refreshMu.Lock() // no refresh may dial after this
		empty := map[string]*remote{}
		old := c.snap.Swap(&empty)
		c.refreshMu.Unlock()
		var errs []error
		for _, r := range *old {
			if cerr := r.conn.Close(); cerr != nil {
				errs = append(errs, cerr)
			}
		}
		if err == nil {
			err = errors.Join(errs...)
		}
	})
	return err
}
