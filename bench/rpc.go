package bench

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msync/msync/pkg/auth"
	"github.com/msync/msync/pkg/client"
)

// ---- rpc ----

// RPCConfig: RPC over the long connection (docs/protocol.md §17) against an
// echo upstream this process serves, compared with calling that upstream
// directly over HTTP/1.1 keep-alive from the same process at the same rate.
type RPCConfig struct {
	Common
	// Rate is the paced call rate of each phase; zero 1000 calls/s.
	Rate float64
	// Duration of each paced phase; zero 10s.
	Duration time.Duration
	// Devices are the sessions the calls are spread over; zero 10.
	Devices int
	// Body is the request (and echoed answer) size in bytes; zero 256.
	Body int
	// Workers is the concurrency of the closed-loop max-throughput phases;
	// zero 64, negative skips them.
	Workers int
}

// RPCResult: latency per call measured by the caller, directly and through
// msync, and the difference (what msync adds: frame codec, comet, the HTTP
// hop from comet to the upstream).
type RPCResult struct {
	Scenario  string  `json:"scenario"`
	Rate      float64 `json:"rate"`
	Devices   int     `json:"devices"`
	BodyBytes int     `json:"body_bytes"`
	// Paced phases.
	DirectCalls     int     `json:"direct_calls"`
	DirectPerSec    float64 `json:"direct_calls_per_s"`
	DirectP50Ms     float64 `json:"direct_p50_ms"`
	DirectP99Ms     float64 `json:"direct_p99_ms"`
	DirectMaxMs     float64 `json:"direct_max_ms"`
	MsyncCalls      int     `json:"msync_calls"`
	MsyncPerSec     float64 `json:"msync_calls_per_s"`
	MsyncP50Ms      float64 `json:"msync_p50_ms"`
	MsyncP99Ms      float64 `json:"msync_p99_ms"`
	MsyncMaxMs      float64 `json:"msync_max_ms"`
	AddedP50Ms      float64 `json:"added_p50_ms"`
	AddedP99Ms      float64 `json:"added_p99_ms"`
	Errors          int     `json:"errors"`
	Late            int     `json:"late_starts"` // calls started > 1 ms after their slot (the pacer fell behind)
	MaxDirectPerSec float64 `json:"max_direct_calls_per_s,omitempty"`
	MaxMsyncPerSec  float64 `json:"max_msync_calls_per_s,omitempty"`
	Workers         int     `json:"workers,omitempty"`
}

// rpcMaxInFlight bounds paced calls outstanding at once, so a stalled
// server makes the run fail instead of piling up goroutines.
const rpcMaxInFlight = 4096

