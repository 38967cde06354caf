package cluster

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/pkg/rpc"
)

// TestTierTLSStartChecks: a non-loopback gRPC address without rpc_tls is
// refused with the setting's name; a certificate of the wrong role or
// comet id is refused at start; with matching certificates the mixed layout
// runs over mutual TLS and the comet is discovered.
func TestTierTLSStartChecks(t *testing.T) {
	certs := filepath.Join(t.TempDir(), "certs")
	if _, err := rpc.WriteDevCerts(certs, []string{"comet-1", "comet-2"}, nil); err != nil {
		t.Fatal(err)
	}
	tlsOn := "rpc_tls: {dir: " + certs + "}\n"
	for name, tc := range map[string]struct {
		start func() error
		want  string
	}{
		"logic on every interface without TLS": {func() error {
			f := parse(t, "job: {embedded: true}\n")
			f.Logic.GRPCAddr = ":0"
			_, err := StartLogic(TierConfig{File: f, DataDir: t.TempDir()})
			return err
		}, "logic.grpc_addr"},
		"comet on every interface without TLS": {func() error {
			f := parse(t, "")
			f.Comet.GRPCAddr, f.Comet.LogicAddrs = "0.0.0.0:0", []string{"127.0.0.1:1"}
			_, err := StartComet(TierConfig{File: f})
			return err
		}, "comet.grpc_addr"},
		"comet with another comet's certificate": {func() error {
			f := parse(t, "rpc_tls: {dir: "+certs+", cert_file: "+filepath.Join(certs, "comet-2.crt")+", key_file: "+filepath.Join(certs, "comet-2.key")+"}\n")
			f.Comet.LogicAddrs = []string{"127.0.0.1:1"}
			_, err := StartComet(TierConfig{File: f})
			return err
		}, `certificate is comet "comet-2"'s`},
		"logic with the job certificate": {func() error {
			f := parse(t, "job: {embedded: true}\nrpc_tls: {dir: "+certs+", cert_file: "+filepath.Join(certs, "job.crt")+", key_file: "+filepath.Join(certs, "job.key")+"}\n")
			_, err := StartLogic(TierConfig{File: f, DataDir: t.TempDir()})
			return err
		}, "needs role logic"},
	} {
		t.Run(name, func(t *testing.T) {
			err := tc.start()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %q", err, tc.want)
			}
			if strings.Contains(tc.want, "grpc_addr") && !errors.Is(err, rpc.ErrInsecureListen) {
				t.Fatalf("err = %v, want rpc.ErrInsecureListen", err)
			}
		})
	}
	f := parse(t, "job: {embedded: true, refresh: 50ms}\n"+tlsOn)
	l, err := StartLogic(TierConfig{File: f, DataDir: filepath.Join(t.TempDir(), "data")})
	if err != nil {
		t.Fatal(err)
	}
	defer stop(t, l.Shutdown)
	f.Comet.LogicAddrs = []string{l.RPC.Addr().String()}
	c, err := StartComet(TierConfig{File: f})
	if err != nil {
		t.Fatal(err)
	}
	defer stop(t, c.Shutdown)
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, func() error {
		if ids := fmt.Sprint(l.Comets.IDs()); ids != "[comet-1]" {
			return fmt.Errorf("discovery lists %v over TLS, want [comet-1]", ids)
		}
		return nil
	})
}
