package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msync/msync/pkg/auth"
	"github.com/msync/msync/pkg/client"
)

// The soak: `msync all` as a child process on one data directory, killed
// with SIGKILL at random moments and restarted on the same directory and
// ports, while publishers keep publishing (single and batch calls, three
// bizs) and devices built on the Go SDK disconnect, reconnect and restart
// at random. A checker records what every device's handlers were given.
//
// What is checked, per device and channel (DESIGN: durable on ack, ordered,
// no loss, no duplicates to the app):
//
//   - Every publish is retried with the same dedup keys until it is
//     acknowledged, so every stored oplog is an acknowledged one and each
//     channel's ids are exactly 1..max.
//   - Lost: an acknowledged id the device's handlers never got (after the
//     final catch-up, with every device online).
//   - Devices with their own points keep their sync-point store across SDK
//     restarts (an app with local state): over the device's whole life each
//     channel's handler sees every id once, in increasing order.
//     A repeat is a duplicate; a lower id not seen before is out of order.
//   - Devices without their own points get a fresh, empty store on every
//     SDK restart (an app that keeps no local state) and so start from the
//     point the server stored, which may lag what was handled (an ACK lost
//     in a crash): a restart may hand the app oplogs it already handled
//     before. That is reported as redelivered, not as an error. Within one
//     SDK instance (across server crashes and reconnects) the rule is as
//     strict as above: no duplicate, nothing out of order.
//   - Payload: each delivered oplog carries the payload that was published
//     under its id.

// SoakConfig configures RunSoak. Zero values take the defaults in brackets.
type SoakConfig struct {
	// Exe is the msync binary to run as the server; empty: this executable.
	Exe string
	// Devices online at once [500]; half of them have their own points
	// (OwnPoints), two devices per user.
	Devices int
	// OwnPoints is the share of devices that keep their points across SDK
	// restarts [0.5].
	OwnPoints float64
	// Oplogs to publish (acknowledged) [100000].
	Oplogs int
	// Kills of the server (SIGKILL, then restart) during publishing [10].
	Kills int
	// MaxTime bounds the whole run, catch-up included [10m].
	MaxTime time.Duration
	// Workers publish concurrently [8]; Batch is the largest batch call [100].
	Workers, Batch int
	// ChurnEvery is how often one random device disconnects or restarts
	// [20ms].
	ChurnEvery time.Duration
	// Seed for the random choices [time-based].
	Seed uint64
	// Log receives progress and the server's stderr; nil discards.
	Log io.Writer
}

// SoakResult holds the soak's figures.
type SoakResult struct {
	Devices          int     `json:"devices"`
	DevicesOwnPoints int     `json:"devices_own_points"`
	Users            int     `json:"users"`
	Bizs             int     `json:"bizs"`
	Channels         int     `json:"channels"`
	Oplogs           int64   `json:"oplogs"`
	SingleCalls      int64   `json:"single_calls"`
	BatchCalls       int64   `json:"batch_calls"`
	RetriedCalls     int64   `json:"retried_calls"`
	DuplicateAcks    int64   `json:"duplicate_acks"` // retries answered "duplicate": stored by an earlier try
	Kills            int     `json:"kills"`
	RestartSeconds   float64 `json:"restart_seconds_max"`
	Disconnects      int64   `json:"device_disconnects"`
	SDKRestarts      int64   `json:"device_sdk_restarts"`
	HandlerFailures  int64   `json:"handler_failures_injected"`
	Expected         int64   `json:"expected_deliveries"`
	Delivered        int64   `json:"delivered"`
	Lost             int64   `json:"lost"`
	Duplicated       int64   `json:"duplicated"`
	OutOfOrder       int64   `json:"out_of_order"`
	PayloadMismatch  int64   `json:"payload_mismatch"`
	Unacknowledged   int64   `json:"unacknowledged_delivered"`
	Redelivered      int64   `json:"redelivered_no_own_points"`
	PublishSeconds   float64 `json:"publish_seconds"`
	CatchUpSeconds   float64 `json:"catch_up_seconds"`
	Seconds          float64 `json:"seconds"`
	// Problems lists the first few violations found, for the report.
	Problems []string `json:"problems"`
}

