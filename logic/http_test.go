package logic_test

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msync/msync/logic"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/biz"
)

func TestPublishStoresAndQueues(t *testing.T) {
	e := newEnv(t, nil)
	status, out := e.do("POST", "/v1/sync", "all-key", `{"biz":"chat","user":"alice","payload":"hi"}`)
	if status != 200 || out["id"] != 1.0 || out["channel"] != "chat/u/alice" || out["duplicate"] != false {
		t.Fatalf("publish = %d %v", status, out)
	}
	if id, _ := e.publish(`{"biz":"chat","user":"alice","payload_base64":"` + base64.StdEncoding.EncodeToString([]byte{0, 1, 2}) + `"}`); id != 2 {
		t.Fatalf("second id = %d", id)
	}
	if id, _ := e.publish(`{"biz":"lock","device":"d1","payload":"x"}`); id != 1 {
		t.Fatalf("device channel id = %d", id)
	}
	status, out = e.do("POST", "/v1/sync", "all-key", `{"biz":"news","global":true,"payload":"x","filters":{"platforms":["iOS"],"min_version":"1.2","max_version":"2"}}`)
	if status != 200 || out["channel"] != "news/g" {
		t.Fatalf("global publish = %d %v", status, out)
	}

	// Durable before the answer: the store already has them.
	ops, maxID, err := e.st.Read(context.Background(), "chat/u/alice", 0, 10)
	if err != nil || maxID != 2 || len(ops) != 2 || string(ops[0].Payload) != "hi" || string(ops[1].Payload) != "\x00\x01\x02" {
		t.Fatalf("store Read = %v, %d, %v", ops, maxID, err)
	}
	msgs, keys := e.waitQueued(4)
	want := []struct {
		key string
		id  uint64
	}{{"chat/u/alice", 1}, {"chat/u/alice", 2}, {"lock/d/d1", 1}, {"news/g", 1}}
	for i, w := range want {
		op := msgs[i].GetOplog()
		if keys[i] != w.key || op.GetChannel() != w.key || op.GetId() != w.id {
			t.Errorf("queue msg %d = key %q oplog %v, want %s #%d", i, keys[i], op, w.key, w.id)
		}
	}
	g := msgs[3].GetOplog()
	if g.Platforms[0] != "ios" || g.MinVersion != "1.2" || g.MaxVersion != "2" || g.CreatedMs != e.clk.Now().UnixMilli() {
		t.Errorf("global oplog fields = %v", g)
	}
	if got := e.metric("msync_logic_published_total", map[string]string{"biz": "chat"}); got != 2 {
		t.Errorf("published_total{chat} = %v", got)
	}
	if got := e.metric("msync_logic_publish_duration_seconds", nil); got != 4 {
		t.Errorf("publish latency samples = %v", got)
	}
}

func TestPublishDedup(t *testing.T) {
	e := newEnv(t, nil)
	id1, dup1 := e.publish(`{"biz":"chat","user":"alice","payload":"a","dedup_key":"k1"}`)
	e.publish(`{"biz":"chat","user":"alice","payload":"b"}`)
	id2, dup2 := e.publish(`{"biz":"chat","user":"alice","payload":"c","dedup_key":"k1"}`)
	if id1 != 1 || dup1 || id2 != 1 || !dup2 {
		t.Fatalf("dedup: first (%d, %v), repeat (%d, %v); want (1, false), (1, true)", id1, dup1, id2, dup2)
	}
	// The same key in another channel is a different oplog.
	if id, dup := e.publish(`{"biz":"chat","user":"bob","payload":"a","dedup_key":"k1"}`); id != 1 || dup {
		t.Fatalf("other channel = (%d, %v)", id, dup)
	}
	// The queue has one partition, so a queued duplicate would arrive before
	// this sentinel.
	e.publish(`{"biz":"chat","user":"zed","payload":"sentinel"}`)
	_, keys := e.waitQueued(4)
	if got := strings.Join(keys, " "); got != "chat/u/alice chat/u/alice chat/u/bob chat/u/zed" {
		t.Fatalf("queued %q: duplicates must not be queued", got)
	}
	if got := e.metric("msync_logic_duplicates_total", nil); got != 1 {
		t.Errorf("duplicates_total = %v", got)
	}
}

