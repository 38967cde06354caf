package comet

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/msync/msync/gateway"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/protocol"
)

// Config configures a Comet. Each field's comment says what its zero value means.
type Config struct {
	// ID is this comet's id in the directory; zero "comet-1".
	ID string
	// Gateway holds the transport settings; zero Addr ":3101". A nil
	// Gateway.Logger gets the comet's logger.
	Gateway gateway.Config
	// Logic is the logic client (api.LocalLogic in-process, gRPC in cluster
	// mode). Required.
	Logic pb.LogicClient
	// Buckets is the number of session shards; zero 64.
	Buckets int
	// HeartbeatInterval is told to clients unless logic's
	// ConnectReply.heartbeat_ms is set; zero 30s. A session is closed with
	// ERROR 1002 after 3*interval+5s without any frame.
	HeartbeatInterval time.Duration
	// HeartbeatMin and HeartbeatMax bound the interval a client may ask for
	// (Auth.heartbeat_ms, Heartbeat.interval_ms; see rooms.go heartbeatFor).
	// Zero means HeartbeatInterval, i.e. no negotiation in that direction.
	HeartbeatMin, HeartbeatMax time.Duration
	// MaxRooms is how many rooms one session may be in; zero
	// protocol.DefaultMaxRooms (64).
	MaxRooms int
	// ClientRooms lists the room name prefixes a client may join itself
	// (ROOM_JOIN); "*" allows every room. A room a client can join is public:
	// anyone with any token may listen. Zero (nil): clients join no room
	// themselves, only the business puts sessions in rooms (POST /v1/rooms),
	// and ROOM_JOIN is answered with ERROR 4007.
	ClientRooms []string
	// PageLimit is the number of oplogs per channel page; zero 200.
	PageLimit uint32
	// AckTimeout bounds how long a backlog page may stay unacked before
	// ERROR 1003; zero 30s.
	AckTimeout time.Duration
	// RenewInterval is the period of the batched Logic.Renew of all sessions;
	// zero 60s.
	RenewInterval time.Duration
	// GRPCAddr is the address where this comet's Comet service is reachable
	// (cluster mode). When set, every Renew carries it, so logic registers the
	// comet for job to discover, and the first Renew is sent at once (a
	// joining comet gets pushes without waiting a RenewInterval). Zero: not
	// registered (all-in-one mode, where job holds the comet in-process).
	GRPCAddr string
	// CallTimeout bounds each logic call; zero 5s.
	CallTimeout time.Duration
	// ReorderWindow is how long a live push that arrived past a hole in its
	// channel's ids waits for the missing ones before the channel resyncs
	// from the store (reorder.go); zero 20ms, negative resyncs at once.
	ReorderWindow time.Duration
	// Workers bounds the session task pool (ants); zero 4096.
	Workers int
	// Upstreams are the services REQUEST frames may call (rpc.go); nil:
	// every REQUEST is answered 601. Comet.SetUpstreams replaces them.
	Upstreams []Upstream
	// MaxRequests is how many REQUESTs one session may have in flight, told
	// in AuthReply.max_requests; zero 16, at most 256.
	MaxRequests int
	// Compression is body compression (compress.go, docs/protocol.md §18);
	// zero: raw deflate offered to clients that list it, bodies of 1 KiB
	// and more, flate level 1.
	Compression Compression
	// Limits is the traffic control of device connections (limits.go);
	// the connection caps are Gateway.MaxConns and Gateway.MaxConnsPerIP.
	Limits Limits
	// Logger receives the comet's logs; nil discards them.
	Logger *slog.Logger
	// Registerer registers the comet's metrics; nil uses a private registry.
	Registerer prometheus.Registerer
}

const (
	defaultID                = "comet-1"
	defaultAddr              = ":3101"
	defaultBuckets           = 64
	defaultHeartbeatInterval = 30 * time.Second
	defaultPageLimit         = 200
	defaultAckTimeout        = 30 * time.Second
	defaultRenewInterval     = 60 * time.Second
	defaultCallTimeout       = 5 * time.Second
	defaultWorkers           = 4096

	// maxBuckets and maxWorkers catch configuration typos (a byte count in
	// the wrong field) before they allocate gigabytes.
	maxBuckets = 1 << 16
	maxWorkers = 1 << 20
)

