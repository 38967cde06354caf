package gateway_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/msync/msync/gateway"
)

// Environment of the client child process of BenchmarkIdleMemoryPerTransport.
const (
	memEnvAddr = "GATEWAY_MEMTEST_ADDR"
	memEnvKind = "GATEWAY_MEMTEST_KIND"
	memEnvN    = "GATEWAY_MEMTEST_N"
	memEnvCA   = "GATEWAY_MEMTEST_CA"
)

// BenchmarkIdleMemoryPerTransport measures the server-side Go memory (live
// heap plus goroutine stacks, B/conn) and the RSS growth (rss-B/conn) per
// idle connection, for 2,000 connections on each listener. The clients run
// in a child process (this test binary re-executed), so their memory does
// not count. It measures once, whatever b.N. Figures are in
// docs/transports.md; run it with
//
//	go test -run '^$' -bench BenchmarkIdleMemoryPerTransport -benchtime 1x ./gateway
func BenchmarkIdleMemoryPerTransport(b *testing.B) {
	if addr := os.Getenv(memEnvAddr); addr != "" {
		runMemClients(b, addr)
		return
	}
	t := b
	const n = 2000
	cert := newCert(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, cert.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHandler()
	s := start(t, gateway.Config{
		AuthTimeout: 10 * time.Minute, // idle on purpose
		WSAddr:      "127.0.0.1:0", TLS: cert.Server, TLSAddr: "127.0.0.1:0", TLSWSAddr: "127.0.0.1:0",
	}, h)
	a := s.Addrs()
	limits := map[string]float64{"tcp": 6 << 10, "ws": 6 << 10, "tls": 64 << 10, "wss": 64 << 10}
	for _, tt := range []struct {
		kind string
		addr net.Addr
	}{{"tcp", a.TCP}, {"ws", a.WS}, {"tls", a.TLS}, {"wss", a.TLSWS}} {
		b.Run(tt.kind, func(b *testing.B) {
			t := b
			heap0, rss0 := liveBytes(), rssBytes(t)
			cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^BenchmarkIdleMemoryPerTransport$", "-test.benchtime=1x")
			cmd.Env = append(os.Environ(), memEnvAddr+"="+tt.addr.String(), memEnvKind+"="+tt.kind,
				memEnvN+"="+strconv.Itoa(n), memEnvCA+"="+caFile)
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				_ = stdin.Close() // the child closes its connections and exits
				if err := cmd.Wait(); err != nil {
					t.Errorf("client process: %v", err)
				}
				waitFor(t, 30*time.Second, "conns closed", func() bool { return s.Len() == 0 })
			}()
			if err := waitReady(stdout, 60*time.Second); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 30*time.Second, "all conns open", func() bool { return s.Len() == n })
			for len(h.opens) > 0 {
				<-h.opens
			}
			// netpoll's OnConnect goroutines exit on their own, with nothing
			// to wait on: let them, so their stacks are not counted.
			time.Sleep(200 * time.Millisecond)
			per := float64(liveBytes()-heap0) / n
			rss := float64(rssBytes(t)-rss0) / n
			b.ReportMetric(per, "B/conn")
			b.ReportMetric(rss, "rss-B/conn")
			if per > limits[tt.kind] {
				t.Errorf("%s: %.0f bytes per idle connection, over the %.0f bound", tt.kind, per, limits[tt.kind])
			}
		})
	}
}

func waitReady(r io.Reader, timeout time.Duration) error {
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadString('\n')
		if err == nil && !strings.Contains(line, "ready") {
			err = fmt.Errorf("client process said %q", line)
		}
		ready <- err
		_, _ = io.Copy(io.Discard, r)
	}()
	select {
	case err := <-ready:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("client process not ready after %v", timeout)
	}
}

// runMemClients is the child: it opens the connections, says "ready" and
// holds them until stdin closes.
func runMemClients(t testing.TB, addr string) {
	n, _ := strconv.Atoi(os.Getenv(memEnvN))
	pem, err := os.ReadFile(os.Getenv(memEnvCA))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tlsCfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", ClientSessionCache: tls.NewLRUClientSessionCache(1)}
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		var c net.Conn
		switch kind := os.Getenv(memEnvKind); kind {
		case "tcp":
			c, err = net.Dial("tcp", addr)
		case "tls":
			c, err = tls.Dial("tcp", addr, tlsCfg)
		case "ws", "wss":
			c, _, _, err = ws.Dialer{TLSConfig: tlsCfg}.Dial(ctx, kind+"://"+addr+"/sub")
		}
		if err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// rssBytes is this process's resident set size.
func rssBytes(t testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return pages * int64(os.Getpagesize())
}
