package rpc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/msync/msync/pkg/api/pb"
)

// Tier roles a certificate can name. A process running several tiers (logic
// with job embedded) carries one certificate naming each.
const (
	RoleLogic = "logic"
	RoleComet = "comet"
	RoleJob   = "job"
)

// identityHost is the URI SAN authority of tier identities:
// spiffe://msync/logic, spiffe://msync/job, spiffe://msync/comet/<id>.
const identityHost = "msync"

// Identity is who a tier certificate says its holder is.
type Identity struct {
	Roles []string
	// Comet is the comet id when Roles has RoleComet: the only id that
	// comet may register, renew or open sessions under.
	Comet string
}

// Has reports whether the identity names role.
func (id Identity) Has(role string) bool { return slices.Contains(id.Roles, role) }

func (id Identity) String() string {
	if id.Comet != "" {
		return fmt.Sprintf("%v(comet %s)", id.Roles, id.Comet)
	}
	return fmt.Sprint(id.Roles)
}

// IdentityURIs are the URI SANs a certificate carries for roles (and the
// comet id, required with RoleComet).
func IdentityURIs(roles []string, cometID string) ([]*url.URL, error) {
	var out []*url.URL
	for _, r := range roles {
		switch r {
		case RoleLogic, RoleJob:
			out = append(out, &url.URL{Scheme: "spiffe", Host: identityHost, Path: "/" + r})
		case RoleComet:
			if cometID == "" || strings.ContainsAny(cometID, "/?#") {
				return nil, fmt.Errorf("%w: comet certificate needs a comet id without / ? # (got %q)", ErrInvalidConfig, cometID)
			}
			out = append(out, &url.URL{Scheme: "spiffe", Host: identityHost, Path: "/comet/" + cometID})
		default:
			return nil, fmt.Errorf("%w: role %q: want logic, comet or job", ErrInvalidConfig, r)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: a tier certificate needs at least one role", ErrInvalidConfig)
	}
	return out, nil
}

// IdentityOf reads the tier identity from a certificate's URI SANs; other
// URIs are ignored. A certificate naming no role is an error.
func IdentityOf(c *x509.Certificate) (Identity, error) {
	var id Identity
	for _, u := range c.URIs {
		if u.Scheme != "spiffe" || u.Host != identityHost {
			continue
		}
		switch p := strings.TrimPrefix(u.Path, "/"); {
		case p == RoleLogic || p == RoleJob:
			id.Roles = append(id.Roles, p)
		case strings.HasPrefix(p, RoleComet+"/") && len(p) > len(RoleComet)+1:
			if id.Comet != "" {
				return Identity{}, errors.New("certificate names two comet ids")
			}
			id.Comet = p[len(RoleComet)+1:]
			id.Roles = append(id.Roles, RoleComet)
		}
	}
	if len(id.Roles) == 0 {
		return Identity{}, fmt.Errorf("certificate %q names no msync tier (want a URI SAN spiffe://msync/<role>)", c.Subject.CommonName)
	}
	return id, nil
}

// TLS is a tier's mutual-TLS material: the cluster CA every peer must be
// signed by, and this process's own certificate and key.
type TLS struct {
	pool *x509.CertPool
	cert tls.Certificate
	self Identity
}

// LoadTLS reads PEM files (the config's rpc_tls: ca_file, cert_file,
// key_file).
func LoadTLS(caFile, certFile, keyFile string) (*TLS, error) {
	if caFile == "" || certFile == "" || keyFile == "" {
		return nil, fmt.Errorf("%w: rpc_tls: ca_file, cert_file and key_file are all required", ErrInvalidConfig)
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("%w: rpc_tls.ca_file: %w", ErrInvalidConfig, err)
	}
	cert, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("%w: rpc_tls.cert_file: %w", ErrInvalidConfig, err)
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: rpc_tls.key_file: %w", ErrInvalidConfig, err)
	}
	t, err := NewTLS(ca, cert, key)
	if err != nil {
		return nil, fmt.Errorf("rpc_tls (%s, %s): %w", certFile, caFile, err)
	}
	return t, nil
}

// NewTLS builds the material from PEM bytes. The certificate must chain to
// the CA and name at least one tier role.
func NewTLS(caPEM, certPEM, keyPEM []byte) (*TLS, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%w: no CA certificate in the CA file", ErrInvalidConfig)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: key pair: %w", ErrInvalidConfig, err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("%w: certificate: %w", ErrInvalidConfig, err)
	}
	inter := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("%w: certificate is not valid under the CA: %w", ErrInvalidConfig, err)
	}
	self, err := IdentityOf(leaf)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	pair.Leaf = leaf
	return &TLS{pool: pool, cert: pair, self: self}, nil
}

// Identity is what this process's own certificate names.
func (t *TLS) Identity() Identity { return t.self }

func (t *TLS) serverConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{t.cert},
		ClientCAs:    t.pool,
		// Verified if given, required per call by the interceptor: a peer
		// without a certificate then gets a gRPC status saying what is
		// missing instead of a bare handshake failure.
		ClientAuth: tls.VerifyClientCertIfGiven,
		MinVersion: tls.VersionTLS13,
	}
}

// clientConfig trusts only the CA, presents our certificate and accepts a
// server only if its certificate names role (and comet id, when set) as
// well as the dialed host.
func (t *TLS) clientConfig(role, comet string) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{t.cert},
		RootCAs:      t.pool,
		MinVersion:   tls.VersionTLS13,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("rpc: server sent no certificate")
			}
			id, err := IdentityOf(cs.PeerCertificates[0])
			if err != nil {
				return fmt.Errorf("rpc: server: %w", err)
			}
			if role != "" && !id.Has(role) {
				return fmt.Errorf("rpc: server certificate names %v, want a %s", id, role)
			}
			if comet != "" && id.Comet != comet {
				return fmt.Errorf("rpc: server certificate names comet %s, want comet %s (registry entry not backed by its certificate)", id.Comet, comet)
			}
			return nil
		},
	}
}

