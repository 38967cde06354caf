package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MillionConfig: N authenticated, heartbeating sessions on a cluster of
// comets (at most MaxPerComet each), held for Hold with no drop, then one
// oplog published to each of Sample devices spread over every comet.
type MillionConfig struct {
	Common
	N int // sessions (required), at most MaxMillion
	// Heartbeat is the comets' interval, which the devices follow; zero 30s.
	Heartbeat time.Duration
	Hold      time.Duration // zero 5m
	Sample    int           // devices published to after the hold; zero 1000 (at most N)
	// BytesPerSession is what one session costs the machine (comet, load
	// client and kernel together) for the free-memory check before start;
	// zero DefaultBytesPerSession.
	BytesPerSession int
	// MinFree is the MemAvailable the run keeps: it refuses to start when
	// the estimate would leave less, and stops (reporting how far it got)
	// when MemAvailable falls below it; zero 1 GiB.
	MinFree uint64
	// MaxTime bounds the whole run; zero Hold + 20m.
	MaxTime time.Duration
}

// MaxMillion bounds MillionConfig.N.
const MaxMillion = 1_200_000

// DefaultBytesPerSession is the machine memory one idle authenticated
// session costs in this bench (comet RSS + load-client RSS + kernel
// socket structures of both ends), measured with 19,000 and 100,000
// sessions (5.3 + 3.4 + 10.0 KB; docs/benchmarks.md), rounded up.
const DefaultBytesPerSession = 19 << 10

// procOverhead is what one more comet or load-client process takes from
// MemAvailable before its sessions (its anonymous memory: the binary's
// pages are shared), for the free-memory check; logicOverhead that of
// logic (Pebble memtables and cache).
const (
	procOverhead  = 16 << 20
	logicOverhead = 600 << 20
)

// MillionResult are the figures of RunMillion.
type MillionResult struct {
	Scenario    string  `json:"scenario"`
	N           int     `json:"n"`
	Comets      int     `json:"comets"`
	ClientProcs int     `json:"client_procs"`
	Connected   int     `json:"connected"`
	Failed      int     `json:"failed"`
	ConnectSecs float64 `json:"connect_secs"`
	ConnectRate float64 `json:"connect_rate"`
	HoldSecs    float64 `json:"hold_secs"`
	// Drops are sessions lost after authentication, from connect to the
	// end of the sample's delivery.
	Drops            uint64  `json:"drops"`
	SessionsAtEnd    float64 `json:"sessions_at_end"` // msync_comet_sessions summed over the comets
	ServerHeartbeats float64 `json:"server_heartbeats_per_s"`
	// CPU over the hold, % of one core: server = logic + comets.
	ServerCPU float64 `json:"server_cpu_percent"`
	ClientCPU float64 `json:"client_cpu_percent"`
	// RSS after connecting (all sessions up), summed per part; every
	// process has collected garbage and returned freed heap to the OS
	// first (debug.FreeOSMemory), before the baseline and after connecting.
	ServerRSS      uint64 `json:"server_rss_bytes"`
	ServerRSSStart uint64 `json:"server_rss_start_bytes"`
	LogicRSS       uint64 `json:"logic_rss_bytes"`
	ClientRSS      uint64 `json:"client_rss_bytes"`
	ClientRSSStart uint64 `json:"client_rss_start_bytes"`
	// Per session: RSS deltas of the comets+logic and of the load clients
	// over N; kernel = the growth of Slab (/proc/meminfo) plus TCP buffer
	// pages (/proc/net/sockstat) over N, both ends of each connection.
	ServerBytesPerSession float64 `json:"server_bytes_per_session"`
	ClientBytesPerSession float64 `json:"client_bytes_per_session"`
	KernelBytesPerSession float64 `json:"kernel_bytes_per_session"`
	// MachineBytesPerSession is the fall of MemAvailable over N.
	MachineBytesPerSession float64 `json:"machine_bytes_per_session"`
	MemAvailableStart      uint64  `json:"mem_available_start_bytes"`
	MemAvailableMin        uint64  `json:"mem_available_min_bytes"`
	SockstatStart          string  `json:"sockstat_start"`
	SockstatConnected      string  `json:"sockstat_connected"`
	// The sample: one oplog to each of Sample devices after the hold.
	Sample          int     `json:"sample"`
	SampleDelivered uint64  `json:"sample_delivered"`
	SampleLost      uint64  `json:"sample_lost"`
	SampleDups      uint64  `json:"sample_dups"`
	SampleP50       float64 `json:"sample_p50_ms"`
	SampleP99       float64 `json:"sample_p99_ms"`
	SampleMax       float64 `json:"sample_max_ms"`
	// Stopped says what ended the run early (memory guard, failed
	// connects, time bound); empty when it completed.
	Stopped string   `json:"stopped,omitempty"`
	Errors  []string `json:"errors,omitempty"`
}