// OK reports whether the soak found nothing lost, duplicated, out of order
// or altered.
func (r *SoakResult) OK() bool {
	return r.Lost == 0 && r.Duplicated == 0 && r.OutOfOrder == 0 && r.PayloadMismatch == 0
}

const (
	soakSecret  = "soak-secret-0123456789"
	soakKey     = "soak-key"
	soakDevBiz  = "soak-dev"  // target device
	soakUserBiz = "soak-user" // target user, every device syncs the full channel
	soakChatBiz = "soak-chat" // a second user biz, to merge several channels per page
)

const soakConfig = `# generated by msync bench soak
secret: %q
log: {level: warn, format: text}
dev: true # short test keys
api_keys:
  - {key: %q, bizs: ["*"]}
comet:
  id: comet-soak
  addr: %q
  ws_addr: ""
  heartbeat: 10s
  auth_timeout: 30s
  ack_timeout: 30s
logic:
  http_addr: %q
  max_batch: 500
bizs:
  - {name: %s, target: device, ttl: 1d}
  - {name: %s, target: user, multi_device: true, ttl: 1d}
  - {name: %s, target: user, multi_device: true, ttl: 1d}
`

func (c *SoakConfig) defaults() error {
	if c.Devices == 0 {
		c.Devices = 500
	}
	if c.OwnPoints == 0 {
		c.OwnPoints = 0.5
	}
	if c.Oplogs == 0 {
		c.Oplogs = 100_000
	}
	if c.Kills == 0 {
		c.Kills = 10
	}
	if c.MaxTime == 0 {
		c.MaxTime = 10 * time.Minute
	}
	if c.Workers == 0 {
		c.Workers = 8
	}
	if c.Batch == 0 {
		c.Batch = 100
	}
	if c.ChurnEvery == 0 {
		c.ChurnEvery = 20 * time.Millisecond
	}
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
	switch {
	case c.Devices < 2 || c.Devices > 5000:
		return fmt.Errorf("%w: soak devices %d: want 2..5000", ErrConfig, c.Devices)
	case c.OwnPoints < 0 || c.OwnPoints > 1:
		return fmt.Errorf("%w: soak own points %v: want 0..1", ErrConfig, c.OwnPoints)
	case c.Oplogs < 1 || c.Oplogs > 10_000_000 || c.Kills < 0 || c.Kills > 1000:
		return fmt.Errorf("%w: soak oplogs %d, kills %d", ErrConfig, c.Oplogs, c.Kills)
	case c.Workers < 1 || c.Workers > 256 || c.Batch < 1 || c.Batch > 500:
		return fmt.Errorf("%w: soak workers %d (1..256), batch %d (1..500)", ErrConfig, c.Workers, c.Batch)
	}
	return nil
}

func (c *SoakConfig) logf(format string, args ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, "soak: "+format+"\n", args...)
	}
}