func TestPublishBadInput(t *testing.T) {
	e := newEnv(t, func(c *logic.Config) { c.MaxBodyBytes = 4096 })
	future := e.clk.Now().Add(time.Hour).Format(time.RFC3339)
	past := e.clk.Now().Add(-time.Hour).Format(time.RFC3339)
	for _, tt := range []struct {
		name, key, body string
		status          int
		code            string
	}{
		{"bad JSON", "all-key", `{"biz":`, 400, "bad_request"},
		{"empty body", "all-key", ``, 400, "bad_request"},
		{"not an object", "all-key", `[1]`, 400, "bad_request"},
		{"unknown field", "all-key", `{"biz":"chat","user":"a","payload":"x","colour":1}`, 400, "bad_request"},
		{"unknown filter field", "all-key", `{"biz":"chat","user":"a","payload":"x","filters":{"os":["ios"]}}`, 400, "bad_request"},
		{"trailing data", "all-key", `{"biz":"chat","user":"a","payload":"x"} {}`, 400, "bad_request"},
		{"missing key", "", `{"biz":"chat","user":"a","payload":"x"}`, 401, "unauthorized"},
		{"wrong key", "nope", `{"biz":"chat","user":"a","payload":"x"}`, 401, "unauthorized"},
		{"key not allowed biz", "chat-key", `{"biz":"lock","device":"d","payload":"x"}`, 403, "forbidden"},
		{"unknown biz", "all-key", `{"biz":"nope","user":"a","payload":"x"}`, 404, "unknown_biz"},
		{"missing biz", "all-key", `{"user":"a","payload":"x"}`, 400, "bad_request"},
		{"missing owner", "all-key", `{"biz":"chat","payload":"x"}`, 400, "bad_request"},
		{"device for user biz", "all-key", `{"biz":"chat","device":"d","payload":"x"}`, 400, "bad_request"},
		{"user and device", "all-key", `{"biz":"chat","user":"a","device":"d","payload":"x"}`, 400, "bad_request"},
		{"user for device biz", "all-key", `{"biz":"lock","user":"a","payload":"x"}`, 400, "bad_request"},
		{"global for user biz", "all-key", `{"biz":"chat","global":true,"payload":"x"}`, 400, "bad_request"},
		{"user for global biz", "all-key", `{"biz":"news","user":"a","payload":"x"}`, 400, "bad_request"},
		{"control char in user", "all-key", `{"biz":"chat","user":"a\u0001","payload":"x"}`, 400, "bad_request"},
		{"payload over max_payload", "all-key", `{"biz":"chat","user":"a","payload":"01234567890123456"}`, 413, "payload_too_large"},
		{"payload at max_payload", "all-key", `{"biz":"chat","user":"a","payload":"0123456789012345","dedup_key":"ok"}`, 200, ""},
		{"body over MaxBodyBytes", "all-key", `{"biz":"chat","user":"a","payload":"` + strings.Repeat("x", 5000) + `"}`, 413, "payload_too_large"},
		{"bad base64", "all-key", `{"biz":"chat","user":"a","payload_base64":"!!!"}`, 400, "bad_request"},
		{"both payloads", "all-key", `{"biz":"chat","user":"a","payload":"x","payload_base64":"eA=="}`, 400, "bad_request"},
		{"no payload", "all-key", `{"biz":"chat","user":"a"}`, 400, "bad_request"},
		{"bad valid_from", "all-key", `{"biz":"chat","user":"a","payload":"x","valid_from":"tomorrow"}`, 400, "bad_request"},
		{"bad valid_until", "all-key", `{"biz":"chat","user":"a","payload":"x","valid_until":"2024-13-01T00:00:00Z"}`, 400, "bad_request"},
		{"valid_until in the past", "all-key", `{"biz":"chat","user":"a","payload":"x","valid_until":"` + past + `"}`, 400, "bad_request"},
		{"valid_until before valid_from", "all-key", `{"biz":"chat","user":"a","payload":"x","valid_from":"` + e.clk.Now().Add(2*time.Hour).Format(time.RFC3339) + `","valid_until":"` + future + `"}`, 400, "bad_request"},
		{"ttl and valid_until", "all-key", `{"biz":"chat","user":"a","payload":"x","ttl":"1h","valid_until":"` + future + `"}`, 400, "bad_request"},
		{"bad ttl", "all-key", `{"biz":"chat","user":"a","payload":"x","ttl":"soon"}`, 400, "bad_request"},
		{"negative ttl", "all-key", `{"biz":"chat","user":"a","payload":"x","ttl":"-1h"}`, 400, "bad_request"},
		{"bad version filter", "all-key", `{"biz":"chat","user":"a","payload":"x","filters":{"min_version":"1.x"}}`, 400, "bad_request"},
		{"min above max", "all-key", `{"biz":"chat","user":"a","payload":"x","filters":{"min_version":"3","max_version":"2.9"}}`, 400, "bad_request"},
		{"bad platform", "all-key", `{"biz":"chat","user":"a","payload":"x","filters":{"platforms":["i os"]}}`, 400, "bad_request"},
		{"long dedup key", "all-key", `{"biz":"chat","user":"a","payload":"x","dedup_key":"` + strings.Repeat("k", 257) + `"}`, 400, "bad_request"},
		{"non-persistent biz with dedup_key", "all-key", `{"biz":"ephemeral","user":"a","payload":"x","dedup_key":"k"}`, 400, "bad_request"},
		{"non-persistent biz with filters", "all-key", `{"biz":"ephemeral","user":"a","payload":"x","filters":{}}`, 400, "bad_request"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, out := e.do("POST", "/v1/sync", tt.key, tt.body)
			if status != tt.status || errCode(out) != tt.code {
				t.Fatalf("status %d code %q (%v), want %d %q", status, errCode(out), out, tt.status, tt.code)
			}
			if tt.code != "" {
				if msg, _ := out["error"].(map[string]any)["message"].(string); msg == "" {
					t.Fatalf("error without a message: %v", out)
				}
			}
		})
	}
	// Only the one valid item was stored and queued.
	if n, _ := e.st.MaxID(context.Background(), "chat/u/a"); n != 1 {
		t.Fatalf("max id of chat/u/a = %d, want 1", n)
	}
	e.waitQueued(1)
	if got := e.metric("msync_logic_http_requests_total", map[string]string{"route": "sync", "code": "400"}); got < 20 {
		t.Errorf("http_requests_total{sync,400} = %v", got)
	}
}