// setDefaults fills in the zero fields of cfg (each field's comment says
// what zero means). The comet's Config owns its defaults; pkg/config leaves
// zeros to it.
func (cfg *Config) setDefaults() {
	if cfg.ID == "" {
		cfg.ID = defaultID
	}
	if cfg.Gateway.Addr == "" {
		cfg.Gateway.Addr = defaultAddr
	}
	if cfg.Buckets == 0 {
		cfg.Buckets = defaultBuckets
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = defaultHeartbeatInterval
	}
	if cfg.PageLimit == 0 {
		cfg.PageLimit = defaultPageLimit
	}
	if cfg.HeartbeatMin == 0 {
		cfg.HeartbeatMin = cfg.HeartbeatInterval
	}
	if cfg.HeartbeatMax == 0 {
		cfg.HeartbeatMax = cfg.HeartbeatInterval
	}
	if cfg.MaxRooms == 0 {
		cfg.MaxRooms = protocol.DefaultMaxRooms
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = defaultAckTimeout
	}
	if cfg.RenewInterval == 0 {
		cfg.RenewInterval = defaultRenewInterval
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = defaultCallTimeout
	}
	if cfg.Workers == 0 {
		cfg.Workers = defaultWorkers
	}
	cfg.Limits = cfg.Limits.withDefaults()
	cfg.Compression.setDefaults()
	if cfg.MaxRequests == 0 {
		cfg.MaxRequests = defaultMaxRequests
	}
	if cfg.ReorderWindow == 0 {
		cfg.ReorderWindow = defaultReorderWindow
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Gateway.Logger == nil {
		cfg.Gateway.Logger = cfg.Logger.With("component", "gateway")
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
}

// validate reports every value of a defaulted cfg that cannot work, joined;
// each wraps ErrInvalidConfig.
func (cfg *Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if cfg.Logic == nil {
		errs = append(errs, ErrNoLogic)
	}
	if cfg.Buckets < 0 || cfg.Buckets > maxBuckets {
		bad("Buckets %d: want 1-%d", cfg.Buckets, maxBuckets)
	}
	if cfg.Workers < 0 || cfg.Workers > maxWorkers {
		bad("Workers %d: want 1-%d", cfg.Workers, maxWorkers)
	}
	if cfg.HeartbeatInterval < 0 || cfg.AckTimeout < 0 || cfg.RenewInterval < 0 || cfg.CallTimeout < 0 {
		bad("durations must not be negative")
	}
	if cfg.HeartbeatInterval/time.Millisecond > 1<<31 || cfg.HeartbeatMax/time.Millisecond > 1<<31 {
		bad("HeartbeatInterval %s too long", cfg.HeartbeatInterval)
	}
	if cfg.HeartbeatMin < time.Millisecond || cfg.HeartbeatMin > cfg.HeartbeatInterval || cfg.HeartbeatInterval > cfg.HeartbeatMax {
		bad("want 1ms <= HeartbeatMin %s <= HeartbeatInterval %s <= HeartbeatMax %s",
			cfg.HeartbeatMin, cfg.HeartbeatInterval, cfg.HeartbeatMax)
	}
	if cfg.Limits.FrameBurst < 0 || cfg.Limits.ByteBurst < 0 || cfg.Limits.AuthBurstPerIP < 0 || cfg.Limits.SyncReqBurst < 0 {
		bad("Limits bursts must not be negative")
	}
	errs = append(errs, cfg.Compression.validate()...)
	if cfg.MaxRequests < 0 || cfg.MaxRequests > maxMaxRequests {
		bad("MaxRequests %d: want 1-%d", cfg.MaxRequests, maxMaxRequests)
	}
	if cfg.MaxRooms < 0 {
		bad("MaxRooms %d: want > 0", cfg.MaxRooms)
	}
	return errors.Join(errs...)
}

// withDefaults returns a defaulted copy of cfg and every problem with it.
func (cfg Config) withDefaults() (Config, error) {
	cfg.setDefaults()
	return cfg, cfg.validate()
}

// heartbeatDeadline is how long a session may stay silent: 3 intervals plus
// slack for a slow mobile network.
func heartbeatDeadline(interval time.Duration) time.Duration { return 3*interval + 5*time.Second }
