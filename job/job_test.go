package job_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/job"
	"github.com/msync/msync/pkg/api"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/directory"
	dmem "github.com/msync/msync/pkg/directory/memory"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/queue"
	qmem "github.com/msync/msync/pkg/queue/memory"
)

// ants starts a package-level default pool in init; IgnoreCurrent keeps
// goleak to the pools and goroutines the tests create.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.IgnoreCurrent()) }

// fakeComet records the calls job makes, as a comet's gRPC server would see them.
type fakeComet struct {
	pb.UnimplementedCometServer
	id string

	fail  atomic.Bool   // Push returns an error
	block chan struct{} // if set, Push waits for it to close (or ctx)

	inflight, maxInflight atomic.Int64

	mu     sync.Mutex
	pushes []*pb.PushReq
	kicks  []*pb.KickReq
}

func (c *fakeComet) Push(ctx context.Context, req *pb.PushReq) (*pb.PushReply, error) {
	n := c.inflight.Add(1)
	defer c.inflight.Add(-1)
	for {
		m := c.maxInflight.Load()
		if n <= m || c.maxInflight.CompareAndSwap(m, n) {
			break
		}
	}
	if c.block != nil {
		select {
		case <-c.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if c.fail.Load() {
		return nil, errors.New("comet: injected failure")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pushes = append(c.pushes, proto.Clone(req).(*pb.PushReq))
	delivered := 0
	for _, it := range req.Items {
		delivered += len(it.Keys)
	}
	return &pb.PushReply{Delivered: uint32(delivered)}, nil
}

func (c *fakeComet) Kick(_ context.Context, req *pb.KickReq) (*pb.Empty, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.kicks = append(c.kicks, proto.Clone(req).(*pb.KickReq))
	return &pb.Empty{}, nil
}

// items renders every pushed item as "channel#id->keys", in order.
func (c *fakeComet) items() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, p := range c.pushes {
		for _, it := range p.Items {
			out = append(out, fmt.Sprintf("%s#%d->%s", it.Oplog.Channel, it.Oplog.Id, strings.Join(it.Keys, "+")))
		}
	}
	return out
}

func (c *fakeComet) calls() (pushes, kicks int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pushes), len(c.kicks)
}

type env struct {
	t      *testing.T
	q      *qmem.Queue
	dir    *dmem.Directory
	comets map[string]*fakeComet
	reg    *prometheus.Registry
	j      *job.Job
}

// newEnv builds a job over a one-partition memory queue (so a burst sent
// before start is one batch), the memory directory and fake comets c1..cN.
// The job is not started: tests send first when they need one batch.
func newEnv(t *testing.T, comets int, mod func(*job.Config)) *env {
	t.Helper()
	q, err := qmem.New(qmem.Config{Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := dmem.New(dmem.Config{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, q: q, dir: dir, comets: map[string]*fakeComet{}, reg: prometheus.NewRegistry()}
	static := api.StaticComets{}
	for i := 1; i <= comets; i++ {
		id := fmt.Sprintf("c%d", i)
		e.comets[id] = &fakeComet{id: id}
		static[id] = api.LocalComet(e.comets[id])
	}
	cfg := job.Config{Consumer: q, Directory: dir, Comets: static, Registerer: e.reg,
		Logger: slog.New(slog.NewTextHandler(tlog{t}, nil))}
	if mod != nil {
		mod(&cfg)
	}
	e.j, err = job.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.j.Shutdown(ctx); err != nil {
			t.Errorf("job Shutdown: %v", err)
		}
		q.Shutdown(ctx) // already shut down by the job if it started
		if err := dir.Shutdown(ctx); err != nil {
			t.Errorf("directory Shutdown: %v", err)
		}
	})
	return e
}

type tlog struct{ t *testing.T }

func (w tlog) Write(b []byte) (int, error) { w.t.Log(strings.TrimSpace(string(b))); return len(b), nil }

func (e *env) start() {
	e.t.Helper()
	if err := e.j.Start(); err != nil {
		e.t.Fatalf("Start: %v", err)
	}
}

func (e *env) online(user, device, comet, key string) {
	e.t.Helper()
	if _, err := e.dir.Put(context.Background(), directory.Session{User: user, Device: device, Comet: comet, Key: key}); err != nil {
		e.t.Fatal(err)
	}
}

func encode(t *testing.T, m *pb.QueueMsg) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func oplogMsg(t *testing.T, channel string, id uint64) queue.Message {
	return queue.Message{Key: channel, Value: encode(t, &pb.QueueMsg{Body: &pb.QueueMsg_Oplog{Oplog: &oplog.Oplog{Channel: channel, Id: id, Payload: []byte("p")}}})}
}

func (e *env) send(msgs ...queue.Message) {
	e.t.Helper()
	if err := e.q.Send(context.Background(), msgs...); err != nil {
		e.t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, 2*time.Millisecond, func() error {
		if !cond() {
			return fmt.Errorf("still waiting for %s", what)
		}
		return nil
	})
}

func (e *env) metric(name string, labels map[string]string) float64 {
	e.t.Helper()
	fams, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	sum := 0.0
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func TestRoutesOnePushPerCometPerBatch(t *testing.T) {
	e := newEnv(t, 2, nil)
	e.online("alice", "a1", "c1", "k1")
	e.online("alice", "a2", "c2", "k2")
	e.online("alice", "a3", "c1", "k3")
	e.online("bob", "b1", "c1", "k4")
	// Sent before Start, so one batch.
	e.send(
		oplogMsg(t, "chat/u/alice", 1),
		oplogMsg(t, "chat/u/bob", 1),
		oplogMsg(t, "lock/d/a2", 1),
		oplogMsg(t, "chat/u/alice", 2),
		oplogMsg(t, "lock/d/offline", 1), // nobody online: nothing to push
		oplogMsg(t, "chat/u/nobody", 1),
	)
	e.start()
	c1, c2 := e.comets["c1"], e.comets["c2"]
	waitFor(t, "pushes to both comets", func() bool { return len(c1.items()) == 3 && len(c2.items()) == 3 })
	if got := strings.Join(c1.items(), " "); got != "chat/u/alice#1->k1+k3 chat/u/bob#1->k4 chat/u/alice#2->k1+k3" {
		t.Errorf("c1 got %s", got)
	}
	if got := strings.Join(c2.items(), " "); got != "chat/u/alice#1->k2 lock/d/a2#1->k2 chat/u/alice#2->k2" {
		t.Errorf("c2 got %s", got)
	}
	if p1, _ := c1.calls(); p1 != 1 {
		t.Errorf("c1 got %d PushReqs for one batch, want 1", p1)
	}
	if p2, _ := c2.calls(); p2 != 1 {
		t.Errorf("c2 got %d PushReqs for one batch, want 1", p2)
	}
	waitFor(t, "metrics", func() bool { return e.metric("msync_job_delivered_total", nil) == 8 })
	if got := e.metric("msync_job_messages_total", map[string]string{"kind": "oplog"}); got != 6 {
		t.Errorf("messages{oplog} = %v", got)
	}
}

func TestOrderAcrossBatches(t *testing.T) {
	e := newEnv(t, 1, nil)
	e.online("alice", "a1", "c1", "k1")
	e.start()
	var want []string
	for i := uint64(1); i <= 200; i++ {
		e.send(oplogMsg(t, "chat/u/alice", i))
		want = append(want, fmt.Sprintf("chat/u/alice#%d->k1", i))
	}
	c1 := e.comets["c1"]
	waitFor(t, "200 pushes", func() bool { return len(c1.items()) == 200 })
	if got := strings.Join(c1.items(), " "); got != strings.Join(want, " ") {
		t.Fatalf("out of order:\n%s", got)
	}
}

func TestKicks(t *testing.T) {
	e := newEnv(t, 2, nil)
	kick := func(comet, key string) queue.Message {
		return queue.Message{Key: "d", Value: encode(t, &pb.QueueMsg{Body: &pb.QueueMsg_Kick{Kick: &pb.KickMsg{
			Comet: comet, Key: key, Code: uint32(protocol.CodeReplaced), Reason: "replaced"}}})}
	}
	e.send(kick("c1", "k1"), kick("c2", "k2"), kick("c1", "k3"), kick("c9", "k4"))
	e.start()
	waitFor(t, "kicks", func() bool {
		_, k1 := e.comets["c1"].calls()
		_, k2 := e.comets["c2"].calls()
		return k1 == 1 && k2 == 1
	})
	c1 := e.comets["c1"]
	c1.mu.Lock()
	k := c1.kicks[0]
	c1.mu.Unlock()
	if strings.Join(k.Keys, ",") != "k1,k3" || k.Code != uint32(protocol.CodeReplaced) || k.Reason != "replaced" {
		t.Fatalf("c1 kick = %v", k)
	}
	waitFor(t, "unknown comet counted", func() bool {
		return e.metric("msync_job_comet_calls_total", map[string]string{"op": "kick", "result": "unknown_comet"}) == 1
	})
}

func TestBadMessagesAreSkipped(t *testing.T) {
	e := newEnv(t, 1, nil)
	e.online("alice", "a1", "c1", "k1")
	e.send(
		queue.Message{Key: "x", Value: []byte{0xff, 0xff, 0xff}},  // not protobuf
		queue.Message{Key: "x", Value: encode(t, &pb.QueueMsg{})}, // no body
		queue.Message{Key: "x", Value: encode(t, &pb.QueueMsg{Body: &pb.QueueMsg_Oplog{}})},
		oplogMsg(t, "no-slash", 1),
		oplogMsg(t, "chat/u/alice", 0), // no id
		queue.Message{Key: "x", Value: encode(t, &pb.QueueMsg{Body: &pb.QueueMsg_Kick{Kick: &pb.KickMsg{Comet: "c1"}}})},
		oplogMsg(t, "chat/u/alice", 1),
	)
	e.start()
	c1 := e.comets["c1"]
	waitFor(t, "the valid oplog", func() bool { return len(c1.items()) == 1 })
	if got := e.metric("msync_job_bad_messages_total", nil); got != 6 {
		t.Fatalf("bad_messages_total = %v, want 6", got)
	}
}

func TestFailuresDoNotBlockTheStream(t *testing.T) {
	e := newEnv(t, 2, func(c *job.Config) { c.PushTimeout = 50 * time.Millisecond })
	e.online("alice", "a1", "c1", "k1")
	e.online("bob", "b1", "c2", "k2")
	e.online("carol", "x1", "c404", "k3") // a comet job does not know
	c1, c2 := e.comets["c1"], e.comets["c2"]
	c1.fail.Store(true)
	c2.block = make(chan struct{}) // never released: every push times out
	e.start()
	e.send(oplogMsg(t, "chat/u/alice", 1), oplogMsg(t, "chat/u/bob", 1), oplogMsg(t, "chat/u/carol", 1))
	waitFor(t, "failures counted", func() bool {
		return e.metric("msync_job_comet_calls_total", map[string]string{"op": "push", "result": "error"}) >= 2 &&
			e.metric("msync_job_comet_calls_total", map[string]string{"op": "push", "result": "unknown_comet"}) >= 1
	})
	// The stream moves on: c1 recovers and gets the next oplog.
	c1.fail.Store(false)
	e.send(oplogMsg(t, "chat/u/alice", 2))
	waitFor(t, "the next oplog after failures", func() bool { return len(c1.items()) == 1 })
	if got := c1.items()[0]; got != "chat/u/alice#2->k1" {
		t.Fatalf("c1 got %s", got)
	}
}

func TestWorkersBoundConcurrency(t *testing.T) {
	e := newEnv(t, 6, func(c *job.Config) { c.Workers = 2 })
	release := make(chan struct{})
	var msgs []queue.Message
	for i := 1; i <= 6; i++ {
		c := e.comets[fmt.Sprintf("c%d", i)]
		c.block = release
		u := fmt.Sprintf("u%d", i)
		e.online(u, "d"+u, c.id, "k")
		msgs = append(msgs, oplogMsg(t, "chat/u/"+u, 1))
	}
	e.send(msgs...) // one batch: six comets, six concurrent pushes wanted
	e.start()
	inflight := func() (n int64) {
		for _, c := range e.comets {
			n += c.inflight.Load()
		}
		return n
	}
	waitFor(t, "two pushes in flight", func() bool { return inflight() >= 2 })
	// Give an unbounded pool a moment to start more (it would at once).
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) {
		if n := inflight(); n > 2 {
			close(release)
			t.Fatalf("%d pushes in flight with Workers=2", n)
		}
		time.Sleep(time.Millisecond) // a deliberate window, waiting for nothing: a third push would start in it
	}
	close(release)
	waitFor(t, "all six pushes", func() bool {
		total := 0
		for _, c := range e.comets {
			p, _ := c.calls()
			total += p
		}
		return total == 6
	})
}

func TestLifecycle(t *testing.T) {
	if _, err := job.New(job.Config{Workers: -1}); !errors.Is(err, job.ErrInvalidConfig) ||
		!strings.Contains(err.Error(), "Consumer is required") || !strings.Contains(err.Error(), "Comets is required") ||
		!strings.Contains(err.Error(), "Workers") {
		t.Fatalf("New(bad) = %v", err)
	}
	e := newEnv(t, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Shutdown before Start is fine.
	if err := e.j.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown before Start: %v", err)
	}
	if err := e.j.Start(); !errors.Is(err, job.ErrClosed) {
		t.Fatalf("Start after Shutdown = %v", err)
	}

	e = newEnv(t, 1, nil)
	e.start()
	if err := e.j.Start(); !errors.Is(err, job.ErrStarted) {
		t.Fatalf("second Start = %v", err)
	}
	for i := range 3 {
		if err := e.j.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown #%d: %v", i+1, err)
		}
	}
	// The job shut its consumer down.
	if err := e.q.Consume(func(context.Context, []queue.Message) error { return nil }); !errors.Is(err, queue.ErrClosed) {
		t.Fatalf("queue still open after job Shutdown: %v", err)
	}
}

// New starts nothing: the pool and the consumer start in Start.
func TestNewStartsNothing(t *testing.T) {
	var before goleak.Option
	newEnv(t, 1, func(*job.Config) { before = goleak.IgnoreCurrent() }) // after the queue and directory
	if err := goleak.Find(before); err != nil {
		t.Fatalf("job.New started goroutines: %v", err)
	}
}

// slowDir is the memory directory with a delay per lookup, counting how many
// lookups run at once.
type slowDir struct {
	*dmem.Directory
	delay     time.Duration
	cur, peak atomic.Int32
}

func (d *slowDir) ByUser(ctx context.Context, user string) ([]directory.Session, error) {
	n := d.cur.Add(1)
	defer d.cur.Add(-1)
	for p := d.peak.Load(); n > p && !d.peak.CompareAndSwap(p, n); p = d.peak.Load() {
	}
	time.Sleep(d.delay) // a directory round trip
	return d.Directory.ByUser(ctx, user)
}

// TestBatchLooksUpOwnersInParallel: a batch's user lookups overlap (they
// were made one after the other, which bounded live pushes on a networked
// directory), and every oplog still reaches its sessions in order.
func TestBatchLooksUpOwnersInParallel(t *testing.T) {
	var sd *slowDir
	e := newEnv(t, 1, func(c *job.Config) {
		sd = &slowDir{Directory: c.Directory.(*dmem.Directory), delay: 20 * time.Millisecond}
		c.Directory = sd
	})
	var msgs []queue.Message
	var want []string
	for i := range 40 {
		u := fmt.Sprintf("u%d", i)
		e.online(u, "d"+u, "c1", "k"+u)
		msgs = append(msgs, oplogMsg(t, "chat/u/"+u, 1), oplogMsg(t, "chat/u/"+u, 2))
		want = append(want, fmt.Sprintf("chat/u/%s#1->k%s", u, u), fmt.Sprintf("chat/u/%s#2->k%s", u, u))
	}
	e.send(msgs...) // before Start: one batch
	e.start()
	c1 := e.comets["c1"]
	waitFor(t, "80 items", func() bool { return len(c1.items()) == 80 })
	if got := strings.Join(c1.items(), " "); got != strings.Join(want, " ") {
		t.Errorf("items out of order or misrouted:\n got %s\nwant %s", got, strings.Join(want, " "))
	}
	if p := sd.peak.Load(); p < 2 || p > 16 {
		t.Errorf("peak concurrent lookups %d, want 2..16", p)
	}
}