// memInfo reads fields of /proc/meminfo in bytes.
func memInfo(keys ...string) (map[string]uint64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		for _, k := range keys {
			if name == k {
				kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				out[k] = kb << 10
			}
		}
	}
	for _, k := range keys {
		if _, ok := out[k]; !ok {
			return nil, fmt.Errorf("/proc/meminfo: no %s", k)
		}
	}
	return out, sc.Err()
}

// sockstat returns /proc/net/sockstat's TCP line and its buffer pages.
func sockstat() (string, uint64) {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return "", 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "TCP:") {
			f := strings.Fields(l)
			for i := 0; i+1 < len(f); i++ {
				if f[i] == "mem" {
					p, _ := strconv.ParseUint(f[i+1], 10, 64)
					return strings.TrimSpace(l), p
				}
			}
			return strings.TrimSpace(l), 0
		}
	}
	return "", 0
}

// fileMax is fs.file-max: both ends of every session are open files.
func fileMax() uint64 {
	b, err := os.ReadFile("/proc/sys/fs/file-max")
	if err != nil {
		return 0
	}
	v, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return v
}

// CheckMillionMemory says whether the machine has room for cfg: the
// estimate against MemAvailable and the sockets against fs.file-max.
func CheckMillionMemory(cfg MillionConfig, avail, files uint64) error {
	per := cfg.BytesPerSession
	if per <= 0 {
		per = DefaultBytesPerSession
	}
	minFree := cfg.MinFree
	if minFree == 0 {
		minFree = 1 << 30
	}
	comets := (cfg.N + MaxPerComet - 1) / MaxPerComet
	need := uint64(cfg.N)*uint64(per) + uint64(2*comets)*procOverhead + logicOverhead
	if avail < need+minFree {
		return fmt.Errorf("%w: million: %d sessions need about %.1f GiB (%d bytes per session for comet, load client and kernel, measured; %d comet and %d load-client processes of %d MiB; logic %d MiB) and %.1f GiB must stay free, but MemAvailable is %.1f GiB: refusing to start (lower -n, or free memory)",
			ErrConfig, cfg.N, gib(need), per, comets, comets, procOverhead>>20, logicOverhead>>20, gib(minFree), gib(avail))
	}
	if files > 0 && files < uint64(2*cfg.N+10000) {
		return fmt.Errorf("%w: million: %d sessions hold %d sockets (both ends), fs.file-max is %d: refusing to start", ErrConfig, cfg.N, 2*cfg.N, files)
	}
	return nil
}

func gib(b uint64) float64 { return float64(b) / (1 << 30) }

