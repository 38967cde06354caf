package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Common is what every scenario shares.
type Common struct {
	Target Target
	// Procs is the least number of load-client processes; zero: one per
	// PerClient devices.
	Procs int
	// PerClient bounds devices per load-client process; zero: MaxPerClient.
	PerClient int
	// Log receives children's stderr and progress lines; nil discards.
	Log io.Writer
}

func (c *Common) logf(format string, args ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, "bench: "+format+"\n", args...)
	}
}

func (c *Common) log() io.Writer {
	if c.Log == nil {
		return io.Discard
	}
	return c.Log
}

// env is a server and a pool of load clients for one run.
type env struct {
	srv  *server
	pool *pool
}

func (c *Common) start(ctx context.Context, n int, hb time.Duration) (*env, error) {
	if k := c.Target.Comets; k > 0 {
		if c.Target.Addr != "" || c.Target.API != "" {
			return nil, fmt.Errorf("%w: --comets starts a cluster; it does not go with --addr/--api", ErrConfig)
		}
		if per := (n + k - 1) / k; per > MaxPerComet {
			return nil, fmt.Errorf("%w: %d sessions on %d comets is %d per comet, more than %d (open-files limit): use more comets", ErrConfig, n, k, per, MaxPerComet)
		}
	}
	if _, err := RaiseFileLimit(); err != nil { // inherited by both kinds of child
		return nil, err
	}
	t := c.Target
	t.Pprof = true
	if hb > 0 {
		t.Heartbeat = hb
	}
	if t.Log == nil {
		t.Log = c.log()
	}
	srv, err := startServer(ctx, t)
	if err != nil {
		return nil, err
	}
	if t.Comets > 0 {
		c.logf("cluster pids %s comets %v api %s", srv.pidList(), srv.addrs, srv.api)
	} else {
		c.logf("server pid %d comet %s api %s pprof %s", srv.pid, srv.addr, srv.api, srv.pprof)
	}
	exe, err := t.exe()
	if err != nil {
		srv.stop()
		return nil, err
	}
	p, err := startPool(exe, n, c.PerClient, c.Procs, srv.addrs, c.log())
	if err != nil {
		srv.stop()
		return nil, err
	}
	return &env{srv: srv, pool: p}, nil
}

func (e *env) stop() error {
	e.pool.stop()
	return e.srv.stop()
}

func (e *env) spec(prefix, user string, bizs ...string) ConnectSpec {
	return ConnectSpec{Addr: e.srv.addr, Secret: e.srv.secret, Prefix: prefix, User: user, Bizs: bizs, Reconnect: true}
}

func checkConnected(r ClientReport, n int) error {
	if r.Connected < n {
		return fmt.Errorf("%w: %d of %d sessions connected (%d failed): %v", ErrClients, r.Connected, n, r.Failed, r.Errors)
	}
	return nil
}

// ---- conns / heartbeat ----

// ConnsConfig: N authenticated idle sessions.
type ConnsConfig struct {
	Common
	N int // sessions (required)
	// Heartbeat is the server's interval, which clients follow; zero 30s.
	Heartbeat time.Duration
	// Window is how long CPU is measured while idle; zero 10s.
	Window time.Duration
}

// ConnsResult are the figures of RunConns and RunHeartbeat.
type ConnsResult struct {
	Scenario     string  `json:"scenario"`
	N            int     `json:"n"`
	Connected    int     `json:"connected"`
	Failed       int     `json:"failed"`
	Procs        int     `json:"client_procs"`
	BytesPerConn float64 `json:"bytes_per_conn"`
	RSSBefore    uint64  `json:"rss_before_bytes"`
	RSSAfter     uint64  `json:"rss_after_bytes"`
	// BytesPerConnScavenged is the RSS delta per session when, after the
	// forced GC, freed heap is also returned to the OS (debug.FreeOSMemory,
	// before connecting and after) — what a long-idle server's background
	// scavenger converges to. bytes_per_conn above keeps the freed heap the
	// runtime holds for the next GC cycle. Zero when the server cannot
	// (external server, or no /debug/freeos).
	BytesPerConnScavenged float64 `json:"bytes_per_conn_scavenged,omitempty"`
	RSSBeforeScavenged    uint64  `json:"rss_before_scavenged_bytes,omitempty"`
	RSSAfterScavenged     uint64  `json:"rss_after_scavenged_bytes,omitempty"`
	ConnectRate           float64 `json:"connect_rate"`
	ConnectSecs           float64 `json:"connect_secs"`
	HeartbeatSecs         float64 `json:"heartbeat_s"`
	WindowSecs            float64 `json:"window_s"`
	ServerCPU             float64 `json:"server_cpu_percent"` // % of one core while idle
	Drops                 uint64  `json:"drops"`
	// Cluster mode (--comets): how many comets, and each server process's
	// figures (logic first). CPU and RSS above are sums over them.
	Comets      int           `json:"comets,omitempty"`
	ServerProcs []ProcFigures `json:"server_procs,omitempty"`
	// ServerHeartbeats is HEARTBEAT frames the comets counted
	// (msync_comet_frames_in_total) per second over the window.
	ServerHeartbeats float64 `json:"server_heartbeats_per_s,omitempty"`
}

