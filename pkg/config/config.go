// Package config is the msync configuration file: its schema, defaults and
// validation. cmd/msync maps a File onto each tier's Config; tiers never read
// files or globals themselves.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/msync/msync/pkg/auth"
	"github.com/msync/msync/pkg/biz"
	"github.com/msync/msync/pkg/protocol"
)

// ErrInvalid wraps every validation problem.
var ErrInvalid = errors.New("config: invalid")

// DevAPIKey is the development key shipped in configs/msync.yaml: accepted
// only with dev: true, and logged as a warning.
const DevAPIKey = "dev-key"

// DevSecret is the published token secret of configs/msync.yaml: anyone can
// mint tokens with it, so it is accepted only with dev: true.
const DevSecret = "msync-dev-secret-change-me"

// File is the whole configuration file. Zero values take the defaults named
// on each field.
type File struct {
	// Dev is development mode: it allows DevSecret, DevAPIKey and API keys
	// shorter than auth.MinAPIKeyLen, and lets /demo/token mint tokens for
	// loopback callers. Never in production. Zero false.
	Dev bool `yaml:"dev"`
	// Secret signs client tokens (HS256); at least 16 bytes.
	Secret string `yaml:"secret"`
	Log    Log    `yaml:"log"`
	// Pprof, when set (e.g. "127.0.0.1:6060"), serves net/http/pprof there
	// (every mode: all, comet, logic, job), plus POST /debug/freeos, which
	// returns freed heap to the OS (debug.FreeOSMemory) for memory
	// measurements. Keep it on a private address.
	Pprof   string        `yaml:"pprof"`
	APIKeys []auth.APIKey `yaml:"api_keys"`
	Auth    Auth          `yaml:"auth"`
	Comet   Comet         `yaml:"comet"`
	Logic   Logic         `yaml:"logic"`
	Job     Job           `yaml:"job"`
	Store   Store         `yaml:"store"`
	Queue   Queue         `yaml:"queue"`
	Bizs    []biz.Spec    `yaml:"bizs"`
	// RPCTLS turns on mutual TLS between the tiers of a cluster (gRPC).
	// Without it gRPC only listens on loopback.
	RPCTLS RPCTLS `yaml:"rpc_tls"`
	// Upstreams are the business services devices may call over their
	// connection (REQUEST frames, docs/protocol.md §17), by service name.
	// Re-read on SIGHUP by msync all and msync comet. Zero: none (every
	// REQUEST is answered 601).
	Upstreams map[string]Upstream `yaml:"upstreams"`
}

// Upstream is one service of `upstreams:`; Parse fills the defaults.
type Upstream struct {
	// URL is the base URL paths are appended to: http:// (HTTP/1.1), h2c://
	// (HTTP/2 cleartext) or https://. Required.
	URL              string          `yaml:"url"`
	Timeout          Duration        `yaml:"timeout"`            // one call; zero 5s
	MaxInFlight      int             `yaml:"max_in_flight"`      // calls in flight per comet; zero 256
	MaxRequestBytes  int             `yaml:"max_request_bytes"`  // request body; zero 32 KiB, at most 60 KiB
	MaxResponseBytes int             `yaml:"max_response_bytes"` // answer, body and headers; zero 256 KiB (at most half comet.write_queue_bytes)
	IdentityHeaders  IdentityHeaders `yaml:"identity_headers"`
}

// IdentityHeaders name the headers carrying the session's verified identity;
// clients' own copies are removed.
type IdentityHeaders struct {
	User       string `yaml:"user"`        // zero X-Msync-User
	Device     string `yaml:"device"`      // zero X-Msync-Device
	Platform   string `yaml:"platform"`    // zero X-Msync-Platform
	AppVersion string `yaml:"app_version"` // zero X-Msync-App-Version
}

// Upstream defaults (Parse fills them in; the comet applies the same).
const (
	DefaultUpstreamTimeout  = 5 * time.Second
	DefaultUpstreamInFlight = 256
	DefaultUpstreamRequest  = 32 << 10
	DefaultUpstreamResponse = 256 << 10
	MaxUpstreamRequestBytes = 60 << 10
	DefaultMaxRequests      = 16
	maxRequestsPerSession   = 256
)

