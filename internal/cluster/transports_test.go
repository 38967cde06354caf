package cluster

import (
	"path/filepath"
	"testing"

	"github.com/msync/msync/gateway"
	"github.com/msync/msync/internal/testcert"
	"github.com/msync/msync/pkg/config"
)

func TestCometTransports(t *testing.T) {
	cert, err := testcert.New()
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := cert.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var g gateway.Config
	c := config.Comet{WSAddr: ":3102", TLS: config.CometTLS{CertFile: certFile, KeyFile: keyFile, TCPAddr: ":3443", WSAddr: ":3444"}}
	if err := CometTransports(&g, c); err != nil {
		t.Fatal(err)
	}
	if g.WSAddr != ":3102" || g.TLSAddr != ":3443" || g.TLSWSAddr != ":3444" || g.TLS == nil || len(g.TLS.Certificates) != 1 {
		t.Fatalf("gateway config %+v", g)
	}

	c.TLS.KeyFile = filepath.Join(t.TempDir(), "missing.pem")
	if err := CometTransports(&gateway.Config{}, c); err == nil {
		t.Fatal("missing key file accepted")
	}
	var off gateway.Config
	if err := CometTransports(&off, config.Comet{}); err != nil || off.TLS != nil || off.WSAddr != "" {
		t.Fatalf("no transports: %+v %v", off, err)
	}
}
