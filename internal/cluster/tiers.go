package cluster

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/msync/msync/comet"
	"github.com/msync/msync/gateway"
	"github.com/msync/msync/job"
	"github.com/msync/msync/logic"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/auth"
	"github.com/msync/msync/pkg/biz"
	"github.com/msync/msync/pkg/config"
	"github.com/msync/msync/pkg/queue"
	"github.com/msync/msync/pkg/rpc"
	"github.com/msync/msync/pkg/store"
)

// TierConfig is what one cluster-mode process needs beyond the file.
type TierConfig struct {
	// File is the validated configuration (required).
	File *config.File
	// DataDir overrides File.Store.Dir when set (Pebble store only).
	DataDir string
	// Logger; nil discards.
	Logger *slog.Logger
	// StartupWait is how long a tier waits, retrying with backoff, for a
	// store or broker that is not reachable at start (wait.go); zero tries
	// once. cmd/msync sets 5 minutes.
	StartupWait time.Duration
	// Context, when set, ends that wait early (the process got a signal).
	Context context.Context
}

func (c TierConfig) check() (*slog.Logger, error) {
	if c.File == nil {
		return nil, errors.New("cluster: TierConfig.File is required")
	}
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler), nil
	}
	return c.Logger, nil
}

func newRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// undoOnError shuts a partly started node down and returns nil in its place
// when its Start function fails: deferred with the function's named results.
func undoOnError[N interface{ Shutdown(context.Context) error }](n *N, err *error) {
	if *err == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = (*n).Shutdown(ctx)
	var zero N
	*n = zero
}

// stack runs shutdown steps in reverse order of creation, once.
type stack struct {
	steps []func(ctx context.Context) error
	once  sync.Once
	err   error
}

func (s *stack) push(f func(ctx context.Context) error) { s.steps = append(s.steps, f) }

func (s *stack) shutdown(ctx context.Context) error {
	s.once.Do(func() {
		var errs []error
		for i := len(s.steps) - 1; i >= 0; i-- {
			if err := s.steps[i](ctx); err != nil {
				errs = append(errs, err)
			}
		}
		s.err = errors.Join(errs...)
	})
	return s.err
}

// startOps serves /healthz and /metrics on addr (a standalone comet or job;
// logic serves them on its business HTTP address).
func startOps(addr string, g prometheus.Gatherer, st *stack, log *slog.Logger, checks ...logic.HealthCheck) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cluster: ops http: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { serveHealth(w, r, checks) })
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }() // ended by the stack step below
	st.push(func(ctx context.Context) error {
		err := srv.Shutdown(ctx)
		if err != nil {
			_ = srv.Close()
		}
		<-done
		return err
	})
	log.Info("ops http listening", "addr", ln.Addr().String())
	return ln.Addr(), nil
}

// startTierPprof serves pprof when the file sets `pprof` (as `msync all`
// does), closed with the rest of the tier.
func startTierPprof(addr string, st *stack, log *slog.Logger) error {
	if addr == "" {
		return nil
	}
	srv, _, err := servePprof(addr, log)
	if err != nil {
		return err
	}
	st.push(func(context.Context) error { return srv.Close() })
	return nil
}

// advertise returns the address job should dial for a comet listening on
// ln: the configured one, else ln with an unspecified host (":3102",
// "0.0.0.0:3102") replaced by this machine's first non-loopback IP, falling
// back to loopback on a machine without one.
func advertise(configured string, ln net.Addr) string {
	if configured != "" {
		return configured
	}
	tcp, ok := ln.(*net.TCPAddr)
	if !ok {
		return ln.String()
	}
	if !tcp.IP.IsUnspecified() {
		return tcp.String()
	}
	ip := net.IPv4(127, 0, 0, 1)
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
				ip = n.IP
				break
			}
		}
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(tcp.Port))
}

// ---- comet ----