// RPCTLS is the tier-to-tier mutual TLS material: a CA every tier trusts
// and this process's certificate, whose URI SANs name its role (logic,
// job, comet + id). `msync certs` writes a development set.
type RPCTLS struct {
	// Dir is a folder written by `msync certs`: ca.crt, and <name>.crt and
	// <name>.key where name is "logic", "job" or the comet's id. Zero:
	// use the three files below.
	Dir      string `yaml:"dir"`
	CAFile   string `yaml:"ca_file"`   // PEM CA certificate(s); overrides Dir's ca.crt
	CertFile string `yaml:"cert_file"` // PEM certificate; overrides Dir's <name>.crt
	KeyFile  string `yaml:"key_file"`  // PEM key; overrides Dir's <name>.key
}

// Enabled reports whether tier TLS is configured.
func (t RPCTLS) Enabled() bool {
	return t.Dir != "" || t.CAFile != "" || t.CertFile != "" || t.KeyFile != ""
}

// Files returns the CA, certificate and key paths for the process named
// name ("logic", "job" or a comet id).
func (t RPCTLS) Files(name string) (ca, cert, key string) {
	ca, cert, key = t.CAFile, t.CertFile, t.KeyFile
	if t.Dir != "" {
		if ca == "" {
			ca = filepath.Join(t.Dir, "ca.crt")
		}
		if cert == "" {
			cert = filepath.Join(t.Dir, name+".crt")
		}
		if key == "" {
			key = filepath.Join(t.Dir, name+".key")
		}
	}
	return ca, cert, key
}

// Auth configures client tokens and how devices are bound to users
// (docs/protocol.md, "Tokens and devices").
type Auth struct {
	// Audience is the aud msync signs into tokens and accepts; a token whose
	// aud names only other services is refused. Zero "msync".
	Audience string `yaml:"audience"`
	// RequireAudience refuses tokens without any aud. Zero false.
	RequireAudience bool `yaml:"require_audience"`
	// MaxTokenLifetime refuses tokens valid for longer (exp - iat). Zero 30d.
	MaxTokenLifetime Duration `yaml:"max_token_lifetime"`
	// Leeway is the clock skew tolerated on exp, nbf and iat. Zero 30s.
	Leeway Duration `yaml:"leeway"`
	// DeviceBinding: owner (zero; the first user of a device owns it, a
	// token naming the device in its dev claim hands it over) or token
	// (every token must name the device).
	DeviceBinding string `yaml:"device_binding"`
}

// Tokens builds the token verifier of the file's secret and auth section.
func (f *File) Tokens() (*auth.Tokens, error) {
	return auth.New(auth.TokenConfig{Secret: f.Secret, Audience: f.Auth.Audience, RequireAudience: f.Auth.RequireAudience,
		MaxLifetime: time.Duration(f.Auth.MaxTokenLifetime), Leeway: time.Duration(f.Auth.Leeway)})
}

// Log configures the process logger.
type Log struct {
	Level  string `yaml:"level"`  // debug, info (zero), warn, error
	Format string `yaml:"format"` // text (zero) or json
}

