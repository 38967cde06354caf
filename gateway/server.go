package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/gobwas/ws"
	"github.com/panjf2000/ants/v2"

	"github.com/msync/msync/gateway/wheel"
	"github.com/msync/msync/pkg/protocol"
)

// Locks: Conn.mu, the registry shards' mu, the backlog mu and the wheel's
// shard locks are leaves: none is held while taking another, nor while
// calling the Handler or netpoll.

// connShards splits the connection registry lock; it is only taken on
// open, close and Shutdown, never per frame.
const connShards = 64

// Server accepts connections and runs them on netpoll. Create it with New,
// then Start and eventually Shutdown. All methods are goroutine-safe.
type Server struct {
	cfg     Config
	handler Handler
	log     *slog.Logger
	wheel   *wheel.Wheel

	upgrader ws.Upgrader // WebSocket handshake; stateless, shared

	nextID  atomic.Uint64
	open    atomic.Int64
	perIP   ipCounts      // open connections per source address (MaxConnsPerIP > 0)
	drained chan struct{} // signalled when open drops to 0
	conns   [connShards]connShard
	stats   counters

	pool atomic.Pointer[ants.PoolWithFuncGeneric[*Conn]]

	backlog struct { // connections waiting for a drain worker
		sync.Mutex
		q []*Conn
	}

	shutdown  atomic.Bool
	done      chan struct{} // closed when the first Shutdown finished
	quit      chan struct{} // stops the tick goroutine
	serveDone chan struct{} // closed when netpoll's Serve returned
	wsDone    chan struct{} // closed when the WebSocket loop's Serve returned
	wg        sync.WaitGroup

	mu struct {
		sync.Mutex
		started bool
		ln      netpoll.Listener
		evl     netpoll.EventLoop
		wsLn    netpoll.Listener  // nil unless Config.WSAddr
		wsEvl   netpoll.EventLoop // nil unless Config.WSAddr
		tlsLn   net.Listener      // nil unless Config.TLSAddr
		tlsWSLn net.Listener      // nil unless Config.TLSWSAddr
	}
}

type connShard struct {
	mu sync.Mutex
	m  map[uint64]*Conn
}

// Stats are cumulative counters since New, except Open.
type Stats struct {
	Open               int64  // connections open now (= Len)
	Accepted           uint64 // connections opened (OnOpen called)
	Closed             uint64 // connections closed (OnClose called)
	Rejected           uint64 // connections refused because Shutdown had begun
	RefusedConns       uint64 // connections refused at MaxConns
	RefusedConnsPerIP  uint64 // connections refused at MaxConnsPerIP
	FramesIn           uint64 // whole inbound frames read
	BytesIn            uint64 // bytes of those frames
	FramesOut          uint64 // frames written to sockets, final frames included
	BytesOut           uint64 // bytes of those frames
	Flushes            uint64 // batches handed to netpoll, one socket write each (FramesOut/Flushes = batching)
	SlowConsumerCloses uint64 // write queue overflows and flush timeouts
	DeadlineCloses     uint64 // liveness and ack deadline expiries
	BadFrames          uint64 // malformed or oversized inbound headers
	DrainsDeferred     uint64 // drains parked on the backlog because the pool was saturated
	HandshakesFailed   uint64 // failed WebSocket upgrades and TLS handshakes (no OnOpen)
}

type counters struct {
	accepted, closed, rejected             atomic.Uint64
	refusedConns, refusedPerIP             atomic.Uint64
	framesIn, bytesIn, framesOut, bytesOut atomic.Uint64
	flushes                                atomic.Uint64
	slowConsumer, deadline, badFrames      atomic.Uint64
	deferred, handshakes                   atomic.Uint64
	requests                               atomic.Uint64 // onRequest calls, for the no-spin test
}

// New checks cfg and returns a Server that is not listening yet. It starts
// no goroutines and touches no process-wide state.
func New(cfg Config, h Handler) (*Server, error) {
	cfg.setDefaults()
	err := cfg.validate()
	if h == nil {
		err = errors.Join(err, fmt.Errorf("%w: Handler is nil", ErrInvalidConfig))
	}
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		handler: h,
		log:     cfg.Logger,
		drained: make(chan struct{}, 1),
		done:    make(chan struct{}),
		quit:    make(chan struct{}),

		serveDone: make(chan struct{}),
		wsDone:    make(chan struct{}),
		upgrader:  newUpgrader(cfg.WSPath),
	}
	s.wheel, err = wheel.New(wheel.Config{Tick: cfg.Tick, Now: cfg.now, Expire: func(e *wheel.Entry) { e.Value.(*Conn).expire(e) }})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	for i := range s.conns {
		s.conns[i].m = make(map[uint64]*Conn)
	}
	return s, nil
}

