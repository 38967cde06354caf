//go:build integration

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

// TestChaosReal publishes without pause on many channels through both
// logics of a real cluster (Cassandra, RocketMQ, 2 logic, 2 job, 3 comets)
// while it kill -9s and restarts one logic, one job and one comet, restarts
// the RocketMQ broker and stops Cassandra for ~20 s. Devices (two per
// channel, on different comets) heartbeat, reconnect elsewhere when their
// comet dies, and record everything. At the end every acknowledged oplog
// must have reached every device of its channel: 0 lost, 0 duplicated,
// 0 out of order, and no id acknowledged twice.
//
// Bounds come from the environment (make chaos sets the long run):
//
//	MSYNC_CHAOS_DURATION    publishing time at least (default 60s)
//	MSYNC_CHAOS_CHANNELS    channels, one user each (default 60)
//	MSYNC_CHAOS_RATE        oplogs/s offered (default 150)
//	MSYNC_CHAOS_MIN_OPLOGS  fail below this many acknowledged (default 0)
//	MSYNC_CHAOS_PUBLISHERS  concurrent publishers, batches of 10 (default 8)
//	MSYNC_ENGINES_CTL       scripts/engines.sh of the running engines: the
//	                        broker and Cassandra faults need it
func TestChaosReal(t *testing.T) {
	e := realEngines(t)
	cfg := chaosConfigFromEnv(t)
	ctl := os.Getenv("MSYNC_ENGINES_CTL")
	bin := msyncBinary(t, t.TempDir())
	c := startRealCluster(t, bin, e, 2, 2)
	ch := &chaos{c: c, cfg: cfg, ctl: ctl, stop: make(chan struct{}), end: make(chan struct{}), acked: map[string]map[uint64]string{}, failedBy: map[string]string{}}
	var endOnce sync.Once
	endAll := func() { endOnce.Do(func() { close(ch.end) }) }
	t.Cleanup(endAll) // also when a fault fails the test midway
	for i := range 3 {
		ch.startComet(i)
	}
	c.waitPushPath(ch.cometAddr(0))

	for u := range cfg.channels {
		user := fmt.Sprintf("chaos-%03d", u)
		for k := range 2 {
			cd := &chaosDevice{user: user, id: fmt.Sprintf("%s-d%d", user, k)}
			ch.devices = append(ch.devices, cd)
			d, err := ch.tryConnect(ch.cometAddr((u+k)%3), cd, nil)
			if err != nil {
				t.Fatalf("connect %s: %v", cd.id, err)
			}
			cd.cur = d
		}
	}
	var bg sync.WaitGroup
	for _, cd := range ch.devices {
		bg.Go(func() { ch.supervise(cd) })
	}
	var pubs sync.WaitGroup
	tokens := make(chan struct{}, 2*cfg.publishers)
	bg.Go(func() { ch.pace(tokens) })
	for range cfg.publishers {
		pubs.Go(func() { ch.publishLoop(tokens) })
	}

	// The faults, in random order at random times, one at a time, from this
	// goroutine (it may fail the test).
	began := time.Now()
	faults := []chaosFault{
		{"kill -9 logic", ch.killLogic},
		{"kill -9 job", ch.killJob},
		{"kill -9 comet", ch.killComet},
	}
	if ctl != "" {
		faults = append(faults, chaosFault{"restart rocketmq broker", ch.restartBroker}, chaosFault{"stop cassandra 20s", ch.stopCassandra})
	} else {
		t.Log("MSYNC_ENGINES_CTL is not set: no broker restart and no Cassandra stop in this run (make test-integration and make chaos set it)")
	}
	rand.Shuffle(len(faults), func(i, j int) { faults[i], faults[j] = faults[j], faults[i] })
	slot := cfg.duration * 8 / 10 / time.Duration(len(faults))
	for i, f := range faults {
		at := cfg.duration/10 + time.Duration(i)*slot + rand.N(slot/2)
		if wait := time.Until(began.Add(at)); wait > 0 {
			time.Sleep(wait)
		}
		fb := time.Now()
		f.run(t)
		ch.logf("fault %-24s at %6.1fs, took %5.1fs", f.name, fb.Sub(began).Seconds(), time.Since(fb).Seconds())
	}
	// Publish on for the rest of the duration, and 10 s past the last fault.
	time.Sleep(max(time.Until(began.Add(cfg.duration)), 10*time.Second))
	close(ch.stop)
	pubs.Wait()
	published := time.Since(began)

	ch.converge(t)
	ch.report(t, published)
	endAll()
	bg.Wait()
}

