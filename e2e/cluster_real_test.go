//go:build integration

package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msync/msync/pkg/auth"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

func newTestTokens() (*auth.Tokens, error) { return auth.NewTokens(testSecret) }

func execOutput(bin string, args ...string) ([]byte, error) {
	return exec.Command(bin, args...).CombinedOutput()
}

// The production layout on the real engines: `make test-integration` runs
// these with MSYNC_CASSANDRA_HOSTS and MSYNC_ROCKETMQ_NAMESRV pointing at a
// live Cassandra node and a live RocketMQ name server (scripts/engines.sh).
// Every run gets its own keyspace, topic and consumer group, so runs never
// see each other's data.

// realEngines returns the engine addresses, skipping the test (saying why)
// when they are not configured.
type engines struct {
	cassandra []string // host:port
	namesrv   []string // host:port
}

func realEngines(t *testing.T) engines {
	t.Helper()
	hosts, ns := os.Getenv("MSYNC_CASSANDRA_HOSTS"), os.Getenv("MSYNC_ROCKETMQ_NAMESRV")
	if hosts == "" || ns == "" {
		t.Skip("MSYNC_CASSANDRA_HOSTS and MSYNC_ROCKETMQ_NAMESRV are not both set: no real engines to run the cluster on (make test-integration starts them)")
	}
	return engines{cassandra: strings.Split(hosts, ","), namesrv: strings.Split(ns, ",")}
}

func yamlList(xs []string) string { return `["` + strings.Join(xs, `", "`) + `"]` }

// realBackends is the store + queue part every tier's file shares.
func realBackends(e engines, keyspace, topic string) string {
	return `
store:
  backend: cassandra
  cassandra:
    hosts: ` + yamlList(e.cassandra) + `
    keyspace: ` + keyspace + `
    replication: {class: SimpleStrategy, replication_factor: 1}
    timeout: 3s
queue:
  backend: rocketmq
  rocketmq:
    name_servers: ` + yamlList(e.namesrv) + `
    topic: ` + topic + `
    group: ` + topic + `_job
    consume_from: first
`
}

const realHead = `
secret: ` + testSecret + `
log: {level: info, format: json}
dev: true # short test keys
api_keys:
  - {key: test-key, bizs: ["*"]}
bizs:
  - {name: demo, target: user, ttl: 7d}
`

// realCluster is a procCluster on the real engines: several logic and job
// processes at fixed loopback ports (so a killed one restarts where the
// comets and publishers expect it) and comets started with c.comet().
type realCluster struct {
	*procCluster
	logicHTTP, logicGRPC []string // per logic index
	logics, jobs         []*proc
	mu                   sync.Mutex // guards logics, jobs (chaos restarts them)
}

// freeAddr reserves a loopback port by binding and releasing it.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startRealCluster(t *testing.T, bin string, e engines, logics, jobs int) *realCluster {
	t.Helper()
	dir := t.TempDir()
	name := "msync_e2e_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	c := &realCluster{procCluster: &procCluster{t: t, bin: bin, dir: dir, seq: new(atomic.Int32), next: new(atomic.Uint64),
		startWait: 3 * time.Minute}} // a restarted tier waits for its engines
	var err error
	if c.tokens, err = newTestTokens(); err != nil {
		t.Fatal(err)
	}
	backends := realBackends(e, name, name)
	files := map[string]string{
		"logic.yaml": realHead + backends + "logic: {http_addr: 127.0.0.1:0, grpc_addr: 127.0.0.1:0}\njob: {embedded: false}\n",
		"job.yaml":   realHead + backends + "job: {embedded: false, refresh: 1s, http_addr: 127.0.0.1:0}\n",
		// Cassandra round trips on a loaded machine: more time for AUTH.
		"comet.yaml": strings.Replace(clusterCometConfig, "auth_timeout: 2s", "auth_timeout: 10s", 1),
	}
	for f, body := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The schema through the CLI operators use.
	if out, err := execOutput(bin, "migrate", "-c", filepath.Join(dir, "logic.yaml")); err != nil {
		t.Fatalf("msync migrate: %v\n%s", err, out)
	}
	for i := range logics {
		c.logicHTTP = append(c.logicHTTP, freeAddr(t))
		c.logicGRPC = append(c.logicGRPC, freeAddr(t))
		c.logics = append(c.logics, c.startLogic(i))
		c.apis = append(c.apis, "http://"+c.logicHTTP[i])
	}
	c.api = c.apis[0]
	c.grpc = strings.Join(c.logicGRPC, ",")
	// The first send auto-creates the topic; until then a job's consumer
	// cannot start (it waits, logging "route info not found").
	var res publishResult
	if code, err := postJSONTimeout(c.api+"/v1/sync", toUser("warm-up", "w"), &res); err != nil || code != 200 {
		t.Fatalf("warm-up publish: %d %v %+v", code, err, res.Error)
	}
	for i := range jobs {
		c.jobs = append(c.jobs, c.startJob(i))
	}
	return c
}