func TestRoutingErrors(t *testing.T) {
	e := newEnv(t, nil)
	for _, tt := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/v1/sync", 405, "method_not_allowed"},
		{"DELETE", "/v1/bizs", 405, "method_not_allowed"},
		{"GET", "/v1/nope", 404, "not_found"},
		{"POST", "/v1/pushes", 404, "not_found"},
		{"GET", "/v1/kick", 405, "method_not_allowed"}, // push.go's routes get JSON 405s too
	} {
		if status, out := e.do(tt.method, tt.path, "all-key", ""); status != tt.status || errCode(out) != tt.code {
			t.Errorf("%s %s = %d %v, want %d %s", tt.method, tt.path, status, out, tt.status, tt.code)
		}
	}
}

func TestValidityWindow(t *testing.T) {
	e := newEnv(t, nil)
	now := e.clk.Now()
	ms := func(t time.Time) int64 { return t.UnixMilli() }
	from := now.Add(48 * time.Hour).Truncate(time.Second)
	until := now.Add(10 * time.Hour).Truncate(time.Second)
	for _, tt := range []struct {
		name, extra string
		wantFrom    int64
		wantUntil   int64
	}{
		{"default biz ttl", ``, 0, ms(now.Add(biz.DefaultTTL))},
		{"ttl", `,"ttl":"36h"`, 0, ms(now.Add(36 * time.Hour))},
		{"ttl in days capped at MaxTTL", `,"ttl":"90d"`, 0, ms(now.Add(biz.MaxTTL))},
		{"valid_until", `,"valid_until":"` + until.Format(time.RFC3339) + `"`, 0, ms(until)},
		{"valid_until capped", `,"valid_until":"` + now.Add(60*24*time.Hour).Format(time.RFC3339Nano) + `"`, 0, ms(now.Add(biz.MaxTTL))},
		{"valid_from starts the ttl", `,"valid_from":"` + from.Format(time.RFC3339) + `","ttl":"1h"`, ms(from), ms(from.Add(time.Hour))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id, _ := e.publish(`{"biz":"chat","user":"v","payload":"x"` + tt.extra + `}`)
			ops, _, err := e.st.Read(context.Background(), "chat/u/v", id-1, 1)
			if err != nil || len(ops) != 1 {
				t.Fatalf("Read = %v, %v", ops, err)
			}
			if ops[0].ValidFromMs != tt.wantFrom || ops[0].ValidUntilMs != tt.wantUntil {
				t.Fatalf("window = (%d, %d), want (%d, %d)", ops[0].ValidFromMs, ops[0].ValidUntilMs, tt.wantFrom, tt.wantUntil)
			}
		})
	}
}

