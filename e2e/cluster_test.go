package e2e

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/msync/msync/pkg/auth"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/rpc"
)

// The cluster tests run the real binary: one `msync logic` process (logic +
// embedded job on Pebble, in-process queue and directory) and several
// `msync comet` processes, talking gRPC on loopback with ports the kernel
// picks, with mutual TLS between them (rpc_tls: certificates `msync certs`
// would write, in the test's folder). The processes log JSON; the harness
// reads each one's "started" line for its addresses and forwards WARN/ERROR
// lines to t.Log.

// clusterComets is how many comet certificates the harness issues (ids
// comet-1 ... comet-N, in the order comet() starts them).
const clusterComets = 16

const clusterLogicConfig = `
secret: ` + testSecret + `
log: {level: info, format: json}
dev: true # short test keys
api_keys:
  - {key: test-key, bizs: ["*"]}
logic:
  http_addr: 127.0.0.1:0
  grpc_addr: 127.0.0.1:0
job:
  embedded: true
  refresh: 200ms
bizs:
  - {name: demo, target: user, ttl: 7d}
  - {name: cmd, target: device, ttl: 1d}
`

const clusterCometConfig = `
secret: ` + testSecret + `
log: {level: info, format: json}
dev: true # short test keys
api_keys:
  - {key: test-key, bizs: ["*"]}
comet:
  addr: 127.0.0.1:0
  ws_addr: ""
  grpc_addr: 127.0.0.1:0
  http_addr: 127.0.0.1:0
  heartbeat: 2s
  auth_timeout: 2s
  ack_timeout: 5s
  page_limit: 50
bizs:
  - {name: demo, target: user}
`

// proc is one msync process.
type proc struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	attrs map[string]any // fields of the "started" log line
	done  chan struct{}  // closed once stderr is drained and the process reaped
}

func (p *proc) addr(key string) string {
	s, _ := p.attrs[key].(string)
	if s == "" {
		p.t.Fatalf("%s: no %q in its started line %v", p.name, key, p.attrs)
	}
	return s
}

// kill9 sends SIGKILL and waits for the process to be gone.
func (p *proc) kill9() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits; a process that does not exit within 15s is
// killed and the test fails.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if err := p.cmd.ProcessState; err != nil && !err.Success() {
			p.t.Errorf("%s exited with %v after SIGTERM", p.name, err)
		}
	case <-time.After(15 * time.Second):
		p.t.Errorf("%s did not stop within 15s of SIGTERM", p.name)
		p.kill9()
	}
}

type procCluster struct {
	t      *testing.T
	bin    string
	dir    string
	certs  string // rpc_tls.dir of every process
	logic  *proc
	api    string // http://host:port of logic
	grpc   string // logic's gRPC address (comma-separated for several logics)
	tokens *auth.Tokens
	seq    *atomic.Int32 // shared by the per-subtest copies
	// apis, when set, are several logic APIs that publish uses round robin
	// (the production layout: stateless logics writing the same channels).
	apis []string
	next *atomic.Uint64
	// startWait bounds a process's start (0 = 30s); a tier waiting for a
	// store that is just coming back needs longer.
	startWait time.Duration
}

// publishAPI is the logic API the next publish goes to.
func (c *procCluster) publishAPI() string {
	if len(c.apis) == 0 {
		return c.api
	}
	return c.apis[c.next.Add(1)%uint64(len(c.apis))]
}

// msyncBinary builds cmd/msync once per test binary run (with -race when
// this binary has it) into dir.
func msyncBinary(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "msync")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "../cmd/msync")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build msync: %v\n%s", err, out)
	}
	return bin
}

// startProc starts bin with args and waits for its log line with msg ready.
func (c *procCluster) startProc(name, ready string, args ...string) *proc {
	t := c.t
	t.Helper()
	p := &proc{t: t, name: name, cmd: exec.Command(c.bin, args...), done: make(chan struct{})}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan map[string]any, 1)
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				t.Logf("%s: %s", name, sc.Text()) // not JSON: a panic or a flag error
				continue
			}
			switch {
			case m["msg"] == ready:
				started <- m
			case m["level"] == "WARN" || m["level"] == "ERROR":
				t.Logf("%s: %s", name, sc.Text())
			}
		}
		_ = p.cmd.Wait()
	}()
	// Registered after the drain goroutine: it must end before the test does.
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	})
	select {
	case p.attrs = <-started:
	case <-p.done:
		t.Fatalf("%s exited before it started", name)
	case <-time.After(cmp.Or(c.startWait, 30*time.Second)):
		t.Fatalf("%s did not start within %v", name, cmp.Or(c.startWait, 30*time.Second))
	}
	return p
}