// RunSoak runs the soak and returns its figures; a violation is reported in
// the result (see OK), an error means the soak could not run.
func RunSoak(ctx context.Context, cfg SoakConfig) (*SoakResult, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.MaxTime)
	defer cancel()
	start := time.Now()
	cfg.logf("seed %d devices %d oplogs %d kills %d", cfg.Seed, cfg.Devices, cfg.Oplogs, cfg.Kills)

	srv, err := newSoakServer(cfg)
	if err != nil {
		return nil, err
	}
	defer srv.close()
	if err := srv.start(ctx); err != nil {
		return nil, err
	}
	tokens, err := auth.NewTokens(soakSecret)
	if err != nil {
		return nil, err
	}
	ck := newChecker(cfg.Devices)
	fleet := newFleet(cfg, srv.addr, tokens, ck)
	defer fleet.shutdown()
	if err := fleet.startAll(); err != nil {
		return nil, err
	}

	res := &SoakResult{Devices: cfg.Devices, DevicesOwnPoints: fleet.own, Users: fleet.users, Bizs: 3,
		Channels: len(ck.acked)}
	pub := &soakPublisher{cfg: cfg, api: srv.api, ck: ck, hc: &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Workers}}}
	defer pub.hc.CloseIdleConnections()

	// Kill points: random counts of acknowledged oplogs in (5%, 95%) of the
	// total, so every kill lands while publishing, whatever the speed.
	rng := rand.New(rand.NewPCG(cfg.Seed, 1))
	killAt := make([]int64, cfg.Kills)
	for i := range killAt {
		killAt[i] = int64(float64(cfg.Oplogs) * (0.05 + 0.9*rng.Float64()))
	}
	slices.Sort(killAt)

	var wg sync.WaitGroup
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	for w := range cfg.Workers {
		wg.Go(func() { pub.run(pctx, cfg.Seed+uint64(w)+2) })
	}
	churnDone := make(chan struct{})
	go func() { defer close(churnDone); fleet.churn(pctx, cfg.Seed+1000) }()

	var runErr error
	for _, at := range killAt {
		for pub.acked.Load() < at && pctx.Err() == nil {
			sleepCtx(pctx, 5*time.Millisecond)
		}
		if pctx.Err() != nil {
			break
		}
		t0 := time.Now()
		if err := srv.kill(); err != nil {
			runErr = err
			break
		}
		if err := srv.start(ctx); err != nil {
			runErr = err
			break
		}
		res.Kills++
		res.RestartSeconds = max(res.RestartSeconds, time.Since(t0).Seconds())
		cfg.logf("kill %d at %d oplogs; back in %.2fs", res.Kills, pub.acked.Load(), time.Since(t0).Seconds())
	}
	for runErr == nil && pub.acked.Load() < int64(cfg.Oplogs) && pctx.Err() == nil {
		sleepCtx(pctx, 10*time.Millisecond)
	}
	pub.stop.Store(true) // workers finish their call in flight (retrying it until acknowledged)
	wg.Wait()
	pcancel()
	<-churnDone
	res.PublishSeconds = time.Since(start).Seconds()
	cfg.logf("published %d oplogs in %.1fs; catching up", pub.acked.Load(), res.PublishSeconds)
	if runErr != nil {
		return nil, runErr
	}

	// Catch-up: every device online, until each has every acknowledged id
	// of its channels or the time is up.
	t0 := time.Now()
	if err := fleet.foregroundAll(); err != nil {
		return nil, err
	}
	for ctx.Err() == nil && !ck.caughtUp() {
		sleepCtx(ctx, 100*time.Millisecond)
	}
	res.CatchUpSeconds = time.Since(t0).Seconds()
	fleet.shutdown() // no handler runs while the checker reads
	ck.report(res)
	res.Oplogs = pub.acked.Load()
	res.SingleCalls, res.BatchCalls = pub.single.Load(), pub.batch.Load()
	res.RetriedCalls, res.DuplicateAcks = pub.retried.Load(), pub.dupAcks.Load()
	res.Disconnects, res.SDKRestarts = fleet.disconnects.Load(), fleet.restarts.Load()
	res.HandlerFailures = fleet.failures.Load()
	res.Seconds = time.Since(start).Seconds()
	if !res.OK() && ctx.Err() != nil {
		res.Problems = append(res.Problems, fmt.Sprintf("catch-up did not finish within --max-time %s", cfg.MaxTime))
	}
	return res, nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// soakServer is the `msync all` child: same config, ports and data dir on
// every start.
type soakServer struct {
	exe, dir, cfgPath string
	addr, api         string
	log               io.Writer
	cmd               *exec.Cmd
	waitErr           chan error
}