// Comet configures the connection tier.
type Comet struct {
	ID              string   `yaml:"id"`                // zero "comet-1"
	Addr            string   `yaml:"addr"`              // TCP listener; zero ":3101"
	HTTPAddr        string   `yaml:"http_addr"`         // /healthz and /metrics of a standalone comet; zero: none
	Heartbeat       Duration `yaml:"heartbeat"`         // interval told to clients; zero 30s
	HeartbeatMin    Duration `yaml:"heartbeat_min"`     // least interval a client may ask for (protocol §10); zero: heartbeat
	HeartbeatMax    Duration `yaml:"heartbeat_max"`     // most interval a client may ask for; zero: heartbeat
	MaxRooms        int      `yaml:"max_rooms"`         // rooms per session; zero 64
	ClientRooms     []string `yaml:"client_rooms"`      // room prefixes clients may ROOM_JOIN ("*" all; such rooms are public); zero: none
	AckTimeout      Duration `yaml:"ack_timeout"`       // unacked backlog page; zero 30s
	AuthTimeout     Duration `yaml:"auth_timeout"`      // AUTH must arrive within; zero 10s
	PageLimit       int      `yaml:"page_limit"`        // oplogs per page; zero 200
	WriteQueueBytes int      `yaml:"write_queue_bytes"` // per connection; zero 1 MiB
	Buckets         int      `yaml:"buckets"`           // session shards; zero 64
	// WSAddr is the WebSocket listener (upgrade path /sub, one frame per
	// binary message; docs/transports.md). ":3102" when the key is absent;
	// an explicit "" disables it.
	WSAddr string   `yaml:"ws_addr"`
	TLS    CometTLS `yaml:"tls"` // TLS listeners; off unless tcp_addr or ws_addr is set
	// Limits is the traffic control of device connections; each over-limit
	// answer has its own wire code (docs/protocol.md §6 and §13).
	Limits CometLimits `yaml:"limits"`
	// MaxRequests is how many REQUEST frames (RPC, docs/protocol.md §17) a
	// session may have in flight, told in AUTH_REPLY; zero 16, at most 256.
	MaxRequests int `yaml:"max_requests"`
	// Compression is body compression of device frames (docs/protocol.md
	// §18), chosen per session from what the client lists in AUTH.
	Compression CometCompression `yaml:"compression"`
	// Cluster mode (msync comet): where this comet serves its gRPC push API,
	// the address registered for job to dial (zero: grpc_addr, with an
	// unspecified host replaced by this machine's first non-loopback IP),
	// the logic gRPC addresses it calls (round robin), and how often it
	// renews its sessions and its registration.
	GRPCAddr      string   `yaml:"grpc_addr"`      // zero "127.0.0.1:3103"; beyond loopback only with rpc_tls
	GRPCAdvertise string   `yaml:"grpc_advertise"` // zero: derived from grpc_addr
	LogicAddrs    []string `yaml:"logic_addrs"`    // required by msync comet
	RenewInterval Duration `yaml:"renew_interval"` // zero 60s; keep well under the directory TTL (3m)
}

// CometLimits caps device connections and rates (token buckets: rate per
// second sustained, burst at once). A negative rate turns that limit off.
type CometLimits struct {
	MaxConns       int     `yaml:"max_conns"`         // open connections; zero 100000, negative: no cap (ERROR 1009)
	MaxConnsPerIP  int     `yaml:"max_conns_per_ip"`  // open connections per source address; zero: no cap (ERROR 1008)
	FrameRate      float64 `yaml:"frame_rate"`        // frames/s per connection; zero 1000 (ERROR 1011)
	FrameBurst     int     `yaml:"frame_burst"`       // zero 2000
	ByteRate       float64 `yaml:"byte_rate"`         // inbound bytes/s per connection; zero 1 MiB (ERROR 1011)
	ByteBurst      int     `yaml:"byte_burst"`        // zero 2 MiB
	AuthRatePerIP  float64 `yaml:"auth_rate_per_ip"`  // AUTH attempts/s per source address; zero: no limit (ERROR 1012)
	AuthBurstPerIP int     `yaml:"auth_burst_per_ip"` // zero 10
	SyncReqRate    float64 `yaml:"sync_req_rate"`     // SYNC_REQs served/s per channel of a session; zero 1 (more wait)
	SyncReqBurst   int     `yaml:"sync_req_burst"`    // zero 3
}

// CometCompression configures body compression (docs/protocol.md §18); the
// comet validates it (unknown algorithm, level outside 1-9, negative size).
type CometCompression struct {
	Disabled   bool     `yaml:"disabled"`   // true: never compress, AUTH_REPLY names none; zero: on
	Algorithms []string `yaml:"algorithms"` // accepted; zero [deflate] (raw deflate, RFC 1951), the only one
	MinBytes   int      `yaml:"min_bytes"`  // smaller bodies go out plain; zero 1024
	Level      int      `yaml:"level"`      // flate level 1 (fastest) - 9 (smallest); zero 1
}

