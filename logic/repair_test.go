package logic_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/msync/msync/logic"
	"github.com/msync/msync/pkg/store/pebble"
)

// Security review #4: the store commits a write after AppendTimeout ended
// (a slow fsync). The call must not claim "nothing was stored" (503): it
// answers 504 outcome_unknown, the stored oplog still reaches the queue (the
// tail re-push), and the retry with the same dedup_key returns its id
// instead of storing it twice.
func TestAppendOfUnknownOutcome(t *testing.T) {
	e := newEnv(t, func(c *logic.Config) {
		c.AppendTimeout = 100 * time.Millisecond
		c.RepairDelay = 50 * time.Millisecond
	})
	e.st.lateBy.Store(int64(400 * time.Millisecond))
	const item = `{"biz":"chat","user":"a","payload":"transfer","dedup_key":"t1"}`
	status, out := e.do("POST", "/v1/sync", "all-key", item)
	if status != 504 || errCode(out) != logic.CodeOutcomeUnknown {
		t.Fatalf("publish with a late commit = %d %v, want 504 %s", status, out, logic.CodeOutcomeUnknown)
	}
	e.st.lateBy.Store(0)
	waitFor(t, "the late commit", func() bool { n, _ := e.st.MaxID(context.Background(), "chat/u/a"); return n == 1 })
	msgs, keys := e.waitQueued(1)
	if op := msgs[0].GetOplog(); op.GetId() != 1 || string(op.GetPayload()) != "transfer" || keys[0] != "chat/u/a" {
		t.Fatalf("queued %v under %v, want oplog 1 of chat/u/a", msgs[0], keys[0])
	}
	if id, dup := e.publish(item); id != 1 || !dup {
		t.Fatalf("retry = id %d duplicate %v, want 1 true", id, dup)
	}
}

// Security review #5: a live push lost after the append (the queue send
// failed) is repaired within the repair delay: logic queues the channel's
// newest oplog again, with no other publish on the channel.
func TestLostPushIsRepushed(t *testing.T) {
	e := newEnv(t, func(c *logic.Config) { c.RepairDelay = 50 * time.Millisecond })
	e.q.fail.Store(true)
	if id, _ := e.publish(`{"biz":"chat","user":"a","payload":"x"}`); id != 1 {
		t.Fatalf("id = %d", id)
	}
	time.Sleep(120 * time.Millisecond) // a deliberate gap: a repair pass or two must fail while the queue does
	e.q.fail.Store(false)
	msgs, _ := e.waitQueued(1)
	if op := msgs[0].GetOplog(); op.GetId() != 1 || op.GetChannel() != "chat/u/a" {
		t.Fatalf("queued %v", msgs[0])
	}
	waitFor(t, "a pushed repair", func() bool {
		return e.metric("msync_logic_tail_repushes_total", map[string]string{"result": "pushed"}) >= 1
	})
}

// fullDisk is the OS file system reporting avail free bytes.
type fullDisk struct {
	vfs.FS
	avail atomic.Uint64
}

func (d *fullDisk) GetDiskUsage(path string) (vfs.DiskUsage, error) {
	u, err := d.FS.GetDiskUsage(path)
	u.AvailBytes = d.avail.Load()
	return u, err
}

