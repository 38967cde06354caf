package rpc

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/directory"
)

// syncBuf is a goroutine-safe log sink.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type pki struct {
	t  *testing.T
	ca *CA
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &pki{t: t, ca: ca}
}

func (p *pki) tls(comet string, roles ...string) *TLS {
	p.t.Helper()
	m, err := p.ca.TLS(CertSpec{Roles: roles, Comet: comet, Hosts: DefaultHosts})
	if err != nil {
		p.t.Fatal(err)
	}
	return m
}

// whoLogic answers Connect with the caller's identity as the user.
type whoLogic struct{ pb.UnimplementedLogicServer }

func (whoLogic) Connect(ctx context.Context, _ *pb.ConnectReq) (*pb.ConnectReply, error) {
	id, ok := PeerIdentity(ctx)
	if !ok {
		return &pb.ConnectReply{User: "anonymous"}, nil
	}
	return &pb.ConnectReply{User: id.String()}, nil
}

func startTLSLogic(t *testing.T, m *TLS, log *slog.Logger) *Server {
	t.Helper()
	s, err := NewServer(ServerConfig{Addr: "127.0.0.1:0", TLS: m, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	s.Register(&pb.Logic_ServiceDesc, whoLogic{})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdown(t, s.Shutdown) })
	return s
}

func rawLogic(t *testing.T, addr string, creds credentials.TransportCredentials) pb.LogicClient {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return pb.NewLogicClient(cc)
}

// TestMutualTLSRoles: only a comet certificate from the cluster CA may call
// Logic; everyone else gets a clear refusal and the server logs it, at most
// once a second.
func TestMutualTLSRoles(t *testing.T) {
	p := newPKI(t)
	var logs syncBuf
	s := startTLSLogic(t, p.tls("", RoleLogic), slog.New(slog.NewTextHandler(&logs, nil)))
	addr := s.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	comet := dialT(t, DialConfig{TLS: p.tls("comet-7", RoleComet), ServerRole: RoleLogic}, addr)
	r, err := comet.Connect(ctx, &pb.ConnectReq{})
	if err != nil || r.User != "[comet](comet comet-7)" {
		t.Fatalf("comet Connect = %v, %v", r, err)
	}

	t.Run("plaintext peer", func(t *testing.T) {
		_, err := rawLogic(t, addr, insecure.NewCredentials()).Connect(ctx, &pb.ConnectReq{})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("plaintext Connect = %v, want Unavailable", err)
		}
	})
	t.Run("TLS without a client certificate", func(t *testing.T) {
		cfg := &tls.Config{RootCAs: p.tls("", RoleLogic).pool, MinVersion: tls.VersionTLS13}
		_, err := rawLogic(t, addr, credentials.NewTLS(cfg)).Connect(ctx, &pb.ConnectReq{})
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "needs a client certificate of role comet") {
			t.Fatalf("no-cert Connect = %v, want Unauthenticated naming the role", err)
		}
	})
	t.Run("certificate of another CA", func(t *testing.T) {
		other := newPKI(t).tls("comet-7", RoleComet)
		other.pool = p.tls("", RoleLogic).pool // trusts our server, but is not trusted by it
		_, err := dialT(t, DialConfig{TLS: other, ServerRole: RoleLogic}, addr).Connect(ctx, &pb.ConnectReq{})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("foreign-CA Connect = %v, want Unavailable", err)
		}
	})
	t.Run("job certificate calling logic", func(t *testing.T) {
		_, err := dialT(t, DialConfig{TLS: p.tls("", RoleJob), ServerRole: RoleLogic}, addr).Connect(ctx, &pb.ConnectReq{})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("job Connect = %v, want PermissionDenied", err)
		}
	})
	t.Run("server that is not logic", func(t *testing.T) {
		// A comet's certificate on the logic address: the comet client
		// refuses to talk to it.
		rogue := startTLSLogic(t, p.tls("comet-9", RoleComet), nil)
		_, err := dialT(t, DialConfig{TLS: p.tls("comet-7", RoleComet), ServerRole: RoleLogic}, rogue.Addr().String()).Connect(ctx, &pb.ConnectReq{})
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "want a logic") {
			t.Fatalf("Connect to a non-logic server = %v", err)
		}
	})

	// A burst of refusals logs at most a line or two.
	cfg := &tls.Config{RootCAs: p.tls("", RoleLogic).pool, MinVersion: tls.VersionTLS13}
	noCert := rawLogic(t, addr, credentials.NewTLS(cfg))
	for range 50 {
		_, _ = noCert.Connect(ctx, &pb.ConnectReq{})
	}
	out := logs.String()
	if n := strings.Count(out, "refused"); n < 3 || n > 10 {
		t.Fatalf("%d refusal lines for 50+ refusals (want 3..10: one per kind):\n%s", n, out)
	}
	for _, want := range []string{"no client certificate", "TLS handshake failed", "wrong role"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

// TestListenRefusesPublicWithoutTLS: plaintext gRPC only on loopback, with
// an error naming the setting; nothing is bound.
func TestListenRefusesPublicWithoutTLS(t *testing.T) {
	for _, addr := range []string{":0", "0.0.0.0:0", "[::]:0", "10.1.2.3:3112"} {
		s, err := NewServer(ServerConfig{Addr: addr, Setting: "logic.grpc_addr"})
		if err != nil {
			t.Fatal(err)
		}
		err = s.Listen()
		if !errors.Is(err, ErrInsecureListen) || !strings.Contains(err.Error(), "logic.grpc_addr") || !strings.Contains(err.Error(), "rpc_tls") {
			t.Fatalf("Listen(%s) without TLS = %v", addr, err)
		}
		if s.Addr() != nil {
			t.Fatalf("Listen(%s) bound %v", addr, s.Addr())
		}
		shutdown(t, s.Shutdown)
	}
	for addr, want := range map[string]bool{"127.0.0.1:1": true, "127.9.9.9:1": true, "[::1]:1": true, "localhost:1": true,
		":1": false, "0.0.0.0:1": false, "192.168.1.1:1": false, "example.com:1": false, "junk": false} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v", addr, got)
		}
	}
}