// DefaultWSAddr is comet.ws_addr when the key is absent.
const DefaultWSAddr = ":3102"

// CometTLS configures comet's TLS listeners (crypto/tls on std net, a
// goroutine per connection; docs/transports.md compares it with TLS
// terminated in front of comet).
type CometTLS struct {
	CertFile string `yaml:"cert_file"` // PEM certificate chain; required with an address
	KeyFile  string `yaml:"key_file"`  // PEM private key; required with an address
	TCPAddr  string `yaml:"tcp_addr"`  // msync frames over TLS; zero: off
	WSAddr   string `yaml:"ws_addr"`   // WebSocket over TLS (wss://host/sub); zero: off
}

// Enabled reports whether any TLS listener is configured.
func (t CometTLS) Enabled() bool { return t.TCPAddr != "" || t.WSAddr != "" }

// Logic configures the API tier.
type Logic struct {
	HTTPAddr string `yaml:"http_addr"` // business HTTP API; zero ":3111"
	MaxBatch int    `yaml:"max_batch"` // items per /v1/sync/batch; zero 500
	// MaxPushPayload bounds a POST /v1/push payload in bytes; zero 32 KiB.
	MaxPushPayload int    `yaml:"max_push_payload"`
	GRPCAddr       string `yaml:"grpc_addr"` // cluster mode: the Logic gRPC service comets call; zero "127.0.0.1:3112"; beyond loopback only with rpc_tls

	// PublicOps serves /metrics and /demo/ of the HTTP listener to every
	// caller; zero false: to loopback callers only.
	PublicOps bool `yaml:"public_ops"`
}

// Job configures the push tier.
type Job struct {
	Workers int `yaml:"workers"` // concurrent pushes to comets; zero 256
	// Embedded runs job inside the `msync logic` process, reading logic's
	// in-process queue and directory: the mixed local cluster (Pebble store,
	// memory queue, several `msync comet` processes). False: job runs as
	// `msync job`, which needs a shared queue and directory.
	Embedded bool     `yaml:"embedded"`
	Refresh  Duration `yaml:"refresh"`   // how often the comet registry is listed; zero 2s
	HTTPAddr string   `yaml:"http_addr"` // /healthz and /metrics of a standalone job; zero: none
}

// Store selects the oplog store.
type Store struct {
	Backend string `yaml:"backend"` // pebble (zero) or cassandra
	Dir     string `yaml:"dir"`     // pebble directory; zero "./data"
	// CacheMB is Pebble's block cache (MiB), not counting memtables; zero 64.
	CacheMB int `yaml:"cache_mb"`
	// MemtableMB is one Pebble memtable (MiB; up to two are in memory at
	// once); zero 64. Smaller means more flushes and compactions under
	// write load (docs/benchmarks.md, reconnect storm).
	MemtableMB int       `yaml:"memtable_mb"`
	Cassandra  Cassandra `yaml:"cassandra"` // used when backend is cassandra

	// MinFreeMB: below this much free disk space Pebble writes are refused
	// (publish answers 507) and reads go on; zero 128, negative: no check.
	MinFreeMB int `yaml:"min_free_mb"`
	// MaxChannels caps the channels whose id state Pebble keeps in memory
	// (about 230 bytes each); zero 262144.
	MaxChannels int `yaml:"max_channels"`
}

// Cassandra configures the cassandra store backend and `msync migrate`.
type Cassandra struct {
	Hosts    []string `yaml:"hosts"`    // contact points ("host" or "host:port"); required for cassandra
	Keyspace string   `yaml:"keyspace"` // zero "msync"
	// Replication of the keyspace `msync migrate` creates. Either
	// {class: SimpleStrategy, replication_factor: 3} or
	// {class: NetworkTopologyStrategy, dc1: 3, dc2: 3}; zero SimpleStrategy, factor 1.
	Replication       map[string]string `yaml:"replication"`
	Consistency       string            `yaml:"consistency"`        // zero LOCAL_QUORUM
	SerialConsistency string            `yaml:"serial_consistency"` // LWTs; zero LOCAL_SERIAL
	Timeout           Duration          `yaml:"timeout"`            // per request; zero 5s
	BucketSize        int               `yaml:"bucket_size"`        // oplog ids per partition; zero 10000
	ProtoVersion      int               `yaml:"proto_version"`      // CQL protocol, 3 or 4; zero 4
}