// CometNode is a standalone comet process: the connection tier serving its
// push API over gRPC and calling logic over gRPC.
type CometNode struct {
	Comet    *comet.Comet
	RPC      *rpc.Server
	Registry *prometheus.Registry
	// Advertised is the gRPC address registered for job.
	Advertised string
	// OpsAddr is the /healthz+/metrics address (nil without comet.http_addr).
	OpsAddr net.Addr

	st stack
}

// StartComet starts a comet from f.Comet: it binds the gRPC listener first
// (so the advertised address is final), dials logic, builds the comet
// (which registers itself through Logic.Renew at once), serves gRPC and
// opens the device listener.
func StartComet(cfg TierConfig) (n *CometNode, err error) {
	log, err := cfg.check()
	if err != nil {
		return nil, err
	}
	f := cfg.File
	if len(f.Comet.LogicAddrs) == 0 {
		return nil, fmt.Errorf("%w: comet.logic_addrs: a standalone comet needs the logic gRPC addresses", ErrLayout)
	}
	n = &CometNode{Registry: newRegistry()}
	defer undoOnError(&n, &err)
	tl, err := tierTLS(f, f.Comet.ID, rpc.RoleComet)
	if err != nil {
		return n, err
	}
	if tl != nil && tl.Identity().Comet != f.Comet.ID {
		return n, fmt.Errorf("%w: rpc_tls: the certificate is comet %q's, but comet.id is %q", ErrLayout, tl.Identity().Comet, f.Comet.ID)
	}
	if n.RPC, err = rpc.NewServer(rpc.ServerConfig{Addr: f.Comet.GRPCAddr, Setting: "comet.grpc_addr", TLS: tl,
		Logger: log.With("tier", "comet-grpc")}); err != nil {
		return n, err
	}
	n.st.push(n.RPC.Shutdown)
	if err = n.RPC.Listen(); err != nil {
		return n, err
	}
	n.Advertised = advertise(f.Comet.GRPCAdvertise, n.RPC.Addr())
	conn, err := rpc.Dial(f.Comet.LogicAddrs, rpc.DialConfig{TLS: tl, ServerRole: rpc.RoleLogic})
	if err != nil {
		return n, err
	}
	n.st.push(func(context.Context) error { return conn.Close() })
	ccfg, err := CometConfig(f, log)
	if err != nil {
		return n, err
	}
	ccfg.Logic = pb.NewLogicClient(conn)
	ccfg.GRPCAddr = n.Advertised
	ccfg.RenewInterval = time.Duration(f.Comet.RenewInterval)
	ccfg.Registerer = n.Registry
	if n.Comet, err = comet.New(ccfg); err != nil {
		return n, err
	}
	// Shut down before the gRPC server and the logic connection (pushed
	// earlier): closing sessions still tells logic (Disconnect).
	n.st.push(n.Comet.Shutdown)
	n.RPC.Register(&pb.Comet_ServiceDesc, n.Comet)
	if err = n.RPC.Start(); err != nil {
		return n, err
	}
	if err = n.Comet.Start(); err != nil {
		return n, err
	}
	if f.Comet.HTTPAddr != "" {
		if n.OpsAddr, err = startOps(f.Comet.HTTPAddr, n.Registry, &n.st, log); err != nil {
			return n, err
		}
	}
	if err = startTierPprof(f.Pprof, &n.st, log); err != nil {
		return n, err
	}
	log.Info("comet registered for discovery", "comet", n.Comet.ID(), "grpc", n.Advertised, "logic", f.Comet.LogicAddrs)
	return n, nil
}

// Shutdown closes the device sessions (they reconnect elsewhere and
// resync), then the gRPC server and the logic connection. Idempotent.
func (n *CometNode) Shutdown(ctx context.Context) error { return n.st.shutdown(ctx) }