type chaosConfig struct {
	duration  time.Duration
	channels  int
	rate      int
	minOplogs int
	// publishers post concurrently; each waits for its call's answer, so
	// they, not rate, bound the offered load when calls are slow.
	publishers int
}

func chaosConfigFromEnv(t *testing.T) chaosConfig {
	cfg := chaosConfig{duration: time.Minute, channels: 60, rate: 150, publishers: 8}
	if v := os.Getenv("MSYNC_CHAOS_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 10*time.Second || d > time.Hour {
			t.Fatalf("MSYNC_CHAOS_DURATION %q: want 10s..1h", v)
		}
		cfg.duration = d
	}
	for _, p := range []struct {
		env      string
		dst      *int
		min, max int
	}{{"MSYNC_CHAOS_CHANNELS", &cfg.channels, 3, 2000}, {"MSYNC_CHAOS_RATE", &cfg.rate, 10, 5000}, {"MSYNC_CHAOS_MIN_OPLOGS", &cfg.minOplogs, 0, 10_000_000},
		{"MSYNC_CHAOS_PUBLISHERS", &cfg.publishers, 1, 256}} {
		if v := os.Getenv(p.env); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < p.min || n > p.max {
				t.Fatalf("%s %q: want %d..%d", p.env, v, p.min, p.max)
			}
			*p.dst = n
		}
	}
	return cfg
}

type chaosFault struct {
	name string
	run  func(t *testing.T)
}

type chaos struct {
	c    *realCluster
	cfg  chaosConfig
	ctl  string
	stop chan struct{} // closed: publishers stop
	end  chan struct{} // closed: device supervisors stop

	devices []*chaosDevice

	mu         sync.Mutex
	comets     []*proc
	cometAddrs []string
	acked      map[string]map[uint64]string // channel -> id -> payload
	failedBy   map[string]string            // payload -> how its call failed ("503", "error")
	reused     int                          // an id acknowledged for two payloads
	lines      []string                     // report lines

	seq                                 atomic.Uint64
	calls, callsOK, calls503, callsErr  atomic.Int64
	itemsAcked, itemsFailed             atomic.Int64
	during503, duringOK                 atomic.Int64 // while Cassandra is down
	cassandraDown                       atomic.Bool
	latMu                               sync.Mutex
	lat                                 []time.Duration
	reconnects, forced, connectFailures atomic.Int64
	pushAfterRestart                    atomic.Int64 // ns, probeAfterRestart
}

func (ch *chaos) logf(format string, args ...any) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.lines = append(ch.lines, fmt.Sprintf(format, args...))
}

func (ch *chaos) cometID(i int) string { return fmt.Sprintf("chaos-comet-%d", i+1) }

func (ch *chaos) startComet(i int) {
	c := ch.c
	p := c.startProc(ch.cometID(i), "msync comet started", "comet", "-c", filepath.Join(c.dir, "comet.yaml"),
		"--id", ch.cometID(i), "--logic", c.grpc)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for len(ch.comets) <= i {
		ch.comets, ch.cometAddrs = append(ch.comets, nil), append(ch.cometAddrs, "")
	}
	ch.comets[i], ch.cometAddrs[i] = p, p.addr("comet_tcp")
}

func (ch *chaos) cometAddr(i int) string {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.cometAddrs[i%len(ch.cometAddrs)]
}

// ---- faults ----

func (ch *chaos) killLogic(*testing.T) {
	c := ch.c
	i := rand.N(len(c.logics))
	c.logics[i].kill9()
	time.Sleep(2 * time.Second)
	c.logics[i] = c.startLogic(i)
}