// netpollOnce guards the one process-wide netpoll setting we make: netpoll
// keeps its buffer sizes in package variables.
var (
	netpollOnce sync.Once
	netpollBuf  int
)

func configureNetpoll(bufSize int, log *slog.Logger) error {
	var err error
	netpollOnce.Do(func() {
		netpollBuf = bufSize
		// LinkBufferCap is the minimum node size: without lowering it too, a
		// small BufferSize still allocates 4 KiB input nodes per connection.
		netpoll.LinkBufferCap = bufSize
		// AlwaysNoCopyRead stays off: read.go relies on ReadBinary copying.
		err = netpoll.Configure(netpoll.Config{BufferSize: bufSize, LoadBalance: netpoll.RoundRobin})
	})
	if err == nil && netpollBuf != bufSize {
		log.Warn("netpoll buffer size is process-wide and already set; ignoring this server's",
			"in_use", netpollBuf, "configured", bufSize)
	}
	return err
}

// Start binds the listener (Addr is valid when it returns) and starts
// serving. It returns ErrStarted if called twice and ErrShutdown after
// Shutdown.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown.Load() {
		return ErrShutdown
	}
	if s.mu.started {
		return ErrStarted
	}
	if err := configureNetpoll(s.cfg.BufferSize, s.log); err != nil {
		return fmt.Errorf("gateway: configure netpoll: %w", err)
	}
	pool, err := ants.NewPoolWithFuncGeneric(s.cfg.Workers, s.runDrain,
		ants.WithNonblocking(true),
		ants.WithPanicHandler(func(v any) { s.log.Error("panic in write drain", "panic", v) }),
		ants.WithLogger(antsLogger{s.log}),
	)
	if err != nil {
		return fmt.Errorf("gateway: drain pool: %w", err)
	}
	ln, err := netpoll.CreateListener("tcp", s.cfg.Addr)
	if err != nil {
		pool.Release()
		return fmt.Errorf("gateway: listen %s: %w", s.cfg.Addr, err)
	}
	evl, err := netpoll.NewEventLoop(s.onRequest,
		netpoll.WithOnPrepare(s.onPrepare),
		netpoll.WithOnConnect(s.onConnect),
		netpoll.WithReadTimeout(s.cfg.ReadTimeout),
		netpoll.WithWriteTimeout(s.cfg.WriteTimeout),
	)
	if err != nil {
		pool.Release()
		_ = ln.Close()
		return fmt.Errorf("gateway: event loop: %w", err)
	}
	var wsLn netpoll.Listener
	var wsEvl netpoll.EventLoop
	var tlsLn, tlsWSLn net.Listener
	fail := func(err error) error {
		pool.Release()
		for _, l := range []interface{ Close() error }{ln, wsLn, tlsLn, tlsWSLn} {
			if l != nil {
				_ = l.Close()
			}
		}
		return err
	}
	if s.cfg.WSAddr != "" {
		if wsLn, err = netpoll.CreateListener("tcp", s.cfg.WSAddr); err != nil {
			wsLn = nil
			return fail(fmt.Errorf("gateway: listen websocket %s: %w", s.cfg.WSAddr, err))
		}
		wsEvl, err = netpoll.NewEventLoop(s.onRequest,
			netpoll.WithOnPrepare(s.onPrepare),
			netpoll.WithOnConnect(s.onConnectWS),
			netpoll.WithReadTimeout(s.cfg.ReadTimeout),
			netpoll.WithWriteTimeout(s.cfg.WriteTimeout),
		)
		if err != nil {
			return fail(fmt.Errorf("gateway: websocket event loop: %w", err))
		}
	}
	if s.cfg.TLSAddr != "" {
		if tlsLn, err = net.Listen("tcp", s.cfg.TLSAddr); err != nil {
			tlsLn = nil
			return fail(fmt.Errorf("gateway: listen tls %s: %w", s.cfg.TLSAddr, err))
		}
	}
	if s.cfg.TLSWSAddr != "" {
		if tlsWSLn, err = net.Listen("tcp", s.cfg.TLSWSAddr); err != nil {
			tlsWSLn = nil
			return fail(fmt.Errorf("gateway: listen tls websocket %s: %w", s.cfg.TLSWSAddr, err))
		}
	}
	s.pool.Store(pool)
	s.mu.ln, s.mu.evl, s.mu.started = ln, evl, true
	s.mu.wsLn, s.mu.wsEvl, s.mu.tlsLn, s.mu.tlsWSLn = wsLn, wsEvl, tlsLn, tlsWSLn
	s.wg.Add(2)
	go s.serve(evl, ln, s.serveDone)
	go s.tick()
	s.log.Info("gateway listening", "addr", ln.Addr().String())
	if wsEvl != nil {
		s.wg.Add(1)
		go s.serve(wsEvl, wsLn, s.wsDone)
		s.log.Info("gateway websocket listening", "addr", wsLn.Addr().String(), "path", s.cfg.WSPath)
	} else {
		close(s.wsDone)
	}
	for _, l := range []struct {
		ln   net.Listener
		kind connKind
	}{{tlsLn, kindTLS}, {tlsWSLn, kindTLSWS}} {
		if l.ln == nil {
			continue
		}
		s.wg.Add(1)
		go s.serveStd(l.ln, l.kind)
		s.log.Info("gateway tls listening", "addr", l.ln.Addr().String(), "transport", l.kind.String())
	}
	return nil
}