// RunRPC runs the rpc scenario: direct paced, msync paced, then (unless
// Workers < 0) direct and msync closed-loop for the max throughput.
func RunRPC(ctx context.Context, cfg RPCConfig) (*RPCResult, error) {
	if cfg.Rate == 0 {
		cfg.Rate = 1000
	}
	if cfg.Duration == 0 {
		cfg.Duration = 10 * time.Second
	}
	if cfg.Devices == 0 {
		cfg.Devices = 10
	}
	if cfg.Body == 0 {
		cfg.Body = 256
	}
	if cfg.Workers == 0 {
		cfg.Workers = 64
	}
	switch {
	case cfg.Rate < 0 || cfg.Rate > 100000 || cfg.Duration < 0 || cfg.Duration > time.Hour:
		return nil, fmt.Errorf("%w: rate %v (0..100000), duration %v (up to 1h)", ErrConfig, cfg.Rate, cfg.Duration)
	case cfg.Devices < 0 || cfg.Devices > 1000 || cfg.Body < 0 || cfg.Body > 1<<20 || cfg.Workers > 4096:
		return nil, fmt.Errorf("%w: devices %d (1..1000), body %d (up to 1 MiB), workers %d (up to 4096)", ErrConfig, cfg.Devices, cfg.Body, cfg.Workers)
	case cfg.Target.Addr != "" || cfg.Target.Comets != 0:
		return nil, fmt.Errorf("%w: rpc starts its own server (it configures the upstream)", ErrConfig)
	}
	up, err := startEcho()
	if err != nil {
		return nil, err
	}
	defer up.Close()
	t := cfg.Target
	if t.Log == nil {
		t.Log = cfg.log()
	}
	// A connection may send comet.limits.frame_rate frames/s (1000 by
	// default, ERROR 1011 past it); the closed loop sends far more over a few
	// connections, and it measures the RPC path, not that abuse limit.
	t.CometExtra = "  limits: {frame_rate: 1000000, frame_burst: 1000000}\n"
	t.Extra = fmt.Sprintf("upstreams:\n  echo: {url: %q, timeout: 10s, max_in_flight: %d}\n", "http://"+up.addr, rpcMaxInFlight)
	srv, err := startServer(ctx, t)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	cfg.logf("server pid %d comet %s, upstream %s", srv.pid, srv.addr, up.addr)
	clients, err := rpcClients(ctx, srv, cfg.Devices)
	for _, c := range clients {
		defer c.Close()
	}
	if err != nil {
		return nil, err
	}

	body := bytes.Repeat([]byte("r"), cfg.Body)
	direct := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 0}}
	defer direct.CloseIdleConnections()
	var next atomic.Uint64
	callDirect := func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, "POST", "http://"+up.addr+"/call", bytes.NewReader(body))
		if err != nil {
			return err
		}
		resp, err := direct.Do(req)
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && (resp.StatusCode != 200 || int(n) != len(body)) {
			err = fmt.Errorf("direct: status %d, %d bytes", resp.StatusCode, n)
		}
		return err
	}
	callMsync := func(ctx context.Context) error {
		c := clients[next.Add(1)%uint64(len(clients))]
		resp, err := c.Call(ctx, "echo", "/call", body)
		if err == nil && (resp.Status != 200 || len(resp.Body) != len(body)) {
			err = fmt.Errorf("msync: status %d, %d bytes", resp.Status, len(resp.Body))
		}
		return err
	}

	res := &RPCResult{Scenario: "rpc", Rate: cfg.Rate, Devices: cfg.Devices, BodyBytes: cfg.Body}
	// Warm both paths (connections, pools) outside the measurement.
	if _, err := paced(ctx, min(cfg.Rate, 200), time.Second, callDirect); err != nil {
		return nil, err
	}
	if _, err := paced(ctx, min(cfg.Rate, 200), time.Second, callMsync); err != nil {
		return nil, err
	}
	// The two paths alternate in rpcRounds slices of Duration, so a burst
	// of load from other processes on the machine hits both alike.
	cfg.logf("direct and msync alternating: %v calls/s, %v each", cfg.Rate, cfg.Duration)
	d, m := &pacedResult{}, &pacedResult{}
	slice := cfg.Duration / rpcRounds
	for range rpcRounds {
		for _, p := range []struct {
			into *pacedResult
			call func(context.Context) error
		}{{d, callDirect}, {m, callMsync}} {
			r, err := paced(ctx, cfg.Rate, slice, p.call)
			if err != nil {
				return nil, err
			}
			p.into.merge(r)
		}
	}
	res.DirectCalls, res.DirectPerSec = int(d.hist.N), d.perSec
	res.DirectP50Ms, res.DirectP99Ms, res.DirectMaxMs = ms(d.hist.Quantile(0.5)), ms(d.hist.Quantile(0.99)), ms(time.Duration(d.hist.MaxNs))
	res.MsyncCalls, res.MsyncPerSec = int(m.hist.N), m.perSec
	res.MsyncP50Ms, res.MsyncP99Ms, res.MsyncMaxMs = ms(m.hist.Quantile(0.5)), ms(m.hist.Quantile(0.99)), ms(time.Duration(m.hist.MaxNs))
	res.AddedP50Ms, res.AddedP99Ms = res.MsyncP50Ms-res.DirectP50Ms, res.MsyncP99Ms-res.DirectP99Ms
	res.Errors, res.Late = d.errors+m.errors, d.late+m.late
	if res.Errors > 0 {
		return res, fmt.Errorf("%w: %d calls failed: %v", ErrServer, res.Errors, errors.Join(d.firstErr, m.firstErr))
	}
	if cfg.Workers > 0 {
		res.Workers = cfg.Workers
		window := min(cfg.Duration, 5*time.Second)
		if res.MaxDirectPerSec, err = closedLoop(ctx, cfg.Workers, window, callDirect); err != nil {
			return res, err
		}
		if res.MaxMsyncPerSec, err = closedLoop(ctx, cfg.Workers, window, callMsync); err != nil {
			return res, err
		}
	}
	return res, nil
}