// Queue selects the push stream.
type Queue struct {
	Backend  string   `yaml:"backend"`  // memory (zero) or rocketmq
	RocketMQ RocketMQ `yaml:"rocketmq"` // used when backend is rocketmq
}

// RocketMQ configures the rocketmq queue backend (pkg/queue/rocketmq).
type RocketMQ struct {
	NameServers []string `yaml:"name_servers"` // "host:9876"; required for rocketmq (the client's default resolver is never used)
	Topic       string   `yaml:"topic"`        // push stream topic; zero "msync_push"
	Group       string   `yaml:"group"`        // consumer group shared by all job instances; zero "msync_job"
	Instance    string   `yaml:"instance"`     // per process; "-producer"/"-consumer" appended; zero "msync-<hostname>-<pid>"
	SendTimeout Duration `yaml:"send_timeout"` // per message, retries included; zero 3s
	Retries     int      `yaml:"retries"`      // resends of a message the broker refused; zero 2, -1 none, at most 16
	Queues      int      `yaml:"queues"`       // queues of a topic the broker auto-creates, 1..4 (client limit); better create the topic with 2–4x the job instances; zero 4
	MaxBatch    int      `yaml:"max_batch"`    // messages per job handler call; zero 32, at most 1024
	ConsumeFrom string   `yaml:"consume_from"` // where a new consumer group starts: last (zero) or first
}

// Duration is a time.Duration written like "30s", "12h" or "7d".
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := biz.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// Load reads and validates the file at path.
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	f, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// Parse decodes data strictly (unknown keys are errors), fills defaults and
// validates, listing every problem at once.
func Parse(data []byte) (*File, error) {
	var f File
	// Set before decoding so that an absent key keeps the default while an
	// explicit ws_addr: "" turns the listener off.
	f.Comet.WSAddr = DefaultWSAddr
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	f.defaults()
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

func (f *File) defaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&f.Log.Level, "info")
	def(&f.Log.Format, "text")
	// The tiers own their defaults (comet.Config, logic.Config): listen
	// addresses and the like stay zero here. The comet id is the exception:
	// the cluster layout checks it against the RPC certificate before the
	// comet exists, so the file layer needs the same "comet-1".
	def(&f.Comet.ID, "comet-1")
	def(&f.Comet.GRPCAddr, "127.0.0.1:3103")
	def(&f.Logic.GRPCAddr, "127.0.0.1:3112")
	def(&f.Auth.DeviceBinding, "owner")
	def(&f.Store.Backend, "pebble")
	def(&f.Store.Dir, "./data")
	f.Store.Cassandra.defaults()
	def(&f.Queue.Backend, "memory")
	def(&f.Queue.RocketMQ.Topic, "msync_push")
	def(&f.Queue.RocketMQ.Group, "msync_job")
	if f.Comet.MaxRequests == 0 {
		f.Comet.MaxRequests = DefaultMaxRequests
	}
	for name, u := range f.Upstreams {
		u.defaults()
		f.Upstreams[name] = u
	}
}

func (u *Upstream) defaults() {
	if u.Timeout == 0 {
		u.Timeout = Duration(DefaultUpstreamTimeout)
	}
	if u.MaxInFlight == 0 {
		u.MaxInFlight = DefaultUpstreamInFlight
	}
	if u.MaxRequestBytes == 0 {
		u.MaxRequestBytes = DefaultUpstreamRequest
	}
	if u.MaxResponseBytes == 0 {
		u.MaxResponseBytes = DefaultUpstreamResponse
	}
	h := &u.IdentityHeaders
	for _, d := range []struct {
		p *string
		v string
	}{{&h.User, "X-Msync-User"}, {&h.Device, "X-Msync-Device"},
		{&h.Platform, "X-Msync-Platform"}, {&h.AppVersion, "X-Msync-App-Version"}} {
		if *d.p == "" {
			*d.p = d.v
		}
	}
}