// CometConfig maps the file's comet section onto comet.Config, listeners
// (TCP, WebSocket, TLS) included; Logic, Registerer and the cluster fields
// are the caller's. It fails when the TLS certificate cannot be loaded.
func CometConfig(f *config.File, log *slog.Logger) (comet.Config, error) {
	c := comet.Config{
		ID: f.Comet.ID,
		Gateway: gateway.Config{
			Addr:            f.Comet.Addr,
			AuthTimeout:     time.Duration(f.Comet.AuthTimeout),
			WriteQueueBytes: f.Comet.WriteQueueBytes,
			MaxConns:        f.Comet.Limits.MaxConns,
			MaxConnsPerIP:   f.Comet.Limits.MaxConnsPerIP,
			Logger:          log.With("tier", "gateway"),
		},
		Limits: comet.Limits{
			FrameRate: f.Comet.Limits.FrameRate, FrameBurst: f.Comet.Limits.FrameBurst,
			ByteRate: f.Comet.Limits.ByteRate, ByteBurst: f.Comet.Limits.ByteBurst,
			AuthRatePerIP: f.Comet.Limits.AuthRatePerIP, AuthBurstPerIP: f.Comet.Limits.AuthBurstPerIP,
			SyncReqRate: f.Comet.Limits.SyncReqRate, SyncReqBurst: f.Comet.Limits.SyncReqBurst,
		},
		Buckets:           f.Comet.Buckets,
		HeartbeatInterval: time.Duration(f.Comet.Heartbeat),
		HeartbeatMin:      time.Duration(f.Comet.HeartbeatMin),
		HeartbeatMax:      time.Duration(f.Comet.HeartbeatMax),
		MaxRooms:          f.Comet.MaxRooms,
		ClientRooms:       f.Comet.ClientRooms,
		PageLimit:         uint32(f.Comet.PageLimit),
		AckTimeout:        time.Duration(f.Comet.AckTimeout),
		Logger:            log.With("tier", "comet"),
		Upstreams:         Upstreams(f),
		MaxRequests:       f.Comet.MaxRequests,
		Compression: comet.Compression{Disabled: f.Comet.Compression.Disabled, Algorithms: f.Comet.Compression.Algorithms,
			MinBytes: f.Comet.Compression.MinBytes, Level: f.Comet.Compression.Level},
	}
	return c, CometTransports(&c.Gateway, f.Comet)
}

// LogicConfig maps the file onto logic.Config; Store, Queue, Directory,
// metrics and mounts are the caller's.
func LogicConfig(f *config.File, bizs *biz.Registry, tokens *auth.Tokens, log *slog.Logger) logic.Config {
	limits := make(map[string]logic.RateLimit)
	for _, k := range f.APIKeys {
		if k.PublishesPerS > 0 || k.BytesPerS > 0 {
			limits[k.Key] = logic.RateLimit{PublishesPerSecond: k.PublishesPerS, BytesPerSecond: k.BytesPerS}
		}
	}
	return logic.Config{
		RateLimits:     limits,
		PublicOps:      f.Logic.PublicOps,
		HTTPAddr:       f.Logic.HTTPAddr,
		Bizs:           bizs,
		Tokens:         tokens,
		APIKeys:        auth.NewAPIKeys(f.APIKeys),
		DeviceBinding:  f.Auth.DeviceBinding,
		MaxBatch:       f.Logic.MaxBatch,
		MaxPushPayload: f.Logic.MaxPushPayload,
		TicketKey:      TicketKey(f.Secret),
		Logger:         log.With("tier", "logic"),
	}
}

// TicketKey derives logic's session-ticket key from the config's secret,
// which every logic process of a cluster shares: a ticket one signed
// verifies at the others. A separate derivation, so the key is never the
// token secret itself.
func TicketKey(secret string) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("msync session ticket key v1"))
	return m.Sum(nil)
}

// ---- logic (+ embedded job) ----

// LogicNode is a logic process: the business HTTP API and the Logic gRPC
// service comets call, plus job when f.Job.Embedded (the mixed local
// cluster: Pebble store, in-process queue and directory, comets in other
// processes).
type LogicNode struct {
	Logic    *logic.Logic
	RPC      *rpc.Server
	Job      *job.Job    // nil unless job.embedded
	Comets   *rpc.Comets // the embedded job's comet discovery
	Registry *prometheus.Registry

	st stack
}