// Security review #11: a full disk answers publishes 507
// insufficient_storage (nothing stored) and the process stays up for reads.
func TestFullDiskAnswers507(t *testing.T) {
	fs := &fullDisk{FS: vfs.Default}
	fs.avail.Store(1 << 40)
	ps, err := pebble.Open(pebble.Config{Dir: t.TempDir(), FS: fs, MinFreeBytes: 64 << 20, DiskCheckInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ps.Close() })
	e := newEnv(t, func(c *logic.Config) { c.Store, c.Owners, c.Revocations = ps, ps, ps })
	e.publish(`{"biz":"chat","user":"a","payload":"x"}`)
	fs.avail.Store(1 << 20)
	var status int
	var out map[string]any
	stored := uint64(1) // publishes answered 200 before the next free-space check
	waitFor(t, "a refused publish", func() bool {
		status, out = e.do("POST", "/v1/sync", "all-key", `{"biz":"chat","user":"a","payload":"y"}`)
		if status == 200 {
			stored++
		}
		return status != 200
	})
	if status != 507 || errCode(out) != logic.CodeInsufficientStorage {
		t.Fatalf("publish on a full disk = %d %v", status, out)
	}
	if status, out := e.do("GET", "/v1/devices/d1/sync", "all-key", ""); status != 200 {
		t.Fatalf("read on a full disk = %d %v", status, out)
	}
	if n, err := ps.MaxID(context.Background(), "chat/u/a"); err != nil || n != stored {
		t.Fatalf("max id = %d, %v; want %d (the refused publish stored nothing)", n, err, stored)
	}
}

// Issue 14 traffic control: a key over its publishes/s or bytes/s budget
// gets 429 rate_limited with Retry-After, stores nothing, and other keys
// are not affected; the budget refills with time.
func TestPublishRateLimit(t *testing.T) {
	e := newEnv(t, func(c *logic.Config) {
		c.RateLimits = map[string]logic.RateLimit{"chat-key": {PublishesPerSecond: 2, BytesPerSecond: 100}}
	})
	req := func(key, payload string) (int, map[string]any, string) {
		r, err := http.NewRequest("POST", e.base+"/v1/sync", strings.NewReader(`{"biz":"chat","user":"a","payload":"`+payload+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out, resp.Header.Get("Retry-After")
	}
	for i := range 2 {
		if status, out, _ := req("chat-key", "x"); status != 200 {
			t.Fatalf("publish %d within budget = %d %v", i, status, out)
		}
	}
	status, out, retry := req("chat-key", "x")
	if status != 429 || errCode(out) != logic.CodeRateLimited || retry != "1" {
		t.Fatalf("over the publish budget = %d %v Retry-After %q", status, out, retry)
	}
	if status, out, _ := req("all-key", "x"); status != 200 { // another key
		t.Fatalf("unlimited key = %d %v", status, out)
	}
	e.clk.Advance(time.Second) // refills both budgets
	if status, out, _ := req("chat-key", "0123456789abcdef"); status != 200 {
		t.Fatalf("after refill = %d %v", status, out)
	}
	if n, _ := e.st.MaxID(context.Background(), "chat/u/a"); n != 4 {
		t.Fatalf("stored %d, want 4 (the refused publish stored nothing)", n)
	}
	if got := e.metric("msync_logic_rate_limited_total", map[string]string{"kind": "publishes"}); got != 1 {
		t.Fatalf("rate_limited_total{publishes} = %v", got)
	}
}

// Security review #15: /metrics (biz names, traffic) and mounted pages are
// served to loopback callers only unless PublicOps is set. Only loopback can
// be dialled on this machine, so the foreign peer is a request on the real
// handler with a documentation-range remote address.
func TestOpsEndpointsLoopbackOnly(t *testing.T) {
	for _, public := range []bool{false, true} {
		e := newEnv(t, func(c *logic.Config) {
			c.PublicOps = public
			c.Mount = map[string]http.Handler{"/demo/": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("demo")) })}
		})
		for _, path := range []string{"/metrics", "/demo/"} {
			for _, peer := range []string{"127.0.0.1:5000", "[::1]:5000", "192.0.2.7:5000"} {
				r := httptest.NewRequest("GET", path, nil)
				r.RemoteAddr = peer
				w := httptest.NewRecorder()
				e.l.Handler().ServeHTTP(w, r)
				want := 200
				if !public && peer == "192.0.2.7:5000" {
					want = 404
				}
				if w.Code != want {
					t.Errorf("public %v: GET %s from %s = %d, want %d", public, path, peer, w.Code, want)
				}
			}
		}
		if status, _ := e.do("GET", "/healthz", "", ""); status != 200 { // over a real socket
			t.Fatalf("healthz = %d", status)
		}
	}
}