// RunMillion holds N sessions and publishes to a sample of them.
func RunMillion(ctx context.Context, cfg MillionConfig) (*MillionResult, error) {
	if cfg.N <= 0 || cfg.N > MaxMillion {
		return nil, fmt.Errorf("%w: million: -n must be in 1..%d", ErrConfig, MaxMillion)
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 30 * time.Second
	}
	if cfg.Hold <= 0 {
		cfg.Hold = 5 * time.Minute
	}
	if cfg.Sample <= 0 {
		cfg.Sample = 1000
	}
	cfg.Sample = min(cfg.Sample, cfg.N)
	if cfg.MinFree == 0 {
		cfg.MinFree = 1 << 30
	}
	if cfg.MaxTime <= 0 {
		cfg.MaxTime = cfg.Hold + 20*time.Minute
	}
	if cfg.Target.Addr != "" || cfg.Target.API != "" {
		return nil, fmt.Errorf("%w: million starts its own cluster; it does not go with --addr/--api", ErrConfig)
	}
	if cfg.Target.Comets <= 0 {
		cfg.Target.Comets = (cfg.N + MaxPerComet - 1) / MaxPerComet
	}
	mi, err := memInfo("MemAvailable", "Slab")
	if err != nil {
		return nil, err
	}
	if err := CheckMillionMemory(cfg, mi["MemAvailable"], fileMax()); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.MaxTime)
	defer cancel()
	res := &MillionResult{Scenario: "million", N: cfg.N, Comets: cfg.Target.Comets, Sample: cfg.Sample,
		MemAvailableStart: mi["MemAvailable"], MemAvailableMin: mi["MemAvailable"]}
	res.SockstatStart, _ = sockstat()
	slab0 := mi["Slab"]
	_, pages0 := sockstat()
	e, err := cfg.start(ctx, cfg.N, cfg.Heartbeat)
	if err != nil {
		return nil, err
	}
	res.ClientProcs = len(e.pool.kids)
	g := startMemGuard(cfg.MinFree, e, cfg.log())
	err = runMillion(ctx, &cfg, e, res, slab0, pages0, g)
	res.MemAvailableMin = min(res.MemAvailableMin, g.stop())
	if why := g.tripped(); why != "" {
		res.Stopped = fmt.Sprintf("%s with %.0f sessions on the comets", why, g.atTrip)
	}
	if err != nil && res.Stopped == "" {
		res.Stopped = err.Error()
	}
	cfg.logf("stopping %d comets (SIGKILL) and %d load clients", res.Comets, res.ClientProcs)
	e.srv.killComets()
	if serr := e.stop(); serr != nil {
		res.Errors = append(res.Errors, "stop: "+serr.Error())
	}
	return res, nil // a run stopped early still reports how far it got
}