func TestBatch(t *testing.T) {
	e := newEnv(t, nil)
	items := []string{
		`{"biz":"chat","user":"alice","payload":"1"}`,
		`{"biz":"nope","user":"alice","payload":"x"}`,
		`{"biz":"chat","user":"alice","payload":"2","dedup_key":"d"}`,
		`{"biz":"chat","user":"alice","payload_base64":"%%"}`,
		`{"biz":"chat","user":"alice","payload":"again","dedup_key":"d","extra":1}`,
	}
	status, out := e.do("POST", "/v1/sync/batch", "chat-key", `{"items":[`+strings.Join(items, ",")+`]}`)
	if status != 200 {
		t.Fatalf("batch = %d %v", status, out)
	}
	res := out["results"].([]any)
	codes := []string{}
	for _, r := range res {
		codes = append(codes, errCode(r.(map[string]any)))
	}
	if len(res) != 5 || res[0].(map[string]any)["id"] != 1.0 || res[2].(map[string]any)["id"] != 2.0 ||
		strings.Join(codes, ",") != ",unknown_biz,,bad_request,bad_request" {
		t.Fatalf("results = %v (codes %v)", res, codes)
	}
	if res[0].(map[string]any)["channel"] != "chat/u/alice" {
		t.Fatalf("result 0 = %v", res[0])
	}

	// Valid items share one Append; a dedup repeat inside a batch is answered
	// with the first id; a key not allowed a biz fails only that item.
	before := e.st.appends.Load()
	items = []string{
		`{"biz":"chat","user":"bob","payload":"1","dedup_key":"x"}`,
		`{"biz":"lock","device":"d1","payload":"1"}`,
		`{"biz":"chat","user":"bob","payload":"2","dedup_key":"x"}`,
		`{"biz":"chat","user":"carol","payload":"1"}`,
	}
	status, out = e.do("POST", "/v1/sync/batch", "chat-key", `{"items":[`+strings.Join(items, ",")+`]}`)
	if status != 200 {
		t.Fatalf("batch 2 = %d %v", status, out)
	}
	if n := e.st.appends.Load() - before; n != 1 {
		t.Fatalf("%d Append calls for one batch, want 1", n)
	}
	res = out["results"].([]any)
	r := func(i int) map[string]any { return res[i].(map[string]any) }
	if r(0)["id"] != 1.0 || r(0)["duplicate"] != false || errCode(r(1)) != "forbidden" ||
		r(2)["id"] != 1.0 || r(2)["duplicate"] != true || r(3)["id"] != 1.0 || r(3)["channel"] != "chat/u/carol" {
		t.Fatalf("results = %v", res)
	}
	msgs, keys := e.waitQueued(4)
	if got := strings.Join(keys, " "); got != "chat/u/alice chat/u/alice chat/u/bob chat/u/carol" {
		t.Fatalf("queued keys %q", got)
	}
	if msgs[1].GetOplog().GetId() != 2 || string(msgs[1].GetOplog().GetPayload()) != "2" {
		t.Fatalf("queued %v", msgs[1])
	}

	for _, tt := range []struct {
		name, key, body string
		status          int
		code            string
	}{
		{"over MaxBatch", "all-key", `{"items":[` + strings.Repeat(items[3]+",", 5) + items[3] + `]}`, 400, "bad_request"},
		{"empty", "all-key", `{"items":[]}`, 400, "bad_request"},
		{"bad JSON", "all-key", `{"items":[`, 400, "bad_request"},
		{"unknown top-level field", "all-key", `{"items":[],"x":1}`, 400, "bad_request"},
		{"items not objects", "all-key", `{"items":"no"}`, 400, "bad_request"},
		{"missing key", "", `{"items":[` + items[3] + `]}`, 401, "unauthorized"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if status, out := e.do("POST", "/v1/sync/batch", tt.key, tt.body); status != tt.status || errCode(out) != tt.code {
				t.Fatalf("= %d %v, want %d %s", status, out, tt.status, tt.code)
			}
		})
	}
}