// echoServer answers every POST with its body.
type echoServer struct {
	addr string
	srv  *http.Server
	done chan struct{}
}

func startEcho() (*echoServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("%w: upstream: %w", ErrServer, err)
	}
	e := &echoServer{addr: ln.Addr().String(), done: make(chan struct{}), srv: &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(io.LimitReader(r.Body, 2<<20))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = w.Write(b)
		})}}
	go func() { // owned: ends when Close shuts the server down
		defer close(e.done)
		_ = e.srv.Serve(ln)
	}()
	return e, nil
}

func (e *echoServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = e.srv.Shutdown(ctx)
	<-e.done
}

// rpcClients connects n Go SDK clients (devices rpc-0..) and waits until
// each is connected.
func rpcClients(ctx context.Context, srv *server, n int) ([]*client.Client, error) {
	tokens, err := auth.NewTokens(srv.secret)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	var out []*client.Client
	for i := range n {
		dev := fmt.Sprintf("rpc-%d", i)
		user := fmt.Sprintf("rpc-user-%d", i)
		c, err := client.New(srv.addr, client.Options{
			TokenProvider: func(context.Context) (string, error) { return tokens.Sign(user, time.Hour) },
			Device:        dev, Platform: "android", AppVersion: "1.0",
			BackoffMin: 50 * time.Millisecond, BackoffMax: time.Second,
		})
		if err != nil {
			return out, fmt.Errorf("%w: %w", ErrClients, err)
		}
		// The SDK needs one biz; nothing is published to it.
		if err := c.RegisterBiz(DefaultDeviceBiz, func(context.Context, client.Oplog) error { return nil }); err != nil {
			return out, fmt.Errorf("%w: %w", ErrClients, err)
		}
		out = append(out, c)
		if err := c.Start(); err != nil {
			return out, fmt.Errorf("%w: %w", ErrClients, err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, c := range out {
		for !c.Connected() {
			if time.Now().After(deadline) || ctx.Err() != nil {
				return out, fmt.Errorf("%w: %d sessions did not connect within 30s", ErrTimeout, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return out, nil
}

// rpcRounds is how many alternating slices each path's paced phase is cut in.
const rpcRounds = 5

type pacedResult struct {
	hist     Hist
	perSec   float64
	errors   int
	late     int
	firstErr error
	secs     float64 // wall time of the phase(s)
}

func (r *pacedResult) merge(o *pacedResult) {
	r.hist.Merge(o.hist)
	r.errors += o.errors
	r.late += o.late
	r.firstErr = cmp.Or(r.firstErr, o.firstErr)
	r.secs += o.secs
	r.perSec = float64(r.hist.N) / r.secs
}

// paced starts one call every 1/rate for d (open loop: a slow answer does
// not delay the next start), each measured from its own start, and waits
// for all of them.
func paced(ctx context.Context, rate float64, d time.Duration, call func(context.Context) error) (*pacedResult, error) {
	n := int(rate * d.Seconds())
	if n < 1 {
		n = 1
	}
	interval := time.Duration(float64(time.Second) / rate)
	res := &pacedResult{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	slots := make(chan struct{}, rpcMaxInFlight)
	start := time.Now()
	for i := range n {
		slot := start.Add(time.Duration(i) * interval)
		if w := time.Until(slot); w > 0 {
			time.Sleep(w)
		} else if w < -time.Millisecond {
			res.late++
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return nil, ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-slots }()
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			t0 := time.Now()
			err := call(cctx)
			el := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.errors++
				if res.firstErr == nil {
					res.firstErr = err
				}
				return
			}
			res.hist.Add(el)
		})
	}
	wg.Wait()
	res.secs = time.Since(start).Seconds()
	res.perSec = float64(res.hist.N) / res.secs
	return res, nil
}

// closedLoop runs workers calling back to back for d and returns calls/s.
func closedLoop(ctx context.Context, workers int, d time.Duration, call func(context.Context) error) (float64, error) {
	var done atomic.Int64
	var mu sync.Mutex
	var firstErr error
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for time.Now().Before(stop) && ctx.Err() == nil {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := call(cctx)
				cancel()
				if err != nil {
					mu.Lock()
					firstErr = cmp.Or(firstErr, err)
					mu.Unlock()
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return 0, fmt.Errorf("%w: max throughput: %w", ErrServer, firstErr)
	}
	return float64(done.Load()) / time.Since(start).Seconds(), nil
}