// validateUpstreams checks what the file can; the comet re-checks
// everything (header names, the response limit against its write queue).
func (f *File) validateUpstreams() []error {
	var errs []error
	if f.Comet.MaxRequests < 0 || f.Comet.MaxRequests > maxRequestsPerSession {
		errs = append(errs, fmt.Errorf("comet.max_requests %d: want 1-%d", f.Comet.MaxRequests, maxRequestsPerSession))
	}
	names := make([]string, 0, len(f.Upstreams))
	for n := range f.Upstreams {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		u := f.Upstreams[name]
		if !protocol.ValidServiceName(name) {
			errs = append(errs, fmt.Errorf("upstreams: name %q: want 1-%d of [A-Za-z0-9_.-]", name, protocol.MaxServiceName))
		}
		if p, err := url.Parse(u.URL); err != nil || (p.Scheme != "http" && p.Scheme != "https" && p.Scheme != "h2c") || p.Host == "" {
			errs = append(errs, fmt.Errorf("upstreams.%s.url %q: want http://, h2c:// or https:// with a host", name, u.URL))
		}
		if u.Timeout < 0 || u.MaxInFlight < 0 || u.MaxResponseBytes < 0 {
			errs = append(errs, fmt.Errorf("upstreams.%s: timeout, max_in_flight, max_response_bytes must not be negative", name))
		}
		if u.MaxRequestBytes < 0 || u.MaxRequestBytes > MaxUpstreamRequestBytes {
			errs = append(errs, fmt.Errorf("upstreams.%s.max_request_bytes %d: want 0-%d (a REQUEST must fit a 64 KiB frame)", name, u.MaxRequestBytes, MaxUpstreamRequestBytes))
		}
	}
	return errs
}