func TestStoreFailure(t *testing.T) {
	e := newEnv(t, func(c *logic.Config) { c.AppendTimeout = 100 * time.Millisecond })
	e.st.fail.Store(true)
	status, out := e.do("POST", "/v1/sync", "all-key", `{"biz":"chat","user":"a","payload":"x"}`)
	if status != 503 || errCode(out) != "unavailable" {
		t.Fatalf("publish with failing store = %d %v", status, out)
	}
	status, out = e.do("POST", "/v1/sync/batch", "all-key", `{"items":[{"biz":"chat","user":"a","payload":"x"},{"biz":"nope"}]}`)
	if status != 503 || errCode(out) != "unavailable" {
		t.Fatalf("batch with failing store = %d %v", status, out)
	}
	status, out = e.do("GET", "/v1/devices/d1/sync", "all-key", "")
	if status != 503 || errCode(out) != "unavailable" {
		t.Fatalf("device sync with failing store = %d %v", status, out)
	}
	e.st.fail.Store(false)

	// A store that does not answer in AppendTimeout: 503 too.
	e.st.hang.Store(true)
	began := time.Now()
	status, out = e.do("POST", "/v1/sync", "all-key", `{"biz":"chat","user":"a","payload":"x"}`)
	if status != 503 || errCode(out) != "unavailable" {
		t.Fatalf("publish with hanging store = %d %v", status, out)
	}
	if took := time.Since(began); took > 3*time.Second {
		t.Fatalf("timed-out publish took %v", took)
	}
	e.st.hang.Store(false)

	// Nothing was acknowledged, stored or queued; the next call works.
	if id, _ := e.publish(`{"biz":"chat","user":"a","payload":"x"}`); id != 1 {
		t.Fatalf("id after failures = %d, want 1", id)
	}
	msgs, _ := e.waitQueued(1)
	if len(msgs) != 1 || msgs[0].GetOplog().GetId() != 1 {
		t.Fatalf("queued %v", msgs)
	}
	if got := e.metric("msync_logic_store_errors_total", map[string]string{"op": "append"}); got != 3 {
		t.Errorf("store_errors_total{append} = %v, want 3", got)
	}
}