func runMillion(ctx context.Context, cfg *MillionConfig, e *env, res *MillionResult, slab0, pages0 uint64, g *memGuard) error {
	if err := settle(ctx, time.Second); err != nil {
		return err
	}
	e.freeOS(ctx)
	srv0, _ := e.srv.sample()
	cli0, _ := e.pool.rss()
	res.ServerRSSStart, res.ClientRSSStart = srv0.rssBytes, cli0
	cfg.logf("connecting %d sessions: %d comets, %d load clients", cfg.N, res.Comets, res.ClientProcs)
	spec := e.spec("dev-", "", DefaultDeviceBiz)
	spec.Poll, spec.Reconnect = true, false // ~1-2 KB per session in the load clients; a drop is a drop
	r, err := e.pool.connect(spec)
	res.Connected, res.Failed, res.Errors, res.Drops = r.Connected, r.Failed, r.Errors, r.Drops
	res.ConnectSecs = time.Duration(r.ConnectNs).Seconds()
	if res.ConnectSecs > 0 {
		res.ConnectRate = float64(r.Connected) / res.ConnectSecs
	}
	res.SessionsAtEnd = e.sessions(ctx)
	if err != nil {
		return err
	}
	if r.Connected < cfg.N {
		return fmt.Errorf("%w: %d of %d sessions connected (%d failed)", ErrClients, r.Connected, cfg.N, r.Failed)
	}
	cfg.logf("%d sessions in %.1fs", r.Connected, res.ConnectSecs)
	if err := settle(ctx, 2*time.Second); err != nil {
		return err
	}
	e.freeOS(ctx)
	if err := settle(ctx, time.Second); err != nil {
		return err
	}
	srv1, serr := e.srv.sample()
	each, _ := e.srv.sampleEach()
	cli1, cerr := e.pool.rss()
	mi, merr := memInfo("MemAvailable", "Slab")
	res.SockstatConnected, _ = sockstat()
	_, pages1 := sockstat()
	if serr == nil && cerr == nil && merr == nil {
		n := float64(cfg.N)
		res.ServerRSS, res.ClientRSS = srv1.rssBytes, cli1
		if len(each) > 0 {
			res.LogicRSS = each[0].rssBytes
		}
		res.ServerBytesPerSession = (float64(srv1.rssBytes) - float64(srv0.rssBytes)) / n
		res.ClientBytesPerSession = (float64(cli1) - float64(cli0)) / n
		res.KernelBytesPerSession = (float64(mi["Slab"]) - float64(slab0) + 4096*(float64(pages1)-float64(pages0))) / n
		res.MachineBytesPerSession = (float64(res.MemAvailableStart) - float64(mi["MemAvailable"])) / n
	}
	// The hold: CPU from here to its end; drops counted since connect.
	a, _ := e.srv.sample()
	ca, _ := e.pool.cpu()
	hb0, _ := e.srv.heartbeats(ctx)
	start := time.Now()
	cfg.logf("holding %d sessions for %s", r.Connected, cfg.Hold)
	for time.Since(start) < cfg.Hold {
		if err := settle(ctx, min(30*time.Second, cfg.Hold-time.Since(start))); err != nil {
			return err
		}
		if s := g.tripped(); s != "" {
			return errors.New(s)
		}
		rep, err := e.pool.cmd("report")
		if err != nil {
			return err
		}
		res.Drops = rep.Drops
		cfg.logf("hold %s: %d connected, %d drops, MemAvailable %.2f GiB", time.Since(start).Round(time.Second), rep.Connected, rep.Drops, gib(g.last()))
	}
	res.HoldSecs = time.Since(start).Seconds()
	b, berr := e.srv.sample()
	cb, cberr := e.pool.cpu()
	hb1, hberr := e.srv.heartbeats(ctx)
	if berr == nil {
		res.ServerCPU = cpuPercent(a, b)
	}
	if cberr == nil && res.HoldSecs > 0 {
		res.ClientCPU = 100 * float64(cb-ca) / clkTck / res.HoldSecs
	}
	if hberr == nil && hb1 > hb0 {
		res.ServerHeartbeats = (hb1 - hb0) / res.HoldSecs
	}
	// The sample: one oplog to each of Sample devices, every N/Sample-th,
	// so every comet and load client gets its share.
	if _, err := e.pool.cmd("reset"); err != nil {
		return err
	}
	pub := newPublisher(e.srv.api, e.srv.key, 16)
	defer pub.close()
	step := cfg.N / cfg.Sample
	pub.paced(ctx, 0, 0, cfg.Sample, 50, 16, func(j int) item {
		return item{DefaultDeviceBiz, "device", "dev-" + strconv.Itoa(j*step)}
	})
	ok := pub.ok.Load()
	rep, err := e.pool.waitRecv(ok, 0, 30*time.Second)
	if err != nil {
		return err
	}
	res.SampleDelivered, res.SampleDups = rep.Recv, rep.Dups
	if rep.Recv < uint64(cfg.Sample) {
		res.SampleLost = uint64(cfg.Sample) - rep.Recv
	}
	res.SampleP50, res.SampleP99, res.SampleMax = ms(rep.Hist.Quantile(0.5)), ms(rep.Hist.Quantile(0.99)), ms(time.Duration(rep.Hist.MaxNs))
	rep, err = e.pool.cmd("report")
	if err != nil {
		return err
	}
	res.Drops += rep.Drops // reset zeroed the hold's count
	res.SessionsAtEnd = e.sessions(ctx)
	if pub.fail.Load() > 0 && pub.lastErr != nil {
		res.Errors = append(res.Errors, "publish: "+pub.lastErr.Error())
	}
	return nil
}

