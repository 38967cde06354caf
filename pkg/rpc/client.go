package rpc

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// DialConfig configures a client connection. Zero values take the defaults noted.
type DialConfig struct {
	// CallTimeout is the deadline given to a call whose context has none.
	// Zero means 5s; callers with their own deadline keep it.
	CallTimeout time.Duration
	// MaxMsgBytes bounds received and sent messages. Zero means
	// DefaultMaxMsgBytes.
	MaxMsgBytes int
	// KeepaliveTime: ping the server after this long without activity, so a
	// dead peer (kill -9, network partition) is noticed without waiting for
	// TCP timeouts. Zero means 20s; the server refuses pings more often than
	// every 10s.
	KeepaliveTime time.Duration
	// KeepaliveTimeout: an unanswered ping closes the connection. Zero means 5s.
	KeepaliveTimeout time.Duration
	// MaxBackoff caps the reconnect backoff after a failed connection
	// attempt, so a restarted peer is reached again within about this long.
	// Zero means 3s.
	MaxBackoff time.Duration
	// TLS dials with mutual TLS: our certificate is presented, the server's
	// must chain to the CA, be valid for the dialed host and name
	// ServerRole (and ServerComet, when set). Nil: plaintext (the server
	// then only listens on loopback).
	TLS *TLS
	// ServerRole is the role the server's certificate must name (RoleLogic,
	// RoleComet); required with TLS.
	ServerRole string
	// ServerComet, when set, is the comet id the server's certificate must
	// name: job dials a registry entry only if the comet at that address
	// holds the certificate of the registered id.
	ServerComet string
}

func (c *DialConfig) setDefaults() error {
	if c.CallTimeout == 0 {
		c.CallTimeout = 5 * time.Second
	}
	if c.MaxMsgBytes == 0 {
		c.MaxMsgBytes = DefaultMaxMsgBytes
	}
	if c.KeepaliveTime == 0 {
		c.KeepaliveTime = 20 * time.Second
	}
	if c.KeepaliveTimeout == 0 {
		c.KeepaliveTimeout = 5 * time.Second
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 3 * time.Second
	}
	switch {
	case c.CallTimeout < 0, c.KeepaliveTime < 0, c.KeepaliveTimeout < 0, c.MaxBackoff < 0:
		return fmt.Errorf("%w: dial durations must not be negative", ErrInvalidConfig)
	case c.MaxMsgBytes < 0:
		return fmt.Errorf("%w: MaxMsgBytes %d: want > 0", ErrInvalidConfig, c.MaxMsgBytes)
	case c.TLS != nil && c.ServerRole == "":
		return fmt.Errorf("%w: ServerRole is required with TLS", ErrInvalidConfig)
	}
	return nil
}

// schemeSeq makes each multi-address resolver's scheme unique: a manual
// resolver is registered per connection, not globally.
var schemeSeq atomic.Uint64

// Dial returns a client connection to one or more addresses (host:port, or
// any gRPC target such as dns:///logic.internal:3112 when only one is
// given). Several addresses are balanced round robin and failed ones are
// skipped while they are down. Dial does not wait for a connection: calls
// fail with codes.Unavailable while no address is reachable. Close the
// connection when done.
//
// Calls are never retried automatically: Connect, Ack and Push have side
// effects, and msync's callers already recover (comets close the session,
// which resyncs; job leaves devices to catch up by sync).
func Dial(addrs []string, cfg DialConfig) (*grpc.ClientConn, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	var clean []string
	for _, a := range addrs {
		if a = strings.TrimSpace(a); a != "" {
			clean = append(clean, a)
		}
	}
	if len(clean) == 0 {
		return nil, fmt.Errorf("%w: no address to dial", ErrInvalidConfig)
	}
	bo := backoff.DefaultConfig
	bo.MaxDelay = cfg.MaxBackoff
	creds := insecure.NewCredentials()
	if cfg.TLS != nil {
		creds = credentials.NewTLS(cfg.TLS.clientConfig(cfg.ServerRole, cfg.ServerComet))
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: cfg.KeepaliveTime, Timeout: cfg.KeepaliveTimeout, PermitWithoutStream: true}),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: 5 * time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.MaxMsgBytes), grpc.MaxCallSendMsgSize(cfg.MaxMsgBytes)),
		grpc.WithDisableRetry(),
		grpc.WithChainUnaryInterceptor(defaultTimeout(cfg.CallTimeout)),
	}
	target := clean[0]
	if len(clean) > 1 {
		r := manual.NewBuilderWithScheme(fmt.Sprintf("msync-rpc-%d", schemeSeq.Add(1)))
		state := resolver.State{}
		for _, a := range clean {
			// ServerName: each address's certificate is checked against
			// its own host, not the resolver's made-up authority.
			host, _, err := net.SplitHostPort(a)
			if err != nil {
				host = a
			}
			state.Addresses = append(state.Addresses, resolver.Address{Addr: a, ServerName: host})
		}
		r.InitialState(state)
		target = r.Scheme() + ":///msync"
		opts = append(opts, grpc.WithResolvers(r),
			grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	} else if !strings.Contains(target, "://") {
		// grpc.NewClient defaults to the dns resolver; passthrough keeps a
		// literal host:port as is (no DNS round trip for an IP).
		target = "passthrough:///" + target
	}
	cc, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("rpc: dial %v: %w", clean, err)
	}
	return cc, nil
}

// defaultTimeout gives calls without a deadline one, so a hung peer cannot
// hold a caller (and its goroutine) forever.
func defaultTimeout(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}