// fakeRegistry is a fixed comet list.
type fakeRegistry []directory.CometInfo

func (f fakeRegistry) Comets(context.Context) ([]directory.CometInfo, error) { return f, nil }
func (f fakeRegistry) RegisterComet(context.Context, string, string) error   { return nil }

// TestCometsDialOnlyTheCertifiedComet: a registry entry is only as good as
// the certificate at its address. An entry naming comet-1 at an address
// served by comet-2's certificate (a hijacked entry) gets no pushes.
func TestCometsDialOnlyTheCertifiedComet(t *testing.T) {
	p := newPKI(t)
	serve := func(id string) string {
		s, err := NewServer(ServerConfig{Addr: "127.0.0.1:0", TLS: p.tls(id, RoleComet)})
		if err != nil {
			t.Fatal(err)
		}
		s.Register(&pb.Comet_ServiceDesc, &fakeComet{n: 1})
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { shutdown(t, s.Shutdown) })
		return s.Addr().String()
	}
	real, rogue := serve("comet-1"), serve("comet-2")
	for _, tc := range []struct {
		addr string
		ok   bool
	}{{real, true}, {rogue, false}} {
		c, err := NewComets(CometsConfig{Registry: fakeRegistry{{ID: "comet-1", Addr: tc.addr}}, Refresh: time.Hour,
			Dial: DialConfig{TLS: p.tls("", RoleJob)}})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		_, err = pushTo(t, c, "comet-1")
		if (err == nil) != tc.ok {
			t.Errorf("push to comet-1 at %s (cert of %s): %v", tc.addr, map[bool]string{true: "comet-1", false: "comet-2"}[tc.ok], err)
		}
		if !tc.ok && !strings.Contains(err.Error(), "want comet comet-1") {
			t.Errorf("refusal does not say why: %v", err)
		}
		shutdown(t, c.Shutdown)
	}
}

func TestWriteDevCerts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	out, err := WriteDevCerts(dir, []string{"comet-1", "comet-2"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Files) != 10 {
		t.Fatalf("wrote %v", out.Files)
	}
	for name, want := range map[string]Identity{
		"logic":   {Roles: []string{RoleLogic, RoleJob}},
		"job":     {Roles: []string{RoleJob}},
		"comet-2": {Roles: []string{RoleComet}, Comet: "comet-2"},
	} {
		m, err := LoadTLS(filepath.Join(dir, "ca.crt"), filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Identity(); got.String() != want.String() {
			t.Errorf("%s names %v, want %v", name, got, want)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "comet-1.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key mode: %v %v", st.Mode(), err)
	}
	if _, err := WriteDevCerts(dir, nil, nil); !errors.Is(err, os.ErrExist) {
		t.Fatalf("second WriteDevCerts = %v, want ErrExist", err)
	}
	if _, err := LoadTLS(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "nope.crt"), filepath.Join(dir, "nope.key")); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("LoadTLS of missing files = %v", err)
	}
}