// freeOS makes every server process and load client collect garbage and
// return freed heap to the OS (what an idle process's scavenger converges
// to), so RSS shows what the sessions hold, not the connect's garbage.
func (e *env) freeOS(ctx context.Context) {
	if !e.srv.freeOS(ctx) {
		e.srv.gc(ctx)
	}
	_, _ = e.pool.cmd("freeos")
}

// sessions sums msync_comet_sessions over the comets (0 when unreadable).
func (e *env) sessions(ctx context.Context) float64 {
	var sum float64
	for _, u := range e.srv.metricsURLs() {
		v, err := scrape(ctx, u, "msync_comet_sessions")
		if err == nil {
			sum += v
		}
	}
	return sum
}

// rss sums the load clients' VmRSS.
func (p *pool) rss() (uint64, error) {
	var sum uint64
	for _, c := range p.kids {
		if c.cmd.Process == nil {
			return 0, fmt.Errorf("%w: load client not started", ErrClients)
		}
		st, err := sampleProc(c.cmd.Process.Pid)
		if err != nil {
			return 0, err
		}
		sum += st.rssBytes
	}
	return sum, nil
}

// kill ends every load client at once (SIGKILL): the memory guard's way
// to free the machine while a connect command is still running.
func (p *pool) kill() {
	for _, c := range p.kids {
		if c.cmd.Process != nil {
			_ = c.cmd.Process.Kill()
		}
	}
}

// memGuard samples MemAvailable every second during a run and, when it
// falls below the floor, kills the load clients (their sessions close, the
// comets free theirs) and says so.
type memGuard struct {
	floor  uint64
	done   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	minAv  uint64
	lastAv uint64
	why    string
	atTrip float64 // sessions on the comets when it tripped
}

func startMemGuard(floor uint64, e *env, log io.Writer) *memGuard {
	g := &memGuard{floor: floor, done: make(chan struct{}), minAv: ^uint64(0)}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-g.done:
				return
			case <-t.C:
			}
			mi, err := memInfo("MemAvailable")
			if err != nil {
				continue
			}
			av := mi["MemAvailable"]
			g.mu.Lock()
			g.lastAv, g.minAv = av, min(g.minAv, av)
			trip := av < g.floor && g.why == ""
			if trip {
				g.why = fmt.Sprintf("memory guard: MemAvailable %.2f GiB fell below %.2f GiB; load clients killed", gib(av), gib(g.floor))
			}
			g.mu.Unlock()
			if trip {
				n := e.sessions(context.Background())
				g.mu.Lock()
				g.atTrip = n
				g.mu.Unlock()
				fmt.Fprintf(log, "bench: %s (%.0f sessions on the comets)\n", g.tripped(), n)
				e.pool.kill()
			}
		}
	}()
	return g
}

func (g *memGuard) tripped() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.why
}

func (g *memGuard) last() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lastAv
}

// stop ends the sampler and returns the least MemAvailable it saw.
func (g *memGuard) stop() uint64 {
	close(g.done)
	g.wg.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.minAv
}

// killComets ends the comets of a cluster with SIGKILL and waits for them.
// The million scenario's way to stop: a comet stopping cleanly tells logic
// of each session's end, a million gRPC calls that would outlast the run.
func (s *server) killComets() {
	if len(s.procs) < 2 {
		return
	}
	for _, p := range s.procs[1:] {
		_ = p.cmd.Process.Kill()
	}
	for _, p := range s.procs[1:] {
		err := <-p.waitErr
		p.waitErr <- err
	}
	s.procs = s.procs[:1]
}