func (s *Server) serve(evl netpoll.EventLoop, ln netpoll.Listener, done chan struct{}) {
	defer s.wg.Done()
	defer close(done)
	if err := evl.Serve(ln); err != nil && !s.shutdown.Load() {
		s.log.Error("gateway event loop stopped", "err", err)
	}
}

// tick advances the deadline wheel and retries parked drains, every Tick.
func (s *Server) tick() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
			s.wheel.Advance(s.wheel.Now())
			s.retryBacklog()
		}
	}
}

// Addr is the bound listen address, or nil before Start.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.ln == nil {
		return nil
	}
	return s.mu.ln.Addr()
}

// Addrs are the bound addresses of every listener; a listener that is not
// configured (or not started yet) is nil.
type Addrs struct {
	TCP   net.Addr // Config.Addr: msync frames on netpoll
	WS    net.Addr // Config.WSAddr: WebSocket on netpoll
	TLS   net.Addr // Config.TLSAddr: msync frames over TLS
	TLSWS net.Addr // Config.TLSWSAddr: WebSocket over TLS
}

// Addrs returns the bound addresses of all listeners.
func (s *Server) Addrs() Addrs {
	s.mu.Lock()
	defer s.mu.Unlock()
	var a Addrs
	if s.mu.ln != nil {
		a.TCP = s.mu.ln.Addr()
	}
	if s.mu.wsLn != nil {
		a.WS = s.mu.wsLn.Addr()
	}
	if s.mu.tlsLn != nil {
		a.TLS = s.mu.tlsLn.Addr()
	}
	if s.mu.tlsWSLn != nil {
		a.TLSWS = s.mu.tlsWSLn.Addr()
	}
	return a
}

// Len is the number of open connections.
func (s *Server) Len() int { return int(s.open.Load()) }

// Stats returns the counters; each is read atomically, the set is not a
// snapshot.
func (s *Server) Stats() Stats {
	st := &s.stats
	return Stats{
		Open:               s.open.Load(),
		Accepted:           st.accepted.Load(),
		Closed:             st.closed.Load(),
		Rejected:           st.rejected.Load(),
		RefusedConns:       st.refusedConns.Load(),
		RefusedConnsPerIP:  st.refusedPerIP.Load(),
		FramesIn:           st.framesIn.Load(),
		BytesIn:            st.bytesIn.Load(),
		FramesOut:          st.framesOut.Load(),
		BytesOut:           st.bytesOut.Load(),
		Flushes:            st.flushes.Load(),
		SlowConsumerCloses: st.slowConsumer.Load(),
		DeadlineCloses:     st.deadline.Load(),
		BadFrames:          st.badFrames.Load(),
		DrainsDeferred:     st.deferred.Load(),
		HandshakesFailed:   st.handshakes.Load(),
	}
}

// onPrepare refuses connections once Shutdown began, before netpoll
// registers them with a poller.
func (s *Server) onPrepare(nc netpoll.Connection) context.Context {
	if s.shutdown.Load() {
		s.stats.rejected.Add(1)
		_ = nc.Close()
	}
	return context.Background()
}

// onConnect opens the connection: registry, auth deadline, OnOpen. netpoll
// runs it before any OnRequest and holds back close callbacks until it
// returns, which gives Handler its OnOpen-first, OnClose-last order.
func (s *Server) onConnect(ctx context.Context, nc netpoll.Connection) context.Context {
	return s.openNetpoll(ctx, nc, kindTCP)
}

// onConnectWS is onConnect for the WebSocket listener: the connection is
// registered (Shutdown and the auth deadline see it) but OnOpen waits for
// the upgrade, in onRequestWS.
func (s *Server) onConnectWS(ctx context.Context, nc netpoll.Connection) context.Context {
	return s.openNetpoll(ctx, nc, kindWS)
}