func startCluster(t *testing.T, bin string) *procCluster {
	t.Helper()
	dir := t.TempDir()
	c := &procCluster{t: t, bin: bin, dir: dir, seq: new(atomic.Int32)}
	var err error
	if c.tokens, err = auth.NewTokens(testSecret); err != nil {
		t.Fatal(err)
	}
	c.certs = filepath.Join(dir, "certs")
	ids := make([]string, clusterComets)
	for i := range ids {
		ids[i] = fmt.Sprintf("comet-%d", i+1)
	}
	if _, err := rpc.WriteDevCerts(c.certs, ids, nil); err != nil {
		t.Fatal(err)
	}
	tlsOn := "rpc_tls: {dir: " + c.certs + "}\n"
	for name, body := range map[string]string{"logic.yaml": clusterLogicConfig + tlsOn, "comet.yaml": clusterCometConfig + tlsOn} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c.logic = c.startProc("logic", "msync logic started", "logic", "-c", filepath.Join(dir, "logic.yaml"), "--data", filepath.Join(dir, "data"))
	c.api = "http://" + c.logic.addr("logic_http")
	c.grpc = c.logic.addr("grpc")
	return c
}

// comet starts one more comet process with a unique id and returns its
// process and device address.
func (c *procCluster) comet() (*proc, string) {
	c.t.Helper()
	n := c.seq.Add(1)
	if n > clusterComets {
		c.t.Fatalf("more than %d comets: raise clusterComets", clusterComets)
	}
	id := fmt.Sprintf("comet-%d", n)
	p := c.startProc(id, "msync comet started", "comet", "-c", filepath.Join(c.dir, "comet.yaml"), "--id", id, "--logic", c.grpc)
	return p, p.addr("comet_tcp")
}

func (c *procCluster) token(user string) string {
	c.t.Helper()
	tok, err := c.tokens.Sign(user, time.Hour)
	if err != nil {
		c.t.Fatal(err)
	}
	return tok
}

// publish posts one oplog to user's demo channel; safe from goroutines
// (it reports with t.Errorf) and returns the id, 0 on failure.
func (c *procCluster) publish(user, payload string) uint64 {
	var res publishResult
	code, err := postJSONTimeout(c.publishAPI()+"/v1/sync", toUser(user, payload), &res)
	if err != nil || code != 200 {
		c.t.Errorf("publish to %s: status %d, err %v, body error %+v", user, code, err, res.Error)
		return 0
	}
	return res.ID
}

func postJSONTimeout(url string, body any, out *publishResult) (int, error) {
	return tryCall(url, body, out)
}

// publishN publishes n oplogs (payload "<user>-<id>") from one goroutine, so
// ids are assigned in call order.
func (c *procCluster) publishN(user string, n int) {
	c.t.Helper()
	for range n {
		if c.publish(user, "x") == 0 {
			c.t.FailNow()
		}
	}
}

// connect dials addr and authenticates device id of user on the demo biz,
// starting from the points of prev (a device moving between comets).
func (c *procCluster) connect(addr, user, id string, prev *device) *device {
	c.t.Helper()
	d := dialAddr(c.t, addr)
	if prev != nil {
		prev.mu.Lock()
		for ch, p := range prev.points {
			d.points[ch] = p
		}
		prev.mu.Unlock()
	}
	d.auth(c.token(user), id, "demo")
	return d
}

// TestCluster runs the multi-process scenarios on one logic+job process and
// comets that join, move devices and die along the way.
func TestCluster(t *testing.T) {
	bin := msyncBinary(t, t.TempDir())
	c := startCluster(t, bin)
	_, addrA := c.comet()
	_, addrB := c.comet()
	clusterScenarios(t, c, []string{addrA, addrB})
}