func newSoakServer(cfg SoakConfig) (*soakServer, error) {
	exe := cfg.Exe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	s := &soakServer{exe: exe, log: cfg.Log}
	if s.log == nil {
		s.log = io.Discard
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	s.addr, s.api = ports[0], "http://"+ports[1]
	if s.dir, err = os.MkdirTemp("", "msync-soak-"); err != nil {
		return nil, err
	}
	s.cfgPath = filepath.Join(s.dir, "msync.yaml")
	conf := fmt.Sprintf(soakConfig, soakSecret, soakKey, ports[0], ports[1], soakDevBiz, soakUserBiz, soakChatBiz)
	if err := os.WriteFile(s.cfgPath, []byte(conf), 0o600); err != nil {
		_ = os.RemoveAll(s.dir)
		return nil, err
	}
	return s, nil
}

// start runs the server and waits until both listeners answer (a restart
// after SIGKILL replays Pebble's WAL first).
func (s *soakServer) start(ctx context.Context) error {
	cmd := exec.Command(s.exe, "all", "-c", s.cfgPath, "--data", filepath.Join(s.dir, "data"))
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%w: start: %w", ErrServer, err)
	}
	s.cmd, s.waitErr = cmd, make(chan error, 1)
	go func() { s.waitErr <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-s.waitErr:
			s.waitErr <- err
			return fmt.Errorf("%w: exited during start: %v", ErrServer, err)
		default:
		}
		err := s.ping(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = s.kill()
			return fmt.Errorf("%w: not ready: %v", ErrServer, err)
		}
		sleepCtx(ctx, 20*time.Millisecond)
	}
}

func (s *soakServer) ping(ctx context.Context) error {
	c, err := net.DialTimeout("tcp", s.addr, time.Second)
	if err != nil {
		return err
	}
	_ = c.Close()
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(rctx, http.MethodGet, s.api+"/healthz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz: %s", resp.Status)
	}
	return nil
}

// kill sends SIGKILL and waits for the process to be gone.
func (s *soakServer) kill() error {
	if s.cmd == nil {
		return nil
	}
	_ = s.cmd.Process.Kill()
	<-s.waitErr
	s.cmd = nil
	return nil
}

// close stops the server gracefully (SIGINT, SIGKILL after 20s) and removes
// its directory.
func (s *soakServer) close() {
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(os.Interrupt)
		select {
		case <-s.waitErr:
		case <-time.After(20 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.waitErr
		}
		s.cmd = nil
	}
	_ = os.RemoveAll(s.dir)
}

// checker records every handler call. Its maps are filled at construction
// (channels) and by handlers (under each record's lock).
type checker struct {
	mu    sync.Mutex
	acked map[string]*ackedChan // channel -> what publishers got acknowledged
	devs  []*devRecord
}

type ackedChan struct {
	payloads map[uint64]string // id -> payload
	max      uint64
}

type devRecord struct {
	device string
	own    bool
	mu     sync.Mutex
	chans  map[string]*chanRecord
	// problems are the first violations, for the report.
	problems []string
	dup, ooo int64
	redeliv  int64
	calls    int64
}

type chanRecord struct {
	seen     map[uint64]string // id -> payload handed to the handler
	last     uint64            // highest id in the current SDK instance (own points: ever)
	instance int
}

func newChecker(devices int) *checker {
	return &checker{acked: map[string]*ackedChan{}, devs: make([]*devRecord, 0, devices)}
}

func (ck *checker) addChannel(ch string) {
	ck.mu.Lock()
	if ck.acked[ch] == nil {
		ck.acked[ch] = &ackedChan{payloads: map[uint64]string{}}
	}
	ck.mu.Unlock()
}

func (ck *checker) ack(ch string, id uint64, payload string) {
	ck.mu.Lock()
	a := ck.acked[ch]
	a.payloads[id] = payload
	a.max = max(a.max, id)
	ck.mu.Unlock()
}

// handle is every device's handler body.
func (d *devRecord) handle(instance int, o client.Oplog) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	r := d.chans[o.Channel]
	if r == nil {
		d.problem("handler got channel %s, which the device does not sync", o.Channel)
		return
	}
	if r.instance != instance {
		r.instance = instance
		if !d.own {
			r.last = 0 // a fresh store: the server's point decides where it starts
		}
	}
	_, seen := r.seen[o.ID]
	switch {
	case o.ID <= r.last && seen:
		d.dup++
		d.problem("%s: id %d again (last %d, instance %d)", o.Channel, o.ID, r.last, instance)
	case o.ID <= r.last:
		d.ooo++
		d.problem("%s: id %d after %d (instance %d)", o.Channel, o.ID, r.last, instance)
	case seen: // above last but seen: only after a restart without own points
		d.redeliv++
	}
	r.last = max(r.last, o.ID)
	if !seen {
		r.seen[o.ID] = string(o.Payload)
	}
}

