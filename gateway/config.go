package gateway

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/msync/msync/pkg/protocol"
)

// Config configures a Server. Zero values mean the documented default.
type Config struct {
	// Addr is the TCP listen address. Zero means ":3101"; "127.0.0.1:0"
	// picks a free port (read it back with Server.Addr).
	Addr string
	// MaxFrame is the largest inbound frame, header included. Zero means
	// protocol.DefaultMaxFrame (64 KiB).
	MaxFrame int
	// WriteQueueBytes bounds the bytes queued per connection and not yet
	// handed to the socket; a Write beyond it closes the connection as a
	// slow consumer. Zero means 1 MiB.
	WriteQueueBytes int
	// WriteTimeout bounds one flush to the socket, and how long Close waits
	// to flush before it drops the connection. Zero means 10s.
	WriteTimeout time.Duration
	// ReadTimeout bounds receiving the rest of a frame once its first byte
	// arrived (slowloris). Idle connections are bounded by deadlines instead.
	// Zero means 30s.
	ReadTimeout time.Duration
	// AuthTimeout is the liveness deadline every new connection starts with;
	// it expires with protocol.CodeAuthTimeout unless the handler calls
	// SetDeadline first. Zero means 10s.
	AuthTimeout time.Duration
	// Tick is the timing-wheel resolution; deadlines round up to it and fire
	// at most about one Tick late. Zero means 250ms.
	Tick time.Duration
	// Workers bounds the write drains running at once (one per connection
	// with queued data). Zero means 10000.
	Workers int
	// BufferSize is netpoll's per-connection buffer size: the input buffer
	// every connection keeps while idle (it doubles per connection while
	// reads fill it) and the minimum output buffer node. netpoll keeps it
	// in a process global, so only the first Server started in a process
	// applies it. Zero means 256: clients send small frames (AUTH, ACK,
	// heartbeats), and an idle session is mostly these buffers, so a larger
	// default costs every idle connection for no gain.
	BufferSize int
	// Logger receives the server's logs. Nil discards them.
	Logger *slog.Logger
	// MaxConns caps the connections open at once (every listener, before
	// and after AUTH); a connection past it is answered ERROR
	// protocol.CodeTooManyConns (plain TCP; WebSocket and TLS connections
	// are closed without a frame) and closed. Keep it below the process's
	// open-files limit. Zero means 100000; negative means no cap.
	MaxConns int
	// MaxConnsPerIP caps the connections open at once from one source
	// address; past it: ERROR protocol.CodeTooManyConnsPerIP, as above.
	// Zero means no cap: behind a carrier NAT or a load balancer many
	// devices share an address, so set it where the addresses are real.
	MaxConnsPerIP int

	// WSAddr, when set, also serves WebSocket on netpoll there: each binary
	// message carries one frame (rules in ws.go and docs/transports.md).
	// Zero means no WebSocket listener. Connections of every listener share
	// one ID space, the Handler and all the settings above.
	WSAddr string
	// WSPath is the only path the WebSocket upgrade accepts (others get
	// HTTP 404). Zero means "/sub".
	WSPath string
	// TLS is the server certificate configuration of the TLS listeners;
	// required when TLSAddr or TLSWSAddr is set. Zero means no TLS.
	TLS *tls.Config
	// TLSAddr, when set, serves msync frames over TLS there; TLSWSAddr
	// serves WebSocket over TLS. They run on crypto/tls and std net with a
	// goroutine per connection (netpoll has no TLS): same Handler,
	// deadlines and bounded write queue, more memory per connection. Zero
	// means no listener.
	TLSAddr, TLSWSAddr string

	// now replaces the deadline wheel's clock (tests: see export_test.go).
	now func() int64
}

// DefaultWriteQueueBytes is Config.WriteQueueBytes when zero.
const DefaultWriteQueueBytes = defaultWriteQueueBytes

const (
	defaultAddr            = ":3101"
	defaultWriteQueueBytes = 1 << 20
	defaultWriteTimeout    = 10 * time.Second
	defaultReadTimeout     = 30 * time.Second
	defaultAuthTimeout     = 10 * time.Second
	defaultTick            = 250 * time.Millisecond
	defaultWorkers         = 10000
	defaultBufferSize      = 256
	defaultMaxConns        = 100000
)

// setDefaults fills in the zero fields of c.
func (c *Config) setDefaults() {
	if c.Addr == "" {
		c.Addr = defaultAddr
	}
	if c.MaxFrame == 0 {
		c.MaxFrame = protocol.DefaultMaxFrame
	}
	if c.WriteQueueBytes == 0 {
		c.WriteQueueBytes = defaultWriteQueueBytes
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = defaultWriteTimeout
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = defaultReadTimeout
	}
	if c.AuthTimeout == 0 {
		c.AuthTimeout = defaultAuthTimeout
	}
	if c.Tick == 0 {
		c.Tick = defaultTick
	}
	if c.Workers == 0 {
		c.Workers = defaultWorkers
	}
	if c.BufferSize == 0 {
		c.BufferSize = defaultBufferSize
	}
	if c.MaxConns == 0 {
		c.MaxConns = defaultMaxConns
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.WSPath == "" {
		c.WSPath = DefaultWSPath
	}
}

// validate reports every problem of a defaulted c at once, each wrapping
// ErrInvalidConfig.
func (c *Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		bad("Addr %q: %v", c.Addr, err)
	}
	if c.MaxFrame < protocol.HeaderSize {
		bad("MaxFrame %d is below the %d-byte header", c.MaxFrame, protocol.HeaderSize)
	}
	if c.WriteQueueBytes < 0 {
		bad("WriteQueueBytes %d is negative", c.WriteQueueBytes)
	}
	if c.WriteTimeout < 0 {
		bad("WriteTimeout %v is negative", c.WriteTimeout)
	}
	if c.ReadTimeout < 0 {
		bad("ReadTimeout %v is negative", c.ReadTimeout)
	}
	if c.AuthTimeout < 0 {
		bad("AuthTimeout %v is negative", c.AuthTimeout)
	}
	if c.Tick < 0 {
		bad("Tick %v is negative", c.Tick)
	} else if c.AuthTimeout > 0 && c.Tick > c.AuthTimeout {
		bad("Tick %v is longer than AuthTimeout %v", c.Tick, c.AuthTimeout)
	}
	if c.Workers < 0 {
		bad("Workers %d is negative", c.Workers)
	}
	if c.BufferSize < 0 {
		bad("BufferSize %d is negative", c.BufferSize)
	}
	if c.MaxConnsPerIP < 0 {
		bad("MaxConnsPerIP %d is negative", c.MaxConnsPerIP)
	}
	for name, addr := range map[string]string{"WSAddr": c.WSAddr, "TLSAddr": c.TLSAddr, "TLSWSAddr": c.TLSWSAddr} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad("%s %q: %v", name, addr, err)
		}
	}
	if !strings.HasPrefix(c.WSPath, "/") {
		bad("WSPath %q must start with /", c.WSPath)
	}
	if (c.TLSAddr != "" || c.TLSWSAddr != "") && (c.TLS == nil || (len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil && c.TLS.GetConfigForClient == nil)) {
		bad("TLSAddr/TLSWSAddr need TLS with a certificate")
	}
	return errors.Join(errs...)
}
