package logic

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/msync/msync/pkg/api/pb"
)

// Logic is the logic tier. It implements pb.LogicServer, so comets call it
// in-process through api.LocalLogic or over gRPC.
type Logic struct {
	pb.UnimplementedLogicServer

	cfg     Config
	log     *slog.Logger
	m       *metrics
	gather  prometheus.Gatherer
	handler http.Handler
	srv     *http.Server

	// bg is the context of owned background work (the janitor); cancelled
	// by Shutdown.
	bg       context.Context
	bgCancel context.CancelFunc
	wg       sync.WaitGroup
	// done is closed once Shutdown finished waiting for every goroutine.
	done chan struct{}
	// shutting makes /healthz report 503 from the moment Shutdown starts.
	shutting atomic.Bool
	// health backs /healthz (health.go).
	health health
	// order hands publish calls' queue messages over in id order (order.go).
	order *sendOrder
	// repair holds the channels whose tail is re-pushed (repair.go).
	repair repairs
	// limiters are the per API key budgets (ratelimit.go); read-only.
	limiters map[string]*limiter
	// lateSlots bounds the goroutines awaiting late appends (repair.go).
	lateSlots chan struct{}
	// hooks sends delivery receipts to the bizs' webhooks (webhook.go).
	hooks *webhooks

	mu struct {
		sync.Mutex
		started bool
		closed  bool
		addr    net.Addr
	}
}

var _ pb.LogicServer = (*Logic)(nil)

// New validates cfg and builds a Logic. It binds nothing and starts no
// goroutine: see Start.
func New(cfg Config) (*Logic, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	reg, gather := cfg.Registerer, cfg.Gatherer
	if reg == nil {
		r := prometheus.NewRegistry()
		reg = r
		if gather == nil {
			gather = r
		}
	}
	if gather == nil {
		if g, ok := reg.(prometheus.Gatherer); ok {
			gather = g
		} else {
			return nil, fmt.Errorf("%w: Gatherer is required when Registerer is not a Gatherer", ErrInvalidConfig)
		}
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	if cfg.DeviceBinding == DeviceBindingOwner && cfg.Owners == nil {
		cfg.Logger.Warn("device binding: this store records no device owners, so only tokens with a dev claim bind devices to users; set device binding to token")
	}
	hooks, err := newWebhooks(cfg, reg)
	if err != nil {
		return nil, err
	}
	l := &Logic{cfg: cfg, log: cfg.Logger, m: m, gather: gather, done: make(chan struct{}), order: newSendOrder(cfg.OrderWait), hooks: hooks}
	l.repair.pending = make(map[string]repairState)
	l.lateSlots = make(chan struct{}, maxLateAppends)
	l.health.checks = cfg.Health
	l.limiters = newLimiters(cfg.RateLimits, cfg.Now())
	l.bg, l.bgCancel = context.WithCancel(context.Background())
	l.handler = l.routes()
	l.srv = &http.Server{
		Handler:           l.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return l, nil
}

// Start binds the HTTP listener (so HTTPAddr is valid when it returns) and
// starts serving and the janitor.
func (l *Logic) Start() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.mu.closed:
		return ErrClosed
	case l.mu.started:
		return ErrStarted
	}
	ln, err := net.Listen("tcp", l.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("logic: listen %s: %w", l.cfg.HTTPAddr, err)
	}
	l.mu.started = true
	l.mu.addr = ln.Addr()
	l.log.Info("logic HTTP API listening", "addr", ln.Addr().String())
	l.wg.Go(func() {
		if err := l.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			l.log.Error("logic HTTP server stopped", "err", err)
		}
	})
	if l.cfg.JanitorInterval > 0 {
		l.wg.Go(l.janitor)
	}
	if l.cfg.RepairDelay > 0 {
		l.wg.Go(l.repairer)
	}
	l.hooks.start(l.bg, &l.wg)
	return nil
}

// HTTPAddr is the bound HTTP address, or nil before Start.
func (l *Logic) HTTPAddr() net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.addr
}

// Handler is the HTTP API, for mounting in another server or testing without
// a listener.
func (l *Logic) Handler() http.Handler { return l.handler }

// Shutdown stops accepting HTTP requests, lets in-flight ones finish, and
// stops the janitor and the receipt webhook senders (a batch in flight is
// sent again after the restart: its cursor was not saved), all bounded by ctx (when ctx ends first, remaining
// connections are closed). It does not close the store, queue or directory,
// and the pb.LogicServer methods keep working afterwards (they own no
// goroutine), so in-process comets can still disconnect and ack while the
// node shuts down in order.
// Safe to call more than once and concurrently: every call waits, bounded by
// its own ctx, for the same completion.
func (l *Logic) Shutdown(ctx context.Context) error {
	l.mu.Lock()
	first := !l.mu.closed
	l.mu.closed = true
	l.mu.Unlock()
	var err error
	if first {
		l.shutting.Store(true)
		if serr := l.srv.Shutdown(ctx); serr != nil {
			err = fmt.Errorf("logic: http shutdown: %w", serr)
			// Force the remaining connections closed so Serve's handlers
			// see their contexts cancelled and return.
			l.srv.Close()
		}
		l.bgCancel()
		go func() { // owned: exits once the goroutines above returned
			l.wg.Wait()
			close(l.done)
		}()
	}
	select {
	case <-l.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("logic: shutdown: %w", ctx.Err())
	}
}

// janitor deletes expired oplogs every JanitorInterval until Shutdown.
func (l *Logic) janitor() { l.every(l.cfg.JanitorInterval, l.deleteExpired) }

// every runs f(l.bg) every d until Shutdown cancels l.bg.
func (l *Logic) every(d time.Duration, f func(context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-l.bg.Done():
			return
		case <-t.C:
			f(l.bg)
		}
	}
}

// maxJanitorRounds bounds one janitor run so a huge backlog of expired
// oplogs cannot keep it busy past the next tick; the rest waits a tick.
const maxJanitorRounds = 100

func (l *Logic) deleteExpired(ctx context.Context) {
	for range maxJanitorRounds {
		cctx, cancel := context.WithTimeout(ctx, l.cfg.AppendTimeout)
		n, err := l.cfg.Store.DeleteExpired(cctx, l.cfg.Now(), l.cfg.JanitorBatch)
		cancel()
		l.m.expired.Add(float64(n))
		if err != nil {
			if ctx.Err() == nil {
				l.m.storeErrors.WithLabelValues("delete_expired").Inc()
				l.log.Warn("deleting expired oplogs failed", "err", err)
			}
			return
		}
		if n < l.cfg.JanitorBatch {
			return
		}
	}
}