func (d *devRecord) problem(format string, args ...any) {
	if len(d.problems) < 5 {
		d.problems = append(d.problems, d.device+": "+fmt.Sprintf(format, args...))
	}
}

// caughtUp reports whether every device has every acknowledged id of its
// channels.
func (ck *checker) caughtUp() bool {
	ck.mu.Lock()
	defer ck.mu.Unlock()
	for _, d := range ck.devs {
		d.mu.Lock()
		for ch, r := range d.chans {
			if a := ck.acked[ch]; a.max > 0 && len(r.seen) < len(a.payloads) {
				d.mu.Unlock()
				return false
			}
		}
		d.mu.Unlock()
	}
	return true
}

func (ck *checker) report(res *SoakResult) {
	ck.mu.Lock()
	defer ck.mu.Unlock()
	addProblem := func(s string) {
		if len(res.Problems) < 20 {
			res.Problems = append(res.Problems, s)
		}
	}
	for _, d := range ck.devs {
		d.mu.Lock()
		res.Delivered += d.calls
		res.Duplicated += d.dup
		res.OutOfOrder += d.ooo
		res.Redelivered += d.redeliv
		for _, p := range d.problems {
			addProblem(p)
		}
		for ch, r := range d.chans {
			a := ck.acked[ch]
			res.Expected += int64(len(a.payloads))
			for id, p := range a.payloads {
				got, ok := r.seen[id]
				switch {
				case !ok:
					res.Lost++
					addProblem(fmt.Sprintf("%s: %s id %d lost", d.device, ch, id))
				case got != p:
					res.PayloadMismatch++
					addProblem(fmt.Sprintf("%s: %s id %d payload %q, published %q", d.device, ch, id, got, p))
				}
			}
			for id := range r.seen {
				if _, ok := a.payloads[id]; !ok {
					res.Unacknowledged++
				}
			}
		}
		d.mu.Unlock()
	}
}

// fleet is the devices: SDK clients that the churn stops and starts.
type fleet struct {
	cfg    SoakConfig
	addr   string
	tokens *auth.Tokens
	ck     *checker
	devs   []*soakDevice
	own    int
	users  int

	disconnects, restarts, failures atomic.Int64
}

type soakDevice struct {
	rec   *devRecord
	user  string
	store client.SyncPointStore // kept across SDK restarts when rec.own

	mu       sync.Mutex
	c        *client.Client
	instance int
	busy     bool // a churn action owns it
}

func newFleet(cfg SoakConfig, addr string, tokens *auth.Tokens, ck *checker) *fleet {
	f := &fleet{cfg: cfg, addr: addr, tokens: tokens, ck: ck, users: (cfg.Devices + 1) / 2}
	nOwn := int(float64(cfg.Devices)*cfg.OwnPoints + 0.5)
	for i := range cfg.Devices {
		user := "u" + strconv.Itoa(i/2)
		dev := user + "-d" + strconv.Itoa(i%2)
		own := i < nOwn
		if own {
			f.own++
		}
		rec := &devRecord{device: dev, own: own, chans: map[string]*chanRecord{}}
		for _, ch := range []string{soakDevBiz + "/d/" + dev, soakUserBiz + "/u/" + user, soakChatBiz + "/u/" + user} {
			rec.chans[ch] = &chanRecord{seen: map[uint64]string{}}
			ck.addChannel(ch)
		}
		ck.devs = append(ck.devs, rec)
		f.devs = append(f.devs, &soakDevice{rec: rec, user: user, store: client.NewMemoryStore()})
	}
	return f
}