// Validate lists every problem of f at once.
func (f *File) Validate() error {
	var errs []error
	if len(f.Secret) < 16 {
		errs = append(errs, errors.New("secret: must be at least 16 bytes"))
	}
	if _, err := f.SlogLevel(); err != nil {
		errs = append(errs, err)
	}
	if f.Log.Format != "text" && f.Log.Format != "json" {
		errs = append(errs, fmt.Errorf("log.format %q: want text or json", f.Log.Format))
	}
	if len(f.APIKeys) == 0 {
		errs = append(errs, errors.New("api_keys: at least one key is needed to publish"))
	}
	for i, k := range f.APIKeys {
		switch {
		case k.Key == "" || len(k.Bizs) == 0:
			errs = append(errs, fmt.Errorf("api_keys[%d]: needs key and bizs", i))
		case k.PublishesPerS < 0 || k.BytesPerS < 0:
			errs = append(errs, fmt.Errorf("api_keys[%d]: publishes_per_s, bytes_per_s: must not be negative", i))
		case f.Dev:
		case k.Key == DevAPIKey:
			errs = append(errs, fmt.Errorf("api_keys[%d]: %q is the published development key: allowed only with dev: true", i, DevAPIKey))
		case len(k.Key) < auth.MinAPIKeyLen:
			errs = append(errs, fmt.Errorf("api_keys[%d]: %d bytes, want at least %d (e.g. openssl rand -hex 16), or dev: true for development", i, len(k.Key), auth.MinAPIKeyLen))
		}
	}
	if f.Secret == DevSecret && !f.Dev {
		errs = append(errs, errors.New("secret: the published development secret lets anyone mint tokens: set your own, or dev: true for development"))
	}
	if f.Auth.DeviceBinding != "owner" && f.Auth.DeviceBinding != "token" {
		errs = append(errs, fmt.Errorf("auth.device_binding %q: want owner or token", f.Auth.DeviceBinding))
	}
	if f.Auth.MaxTokenLifetime < 0 || f.Auth.Leeway < 0 {
		errs = append(errs, errors.New("auth.max_token_lifetime, auth.leeway: must not be negative"))
	}
	switch f.Store.Backend {
	case "pebble":
		if f.Store.MaxChannels < 0 {
			errs = append(errs, errors.New("store.max_channels: must not be negative"))
		}
		if f.Store.CacheMB < 0 || f.Store.MemtableMB < 0 || f.Store.MemtableMB >= 4096 {
			errs = append(errs, fmt.Errorf("store.cache_mb %d, store.memtable_mb %d: want >= 0 (memtable below 4096)",
				f.Store.CacheMB, f.Store.MemtableMB))
		}
	case "cassandra":
		errs = append(errs, f.Store.Cassandra.validate()...)
	default:
		errs = append(errs, fmt.Errorf("store.backend %q: want pebble or cassandra", f.Store.Backend))
	}
	switch f.Queue.Backend {
	case "memory":
	case "rocketmq":
		errs = append(errs, f.Queue.RocketMQ.validate()...)
	default:
		errs = append(errs, fmt.Errorf("queue.backend %q: want memory or rocketmq", f.Queue.Backend))
	}
	for name, v := range map[string]int{"comet.page_limit": f.Comet.PageLimit, "comet.write_queue_bytes": f.Comet.WriteQueueBytes,
		"comet.buckets": f.Comet.Buckets, "comet.max_rooms": f.Comet.MaxRooms, "comet.limits.max_conns_per_ip": f.Comet.Limits.MaxConnsPerIP,
		"comet.limits.frame_burst": f.Comet.Limits.FrameBurst, "comet.limits.byte_burst": f.Comet.Limits.ByteBurst,
		"comet.limits.auth_burst_per_ip": f.Comet.Limits.AuthBurstPerIP, "comet.limits.sync_req_burst": f.Comet.Limits.SyncReqBurst, "logic.max_push_payload": f.Logic.MaxPushPayload, "logic.max_batch": f.Logic.MaxBatch, "job.workers": f.Job.Workers} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative", name))
		}
	}
	if f.Pprof != "" && !loopbackAddr(f.Pprof) {
		errs = append(errs, fmt.Errorf("pprof %q: serves profiles and the command line, so it must be a loopback address like 127.0.0.1:6060", f.Pprof))
	}
	if f.Comet.RenewInterval < 0 || f.Job.Refresh < 0 {
		errs = append(errs, errors.New("comet.renew_interval, job.refresh: must not be negative"))
	}
	if t := f.Comet.TLS; t.Enabled() && (t.CertFile == "" || t.KeyFile == "") {
		errs = append(errs, errors.New("comet.tls: cert_file and key_file are required with tcp_addr or ws_addr"))
	} else if !t.Enabled() && (t.CertFile != "" || t.KeyFile != "") {
		errs = append(errs, errors.New("comet.tls: cert_file set but no tcp_addr or ws_addr to serve it on"))
	}
	if t := f.RPCTLS; t.Dir == "" && t.Enabled() && (t.CAFile == "" || t.CertFile == "" || t.KeyFile == "") {
		errs = append(errs, errors.New("rpc_tls: set dir, or all of ca_file, cert_file and key_file"))
	}
	errs = append(errs, f.validateUpstreams()...)
	if _, err := biz.NewRegistry(f.Bizs); err != nil {
		errs = append(errs, err)
	}
	if len(f.Bizs) == 0 {
		errs = append(errs, errors.New("bizs: at least one biz is needed"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

func (c *Cassandra) defaults() {
	if c.Keyspace == "" {
		c.Keyspace = "msync"
	}
	if len(c.Replication) == 0 {
		c.Replication = map[string]string{"class": "SimpleStrategy", "replication_factor": "1"}
	}
	if c.Consistency == "" {
		c.Consistency = "LOCAL_QUORUM"
	}
	if c.SerialConsistency == "" {
		c.SerialConsistency = "LOCAL_SERIAL"
	}
	if c.Timeout == 0 {
		c.Timeout = Duration(5 * time.Second)
	}
	if c.BucketSize == 0 {
		c.BucketSize = 10000
	}
	if c.ProtoVersion == 0 {
		c.ProtoVersion = 4
	}
}

// validate checks store.cassandra; the store re-checks names and the
// replication map when it opens (cassandra.Config.Validate).
func (c *Cassandra) validate() []error {
	var errs []error
	if len(c.Hosts) == 0 {
		errs = append(errs, errors.New("store.cassandra.hosts: at least one host is needed"))
	}
	switch c.Consistency {
	case "ANY", "ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE":
	default:
		errs = append(errs, fmt.Errorf("store.cassandra.consistency %q: want e.g. LOCAL_QUORUM, QUORUM, ONE", c.Consistency))
	}
	if c.SerialConsistency != "SERIAL" && c.SerialConsistency != "LOCAL_SERIAL" {
		errs = append(errs, fmt.Errorf("store.cassandra.serial_consistency %q: want SERIAL or LOCAL_SERIAL", c.SerialConsistency))
	}
	if c.BucketSize < 0 {
		errs = append(errs, errors.New("store.cassandra.bucket_size: must not be negative"))
	}
	if c.Timeout < 0 {
		errs = append(errs, errors.New("store.cassandra.timeout: must not be negative"))
	}
	if c.ProtoVersion < 3 || c.ProtoVersion > 4 {
		errs = append(errs, fmt.Errorf("store.cassandra.proto_version %d: want 3 or 4 (the driver, gocql v1.7.0, cannot speak v5)", c.ProtoVersion))
	}
	switch c.Replication["class"] {
	case "SimpleStrategy", "NetworkTopologyStrategy":
	default:
		errs = append(errs, fmt.Errorf("store.cassandra.replication.class %q: want SimpleStrategy or NetworkTopologyStrategy", c.Replication["class"]))
	}
	return errs
}

// validate checks queue.rocketmq; pkg/queue/rocketmq re-checks everything
// when the producer or consumer is built.
func (r *RocketMQ) validate() []error {
	var errs []error
	if len(r.NameServers) == 0 {
		errs = append(errs, errors.New("queue.rocketmq.name_servers: at least one name server (host:port) is needed"))
	}
	for _, ns := range r.NameServers {
		if i := bytes.LastIndexByte([]byte(ns), ':'); i <= 0 || i == len(ns)-1 {
			errs = append(errs, fmt.Errorf("queue.rocketmq.name_servers: %q: want host:port", ns))
		}
	}
	if r.SendTimeout < 0 {
		errs = append(errs, errors.New("queue.rocketmq.send_timeout: must not be negative"))
	}
	if r.Retries < -1 || r.Retries > 16 {
		errs = append(errs, fmt.Errorf("queue.rocketmq.retries %d: want -1..16", r.Retries))
	}
	if r.Queues < 0 || r.Queues > 4 {
		errs = append(errs, fmt.Errorf("queue.rocketmq.queues %d: want 0..4 (create bigger topics with mqadmin)", r.Queues))
	}
	if r.MaxBatch < 0 || r.MaxBatch > 1024 {
		errs = append(errs, fmt.Errorf("queue.rocketmq.max_batch %d: want 0..1024", r.MaxBatch))
	}
	if r.ConsumeFrom != "" && r.ConsumeFrom != "first" && r.ConsumeFrom != "last" {
		errs = append(errs, fmt.Errorf("queue.rocketmq.consume_from %q: want first or last", r.ConsumeFrom))
	}
	return errs
}

// loopbackAddr reports whether a listen address binds loopback only.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// SlogLevel parses Log.Level.
func (f *File) SlogLevel() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(f.Log.Level)); err != nil {
		return 0, fmt.Errorf("log.level %q: want debug, info, warn or error", f.Log.Level)
	}
	return l, nil
}

// HasDevKey reports whether the development API key is configured.
func (f *File) HasDevKey() bool {
	for _, k := range f.APIKeys {
		if k.Key == DevAPIKey {
			return true
		}
	}
	return false
}