// RunConns opens N sessions, measures memory per session and idle CPU.
func RunConns(ctx context.Context, cfg ConnsConfig) (*ConnsResult, error) {
	if cfg.N <= 0 {
		return nil, fmt.Errorf("%w: conns: -n must be positive", ErrConfig)
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 30 * time.Second
	}
	if cfg.Window <= 0 {
		cfg.Window = 10 * time.Second
	}
	e, err := cfg.start(ctx, cfg.N, cfg.Heartbeat)
	if err != nil {
		return nil, err
	}
	res, err := runConns(ctx, &cfg, e)
	return res, joinStop(err, e)
}

func joinStop(err error, e *env) error {
	if serr := e.stop(); err == nil && serr != nil {
		return fmt.Errorf("%w: stop: %w", ErrServer, serr)
	}
	return err
}

func settle(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func runConns(ctx context.Context, cfg *ConnsConfig, e *env) (*ConnsResult, error) {
	res := &ConnsResult{Scenario: "conns", N: cfg.N, Procs: len(e.pool.kids), HeartbeatSecs: cfg.Heartbeat.Seconds(), WindowSecs: cfg.Window.Seconds(),
		Comets: len(e.srv.cometHTTP)}
	if err := settle(ctx, time.Second); err != nil {
		return nil, err
	}
	e.srv.gc(ctx)
	before, serr := e.srv.sample()
	beforeEach, _ := e.srv.sampleEach()
	// The scavenged baseline is sampled after the plain one, so
	// bytes_per_conn's baseline still holds the start-up idle heap.
	scav := e.srv.freeOS(ctx)
	beforeS, serrS := e.srv.sample()
	beforeSEach, _ := e.srv.sampleEach()
	r, err := e.pool.connect(e.spec("dev-", "", DefaultDeviceBiz))
	if err != nil {
		return nil, err
	}
	if err := checkConnected(r, cfg.N); err != nil {
		return nil, err
	}
	res.Connected, res.Failed = r.Connected, r.Failed
	res.ConnectSecs = time.Duration(r.ConnectNs).Seconds()
	res.ConnectRate = float64(r.Connected) / res.ConnectSecs
	cfg.logf("%d sessions in %.2fs", r.Connected, res.ConnectSecs)
	if err := settle(ctx, 2*time.Second); err != nil {
		return nil, err
	}
	e.srv.gc(ctx)
	if err := settle(ctx, time.Second); err != nil {
		return nil, err
	}
	a, aerr := e.srv.sample()
	aEach, _ := e.srv.sampleEach()
	var aS procStat
	var aSEach []procStat
	aerrS := serrS
	if scav && e.srv.freeOS(ctx) {
		aS, aerrS = e.srv.sample()
		aSEach, _ = e.srv.sampleEach()
	} else {
		scav = false
	}
	hb0, hberr := e.srv.heartbeats(ctx)
	if err := settle(ctx, cfg.Window); err != nil {
		return nil, err
	}
	b, berr := e.srv.sample()
	bEach, _ := e.srv.sampleEach()
	hb1, hberr1 := e.srv.heartbeats(ctx)
	if serr == nil && aerr == nil && berr == nil {
		res.RSSBefore, res.RSSAfter = before.rssBytes, a.rssBytes
		res.BytesPerConn = (float64(a.rssBytes) - float64(before.rssBytes)) / float64(cfg.N)
		res.ServerCPU = cpuPercent(a, b)
	}
	if scav && serrS == nil && aerrS == nil {
		res.RSSBeforeScavenged, res.RSSAfterScavenged = beforeS.rssBytes, aS.rssBytes
		res.BytesPerConnScavenged = (float64(aS.rssBytes) - float64(beforeS.rssBytes)) / float64(cfg.N)
	}
	if hberr == nil && hberr1 == nil && hb1 > hb0 {
		res.ServerHeartbeats = (hb1 - hb0) / b.at.Sub(a.at).Seconds()
	}
	if len(e.srv.procs) > 0 && len(beforeEach) == len(e.srv.procs) && len(aEach) == len(beforeEach) && len(bEach) == len(beforeEach) {
		for i, name := range e.srv.procNames() {
			pf := ProcFigures{Name: name, CPU: cpuPercent(aEach[i], bEach[i]), RSSBefore: beforeEach[i].rssBytes, RSSAfter: aEach[i].rssBytes}
			if i > 0 { // comets: procs[i] serves cometHTTP[i-1]
				pf.Sessions, _ = scrape(ctx, e.srv.metricsURLs()[i-1], "msync_comet_sessions")
				if pf.Sessions > 0 {
					pf.BytesPerConn = (float64(pf.RSSAfter) - float64(pf.RSSBefore)) / pf.Sessions
					if scav && len(aSEach) == len(beforeSEach) && len(beforeSEach) == len(beforeEach) {
						pf.BytesPerConnScavenged = (float64(aSEach[i].rssBytes) - float64(beforeSEach[i].rssBytes)) / pf.Sessions
					}
				}
			}
			res.ServerProcs = append(res.ServerProcs, pf)
		}
	}
	r, err = e.pool.cmd("report")
	if err != nil {
		return nil, err
	}
	res.Drops = r.Drops
	return res, nil
}

// HeartbeatConfig: N sessions heartbeating every Interval.
type HeartbeatConfig struct {
	Common
	N        int           // sessions (required)
	Interval time.Duration // server heartbeat interval; zero 5s
	Window   time.Duration // measurement; zero 3 intervals, at least 10s
}

// RunHeartbeat measures server CPU with N sessions heartbeating.
func RunHeartbeat(ctx context.Context, cfg HeartbeatConfig) (*ConnsResult, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Window <= 0 {
		cfg.Window = max(3*cfg.Interval, 10*time.Second)
	}
	res, err := RunConns(ctx, ConnsConfig{Common: cfg.Common, N: cfg.N, Heartbeat: cfg.Interval, Window: cfg.Window})
	if res != nil {
		res.Scenario = "heartbeat"
	}
	return res, err
}

// ---- publish ----

// PublishConfig: durable unicast to online devices over the HTTP API.
type PublishConfig struct {
	Common
	Rate     float64       // oplogs/s (required)
	Duration time.Duration // zero 10s
	Devices  int           // online devices, each with its own channel; zero 1000
	Batch    int           // oplogs per call; 1 = POST /v1/sync; zero 100
	Workers  int           // concurrent HTTP calls; zero 32
	// FindMax raises the rate by 1.5x per step (at most 8 steps) while every
	// oplog arrives, the achieved rate is >= 95% of asked and p99 <= MaxP99.
	FindMax bool
	// Rates, when set, are the steps tried in turn instead (Rate is
	// ignored): every step runs whatever the one before did, until one
	// achieves less than 90% of its rate (the publisher saturated), as
	// the peer's load client steps. MaxSustainable is the highest step
	// that was sustained.
	Rates  []float64
	MaxP99 time.Duration // zero 100ms
	// Drain bounds the wait for deliveries after publishing; zero 10s.
	Drain time.Duration
}

// PublishStep is one rate tried.
type PublishStep struct {
	Rate          float64 `json:"rate"`
	Achieved      float64 `json:"achieved_rate"`
	Published     uint64  `json:"published"`
	Failed        uint64  `json:"failed"`
	DeliveredPerS float64 `json:"delivered_per_s"`
	P50           float64 `json:"p50_ms"`
	P99           float64 `json:"p99_ms"`
	Max           float64 `json:"max_ms"`
	Lost          uint64  `json:"lost"`
	Dups          uint64  `json:"dups"`
	Drops         uint64  `json:"drops"`
	OK            bool    `json:"sustained"`
	// ServerUsPerDelivery is the server's CPU time (user+sys, all its
	// processes, from /proc) over the step per oplog delivered.
	ServerUsPerDelivery float64 `json:"server_cpu_us_per_delivery,omitempty"`
}

// PublishResult: the first step's figures, and the search when FindMax.
type PublishResult struct {
	Scenario string `json:"scenario"`
	Devices  int    `json:"devices"`
	Batch    int    `json:"batch"`
	PublishStep
	MaxSustainable float64       `json:"max_sustainable_rate,omitempty"`
	Steps          []PublishStep `json:"steps,omitempty"`
	LastError      string        `json:"last_error,omitempty"`
}

// RunPublish publishes at Rate to Devices online devices and measures
// delivery.
func RunPublish(ctx context.Context, cfg PublishConfig) (*PublishResult, error) {
	for _, r := range cfg.Rates {
		if r <= 0 {
			return nil, fmt.Errorf("%w: publish: every rate of --rates must be positive", ErrConfig)
		}
	}
	if len(cfg.Rates) > 0 {
		cfg.Rate, cfg.FindMax = cfg.Rates[0], false
	}
	if cfg.Rate <= 0 {
		return nil, fmt.Errorf("%w: publish: --rate must be positive", ErrConfig)
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 10 * time.Second
	}
	if cfg.Devices <= 0 {
		cfg.Devices = 1000
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 100
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 32
	}
	if cfg.MaxP99 <= 0 {
		cfg.MaxP99 = 100 * time.Millisecond
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 10 * time.Second
	}
	e, err := cfg.start(ctx, cfg.Devices, 0)
	if err != nil {
		return nil, err
	}
	res, err := runPublish(ctx, &cfg, e)
	return res, joinStop(err, e)
}

func runPublish(ctx context.Context, cfg *PublishConfig, e *env) (*PublishResult, error) {
	r, err := e.pool.connect(e.spec("dev-", "", DefaultDeviceBiz))
	if err != nil {
		return nil, err
	}
	if err := checkConnected(r, cfg.Devices); err != nil {
		return nil, err
	}
	pub := newPublisher(e.srv.api, e.srv.key, cfg.Workers)
	defer pub.close()
	res := &PublishResult{Scenario: "publish", Devices: cfg.Devices, Batch: cfg.Batch}
	owner := func(j int) item { return item{DefaultDeviceBiz, "device", "dev-" + strconv.Itoa(j%cfg.Devices)} }
	rate := cfg.Rate
	steps := 1
	if cfg.FindMax {
		steps = 8
	}
	if len(cfg.Rates) > 0 {
		steps = len(cfg.Rates)
	}
	for s := 0; s < steps && ctx.Err() == nil; s++ {
		if len(cfg.Rates) > 0 {
			rate = cfg.Rates[s]
		}
		if _, err := e.pool.cmd("reset"); err != nil {
			return nil, err
		}
		cpu0, cpuErr := e.srv.sample()
		start := time.Now()
		achieved := pub.paced(ctx, rate, cfg.Duration, 0, cfg.Batch, cfg.Workers, owner)
		pubSecs := time.Since(start).Seconds()
		ok, fail := pub.ok.Load(), pub.fail.Load() // paced zeroes them
		r, err := e.pool.waitRecv(ok, 0, cfg.Drain)
		if err != nil {
			return nil, err
		}
		el := time.Since(start).Seconds()
		cpu1, cpuErr1 := e.srv.sample()
		st := PublishStep{Rate: rate, Achieved: achieved, Published: ok, Failed: fail, Dups: r.Dups, Drops: r.Drops,
			P50: ms(r.Hist.Quantile(0.50)), P99: ms(r.Hist.Quantile(0.99)), Max: ms(time.Duration(r.Hist.MaxNs))}
		if r.Recv < ok {
			st.Lost = ok - r.Recv
		}
		st.DeliveredPerS = float64(r.Recv) / max(pubSecs, el-0.02) // the poll adds up to 20ms
		st.OK = st.Lost == 0 && fail == 0 && achieved >= 0.95*rate && st.P99 <= ms(cfg.MaxP99)
		if cpuErr == nil && cpuErr1 == nil && r.Recv > 0 {
			st.ServerUsPerDelivery = 1e6 * float64(cpu1.cpuTicks-cpu0.cpuTicks) / clkTck / float64(r.Recv)
		}
		cfg.logf("rate %.0f: achieved %.0f/s, delivered %.0f/s, p99 %.2fms, lost %d, ok %v", rate, achieved, st.DeliveredPerS, st.P99, st.Lost, st.OK)
		if s == 0 {
			res.PublishStep = st
		}
		res.Steps = append(res.Steps, st)
		if len(cfg.Rates) > 0 {
			if st.OK {
				res.MaxSustainable = rate
			}
			if achieved < 0.9*rate {
				break
			}
			continue
		}
		if !st.OK {
			break
		}
		res.MaxSustainable = st.DeliveredPerS
		rate *= 1.5
	}
	if !cfg.FindMax && len(cfg.Rates) == 0 {
		res.Steps, res.MaxSustainable = nil, 0
	}
	if pub.lastErr != nil {
		res.LastError = pub.lastErr.Error()
	}
	return res, nil
}

// ---- fanout ----

// FanoutConfig: one message to N online devices.
type FanoutConfig struct {
	Common
	N    int // devices (required)
	Msgs int // messages, each to all N; zero 10
	// Batch is messages per publish call (1: POST /v1/sync, else
	// /v1/sync/batch); zero 1.
	Batch int
	// Workers is concurrent publish calls; zero 1 (calls one after another).
	Workers int
	// Drain bounds the wait for deliveries; zero 30s.
	Drain time.Duration
}

// FanoutResult are the figures of RunFanout.
type FanoutResult struct {
	Scenario       string  `json:"scenario"`
	Mode           string  `json:"mode"` // "global" or "user-multi-device"
	ModeNote       string  `json:"mode_note,omitempty"`
	N              int     `json:"n"`
	Msgs           int     `json:"msgs"`
	Batch          int     `json:"batch"`
	Workers        int     `json:"workers"`
	Deliveries     uint64  `json:"deliveries"`
	DeliveriesPerS float64 `json:"deliveries_per_s"` // deliveries / (first publish -> last delivery)
	PublishSecs    float64 `json:"publish_secs"`     // first publish call -> last call answered
	// ServerUsPerDelivery and ClientUsPerDelivery are CPU time (user+sys)
	// of the server processes and of the load clients from the first
	// publish to the last delivery, per delivery: less noisy than the rate
	// on a shared machine.
	ServerUsPerDelivery float64 `json:"server_cpu_us_per_delivery,omitempty"`
	ClientUsPerDelivery float64 `json:"client_cpu_us_per_delivery,omitempty"`
	P50                 float64 `json:"p50_ms"`
	P99                 float64 `json:"p99_ms"`
	LastMs              float64 `json:"last_ms"` // publish -> the last device, worst message
	Lost                uint64  `json:"lost"`
	Dups                uint64  `json:"dups"`
	Drops               uint64  `json:"drops"`
	PublishFailures     uint64  `json:"publish_failures"`
}

// globalBiz returns the name of a persistent global biz of the server, if any.
func globalBiz(ctx context.Context, api, key string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, api+"/v1/bizs", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		Bizs []struct {
			Name       string `json:"name"`
			Scope      string `json:"scope"`
			Persistent bool   `json:"persistent"`
		} `json:"bizs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return "", err
	}
	for _, b := range out.Bizs {
		if b.Scope == "global" && b.Persistent {
			return b.Name, nil
		}
	}
	return "", nil
}

// RunFanout publishes Msgs messages, each to N online devices: to a global
// biz when the server has one that delivers live, else to one user with N
// devices (a multi-device user channel).
func RunFanout(ctx context.Context, cfg FanoutConfig) (*FanoutResult, error) {
	if cfg.N <= 0 {
		return nil, fmt.Errorf("%w: fanout: -n must be positive", ErrConfig)
	}
	if cfg.Msgs <= 0 {
		cfg.Msgs = 10
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 1
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 30 * time.Second
	}
	e, err := cfg.start(ctx, cfg.N, 0)
	if err != nil {
		return nil, err
	}
	res, err := runFanout(ctx, &cfg, e)
	return res, joinStop(err, e)
}

func runFanout(ctx context.Context, cfg *FanoutConfig, e *env) (*FanoutResult, error) {
	res := &FanoutResult{Scenario: "fanout", N: cfg.N, Msgs: cfg.Msgs, Batch: cfg.Batch, Workers: cfg.Workers, Mode: "user-multi-device"}
	gb, err := globalBiz(ctx, e.srv.api, e.srv.key)
	if err != nil {
		return nil, fmt.Errorf("%w: /v1/bizs: %w", ErrServer, err)
	}
	bizs := []string{DefaultUserBiz}
	if gb != "" {
		bizs = append(bizs, gb)
	}
	r, err := e.pool.connect(e.spec("fan-", "fan-user", bizs...))
	if err != nil {
		return nil, err
	}
	if err := checkConnected(r, cfg.N); err != nil {
		return nil, err
	}
	pub := newPublisher(e.srv.api, e.srv.key, max(4, cfg.Workers))
	defer pub.close()
	it := item{DefaultUserBiz, "user", "fan-user"}
	if gb == "" {
		res.ModeNote = "the server has no global biz: one user with N devices"
	} else { // probe: does the server route global oplogs live?
		pub.publish(ctx, []item{{gb, "global", ""}}, false)
		pr, err := e.pool.waitRecv(uint64(cfg.N), 0, 5*time.Second)
		if err != nil {
			return nil, err
		}
		if pub.ok.Load() == 1 && pr.Recv >= uint64(cfg.N) {
			res.Mode, it = "global", item{gb, "global", ""}
		} else {
			res.ModeNote = fmt.Sprintf("global biz %q did not reach every online device live (%d of %d in 5s): one user with N devices", gb, pr.Recv, cfg.N)
		}
	}
	cfg.logf("fanout mode %s %s", res.Mode, res.ModeNote)
	if _, err := e.pool.cmd("reset"); err != nil {
		return nil, err
	}
	srv0, srvErr := e.srv.sample()
	cli0, cliErr := e.pool.cpu()
	start := time.Now()
	pub.paced(ctx, 0, 0, cfg.Msgs, cfg.Batch, cfg.Workers, func(int) item { return it })
	res.PublishSecs = time.Since(start).Seconds()
	want := pub.ok.Load() * uint64(cfg.N)
	r, err = e.pool.waitRecv(want, 0, cfg.Drain)
	if err != nil {
		return nil, err
	}
	el := time.Since(start).Seconds() - 0.02 // waitRecv polls every 20 ms
	srv1, srvErr1 := e.srv.sample()
	cli1, cliErr1 := e.pool.cpu()
	if r.Recv > 0 && srvErr == nil && srvErr1 == nil {
		res.ServerUsPerDelivery = 1e6 * float64(srv1.cpuTicks-srv0.cpuTicks) / clkTck / float64(r.Recv)
	}
	if r.Recv > 0 && cliErr == nil && cliErr1 == nil {
		res.ClientUsPerDelivery = 1e6 * float64(cli1-cli0) / clkTck / float64(r.Recv)
	}
	res.Deliveries, res.Dups, res.Drops, res.PublishFailures = r.Recv, r.Dups, r.Drops, pub.fail.Load()
	if r.Recv < want {
		res.Lost = want - r.Recv
	}
	res.DeliveriesPerS = float64(r.Recv) / el
	res.P50, res.P99, res.LastMs = ms(r.Hist.Quantile(0.5)), ms(r.Hist.Quantile(0.99)), ms(time.Duration(r.Hist.MaxNs))
	return res, nil
}

// cpu returns the CPU ticks (user+sys) the load clients used so far.
func (p *pool) cpu() (uint64, error) {
	var sum uint64
	for _, c := range p.kids {
		if c.cmd.Process == nil {
			return 0, fmt.Errorf("%w: load client not started", ErrClients)
		}
		st, err := sampleProc(c.cmd.Process.Pid)
		if err != nil {
			return 0, err
		}
		sum += st.cpuTicks
	}
	return sum, nil
}

// ---- reconnect ----

// ReconnectConfig: N devices offline while Backlog oplogs each are
// published, then all reconnect at once.
type ReconnectConfig struct {
	Common
	N       int           // devices (required)
	Backlog int           // oplogs per device (required)
	Batch   int           // oplogs per publish call; zero 500
	Workers int           // concurrent publish calls; zero 8
	Within  time.Duration // bound on the storm; zero 120s
}

// ReconnectResult are the figures of RunReconnect.
type ReconnectResult struct {
	Scenario        string  `json:"scenario"`
	N               int     `json:"n"`
	Backlog         int     `json:"backlog"`
	Published       uint64  `json:"published"`
	PublishPerS     float64 `json:"publish_per_s"`
	PublishFailures uint64  `json:"publish_failures"`
	SecondsToSynced float64 `json:"seconds_to_synced"`
	ConnectSecs     float64 `json:"connect_secs"`
	OplogsPerS      float64 `json:"oplogs_per_s"`
	Synced          int     `json:"synced"`
	Recv            uint64  `json:"recv"`
	Lost            uint64  `json:"lost"`
	Dups            uint64  `json:"dups"`
	Drops           uint64  `json:"drops"`
}

// RunReconnect measures a reconnect storm with a backlog.
func RunReconnect(ctx context.Context, cfg ReconnectConfig) (*ReconnectResult, error) {
	if cfg.N <= 0 || cfg.Backlog <= 0 {
		return nil, fmt.Errorf("%w: reconnect: -n and --backlog must be positive", ErrConfig)
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.Within <= 0 {
		cfg.Within = 120 * time.Second
	}
	e, err := cfg.start(ctx, cfg.N, 0)
	if err != nil {
		return nil, err
	}
	res, err := runReconnect(ctx, &cfg, e)
	return res, joinStop(err, e)
}

func runReconnect(ctx context.Context, cfg *ReconnectConfig, e *env) (*ReconnectResult, error) {
	res := &ReconnectResult{Scenario: "reconnect", N: cfg.N, Backlog: cfg.Backlog}
	spec := e.spec("rc-", "", DefaultDeviceBiz)
	r, err := e.pool.connect(spec) // once, so devices know their channel and points
	if err != nil {
		return nil, err
	}
	if err := checkConnected(r, cfg.N); err != nil {
		return nil, err
	}
	if _, err := e.pool.cmd("disconnect"); err != nil {
		return nil, err
	}
	pub := newPublisher(e.srv.api, e.srv.key, cfg.Workers)
	defer pub.close()
	total := cfg.N * cfg.Backlog
	res.PublishPerS = pub.paced(ctx, 0, 0, total, cfg.Batch, cfg.Workers, func(j int) item {
		return item{DefaultDeviceBiz, "device", "rc-" + strconv.Itoa(j%cfg.N)}
	})
	res.Published, res.PublishFailures = pub.ok.Load(), pub.fail.Load()
	cfg.logf("published %d backlog oplogs at %.0f/s", res.Published, res.PublishPerS)
	if _, err := e.pool.cmd("reset"); err != nil {
		return nil, err
	}
	spec.ExpectBiz, spec.ExpectID = DefaultDeviceBiz, uint64(cfg.Backlog)
	start := time.Now()
	if _, err := e.pool.connect(spec); err != nil {
		return nil, err
	}
	res.ConnectSecs = time.Since(start).Seconds()
	r, err = e.pool.waitRecv(res.Published, cfg.N, cfg.Within)
	if err != nil {
		return nil, err
	}
	res.Synced, res.Recv, res.Dups, res.Drops = r.Synced, r.Recv, r.Dups, r.Drops
	if r.Recv < res.Published {
		res.Lost = res.Published - r.Recv
	}
	if r.Synced == cfg.N && r.LastSyncedNs > 0 {
		res.SecondsToSynced = time.Unix(0, r.LastSyncedNs).Sub(start).Seconds()
		res.OplogsPerS = float64(r.Recv) / res.SecondsToSynced
	} else {
		res.SecondsToSynced = -1 // not synced within the bound
	}
	return res, nil
}