func TestQueueFailureStillAcknowledges(t *testing.T) {
	e := newEnv(t, nil)
	e.q.fail.Store(true)
	if id, _ := e.publish(`{"biz":"chat","user":"a","payload":"x"}`); id != 1 {
		t.Fatalf("id = %d", id)
	}
	if n, _ := e.st.MaxID(context.Background(), "chat/u/a"); n != 1 {
		t.Fatalf("stored max id = %d", n)
	}
	if got := e.metric("msync_logic_queue_send_failures_total", nil); got != 1 {
		t.Fatalf("queue_send_failures_total = %v", got)
	}
}

func TestDeviceSyncState(t *testing.T) {
	e := newEnv(t, nil)
	for range 3 {
		e.publish(`{"biz":"chat","user":"alice","payload":"x"}`)
	}
	e.publish(`{"biz":"lock","device":"d1","payload":"x"}`)
	if _, err := e.l.Ack(context.Background(), e.ackTicketed(&pb.AckReq{Items: []*pb.AckItem{
		{Device: "d1", User: "alice", Channel: "chat/u/alice", Id: 1},
		{Device: "d1", Channel: "lock/d/d1", Id: 1},
	}})); err != nil {
		t.Fatal(err)
	}
	// Security review #10: a key limited to chat sees the chat channels
	// only, not the device's other bizs.
	status, out := e.do("GET", "/v1/devices/d1/sync", "chat-key", "")
	if got, want := body(out["channels"]), `[{"channel":"chat/u/alice","lag":2,"max_id":3,"sync_point":1}]`; status != 200 || got != want {
		t.Fatalf("chat-key = %d %s, want %s", status, got, want)
	}
	status, out = e.do("GET", "/v1/devices/d1/sync", "all-key", "")
	if status != 200 || out["device"] != "d1" {
		t.Fatalf("= %d %v", status, out)
	}
	got := body(out["channels"])
	want := `[{"channel":"chat/u/alice","lag":2,"max_id":3,"sync_point":1},{"channel":"lock/d/d1","lag":0,"max_id":1,"sync_point":1}]`
	if got != want {
		t.Fatalf("channels = %s\nwant       %s", got, want)
	}
	// Device ids may contain '/': percent-encoded, they are one path segment.
	if _, err := e.l.Ack(context.Background(), e.ackTicketed(&pb.AckReq{Items: []*pb.AckItem{{Device: "a/b", Channel: "lock/d/a/b", Id: 1}}})); err != nil {
		t.Fatal(err)
	}
	if status, out := e.do("GET", "/v1/devices/a%2Fb/sync", "all-key", ""); status != 200 || out["device"] != "a/b" ||
		body(out["channels"]) != `[{"channel":"lock/d/a/b","lag":0,"max_id":0,"sync_point":1}]` {
		t.Fatalf("device a/b = %d %v", status, out)
	}
	if status, out := e.do("GET", "/v1/devices/nobody/sync", "all-key", ""); status != 200 || body(out["channels"]) != "[]" {
		t.Fatalf("unknown device = %d %v", status, out)
	}
	if status, out := e.do("GET", "/v1/devices/d1/sync", "", ""); status != 401 || errCode(out) != "unauthorized" {
		t.Fatalf("no key = %d %v", status, out)
	}
	if status, out := e.do("GET", "/v1/devices/"+strings.Repeat("d", 200)+"/sync", "all-key", ""); status != 400 || errCode(out) != "bad_request" {
		t.Fatalf("long device = %d %v", status, out)
	}
}

