package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// DefaultMaxMsgBytes bounds one gRPC message either way. A Sync reply is
// bounded by logic's page byte cap (256 KiB per channel, at most 256
// channels), a Push request by job's batch: 16 MiB leaves room for both
// while keeping a bad peer from making us allocate without limit.
const DefaultMaxMsgBytes = 16 << 20

// maxConcurrentStreams bounds the calls one peer connection may have in
// flight, so a single peer cannot park unbounded handler goroutines.
const maxConcurrentStreams = 1024

// ServerConfig configures a Server. Zero values take the defaults noted.
type ServerConfig struct {
	// Addr is the listen address, e.g. "127.0.0.1:3112". Required. Without
	// TLS only a loopback address is accepted (Listen refuses the rest).
	Addr string
	// Setting names Addr in the config file ("logic.grpc_addr"), for the
	// error that refuses a non-loopback address without TLS.
	Setting string
	// TLS turns on mutual TLS: peers must present a certificate signed by
	// its CA, and each call is allowed only to the role the method's entry
	// in the role table names (comets call Logic, job calls Comet). Nil:
	// plaintext, loopback only, every local process trusted.
	TLS *TLS
	// MaxMsgBytes bounds received and sent messages. Zero means
	// DefaultMaxMsgBytes.
	MaxMsgBytes int
	// KeepaliveTime: the server pings an idle client after this long. Zero
	// means 30s. Clients may ping no more often than every 10s (Dial's
	// default is 20s); more frequent pings are refused with GOAWAY.
	KeepaliveTime time.Duration
	// KeepaliveTimeout: a ping unanswered this long closes the connection.
	// Zero means 10s.
	KeepaliveTimeout time.Duration
	// Logger receives logs (panics, serve errors). Nil discards.
	Logger *slog.Logger
}

func (c *ServerConfig) setDefaults() error {
	if c.MaxMsgBytes == 0 {
		c.MaxMsgBytes = DefaultMaxMsgBytes
	}
	if c.KeepaliveTime == 0 {
		c.KeepaliveTime = 30 * time.Second
	}
	if c.KeepaliveTimeout == 0 {
		c.KeepaliveTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Setting == "" {
		c.Setting = "the gRPC listen address"
	}
	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("Addr is required"))
	}
	if c.MaxMsgBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxMsgBytes %d: want > 0", c.MaxMsgBytes))
	}
	if c.KeepaliveTime < 0 || c.KeepaliveTimeout < 0 {
		errs = append(errs, errors.New("keepalive durations must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

// Server is a gRPC server: NewServer, Register services, Listen (optional:
// to learn the address before Start), Start, Shutdown.
type Server struct {
	cfg     ServerConfig
	log     *slog.Logger
	srv     *grpc.Server
	refused *rateLog      // refused peers: one line a second at most
	done    chan struct{} // closed when Serve returned

	mu struct {
		sync.Mutex
		ln       net.Listener
		started  bool
		shutdown bool
	}
	once sync.Once
	err  error
}

// NewServer builds a server; it binds nothing yet.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, done: make(chan struct{}),
		refused: &rateLog{log: cfg.Logger, interval: time.Second}}
	interceptors := []grpc.UnaryServerInterceptor{s.recoverAndMap}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.MaxMsgBytes),
		grpc.MaxSendMsgSize(cfg.MaxMsgBytes),
		grpc.MaxConcurrentStreams(maxConcurrentStreams),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: cfg.KeepaliveTime, Timeout: cfg.KeepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(loggedCreds{TransportCredentials: credentials.NewTLS(cfg.TLS.serverConfig()), refused: s.refused}))
		interceptors = append(interceptors, s.authorize)
	}
	s.srv = grpc.NewServer(append(opts, grpc.ChainUnaryInterceptor(interceptors...))...)
	return s, nil
}

// Register adds a service (e.g. pb.Logic_ServiceDesc). Call before Start.
func (s *Server) Register(desc *grpc.ServiceDesc, impl any) { s.srv.RegisterService(desc, impl) }

// Listen binds the address; Addr is final afterwards. Start calls it when
// it was not called.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.mu.shutdown:
		return ErrClosed
	case s.mu.ln != nil:
		return nil
	}
	if s.cfg.TLS == nil && !IsLoopback(s.cfg.Addr) {
		return fmt.Errorf("%w: %s %q: refusing to serve gRPC beyond loopback without TLS: "+
			"set rpc_tls (ca_file, cert_file, key_file; `msync certs` writes development ones) or bind 127.0.0.1",
			ErrInsecureListen, s.cfg.Setting, s.cfg.Addr)
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("rpc: listen %s: %w", s.cfg.Addr, err)
	}
	s.mu.ln = ln
	return nil
}

// Addr returns the bound address, or nil before Listen/Start.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.ln == nil {
		return nil
	}
	return s.mu.ln.Addr()
}

// Start binds (unless Listen did) and serves in an owned goroutine that
// Shutdown stops.
func (s *Server) Start() error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.mu.shutdown:
		return ErrClosed
	case s.mu.started:
		return ErrStarted
	}
	s.mu.started = true
	ln := s.mu.ln
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Error("grpc serve failed", "addr", ln.Addr().String(), "err", err)
		}
	}()
	s.log.Info("grpc listening", "addr", ln.Addr().String())
	return nil
}

// Shutdown stops accepting, lets in-flight calls finish until ctx is done,
// then cuts the rest. Idempotent: later calls return the first result.
func (s *Server) Shutdown(ctx context.Context) error {
	s.once.Do(func() {
		s.mu.Lock()
		s.mu.shutdown = true
		started, ln := s.mu.started, s.mu.ln
		s.mu.Unlock()
		if !started {
			if ln != nil {
				_ = ln.Close()
			}
			s.srv.Stop()
			return
		}
		graceful := make(chan struct{})
		go func() { s.srv.GracefulStop(); close(graceful) }()
		select {
		case <-graceful:
		case <-ctx.Done():
			s.srv.Stop() // GracefulStop then returns too
			<-graceful
			s.err = fmt.Errorf("rpc: graceful stop: %w", ctx.Err())
		}
		<-s.done
	})
	return s.err
}

// recoverAndMap turns a handler panic into codes.Internal (one bad request
// must not take down a comet with all its connections) and makes sure every
// error leaves as a status: api.Error values already are one and keep their
// google.rpc.ErrorInfo detail with the wire code, context errors keep their gRPC meaning, anything
// else becomes Internal with its message, which api.CodeOf reads as
// "unavailable, retry".
func (s *Server) recoverAndMap(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("grpc handler panicked", "method", info.FullMethod, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			resp, err = nil, status.Errorf(codes.Internal, "%s: internal error", info.FullMethod)
		}
	}()
	resp, err = h(ctx, req)
	return resp, ToStatus(err)
}

// ToStatus returns err as a gRPC status error (nil stays nil).
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	var se interface{ GRPCStatus() *status.Status }
	switch {
	case errors.As(err, &se):
		return se.GRPCStatus().Err()
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}