type peerKey struct{}

// PeerIdentity returns the verified identity of the gRPC peer that made the
// call in ctx; false when the server runs without TLS (loopback only) or
// the call is in-process.
func PeerIdentity(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(peerKey{}).(Identity)
	return id, ok
}

// WithPeerIdentity returns ctx carrying id, as the server's interceptor
// does; for in-process callers and tests of handlers.
func WithPeerIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, peerKey{}, id)
}

// methodRoles is who may call what: comets call logic, job calls comets.
// Built from the generated service descriptors, so a new method is covered
// by its service's rule and any other service is refused.
var methodRoles = func() map[string]string {
	m := map[string]string{}
	for desc, role := range map[*grpc.ServiceDesc]string{&pb.Logic_ServiceDesc: RoleComet, &pb.Comet_ServiceDesc: RoleJob} {
		for _, md := range desc.Methods {
			m["/"+desc.ServiceName+"/"+md.MethodName] = role
		}
		for _, sd := range desc.Streams {
			m["/"+desc.ServiceName+"/"+sd.StreamName] = role
		}
	}
	return m
}()

// RoleFor returns the role allowed to call a full gRPC method name.
func RoleFor(fullMethod string) (string, bool) {
	r, ok := methodRoles[fullMethod]
	return r, ok
}

// authorize is the server interceptor with TLS on: the peer's certificate
// must name the role the method's table entry allows.
func (s *Server) authorize(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	role, ok := methodRoles[info.FullMethod]
	if !ok {
		s.refused.warn("grpc call refused: method not in the role table", "method", info.FullMethod, "peer", peerAddr(ctx))
		return nil, status.Errorf(codes.PermissionDenied, "rpc: %s is not callable between msync tiers", info.FullMethod)
	}
	p, _ := peer.FromContext(ctx)
	var leaf *x509.Certificate
	if p != nil {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
			leaf = ti.State.VerifiedChains[0][0]
		}
	}
	if leaf == nil {
		s.refused.warn("grpc call refused: no client certificate", "method", info.FullMethod, "peer", peerAddr(ctx))
		return nil, status.Errorf(codes.Unauthenticated,
			"rpc: %s needs a client certificate of role %s signed by the cluster CA (rpc_tls)", info.FullMethod, role)
	}
	id, err := IdentityOf(leaf)
	if err != nil || !id.Has(role) {
		s.refused.warn("grpc call refused: wrong role", "method", info.FullMethod, "peer", peerAddr(ctx), "identity", id.String(), "err", err)
		return nil, status.Errorf(codes.PermissionDenied, "rpc: peer %v may not call %s (role %s only)", id, info.FullMethod, role)
	}
	if id.Has(RoleComet) && p != nil {
		// A comet's address in its certificate is what it may register:
		// logic checks Renew's grpc_addr against it.
		ctx = context.WithValue(ctx, leafKey{}, leaf)
	}
	return h(WithPeerIdentity(ctx, id), req)
}

type leafKey struct{}

// PeerMayServe reports whether the calling peer's certificate is valid for
// host (an IP or DNS SAN); true without TLS (nothing to check against).
func PeerMayServe(ctx context.Context, host string) bool {
	leaf, ok := ctx.Value(leafKey{}).(*x509.Certificate)
	if !ok {
		_, tlsOn := PeerIdentity(ctx)
		return !tlsOn
	}
	return leaf.VerifyHostname(host) == nil
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// loggedCreds logs failed server handshakes (a plaintext peer, a
// certificate from another CA): grpc itself only drops the connection.
type loggedCreds struct {
	credentials.TransportCredentials
	refused *rateLog
}

func (c loggedCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if errors.Is(err, io.EOF) {
		// Closed before saying anything: a port probe or health check
		// (scripts/cluster.sh waits for the port this way), not a peer.
		return conn, info, err
	}
	if err != nil {
		c.refused.warn("grpc connection refused: TLS handshake failed (peers need a certificate from the cluster CA, rpc_tls)",
			"peer", raw.RemoteAddr().String(), "err", err)
	}
	return conn, info, err
}

func (c loggedCreds) Clone() credentials.TransportCredentials {
	return loggedCreds{TransportCredentials: c.TransportCredentials.Clone(), refused: c.refused}
}

// rateLog writes at most one warning per message per interval; the next
// one says how many were left out, so a flood of bad peers cannot flood
// the log. Messages are constants, so the map stays small.
type rateLog struct {
	log      *slog.Logger
	interval time.Duration
	mu       sync.Mutex
	byMsg    map[string]*rateState
}

type rateState struct {
	last    time.Time
	dropped int
}

func (r *rateLog) warn(msg string, args ...any) {
	r.mu.Lock()
	if r.byMsg == nil {
		r.byMsg = make(map[string]*rateState)
	}
	st := r.byMsg[msg]
	if st == nil {
		st = &rateState{}
		r.byMsg[msg] = st
	}
	now := time.Now()
	if !st.last.IsZero() && now.Sub(st.last) < r.interval {
		st.dropped++
		r.mu.Unlock()
		return
	}
	if st.dropped > 0 {
		args = append(args, "suppressed_since_last", st.dropped)
	}
	st.last, st.dropped = now, 0
	r.mu.Unlock()
	r.log.Warn(msg, args...)
}

// IsLoopback reports whether a listen address binds only loopback
// (127.0.0.0/8, ::1 or localhost); ":3112" and "0.0.0.0:3112" do not.
func IsLoopback(addr string) bool {
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