// newClient starts a new SDK instance for d. REQUIRES: d.mu.
func (f *fleet) newClientLocked(d *soakDevice, seed uint64) error {
	d.instance++
	if !d.rec.own {
		d.store = client.NewMemoryStore()
	}
	instance := d.instance
	rng := rand.New(rand.NewPCG(seed, uint64(instance)))
	var rmu sync.Mutex
	user := d.user
	c, err := client.New(f.addr, client.Options{
		TokenProvider: func(context.Context) (string, error) { return f.tokens.Sign(user, time.Hour) },
		Device:        d.rec.device,
		Platform:      "android",
		AppVersion:    "1.0.0",
		Store:         d.store,
		BackoffMin:    50 * time.Millisecond,
		BackoffMax:    time.Second,
		DialTimeout:   10 * time.Second,
	})
	if err != nil {
		return err
	}
	h := func(_ context.Context, o client.Oplog) error {
		rmu.Lock()
		fail := rng.IntN(500) == 0
		rmu.Unlock()
		if fail { // the SDK retries it in place; nothing is recorded
			f.failures.Add(1)
			return errors.New("soak: injected handler failure")
		}
		d.rec.handle(instance, o)
		return nil
	}
	for _, b := range []string{soakDevBiz, soakUserBiz, soakChatBiz} {
		if err := c.RegisterBiz(b, h); err != nil {
			return err
		}
	}
	if err := c.Start(); err != nil {
		return err
	}
	d.c = c
	return nil
}

func (f *fleet) startAll() error {
	for i, d := range f.devs {
		d.mu.Lock()
		err := f.newClientLocked(d, f.cfg.Seed+uint64(i))
		d.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// churn picks a random device every ChurnEvery: it goes to background for
// a while (connection closed, SDK kept) or its SDK is shut down and a new
// one started (an app restart). At most a fifth of the devices are busy.
func (f *fleet) churn(ctx context.Context, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 2))
	var wg sync.WaitGroup
	defer wg.Wait()
	var busy atomic.Int64
	tick := time.NewTicker(f.cfg.ChurnEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if busy.Load() >= int64(len(f.devs)/5+1) {
			continue
		}
		i := rng.IntN(len(f.devs))
		d := f.devs[i]
		restart := rng.IntN(3) == 0
		away := time.Duration(50+rng.IntN(1500)) * time.Millisecond
		seed := rng.Uint64()
		d.mu.Lock()
		c := d.c
		if d.busy || c == nil {
			d.mu.Unlock()
			continue
		}
		d.busy = true
		if restart {
			d.c = nil
		}
		d.mu.Unlock()
		busy.Add(1)
		wg.Go(func() {
			defer busy.Add(-1)
			f.disconnects.Add(1)
			if restart {
				f.restarts.Add(1)
				sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_ = c.Shutdown(sctx)
				cancel()
			} else {
				c.Background()
			}
			sleepCtx(ctx, away)
			d.mu.Lock()
			defer d.mu.Unlock()
			d.busy = false
			if d.c == nil {
				if err := f.newClientLocked(d, seed); err != nil {
					f.cfg.logf("restart %s: %v", d.rec.device, err)
				}
			} else {
				d.c.Foreground()
			}
		})
	}
}

// foregroundAll makes sure every device runs and is in foreground.
func (f *fleet) foregroundAll() error {
	for i, d := range f.devs {
		d.mu.Lock()
		var err error
		if d.c == nil {
			err = f.newClientLocked(d, f.cfg.Seed+uint64(i)+7)
		} else {
			d.c.Foreground()
		}
		d.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// shutdown stops every SDK instance; idempotent.
func (f *fleet) shutdown() {
	var wg sync.WaitGroup
	for _, d := range f.devs {
		d.mu.Lock()
		c := d.c
		d.c = nil
		d.mu.Unlock()
		if c != nil {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				_ = c.Shutdown(ctx)
			})
		}
	}
	wg.Wait()
}

// soakPublisher publishes until stop, retrying each call with its dedup
// keys until it is acknowledged.
type soakPublisher struct {
	cfg  SoakConfig
	api  string
	ck   *checker
	hc   *http.Client
	stop atomic.Bool
	seq  atomic.Uint64

	acked, single, batch, retried, dupAcks atomic.Int64
}