func (ch *chaos) killJob(*testing.T) {
	c := ch.c
	i := rand.N(len(c.jobs))
	c.jobs[i].kill9()
	time.Sleep(2 * time.Second)
	c.jobs[i] = c.startJob(i)
}

func (ch *chaos) killComet(*testing.T) {
	i := rand.N(3)
	ch.mu.Lock()
	p := ch.comets[i]
	ch.cometAddrs[i] = ch.cometAddrs[(i+1)%3] // reconnects go elsewhere meanwhile
	ch.mu.Unlock()
	p.kill9()
	time.Sleep(2 * time.Second)
	ch.startComet(i)
}

func (ch *chaos) engines(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(ch.ctl, args...)
	cmd.Env = append(os.Environ(), "MSYNC_ENGINES_FRESH=0") // a restart keeps the data
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", ch.ctl, args, err, out)
	}
}

func (ch *chaos) restartBroker(t *testing.T) {
	ch.engines(t, "down", "broker")
	ch.engines(t, "up", "broker")
	ch.probeAfterRestart(t)
}

// restartPushBound: from the restarted broker serving to an oplog published
// then being on every device of its channel.
const restartPushBound = 60 * time.Second

// probeAfterRestart publishes one oplog as soon as the restarted broker
// serves and waits until both devices of its channel hold it: live pushes
// must resume within restartPushBound of the broker serving again.
func (ch *chaos) probeAfterRestart(t *testing.T) {
	t.Helper()
	served := time.Now()
	u := rand.N(ch.cfg.channels)
	user := fmt.Sprintf("chaos-%03d", u)
	channel := oplog.UserChannel("demo", user)
	payload := fmt.Sprintf("probe-%d", ch.seq.Add(1))
	for !ch.publishBatch(ch.c.publishAPI(), []map[string]any{toUser(user, payload)}) {
		if time.Since(served) > restartPushBound {
			t.Errorf("after the broker restart no publish was acknowledged within %v", restartPushBound)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	has := func(cd *chaosDevice) bool {
		got, _ := cd.all()
		return slices.ContainsFunc(got, func(r received) bool { return r.Channel == channel && r.Payload == payload })
	}
	var devs []*chaosDevice
	for _, cd := range ch.devices {
		if cd.user == user {
			devs = append(devs, cd)
		}
	}
	for !has(devs[0]) || !has(devs[1]) {
		if time.Since(served) > restartPushBound {
			t.Errorf("after the broker restart the oplog published then (%s on %s) was not on both devices within %v", payload, channel, restartPushBound)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(served)
	ch.pushAfterRestart.Store(int64(took))
	ch.logf("after the broker restart: the oplog published then was on both devices of %s %.1fs after the broker served", channel, took.Seconds())
}

// stopCassandra stops the node for ~20 s. Meanwhile publishes must fail
// (503), never succeed: nothing can be durable without the store.
func (ch *chaos) stopCassandra(t *testing.T) {
	ch.engines(t, "down", "cassandra")
	ch.cassandraDown.Store(true)
	time.Sleep(10 * time.Second)
	// /healthz of a logic names the store as the dependency that is down.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	var health map[string]string
	code, err := do(ctx, "GET", ch.c.apis[0]+"/healthz", "", nil, &health)
	cancel()
	if err != nil || code != 503 || !strings.HasPrefix(health["store"], "down: ") {
		t.Errorf("logic /healthz with Cassandra stopped = %d %v %v, want 503 with store down", code, health, err)
	} else {
		ch.logf("logic /healthz with Cassandra stopped: %d %v", code, health)
	}
	time.Sleep(10 * time.Second)
	ch.cassandraDown.Store(false)
	ch.engines(t, "up", "cassandra")
	if ch.during503.Load() == 0 {
		t.Errorf("no publish answered 503 while Cassandra was down (%d answered 200): did the stop take effect?", ch.duringOK.Load())
	}
	if n := ch.duringOK.Load(); n > 0 {
		t.Errorf("%d publishes answered 200 while Cassandra was stopped", n)
	}
}

// ---- publishing ----

// pace hands out one token per batch at cfg.rate oplogs/s.
func (ch *chaos) pace(tokens chan<- struct{}) {
	const batch = 10
	every := time.Second * batch / time.Duration(ch.cfg.rate)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ch.stop:
			return
		case <-tick.C:
			select {
			case tokens <- struct{}{}:
			default: // publishers are behind: offered load is capped
			}
		}
	}
}

func (ch *chaos) publishLoop(tokens <-chan struct{}) {
	for {
		select {
		case <-ch.stop:
			return
		case <-tokens:
		}
		items := make([]map[string]any, 10)
		for i := range items {
			u := rand.N(ch.cfg.channels)
			items[i] = toUser(fmt.Sprintf("chaos-%03d", u), fmt.Sprintf("p%d", ch.seq.Add(1)))
		}
		ch.publishBatch(ch.c.publishAPI(), items)
	}
}

func (ch *chaos) failed(items []map[string]any, how string) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for _, it := range items {
		ch.failedBy[it["payload"].(string)] = how
	}
}

type batchResult struct {
	Results []publishResult `json:"results"`
}

// publishBatch posts items; it records every acknowledged one and returns
// whether the call was acknowledged.
func (ch *chaos) publishBatch(api string, items []map[string]any) bool {
	down := ch.cassandraDown.Load()
	ch.calls.Add(1)
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var res batchResult
	code, err := postJSON(ctx, api+"/v1/sync/batch", "test-key", map[string]any{"items": items}, &res)
	switch {
	case err == nil && code == 200 && len(res.Results) == len(items):
	case err == nil && code == 503:
		ch.failed(items, "503")
		ch.calls503.Add(1)
		ch.itemsFailed.Add(int64(len(items)))
		if down && ch.cassandraDown.Load() {
			ch.during503.Add(1)
		}
		return false
	default:
		ch.failed(items, fmt.Sprintf("status %d err %v", code, err))
		ch.callsErr.Add(1)
		ch.itemsFailed.Add(int64(len(items)))
		return false
	}
	if down && ch.cassandraDown.Load() {
		ch.duringOK.Add(1)
	}
	ch.callsOK.Add(1)
	ch.latMu.Lock()
	ch.lat = append(ch.lat, time.Since(began))
	ch.latMu.Unlock()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for i, r := range res.Results {
		if r.Error != nil || r.ID == 0 {
			ch.itemsFailed.Add(1)
			continue
		}
		m := ch.acked[r.Channel]
		if m == nil {
			m = map[uint64]string{}
			ch.acked[r.Channel] = m
		}
		p := items[i]["payload"].(string)
		if prev, ok := m[r.ID]; ok && prev != p {
			ch.reused++
		}
		m[r.ID] = p
		ch.itemsAcked.Add(1)
	}
	return true
}

// ---- devices ----

// chaosDevice is one device across its connections (incarnations).
type chaosDevice struct {
	user, id string
	mu       sync.Mutex
	cur      *device
	past     []*device
	forced   bool
}

// tryConnect is connect without t.Fatal, for background goroutines: dial,
// AUTH with prev's points, wait for AUTH_REPLY.
func (ch *chaos) tryConnect(addr string, cd *chaosDevice, prev *device) (*device, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	d := newDevice(ch.c.t, conn)
	if prev != nil {
		prev.mu.Lock()
		maps.Copy(d.points, prev.points)
		prev.mu.Unlock()
	}
	go d.readLoop()
	d.mu.Lock()
	req := &pb.Auth{Token: ch.c.token(cd.user), Device: cd.id, Platform: "ios", AppVersion: "1.0.0", Bizs: []string{"demo"}}
	for c, p := range d.points {
		req.Points = append(req.Points, &pb.ChannelPoint{Channel: c, Id: p})
	}
	d.sendLocked(protocol.OpAuth, req)
	d.mu.Unlock()
	deadline := time.Now().Add(15 * time.Second)
	for {
		d.mu.Lock()
		ok := slices.ContainsFunc(d.other, func(f protocol.Frame) bool { return f.Op == protocol.OpAuthReply })
		var failed error
		if len(d.errs) > 0 {
			failed = fmt.Errorf("ERROR %d %s", d.errs[0].Code, d.errs[0].Message)
		} else if d.closed != nil {
			failed = d.closed
		}
		d.mu.Unlock()
		switch {
		case ok:
			d.keepAlive()
			return d, nil
		case failed != nil, time.Now().After(deadline):
			d.conn.Close()
			if failed == nil {
				failed = errors.New("no AUTH_REPLY in 15s")
			}
			return nil, failed
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// supervise reconnects cd whenever its connection ends, to a random comet,
// with backoff, until the run is over.
func (ch *chaos) supervise(cd *chaosDevice) {
	for {
		cd.mu.Lock()
		cur := cd.cur
		cd.mu.Unlock()
		select {
		case <-cur.done:
		case <-ch.end:
			return
		}
		select {
		case <-ch.end:
			return
		default:
		}
		delay := 200 * time.Millisecond
		for {
			d, err := ch.tryConnect(ch.cometAddr(rand.N(3)), cd, cur)
			if err == nil {
				ch.reconnects.Add(1)
				cd.mu.Lock()
				cd.past = append(cd.past, cur)
				cd.cur = d
				cd.mu.Unlock()
				break
			}
			ch.connectFailures.Add(1)
			select {
			case <-time.After(delay):
			case <-ch.end:
				return
			}
			delay = min(2*delay, 5*time.Second)
		}
	}
}

// all returns what cd received over all its connections, in order.
func (cd *chaosDevice) all() (got []received, dups int) {
	cd.mu.Lock()
	defer cd.mu.Unlock()
	for _, d := range append(slices.Clone(cd.past), cd.cur) {
		got = append(got, d.received()...)
		n, _ := d.violations()
		dups += n
	}
	return got, dups
}

// ---- the end ----

// converge publishes one last oplog per channel (so a channel whose last
// push was lost in a fault shows its gap), then waits until every device has
// every acknowledged id of its channel; devices still behind after 3
// minutes are reconnected once (a device that connects gets everything:
// guarantee 3) and counted.
func (ch *chaos) converge(t *testing.T) {
	deadline := time.Now().Add(3 * time.Minute)
	for u := range ch.cfg.channels {
		item := []map[string]any{toUser(fmt.Sprintf("chaos-%03d", u), fmt.Sprintf("final-%d", u))}
		for !ch.publishBatch(ch.c.publishAPI(), item) {
			if time.Now().After(deadline) {
				t.Fatalf("the final publish on chaos-%03d was never acknowledged", u)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	began := time.Now()
	behind := func() []*chaosDevice {
		var out []*chaosDevice
		for _, cd := range ch.devices {
			if !ch.complete(cd) {
				out = append(out, cd)
			}
		}
		return out
	}
	for time.Now().Before(deadline) && len(behind()) > 0 {
		time.Sleep(500 * time.Millisecond)
	}
	if late := behind(); len(late) > 0 {
		ch.forced.Add(int64(len(late)))
		for i, cd := range late {
			if i < 5 {
				got, _ := cd.all()
				var lastID uint64
				if len(got) > 0 {
					lastID = got[len(got)-1].ID
				}
				cd.mu.Lock()
				ch.logf("behind after the wait: %s (%d connections, %d received, last id %d, current connection closed: %v)",
					cd.id, len(cd.past)+1, len(got), lastID, cd.cur.closed)
				cd.mu.Unlock()
			}
			cd.mu.Lock()
			cd.forced = true
			cd.cur.conn.Close() // supervise reconnects it
			cd.mu.Unlock()
		}
		end := time.Now().Add(2 * time.Minute)
		for time.Now().Before(end) && len(behind()) > 0 {
			time.Sleep(500 * time.Millisecond)
		}
	}
	ch.logf("converged %.1fs after the final publishes; %d devices reconnected by the checker", time.Since(began).Seconds(), ch.forced.Load())
}

// complete reports whether cd holds every acknowledged id of its channel.
func (ch *chaos) complete(cd *chaosDevice) bool {
	channel := oplog.UserChannel("demo", cd.user)
	ch.mu.Lock()
	var top uint64
	for id := range ch.acked[channel] {
		top = max(top, id)
	}
	ch.mu.Unlock()
	got, _ := cd.all()
	have := map[uint64]bool{}
	for _, r := range got {
		have[r.ID] = true
	}
	for id := uint64(1); id <= top; id++ {
		if !have[id] {
			return false
		}
	}
	return true
}

func (ch *chaos) report(t *testing.T, published time.Duration) {
	var lost, dups, outOfOrder, mismatched, extra, extra503, delivered int
	var serverResent int
	for _, cd := range ch.devices {
		channel := oplog.UserChannel("demo", cd.user)
		got, resent := cd.all()
		serverResent += resent
		ch.mu.Lock()
		acked := maps.Clone(ch.acked[channel])
		ch.mu.Unlock()
		seen := map[uint64]bool{}
		var last uint64
		for _, r := range got {
			if r.Channel != channel {
				mismatched++
				continue
			}
			if seen[r.ID] {
				dups++
				continue
			}
			seen[r.ID] = true
			if r.ID != last+1 {
				outOfOrder++
			}
			last = r.ID
			delivered++
			if p, ok := acked[r.ID]; ok && p != r.Payload {
				mismatched++
			} else if !ok {
				extra++ // stored by a call that did not get its answer
				ch.mu.Lock()
				how := ch.failedBy[r.Payload]
				ch.mu.Unlock()
				if how == "503" {
					extra503++
					if extra503 <= 3 {
						t.Logf("%s: %s id %d (%s) was delivered, but its call answered 503", cd.id, channel, r.ID, r.Payload)
					}
				}
			}
		}
		for id := range acked {
			if !seen[id] {
				lost++
				if lost <= 5 {
					t.Errorf("%s lost %s id %d", cd.id, channel, id)
				}
			}
		}
	}
	ch.latMu.Lock()
	lat := slices.Clone(ch.lat)
	ch.latMu.Unlock()
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	acked := ch.itemsAcked.Load()
	ch.mu.Lock()
	reused := ch.reused
	lines := slices.Clone(ch.lines)
	ch.mu.Unlock()
	figures := map[string]any{
		"publishing_s": published.Round(time.Second).Seconds(), "channels": ch.cfg.channels, "devices": len(ch.devices),
		"oplogs_acknowledged": acked, "oplogs_not_acknowledged": ch.itemsFailed.Load(),
		"batch_calls": ch.calls.Load(), "calls_200": ch.callsOK.Load(), "calls_503": ch.calls503.Load(), "calls_other_failure": ch.callsErr.Load(),
		"calls_503_while_cassandra_down": ch.during503.Load(), "calls_200_while_cassandra_down": ch.duringOK.Load(),
		"batch_p50_ms": pct(0.5).Milliseconds(), "batch_p99_ms": pct(0.99).Milliseconds(),
		"deliveries": delivered, "lost": lost, "duplicated_to_app": dups, "out_of_order": outOfOrder,
		"payload_mismatch": mismatched, "ids_acknowledged_twice": reused,
		"delivered_not_acknowledged": extra, "delivered_though_503": extra503, "resent_by_server_dropped_by_client": serverResent,
		"device_reconnects": ch.reconnects.Load(), "reconnect_attempts_failed": ch.connectFailures.Load(),
		"devices_reconnected_by_checker": ch.forced.Load(),
		"push_after_broker_restart_s":    time.Duration(ch.pushAfterRestart.Load()).Seconds(),
	}
	js, _ := json.MarshalIndent(figures, "", "  ")
	for _, l := range lines {
		t.Log(l)
	}
	t.Logf("chaos figures:\n%s", js)
	if lost+dups+outOfOrder+mismatched+reused > 0 {
		t.Errorf("chaos: %d lost, %d duplicated, %d out of order, %d payload mismatches, %d ids acknowledged twice", lost, dups, outOfOrder, mismatched, reused)
	}
	if acked < int64(ch.cfg.minOplogs) {
		t.Errorf("chaos: only %d oplogs acknowledged, want at least %d (MSYNC_CHAOS_MIN_OPLOGS)", acked, ch.cfg.minOplogs)
	}
}