// clusterScenarios runs on c with the device addresses of its comets
// (at least two; devices of one user are spread over all of them).
func clusterScenarios(t *testing.T, c *procCluster, comets []string) {
	addrA, addrB := comets[0], comets[1]
	on := func(i int) string { return comets[i%len(comets)] }

	t.Run("DevicesOnDifferentCometsGetTheUsersOplogs", func(t *testing.T) {
		c := *c
		c.t = t
		ch := oplog.UserChannel("demo", "ann")
		var devs []*device
		for i := range comets {
			devs = append(devs, c.connect(on(i), "ann", fmt.Sprintf("ann-%d", i), nil))
		}
		c.publishN("ann", 40)
		for _, d := range devs {
			d.waitGot(40, waitFor)
			checkInOrder(t, d, ch, 1, 40, nil)
		}
	})

	t.Run("SameUserOnTwoCometsConcurrentPublishers", func(t *testing.T) {
		c := *c
		c.t = t
		ch := oplog.UserChannel("demo", "bo")
		devs := []*device{
			c.connect(on(0), "bo", "bo-1", nil),
			c.connect(on(1), "bo", "bo-2", nil),
			c.connect(on(2), "bo", "bo-3", nil),
		}
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 25 {
					c.publish("bo", "y")
				}
			})
		}
		wg.Wait()
		for _, d := range devs {
			d.waitGot(100, waitFor)
			checkInOrder(t, d, ch, 1, 100, nil)
		}
	})

	t.Run("DeviceMovesBetweenCometsGetsExactlyTheMissed", func(t *testing.T) {
		c := *c
		c.t = t
		ch := oplog.UserChannel("demo", "cy")
		d := c.connect(addrA, "cy", "cy-phone", nil)
		c.publishN("cy", 5)
		d.waitGot(5, waitFor)
		d.close() // offline while 6..10 are published
		c.publishN("cy", 5)
		d2 := c.connect(addrB, "cy", "cy-phone", d)
		d2.waitGot(5, waitFor)
		checkInOrder(t, d2, ch, 6, 10, nil)
		// Live pushes now reach it on comet B.
		c.publishN("cy", 3)
		d2.waitGot(8, waitFor)
		checkInOrder(t, d2, ch, 6, 13, nil)

		// Moving back to A while the B session is still open: logic kicks the
		// old session through job -> comet B over gRPC.
		d3 := c.connect(addrA, "cy", "cy-phone", d2)
		eventually(t, waitFor, "KICK on the replaced session", func() bool {
			d2.mu.Lock()
			defer d2.mu.Unlock()
			return len(d2.kicks) > 0
		})
		d2.mu.Lock()
		kick := d2.kicks[0]
		d2.mu.Unlock()
		if protocol.Code(kick.Code) != protocol.CodeReplaced {
			t.Fatalf("replaced session got KICK %d %q, want %d", kick.Code, kick.Reason, protocol.CodeReplaced)
		}
		d2.expectClosed(waitFor)
		c.publishN("cy", 2)
		d3.waitGot(2, waitFor)
		checkInOrder(t, d3, ch, 14, 15, nil)
	})

	t.Run("Kill9CometDevicesReconnectElsewhereLoseNothing", func(t *testing.T) {
		c := *c
		c.t = t
		victim, addrV := c.comet()
		ch := oplog.UserChannel("demo", "kim")
		onVictim := []*device{c.connect(addrV, "kim", "kim-1", nil), c.connect(addrV, "kim", "kim-2", nil)}
		control := c.connect(addrA, "kim", "kim-3", nil)

		var acked atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if c.publish("kim", "k") == 0 {
						return
					}
					acked.Add(1)
				}
			})
		}
		eventually(t, waitFor, "100 acknowledged publishes", func() bool { return acked.Load() >= 100 })
		victim.kill9()
		// The devices notice the dead connection and come back on other comets.
		moved := make([]*device, len(onVictim))
		for i, d := range onVictim {
			d.expectClosed(waitFor)
			addr := addrA
			if i%2 == 1 {
				addr = addrB
			}
			moved[i] = c.connect(addr, "kim", fmt.Sprintf("kim-%d", i+1), d)
		}
		after := acked.Load()
		eventually(t, waitFor, "100 more acknowledged publishes", func() bool { return acked.Load() >= after+100 })
		close(stop)
		wg.Wait()
		n := uint64(acked.Load())
		for i, d := range moved {
			// Before the kill + after the move = every acknowledged oplog.
			before := onVictim[i].received()
			d.waitGot(int(n)-len(before), waitFor)
			all := append(before, d.received()...)
			for j, r := range all {
				if r.ID != uint64(j+1) || r.Channel != ch {
					t.Fatalf("kim-%d: position %d has %s/%d, want id %d (got %d of %d)", i+1, j, r.Channel, r.ID, j+1, len(all), n)
				}
			}
			if len(all) != int(n) {
				t.Fatalf("kim-%d: got %d oplogs, want %d", i+1, len(all), n)
			}
			if dups, _ := d.violations(); dups != 0 {
				t.Fatalf("kim-%d: %d duplicates after the move", i+1, dups)
			}
		}
		control.waitGot(int(n), waitFor)
		checkInOrder(t, control, ch, 1, n, nil)
	})

	t.Run("LateCometGetsPushes", func(t *testing.T) {
		c := *c
		c.t = t
		late, addrL := c.comet()
		ch := oplog.UserChannel("demo", "lu")
		d := c.connect(addrL, "lu", "lu-phone", nil)
		// The channel is empty, so the session is live at once: only a push
		// through job -> the new comet can deliver these.
		for i := 1; i <= 3; i++ {
			c.publishN("lu", 1)
			d.waitGot(i, 3*time.Second)
		}
		checkInOrder(t, d, ch, 1, 3, nil)
		late.stop()
		d.expectClosed(waitFor)
	})
}