func TestBizs(t *testing.T) {
	e := newEnv(t, nil)
	status, out := e.do("GET", "/v1/bizs", "chat-key", "")
	if status != 200 {
		t.Fatalf("= %d %v", status, out)
	}
	bizs := out["bizs"].([]any)
	if len(bizs) != len(testBizs) {
		t.Fatalf("%d bizs, want %d", len(bizs), len(testBizs))
	}
	byName := map[string]string{}
	for _, b := range bizs {
		byName[b.(map[string]any)["name"].(string)] = body(b)
	}
	for name, want := range map[string]string{
		"chat":      `{"backlog":"all","consistency":false,"max_payload":16,"multi_device":true,"name":"chat","persistent":true,"scope":"appointed","target":"user","ttl":"7d"}`,
		"latest":    `{"backlog":"latest:2","consistency":false,"max_payload":65536,"multi_device":true,"name":"latest","persistent":true,"scope":"appointed","target":"user","ttl":"7d"}`,
		"ephemeral": `{"backlog":"all","consistency":false,"max_payload":65536,"multi_device":true,"name":"ephemeral","persistent":false,"scope":"appointed","target":"user","ttl":"7d"}`,
	} {
		if byName[name] != want {
			t.Errorf("%s = %s\nwant %s", name, byName[name], want)
		}
	}
	if status, out := e.do("GET", "/v1/bizs", "wrong", ""); status != 401 || errCode(out) != "unauthorized" {
		t.Fatalf("wrong key = %d %v", status, out)
	}
}

func TestHealthzMetricsAndShutdown(t *testing.T) {
	e := newEnv(t, nil)
	if status, out := e.do("GET", "/healthz", "", ""); status != 200 || out["status"] != "ok" {
		t.Fatalf("healthz = %d %v", status, out)
	}
	e.publish(`{"biz":"chat","user":"a","payload":"x"}`)
	resp, err := http.Get(e.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`msync_logic_published_total{biz="chat"} 1`,
		`msync_logic_http_requests_total{code="200",route="healthz"} 1`,
		`msync_logic_publish_duration_seconds_count 1`,
		`msync_logic_queue_send_failures_total 0`,
	} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range 2 {
		if err := e.l.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown #%d: %v", i+1, err)
		}
	}
	if _, err := http.Get(e.base + "/healthz"); err == nil {
		t.Fatal("HTTP still served after Shutdown")
	}
	// Mounted elsewhere, the handler reports the shutdown.
	rec := httptest.NewRecorder()
	e.l.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "shutting_down") {
		t.Fatalf("healthz after Shutdown = %d %s", rec.Code, rec.Body)
	}
	if err := e.l.Start(); err == nil {
		t.Fatal("Start after Shutdown succeeded")
	}
}

// Concurrent publish calls to one channel reach the queue in id order: the
// store commits ids in order, and logic hands each call's messages over only
// after the calls holding lower ids (order.go), so downstream sees no gaps.
func TestConcurrentPublishesQueuedInIDOrder(t *testing.T) {
	// A wait far above any scheduling delay (-race, a loaded machine), so a
	// hand-over out of order is the ordering's fault, not its bound's.
	e := newEnv(t, func(c *logic.Config) { c.OrderWait = time.Minute })
	const callers, per = 16, 25
	var wg sync.WaitGroup
	for c := 0; c < callers; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				body := `{"items":[{"biz":"chat","user":"ord","payload":"a"},{"biz":"chat","user":"ord2","payload":"b"}]}`
				if status, out := e.do("POST", "/v1/sync/batch", "chat-key", body); status != 200 {
					t.Errorf("batch = %d %v", status, out)
					return
				}
			}
		}()
	}
	wg.Wait()
	msgs, _ := e.waitQueued(2 * callers * per)
	last := map[string]uint64{}
	for _, m := range msgs {
		op := m.GetOplog()
		if op.GetId() != last[op.GetChannel()]+1 {
			t.Fatalf("channel %s: queued id %d after %d", op.GetChannel(), op.GetId(), last[op.GetChannel()])
		}
		last[op.GetChannel()] = op.GetId()
	}
}