// StartLogic starts logic from the file, with job inside when
// f.Job.Embedded.
func StartLogic(cfg TierConfig) (n *LogicNode, err error) {
	log, err := cfg.check()
	if err != nil {
		return nil, err
	}
	f := cfg.File
	bizs, err := biz.NewRegistry(f.Bizs)
	if err != nil {
		return nil, err
	}
	tokens, err := f.Tokens()
	if err != nil {
		return nil, err
	}
	n = &LogicNode{Registry: newRegistry()}
	defer undoOnError(&n, &err)
	if !f.Job.Embedded && !sharedDirectory(f) {
		return n, fmt.Errorf("%w: store.backend %s keeps the online directory in this process, so job must run here too (job.embedded: true)", ErrLayout, f.Store.Backend)
	}
	var st store.Store
	var closeStore closer
	if err = waitFor(cfg, log, storeDep(f), func() (err error) {
		st, closeStore, err = openStore(f, cfg.DataDir, log.With("tier", "store"))
		return err
	}); err != nil {
		return n, err
	}
	n.st.push(closeStore)
	dir, closeDir, err := waitDirectory(cfg, f, log)
	if err != nil {
		return n, err
	}
	n.st.push(closeDir)
	prod, cons, closeQueue, err := openQueue(f, true, f.Job.Embedded, log.With("tier", "queue"))
	if err != nil {
		return n, err
	}
	n.st.push(closeQueue)

	lcfg := LogicConfig(f, bizs, tokens, log)
	lcfg.Store, lcfg.Queue, lcfg.Directory = st, prod, dir
	lcfg.Registerer, lcfg.Gatherer = n.Registry, n.Registry
	lcfg.Health = healthChecks(f, st, dir)
	if n.Logic, err = logic.New(lcfg); err != nil {
		return n, err
	}
	roles := []string{rpc.RoleLogic}
	if f.Job.Embedded {
		roles = append(roles, rpc.RoleJob)
	}
	tl, err := tierTLS(f, "logic", roles...)
	if err != nil {
		return n, err
	}
	if f.Job.Embedded {
		if err = n.startJob(cfg, cons, dir, tl, log); err != nil {
			return n, err
		}
	}
	if n.RPC, err = rpc.NewServer(rpc.ServerConfig{Addr: f.Logic.GRPCAddr, Setting: "logic.grpc_addr", TLS: tl,
		Logger: log.With("tier", "logic-grpc")}); err != nil {
		return n, err
	}
	n.RPC.Register(&pb.Logic_ServiceDesc, n.Logic)
	n.st.push(n.RPC.Shutdown)
	if err = n.RPC.Start(); err != nil {
		return n, err
	}
	// Last pushed, first stopped: no new publishes, then the comets' gRPC
	// calls drain, then job, queue, directory, store.
	n.st.push(n.Logic.Shutdown)
	if err = n.Logic.Start(); err != nil {
		return n, err
	}
	if err = startTierPprof(f.Pprof, &n.st, log); err != nil {
		return n, err
	}
	return n, nil
}

func (n *LogicNode) startJob(cfg TierConfig, cons queue.Consumer, dir dirBackend, tl *rpc.TLS, log *slog.Logger) (err error) {
	n.Job, n.Comets, err = startJob(cfg, cons, dir, tl, n.Registry, &n.st, log)
	return err
}

// tierTLS loads the rpc_tls material of the process named name (nil when
// rpc_tls is off) and checks that its certificate names every role the
// process plays, so a wrong file fails at start rather than at each call.
func tierTLS(f *config.File, name string, roles ...string) (*rpc.TLS, error) {
	if !f.RPCTLS.Enabled() {
		return nil, nil
	}
	tl, err := rpc.LoadTLS(f.RPCTLS.Files(name))
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	for _, r := range roles {
		if !tl.Identity().Has(r) {
			return nil, fmt.Errorf("%w: rpc_tls: the certificate names %v; this process needs role %s", ErrLayout, tl.Identity(), r)
		}
	}
	return tl, nil
}

