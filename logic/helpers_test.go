package logic_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/logic"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/auth"
	"github.com/msync/msync/pkg/biz"
	dmem "github.com/msync/msync/pkg/directory/memory"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/queue"
	qmem "github.com/msync/msync/pkg/queue/memory"
	"github.com/msync/msync/pkg/store"
	"github.com/msync/msync/pkg/store/pebble"
)

const secret = "test-secret-0123456789"

// clock is a settable clock shared by logic and the directory.
type clock struct{ ns atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// flakyStore wraps a real store; tests switch failures on.
type flakyStore struct {
	store.Store
	fail atomic.Bool // every call returns store.ErrUnavailable
	hang atomic.Bool // Append blocks until its ctx ends
	// lateBy > 0: Append's write lands that long after the call, like a
	// slow fsync; a caller whose ctx ends first gets ErrOutcomeUnknown, as
	// from the Pebble store, while the write still completes.
	lateBy      atomic.Int64
	late        sync.WaitGroup
	appends     atomic.Int64
	deleteCalls atomic.Int64
}

func (s *flakyStore) Append(ctx context.Context, ops []*oplog.Oplog) ([]store.AppendResult, error) {
	s.appends.Add(1)
	if s.fail.Load() {
		return nil, fmt.Errorf("%w: injected", store.ErrUnavailable)
	}
	if s.hang.Load() {
		<-ctx.Done()
		return nil, fmt.Errorf("%w: %w", store.ErrUnavailable, ctx.Err())
	}
	if d := time.Duration(s.lateBy.Load()); d > 0 {
		done := make(chan appendResult, 1)
		s.late.Go(func() {
			time.Sleep(d) // deliberate: the injected store commits late
			res, err := s.Store.Append(context.Background(), ops)
			done <- appendResult{res, err}
		})
		select {
		case r := <-done:
			return r.res, r.err
		case <-ctx.Done():
			return nil, &lateAppend{done: done, cause: ctx.Err()}
		}
	}
	return s.Store.Append(ctx, ops)
}

func (s *flakyStore) Read(ctx context.Context, ch string, after uint64, limit int) ([]*oplog.Oplog, uint64, error) {
	if s.fail.Load() {
		return nil, 0, store.ErrUnavailable
	}
	return s.Store.Read(ctx, ch, after, limit)
}

func (s *flakyStore) MaxID(ctx context.Context, ch string) (uint64, error) {
	if s.fail.Load() {
		return 0, store.ErrUnavailable
	}
	return s.Store.MaxID(ctx, ch)
}

func (s *flakyStore) SaveSyncPoints(ctx context.Context, p []store.SyncPoint) error {
	if s.fail.Load() {
		return store.ErrUnavailable
	}
	return s.Store.SaveSyncPoints(ctx, p)
}

func (s *flakyStore) SyncPoints(ctx context.Context, device string) (map[string]uint64, error) {
	if s.fail.Load() {
		return nil, store.ErrUnavailable
	}
	return s.Store.SyncPoints(ctx, device)
}

func (s *flakyStore) DeleteExpired(ctx context.Context, before time.Time, limit int) (int, error) {
	s.deleteCalls.Add(1)
	return s.Store.DeleteExpired(ctx, before, limit)
}

// lateAppend is flakyStore's store.LateAppend, as the Pebble store's.
type lateAppend struct {
	done  <-chan appendResult
	cause error
}

type appendResult struct {
	res []store.AppendResult
	err error
}

func (e *lateAppend) Error() string   { return "store: outcome unknown: " + e.cause.Error() }
func (e *lateAppend) Unwrap() []error { return []error{store.ErrOutcomeUnknown, e.cause} }
func (e *lateAppend) Wait(ctx context.Context) ([]store.AppendResult, error) {
	select {
	case r := <-e.done:
		return r.res, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", store.ErrOutcomeUnknown, ctx.Err())
	}
}

// flakyQueue wraps a producer; tests switch failures on.
type flakyQueue struct {
	queue.Producer
	fail atomic.Bool
}

func (q *flakyQueue) Send(ctx context.Context, msgs ...queue.Message) error {
	if q.fail.Load() {
		return fmt.Errorf("%w: injected", queue.ErrClosed)
	}
	return q.Producer.Send(ctx, msgs...)
}

type env struct {
	t      *testing.T
	l      *logic.Logic
	base   string
	st     *flakyStore
	q      *flakyQueue
	dir    *dmem.Directory
	tokens *auth.Tokens
	reg    *prometheus.Registry
	clk    *clock

	mu     sync.Mutex
	queued []*pb.QueueMsg
	keys   []string
}

var testBizs = []biz.Spec{
	{Name: "chat", MaxPayload: 16},
	{Name: "lock", Target: "device"},
	{Name: "news", Scope: "global"},
	{Name: "latest", Backlog: "latest:2"},
	{Name: "ephemeral", Persistent: new(false)},
	{Name: "solo", MultiDevice: new(false)}, // bizs_test.go
	{Name: "acct", Consistency: true},
}

// testLogger sends logs to t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// newEnv starts a Logic on 127.0.0.1:0 over a Pebble store, the memory
// queue (consumed into e.queued) and the memory directory. mod may adjust
// the config before New.
func newEnv(t *testing.T, mod func(*logic.Config)) *env {
	t.Helper()
	ps, err := pebble.Open(pebble.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("pebble.Open: %v", err)
	}
	e := &env{t: t, st: &flakyStore{Store: ps}, reg: prometheus.NewRegistry(), clk: &clock{}}
	e.clk.ns.Store(time.Now().UnixNano())
	q, err := qmem.New(qmem.Config{Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	e.q = &flakyQueue{Producer: q}
	if err := q.Consume(func(_ context.Context, msgs []queue.Message) error {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, m := range msgs {
			var qm pb.QueueMsg
			if err := proto.Unmarshal(m.Value, &qm); err != nil {
				t.Errorf("undecodable queue message: %v", err)
				continue
			}
			e.queued = append(e.queued, &qm)
			e.keys = append(e.keys, m.Key)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	e.dir, err = dmem.New(dmem.Config{Now: e.clk.Now, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	bizs, err := biz.NewRegistry(testBizs)
	if err != nil {
		t.Fatal(err)
	}
	e.tokens, err = auth.NewTokens(secret)
	if err != nil {
		t.Fatal(err)
	}
	cfg := logic.Config{
		HTTPAddr:          "127.0.0.1:0",
		Owners:            ps, // flakyStore hides the Pebble store's extra methods
		Revocations:       ps,
		Store:             e.st,
		Queue:             e.q,
		Directory:         e.dir,
		Bizs:              bizs,
		Tokens:            e.tokens,
		APIKeys:           auth.NewAPIKeys([]auth.APIKey{{Key: "all-key", Bizs: []string{"*"}}, {Key: "chat-key", Bizs: []string{"chat"}}}),
		HeartbeatInterval: 30 * time.Second,
		MaxBatch:          5,
		Logger:            testLogger(t),
		Registerer:        e.reg,
		Now:               e.clk.Now,
	}
	if mod != nil {
		mod(&cfg)
	}
	e.l, err = logic.New(cfg)
	if err != nil {
		t.Fatalf("logic.New: %v", err)
	}
	if err := e.l.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	e.base = "http://" + e.l.HTTPAddr().String()
	t.Cleanup(func() {
		// A connection the client dialed but never used is "new" to the
		// server, and http.Server.Shutdown waits 5 s for such connections.
		http.DefaultClient.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.l.Shutdown(ctx); err != nil {
			t.Errorf("logic Shutdown: %v", err)
		}
		if err := q.Shutdown(ctx); err != nil {
			t.Errorf("queue Shutdown: %v", err)
		}
		if err := e.dir.Shutdown(ctx); err != nil {
			t.Errorf("directory Shutdown: %v", err)
		}
		e.st.late.Wait()
		if err := ps.Close(); err != nil {
			t.Errorf("store Close: %v", err)
		}
	})
	return e
}

// do sends a request and decodes the JSON response into a generic map.
func (e *env) do(method, path, key, body string) (int, map[string]any) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.base+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	var out map[string]any
	if len(raw) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &out); err != nil {
			e.t.Fatalf("%s %s: response %q is not JSON: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode, out
}

// publish posts one item and requires 200; it returns the id.
func (e *env) publish(body string) (id uint64, dup bool) {
	e.t.Helper()
	status, out := e.do("POST", "/v1/sync", "all-key", body)
	if status != http.StatusOK {
		e.t.Fatalf("publish %s: %d %v", body, status, out)
	}
	return uint64(out["id"].(float64)), out["duplicate"].(bool)
}

// errCode returns the error code of an error body ("" if none).
func errCode(out map[string]any) string {
	eo, _ := out["error"].(map[string]any)
	c, _ := eo["code"].(string)
	return c
}

func (e *env) queuedMsgs() ([]*pb.QueueMsg, []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*pb.QueueMsg(nil), e.queued...), append([]string(nil), e.keys...)
}

// waitQueued waits until n messages were consumed from the queue.
func (e *env) waitQueued(n int) ([]*pb.QueueMsg, []string) {
	e.t.Helper()
	waitFor(e.t, fmt.Sprintf("%d queue messages", n), func() bool { m, _ := e.queuedMsgs(); return len(m) >= n })
	return e.queuedMsgs()
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

// metric sums the values of the family name whose labels include want.
func (e *env) metric(name string, want map[string]string) float64 {
	e.t.Helper()
	return gather(e.t, e.reg, name, want)
}

func gather(t *testing.T, g prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue metrics
				}
			}
			sum += value(m)
		}
	}
	return sum
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

func (e *env) token(user string) string {
	e.t.Helper()
	return e.deviceToken(user)
}

// deviceToken signs a token whose dev claim names devices.
func (e *env) deviceToken(user string, devices ...string) string {
	e.t.Helper()
	tok, err := e.tokens.Sign(user, time.Hour, devices...)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// expiredToken signs a token with the shared secret that expired an hour ago.
func expiredToken(t *testing.T, user string) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Subject: user, ExpiresAt: jwt.NewNumericDate(time.Now().Add(-time.Hour)),
	}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func body(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// ticketed gives r the ticket a Connect of its device would have got for
// its cursors' channels.
func (e *env) ticketed(r *pb.SyncReq) *pb.SyncReq {
	var chans []string
	for _, c := range r.Cursors {
		chans = append(chans, c.Channel)
	}
	r.Ticket = e.l.TestTicket("c1", "k-"+r.Device, r.User, r.Device, r.Platform, r.AppVersion, chans...)
	return r
}

// ackTicketed gives each item a ticket covering its device and channel.
func (e *env) ackTicketed(r *pb.AckReq) *pb.AckReq {
	for _, it := range r.Items {
		it.Ticket = e.l.TestTicket("c1", "k-"+it.Device, it.User, it.Device, "ios", "", it.Channel)
	}
	return r
}