func (s *Server) openNetpoll(ctx context.Context, nc netpoll.Connection, kind connKind) context.Context {
	c := s.newConn(nc, kind)
	c.ctx = connCtx{c: c}
	if code := s.register(c); code != 0 {
		if code != protocol.CodeServerShutdown && kind == kindTCP {
			// A plain TCP peer can read why; nothing is queued yet, so
			// write the frame straight to the socket before closing.
			_, _ = nc.Write(protocol.ErrorFrame(0, code, refusal(code)))
		}
		_ = nc.Close()
		return ctx
	}
	_ = nc.AddCloseCallback(c.onClosed)
	if kind == kindTCP {
		c.markOpen()
	} else {
		c.SetDeadline(s.cfg.AuthTimeout, protocol.CodeAuthTimeout)
	}
	return &c.ctx
}

// newConn returns an unregistered connection in state new. IDs come from one
// counter for all listeners, so they are unique per Server.
func (s *Server) newConn(sock socket, kind connKind) *Conn {
	c := &Conn{srv: s, sock: sock, id: s.nextID.Add(1), kind: kind}
	s.wheel.Init(&c.live, c)
	s.wheel.Init(&c.ack, c)
	c.code.Store(uint32(protocol.CodeAuthTimeout))
	return c
}

// register adds c unless Shutdown began or a connection cap is reached; it
// returns 0, or the code the refusal is reported with (CodeServerShutdown
// for Shutdown). Checking the flag under the shard lock that Shutdown's
// sweep also takes means no connection slips past it.
func (s *Server) register(c *Conn) protocol.Code {
	if s.cfg.MaxConns > 0 && s.open.Load() >= int64(s.cfg.MaxConns) {
		s.stats.refusedConns.Add(1)
		return protocol.CodeTooManyConns
	}
	if s.cfg.MaxConnsPerIP > 0 && !s.perIP.add(c.sock.RemoteAddr(), s.cfg.MaxConnsPerIP) {
		s.stats.refusedPerIP.Add(1)
		return protocol.CodeTooManyConnsPerIP
	}
	sh := &s.conns[c.id%connShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s.shutdown.Load() {
		if s.cfg.MaxConnsPerIP > 0 {
			s.perIP.remove(c.sock.RemoteAddr())
		}
		s.stats.rejected.Add(1)
		return protocol.CodeServerShutdown
	}
	sh.m[c.id] = c
	s.open.Add(1)
	return 0
}

func (s *Server) unregister(c *Conn) {
	sh := &s.conns[c.id%connShards]
	sh.mu.Lock()
	delete(sh.m, c.id)
	sh.mu.Unlock()
	if s.cfg.MaxConnsPerIP > 0 {
		s.perIP.remove(c.sock.RemoteAddr())
	}
}

// forEachConn calls f for every registered connection, outside the locks.
func (s *Server) forEachConn(f func(*Conn)) {
	var batch []*Conn
	for i := range s.conns {
		sh := &s.conns[i]
		sh.mu.Lock()
		batch = batch[:0]
		for _, c := range sh.m {
			batch = append(batch, c)
		}
		sh.mu.Unlock()
		for _, c := range batch {
			f(c)
		}
	}
}

// schedule hands c, which has data or a close pending and no drain, to the
// pool. When all Workers are busy c waits on the backlog: a worker that
// finishes takes it (runDrain), and the tick retries as a backstop. Its
// queue stays bounded by WriteQueueBytes meanwhile, so saturation shows up
// as latency and, for connections that fall too far behind, slow-consumer
// closes — never as unbounded goroutines or memory, nor as a blocked Write.
func (s *Server) schedule(c *Conn) { s.trySchedule(c) }

// trySchedule reports false if c was parked on the backlog.
func (s *Server) trySchedule(c *Conn) bool {
	err := s.pool.Load().Invoke(c)
	switch {
	case err == nil:
	case errors.Is(err, ants.ErrPoolOverload):
		s.stats.deferred.Add(1)
		s.backlog.Lock()
		s.backlog.q = append(s.backlog.q, c)
		s.backlog.Unlock()
		return false
	default: // pool released: only after Shutdown gave up on its connections
		c.abort(fmt.Errorf("%w: %w", ErrShutdown, err))
	}
	return true
}

// runDrain is the pool's task: drain c, then any parked connections.
func (s *Server) runDrain(c *Conn) {
	for c != nil {
		c.drain()
		c = s.popBacklog()
	}
}

func (s *Server) popBacklog() *Conn {
	s.backlog.Lock()
	defer s.backlog.Unlock()
	if len(s.backlog.q) == 0 {
		return nil
	}
	c := s.backlog.q[0]
	s.backlog.q[0] = nil
	s.backlog.q = s.backlog.q[1:]
	if len(s.backlog.q) == 0 {
		s.backlog.q = nil
	}
	return c
}

func (s *Server) retryBacklog() {
	for {
		c := s.popBacklog()
		if c == nil || !s.trySchedule(c) {
			return // empty, or still saturated: try again next tick
		}
	}
}

// Shutdown stops accepting, sends ERROR protocol.CodeServerShutdown to
// every open connection and closes it (OnClose gets ErrShutdown), waits for
// the flushes, then stops the event loop, the tick goroutine and the drain
// pool. When ctx ends first, the remaining connections are dropped without
// their flush and Shutdown returns ctx's error after waiting at most
// WriteTimeout more for its goroutines. Later calls wait for the first.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.shutdown.CompareAndSwap(false, true) {
		select {
		case <-s.done:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("gateway: shutdown: %w", ctx.Err())
		}
	}
	defer close(s.done)
	s.mu.Lock()
	started, evl, wsEvl := s.mu.started, s.mu.evl, s.mu.wsEvl
	stdLns := []net.Listener{s.mu.tlsLn, s.mu.tlsWSLn}
	s.mu.Unlock()
	if !started {
		return nil
	}
	s.log.Info("gateway shutting down", "open", s.Len())
	// TLS accept loops stop now; a connection they accepted meanwhile is
	// refused by register, which checks the shutdown flag.
	for _, ln := range stdLns {
		if ln != nil {
			_ = ln.Close()
		}
	}

	// Every conn gets its own copy: Write and Close pass ownership.
	msg := protocol.ErrorFrame(0, protocol.CodeServerShutdown, "server shutting down")
	s.forEachConn(func(c *Conn) { c.Close(append([]byte(nil), msg...), ErrShutdown) })

	var errs []error
	for s.open.Load() > 0 && ctx.Err() == nil {
		select {
		case <-s.drained:
		case <-ctx.Done():
		}
	}
	grace := ctx
	if ctx.Err() != nil {
		errs = append(errs, fmt.Errorf("gateway: shutdown: %w", ctx.Err()))
		s.log.Warn("gateway shutdown timed out; dropping connections", "open", s.Len())
		s.forEachConn(func(c *Conn) { c.abort(ErrShutdown) })
		var cancel context.CancelFunc
		grace, cancel = context.WithTimeout(context.Background(), s.cfg.WriteTimeout)
		defer cancel()
		for s.open.Load() > 0 && grace.Err() == nil {
			select {
			case <-s.drained:
			case <-grace.Done():
			}
		}
	}
	// Connections are gone; this closes the listener and returns Serve.
	if err := s.stopEventLoop(grace, evl, s.serveDone); err != nil {
		errs = append(errs, fmt.Errorf("gateway: event loop shutdown: %w", err))
	}
	if wsEvl != nil {
		if err := s.stopEventLoop(grace, wsEvl, s.wsDone); err != nil {
			errs = append(errs, fmt.Errorf("gateway: websocket event loop shutdown: %w", err))
		}
	}
	close(s.quit)
	s.wg.Wait()
	if err := s.pool.Load().ReleaseContext(grace); err != nil {
		errs = append(errs, fmt.Errorf("gateway: drain pool: %w", err))
	}
	return errors.Join(errs...)
}

// stopEventLoop shuts evl down and waits for Serve to return. netpoll's
// Shutdown is a silent no-op if Serve has not yet registered its listener
// (Serve runs on its own goroutine, so a Shutdown right after Start can
// beat it), hence the retry until Serve is seen returning.
func (s *Server) stopEventLoop(ctx context.Context, evl netpoll.EventLoop, serveDone chan struct{}) error {
	retry := time.NewTicker(5 * time.Millisecond)
	defer retry.Stop()
	var err error
	for {
		// Even with ctx done, Shutdown signals Serve to quit before it waits
		// on connections (none are left by now), so this loop ends as soon
		// as Serve has registered.
		if e := evl.Shutdown(ctx); e != nil {
			err = e
		}
		select {
		case <-serveDone:
			return err
		case <-retry.C:
		}
	}
}

// antsLogger routes ants' messages (panics in drains) to slog.
type antsLogger struct{ log *slog.Logger }

func (l antsLogger) Printf(format string, args ...any) {
	l.log.Error("ants: " + fmt.Sprintf(format, args...))
}