func (c *realCluster) startLogic(i int) *proc {
	return c.startProc(fmt.Sprintf("logic-%d", i+1), "msync logic started", "logic",
		"-c", filepath.Join(c.dir, "logic.yaml"), "--http", c.logicHTTP[i], "--grpc", c.logicGRPC[i])
}

func (c *realCluster) startJob(i int) *proc {
	return c.startProc(fmt.Sprintf("job-%d", i+1), "msync job started", "job", "-c", filepath.Join(c.dir, "job.yaml"))
}

// waitPushPath waits until pushes reach a device on comet addr on every
// queue of the topic. A job joining a group takes queues over from the
// others by rebalance, and the broker grants their orderly-consume locks
// only when the previous holder's expire (rocketmq-client-go v2.1.2 does not
// unlock on rebalance): up to ~60 s without pushes on those queues. Nothing
// is lost meanwhile; the tests below measure delivery, not that start-up.
func (c *realCluster) waitPushPath(addr string) {
	t := c.t
	t.Helper()
	began := time.Now()
	var devs []*device
	for i := range 32 { // 32 channels cover the 4 queues (hash of the channel)
		user := fmt.Sprintf("probe-%d", i)
		d := c.connect(addr, user, user+"-d", nil)
		d.keepAlive()
		devs = append(devs, d)
		c.publishN(user, 1)
	}
	for _, d := range devs {
		d.waitGot(1, 3*time.Minute)
		d.close()
	}
	t.Logf("push path ready after %v", time.Since(began).Round(time.Millisecond))
}

// keepAlive heartbeats every second until the connection ends, for devices
// that live longer than the comet's heartbeat deadline, and drops the
// replies.
func (d *device) keepAlive() {
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-d.done:
				return
			case <-tick.C:
			}
			d.mu.Lock()
			kept := d.other[:0]
			for _, f := range d.other {
				if f.Op != protocol.OpHeartbeatReply {
					kept = append(kept, f)
				}
			}
			d.other = kept
			d.sendLocked(protocol.OpHeartbeat, &pb.Heartbeat{})
			d.mu.Unlock()
		}
	}()
}

// TestClusterReal runs the cluster scenarios on Cassandra and RocketMQ with
// two logic processes (publishes alternate between them), two job processes
// in one consumer group and three comets.
func TestClusterReal(t *testing.T) {
	e := realEngines(t)
	bin := msyncBinary(t, t.TempDir())
	c := startRealCluster(t, bin, e, 2, 2)
	var comets []string
	for range 3 {
		_, addr := c.comet()
		comets = append(comets, addr)
	}
	c.waitPushPath(comets[0])
	clusterScenarios(t, c.procCluster, comets)

	// Several writers per channel: both logics at once, many callers each.
	// Every returned id is unique and together they are exactly 1..N per
	// channel; every device (spread over the comets) gets 1..N in order.
	t.Run("TwoLogicsSameChannelsDenseIds", func(t *testing.T) {
		c := *c.procCluster
		c.t = t
		users := []string{"dz-1", "dz-2", "dz-3"}
		const perUser = 120
		var devs [][]*device
		for u, user := range users {
			var ds []*device
			for i := range 2 {
				ds = append(ds, c.connect(comets[(u+i)%len(comets)], user, fmt.Sprintf("%s-d%d", user, i), nil))
			}
			devs = append(devs, ds)
		}
		ids := make([][]uint64, len(users))
		var mu sync.Mutex
		var wg sync.WaitGroup
		for w := range 6 { // 6 callers, each alternating logics, on every channel
			wg.Go(func() {
				for k := range perUser * len(users) / 6 {
					u := (w + k) % len(users)
					api := c.apis[(w+k)%len(c.apis)]
					var res publishResult
					code, err := postJSONTimeout(api+"/v1/sync", toUser(users[u], fmt.Sprintf("w%d-%d", w, k)), &res)
					if err != nil || code != 200 {
						t.Errorf("publish via %s: %d %v %+v", api, code, err, res.Error)
						return
					}
					mu.Lock()
					ids[u] = append(ids[u], res.ID)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		for u, user := range users {
			got := append([]uint64(nil), ids[u]...)
			sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
			for i, id := range got {
				if id != uint64(i+1) {
					t.Fatalf("%s: acknowledged ids sorted are %v..., position %d is %d: a hole or a reused id", user, head(got), i, id)
				}
			}
			for _, d := range devs[u] {
				d.waitGot(len(got), waitFor)
				checkInOrder(t, d, oplog.UserChannel("demo", user), 1, uint64(len(got)), nil)
			}
		}
	})
}