type soakItem struct {
	Biz     string `json:"biz"`
	User    string `json:"user,omitempty"`
	Device  string `json:"device,omitempty"`
	Payload string `json:"payload"`
	Dedup   string `json:"dedup_key"`
	channel string
}

func (p *soakPublisher) run(ctx context.Context, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 3))
	devices := p.cfg.Devices
	for !p.stop.Load() && ctx.Err() == nil {
		n := 1
		if rng.IntN(4) != 0 { // three calls in four are batches
			n = 2 + rng.IntN(max(p.cfg.Batch-1, 1))
		}
		items := make([]soakItem, n)
		for i := range items {
			s := p.seq.Add(1)
			it := soakItem{Payload: "p" + strconv.FormatUint(s, 36), Dedup: "k" + strconv.FormatUint(s, 36)}
			dev := rng.IntN(devices)
			user := "u" + strconv.Itoa(dev/2)
			switch rng.IntN(3) {
			case 0:
				it.Biz, it.Device = soakDevBiz, user+"-d"+strconv.Itoa(dev%2)
				it.channel = soakDevBiz + "/d/" + it.Device
			case 1:
				it.Biz, it.User, it.channel = soakUserBiz, user, soakUserBiz+"/u/"+user
			default:
				it.Biz, it.User, it.channel = soakChatBiz, user, soakChatBiz+"/u/"+user
			}
			items[i] = it
		}
		if n == 1 {
			p.single.Add(1)
		} else {
			p.batch.Add(1)
		}
		p.publish(ctx, items)
	}
}

type soakResult struct {
	ID        uint64          `json:"id"`
	Channel   string          `json:"channel"`
	Duplicate bool            `json:"duplicate"`
	Error     json.RawMessage `json:"error"`
}

// publish sends items until the server acknowledges all of them (or ctx
// ends). A retry after a failure carries the same dedup keys, so an item
// stored by a try whose answer was lost gets its first id back.
func (p *soakPublisher) publish(ctx context.Context, items []soakItem) {
	path := "/v1/sync"
	var body []byte
	if len(items) == 1 {
		body, _ = json.Marshal(items[0])
	} else {
		path = "/v1/sync/batch"
		body, _ = json.Marshal(map[string]any{"items": items})
	}
	for attempt := 0; ctx.Err() == nil; attempt++ {
		if attempt > 0 {
			if attempt == 1 {
				p.retried.Add(1)
			}
			sleepCtx(ctx, time.Duration(min(10*attempt, 500))*time.Millisecond)
		}
		results, err := p.call(ctx, path, body, len(items))
		if err != nil {
			continue
		}
		for i, r := range results {
			p.ck.ack(items[i].channel, r.ID, items[i].Payload)
			if r.Duplicate {
				p.dupAcks.Add(1)
			}
		}
		p.acked.Add(int64(len(items)))
		return
	}
}

func (p *soakPublisher) call(ctx context.Context, path string, body []byte, n int) ([]soakResult, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.api+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+soakKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.hc.Do(req)
	if err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		if resp.StatusCode/100 == 4 && resp.StatusCode != http.StatusTooManyRequests {
			// The soak builds only valid items: a 4xx is a bug, not a crash.
			p.cfg.logf("%s: %s %s", path, resp.Status, bytes.TrimSpace(raw))
		}
		return nil, fmt.Errorf("%s: %s", path, resp.Status)
	}
	var results []soakResult
	if n == 1 {
		var r soakResult
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, err
		}
		results = []soakResult{r}
	} else {
		var out struct {
			Results []soakResult `json:"results"`
		}
		if err := json.Unmarshal(raw, &out); err != nil {
			return nil, err
		}
		results = out.Results
	}
	if len(results) != n {
		return nil, fmt.Errorf("%s: %d results for %d items", path, len(results), n)
	}
	for _, r := range results {
		if r.ID == 0 || r.Error != nil {
			return nil, fmt.Errorf("%s: item not stored: %s", path, r.Error)
		}
	}
	return results, nil
}