// startJob starts comet discovery over dir's registry and a job consuming
// cons; both are pushed on st (discovery first, so job stops before it).
func startJob(cfg TierConfig, cons queue.Consumer, dir dirBackend, tl *rpc.TLS, reg prometheus.Registerer, st *stack, log *slog.Logger) (*job.Job, *rpc.Comets, error) {
	f := cfg.File
	comets, err := rpc.NewComets(rpc.CometsConfig{
		Registry: dir,
		Dial:     rpc.DialConfig{TLS: tl},
		Refresh:  time.Duration(f.Job.Refresh),
		Logger:   log.With("tier", "discovery"),
	})
	if err != nil {
		return nil, nil, err
	}
	st.push(comets.Shutdown)
	if err := comets.Start(); err != nil {
		return nil, comets, err
	}
	jb, err := job.New(job.Config{
		Consumer:   cons,
		Directory:  dir,
		Comets:     comets,
		Workers:    f.Job.Workers,
		Logger:     log.With("tier", "job"),
		Registerer: reg,
	})
	if err != nil {
		return nil, comets, err
	}
	st.push(jb.Shutdown)
	// A broker that is down, or a topic no publish has created yet, makes
	// the consumer's start fail: wait for it like for the store.
	if err := waitFor(cfg, log, queueDep(f), jb.Start); err != nil {
		return jb, comets, err
	}
	return jb, comets, nil
}

// Shutdown stops publishing, then the gRPC service, job, queue, directory
// and store. Idempotent.
func (n *LogicNode) Shutdown(ctx context.Context) error { return n.st.shutdown(ctx) }

// ---- job ----

// JobNode is a standalone job process: it consumes the shared queue, reads
// the shared directory and pushes to the comets it discovers there.
type JobNode struct {
	Job      *job.Job
	Comets   *rpc.Comets
	Registry *prometheus.Registry
	// OpsAddr is the /healthz+/metrics address (nil without job.http_addr).
	OpsAddr net.Addr

	st stack
}

// StartJob starts a standalone job. It needs a broker queue and a shared
// directory: with the embedded backends (Pebble, memory queue) job runs
// inside logic instead (job.embedded).
func StartJob(cfg TierConfig) (n *JobNode, err error) {
	log, err := cfg.check()
	if err != nil {
		return nil, err
	}
	f := cfg.File
	if f.Job.Embedded {
		return nil, fmt.Errorf("%w: job.embedded is true: job runs inside `msync logic`, not on its own", ErrLayout)
	}
	if !sharedDirectory(f) {
		return nil, fmt.Errorf("%w: store.backend %s keeps the online directory inside the logic process: run job there (job.embedded: true)", ErrLayout, f.Store.Backend)
	}
	n = &JobNode{Registry: newRegistry()}
	defer undoOnError(&n, &err)
	dir, closeDir, err := waitDirectory(cfg, f, log)
	if err != nil {
		return n, err
	}
	n.st.push(closeDir)
	_, cons, closeQueue, err := openQueue(f, false, true, log.With("tier", "queue"))
	if err != nil {
		return n, err
	}
	n.st.push(closeQueue)
	tl, err := tierTLS(f, "job", rpc.RoleJob)
	if err != nil {
		return n, err
	}
	if n.Job, n.Comets, err = startJob(cfg, cons, dir, tl, n.Registry, &n.st, log); err != nil {
		return n, err
	}
	if f.Job.HTTPAddr != "" {
		if n.OpsAddr, err = startOps(f.Job.HTTPAddr, n.Registry, &n.st, log, healthChecks(f, nil, dir)...); err != nil {
			return n, err
		}
	}
	if err = startTierPprof(f.Pprof, &n.st, log); err != nil {
		return n, err
	}
	return n, nil
}

// Shutdown stops consuming (in-flight pushes finish), closes the comet
// connections, the queue and the directory. Idempotent.
func (n *JobNode) Shutdown(ctx context.Context) error { return n.st.shutdown(ctx) }
