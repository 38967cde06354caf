package logic_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/msync/msync/logic"
	"github.com/msync/msync/pkg/auth"
	"github.com/msync/msync/pkg/biz"
	dmem "github.com/msync/msync/pkg/directory/memory"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/queue"
	qmem "github.com/msync/msync/pkg/queue/memory"
	"github.com/msync/msync/pkg/store/pebble"
)

// fuzzNow is the fuzzers' fixed clock, so a batch item and the same item
// published alone are judged at the same instant.
var fuzzNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

type fuzzEnv struct {
	l      *logic.Logic
	h      http.Handler
	st     *pebble.Store
	tokens *auth.Tokens
}

// newFuzzEnv builds one Logic (real Pebble store, memory queue and
// directory) for a whole fuzz run; its handler is called directly.
func newFuzzEnv(f *testing.F) *fuzzEnv {
	ps, err := pebble.Open(pebble.Config{Dir: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	q, err := qmem.New(qmem.Config{Partitions: 1})
	if err != nil {
		f.Fatal(err)
	}
	if err := q.Consume(func(context.Context, []queue.Message) error { return nil }); err != nil {
		f.Fatal(err)
	}
	dir, err := dmem.New(dmem.Config{SweepInterval: -1})
	if err != nil {
		f.Fatal(err)
	}
	bizs, err := biz.NewRegistry(testBizs)
	if err != nil {
		f.Fatal(err)
	}
	tokens, err := auth.NewTokens(secret)
	if err != nil {
		f.Fatal(err)
	}
	l, err := logic.New(logic.Config{
		HTTPAddr: "127.0.0.1:0", Store: ps, Queue: q, Directory: dir, Bizs: bizs, Tokens: tokens,
		APIKeys:           auth.NewAPIKeys([]auth.APIKey{{Key: "all-key", Bizs: []string{"*"}}, {Key: "chat-key", Bizs: []string{"chat"}}}),
		HeartbeatInterval: 30 * time.Second, MaxBatch: 5, JanitorInterval: -1,
		Registerer: prometheus.NewRegistry(), Now: func() time.Time { return fuzzNow },
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = l.Shutdown(ctx)
		_ = q.Shutdown(ctx)
		_ = dir.Shutdown(ctx)
		_ = ps.Close()
	})
	return &fuzzEnv{l: l, h: l.Handler(), st: ps, tokens: tokens}
}

type fuzzReply struct {
	status int
	raw    []byte
}

func (e *fuzzEnv) post(t *testing.T, path, key string, body []byte) fuzzReply {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, req)
	if !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
		t.Fatalf("POST %s %q: %d with content type %q", path, body, w.Code, w.Header().Get("Content-Type"))
	}
	return fuzzReply{status: w.Code, raw: w.Body.Bytes()}
}

// checkError: every failure is a 4xx (the store is healthy, so a 5xx is a
// bug) with {"error": {"code", "message"}}; it returns the code.
func checkError(t *testing.T, what string, status int, raw []byte) string {
	var e struct {
		Error *struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal(raw, &e); err != nil || e.Error == nil || e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("%s: %d with error body %q", what, status, raw)
	}
	if status < 400 || status > 499 {
		t.Fatalf("%s: status %d (%s: %s)", what, status, e.Error.Code, e.Error.Message)
	}
	return e.Error.Code
}

type fuzzResult struct {
	ID        uint64 `json:"id"`
	Channel   string `json:"channel"`
	Duplicate bool   `json:"duplicate"`
}

// fuzzItem is the publish body as documented, decoded leniently by the
// test, to compute what must have been stored.
type fuzzItem struct {
	Biz           string  `json:"biz"`
	User          string  `json:"user"`
	Device        string  `json:"device"`
	Global        bool    `json:"global"`
	Payload       *string `json:"payload"`
	PayloadBase64 *string `json:"payload_base64"`
	DedupKey      string  `json:"dedup_key"`
	ValidFrom     string  `json:"valid_from"`
	ValidUntil    string  `json:"valid_until"`
	TTL           string  `json:"ttl"`
	Filters       *struct {
		Platforms  []string `json:"platforms"`
		MinVersion string   `json:"min_version"`
		MaxVersion string   `json:"max_version"`
	} `json:"filters"`
}

// checkStored reads the acknowledged oplog back from the store and checks
// it against the request item.
func (e *fuzzEnv) checkStored(t *testing.T, item []byte, res fuzzResult) {
	var it fuzzItem
	if err := json.Unmarshal(item, &it); err != nil {
		t.Fatalf("accepted item %q does not decode: %v", item, err)
	}
	b, err := biz.NewRegistry(testBizs)
	if err != nil {
		t.Fatal(err)
	}
	bz, err := b.Get(it.Biz)
	if err != nil {
		t.Fatalf("accepted item of unknown biz %q", it.Biz)
	}
	if want := bz.Channel(it.User, it.Device); res.Channel != want {
		t.Fatalf("item %q stored in %q, want %q", item, res.Channel, want)
	}
	if !bz.Persistent {
		return
	}
	if res.ID == 0 {
		t.Fatalf("persistent item %q acknowledged without an id", item)
	}
	ops, _, err := e.st.Read(context.Background(), res.Channel, res.ID-1, 1)
	if err != nil || len(ops) != 1 || ops[0].Id != res.ID {
		t.Fatalf("acknowledged %s #%d not readable: %v %v", res.Channel, res.ID, ops, err)
	}
	op := ops[0]
	if res.Duplicate {
		if op.DedupKey != it.DedupKey {
			t.Fatalf("duplicate answer for %q points at an oplog with dedup key %q", item, op.DedupKey)
		}
		return // the first call's oplog; its payload may differ
	}
	var payload []byte
	if it.Payload != nil {
		payload = []byte(*it.Payload)
	} else if it.PayloadBase64 != nil {
		if payload, err = base64.StdEncoding.DecodeString(*it.PayloadBase64); err != nil {
			t.Fatalf("accepted payload_base64 %q: %v", *it.PayloadBase64, err)
		}
	}
	if !bytes.Equal(op.Payload, payload) || op.DedupKey != it.DedupKey || op.Biz != it.Biz {
		t.Fatalf("item %q stored as %v", item, op)
	}
	start := fuzzNow
	if op.ValidFromMs != 0 && op.ValidFromMs > fuzzNow.UnixMilli() {
		start = time.UnixMilli(op.ValidFromMs)
	}
	if op.ValidUntilMs <= fuzzNow.UnixMilli() || op.ValidUntilMs > start.Add(biz.MaxTTL).UnixMilli() ||
		(op.ValidFromMs != 0 && op.ValidUntilMs <= op.ValidFromMs) {
		t.Fatalf("item %q: validity %d..%d at now %d", item, op.ValidFromMs, op.ValidUntilMs, fuzzNow.UnixMilli())
	}
	for _, p := range op.Platforms {
		if p != strings.ToLower(p) || p == "" {
			t.Fatalf("item %q: stored platform %q", item, p)
		}
	}
	if (op.MinVersion != "" && !oplog.ValidVersion(op.MinVersion)) || (op.MaxVersion != "" && !oplog.ValidVersion(op.MaxVersion)) ||
		(op.MinVersion != "" && op.MaxVersion != "" && oplog.CompareVersions(op.MinVersion, op.MaxVersion) > 0) {
		t.Fatalf("item %q: stored version range %q..%q", item, op.MinVersion, op.MaxVersion)
	}
}

var fuzzItems = []string{
	`{"biz":"chat","user":"alice","payload":"hi"}`,
	`{"biz":"chat","user":"alice","payload_base64":"aGk="}`,
	`{"biz":"chat","user":"alice","payload":"hi","payload_base64":"aGk="}`,
	`{"biz":"chat","user":"alice","payload_base64":"a"}`,
	`{"biz":"lock","device":"d1","payload":"x","dedup_key":"k1"}`,
	`{"biz":"news","global":true,"payload":"x","filters":{"platforms":["IOS","web"],"min_version":"1.2","max_version":"2"}}`,
	`{"biz":"news","global":true,"payload":"x","filters":{"min_version":"3","max_version":"2"}}`,
	`{"biz":"chat","user":"a","payload":"x","valid_from":"2026-06-02T00:00:00Z","ttl":"1d"}`,
	`{"biz":"chat","user":"a","payload":"x","valid_from":"0001-01-01T00:00:00Z","valid_until":"9999-12-31T23:59:59.999999999Z"}`,
	`{"biz":"chat","user":"a","payload":"x","ttl":"106752d"}`,
	`{"biz":"chat","user":"a","payload":"x","ttl":"1d","valid_until":"2026-06-02T00:00:00Z"}`,
	`{"biz":"chat","user":"a","payload":"x","valid_until":"2020-01-01T00:00:00Z"}`,
	`{"biz":"chat","user":"a\u0000b","payload":"x"}`,
	`{"biz":"ephemeral","user":"a","payload":"x"}`,
	`{"biz":"nope","user":"a","payload":"x"}`,
	`{"biz":"chat","user":"a","payload":"0123456789abcdefg"}`,
	`{"biz":"chat","user":"a","payload":"x","bogus":1}`,
	`{"BIZ":"chat","User":"a","payload":"x"}`,
	`null`, `1`, `[]`, `{"biz":"chat"`,
}

// FuzzPublishBody fuzzes POST /v1/sync: a 4xx with an error body, or a
// 200 whose oplog is in the store exactly as the body described it
// (payload or payload_base64, dedup key, validity window capped to 30 days,
// filters normalized).
func FuzzPublishBody(f *testing.F) {
	for _, s := range fuzzItems {
		f.Add([]byte(s), false)
	}
	f.Add([]byte(`{"biz":"lock","device":"d1","payload":"x"}`), true) // chat-key may not use lock
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, body []byte, chatKey bool) {
		key := "all-key"
		if chatKey {
			key = "chat-key"
		}
		r := e.post(t, "/v1/sync", key, body)
		if r.status != http.StatusOK {
			checkError(t, "POST /v1/sync "+string(body), r.status, r.raw)
			return
		}
		var res fuzzResult
		if err := json.Unmarshal(r.raw, &res); err != nil {
			t.Fatalf("200 with body %q", r.raw)
		}
		e.checkStored(t, body, res)
	})
}

// FuzzBatchBody fuzzes POST /v1/sync/batch: the whole call fails with a 4xx
// or there is one result per item, in order, and each is what POST /v1/sync
// answers for that item alone (same status class and error code; a stored
// item is in the store as described). Mixed valid and invalid items, items
// that are not objects and unknown fields are in the seeds.
func FuzzBatchBody(f *testing.F) {
	f.Add([]byte(`{"items":[` + strings.Join(fuzzItems[:4], ",") + `]}`))
	f.Add([]byte(`{"items":[` + strings.Join(fuzzItems[4:9], ",") + `]}`))
	f.Add([]byte(`{"items":[` + strings.Join(fuzzItems[9:13], ",") + `]}`))
	f.Add([]byte(`{"items":[` + strings.Join(fuzzItems[13:18], ",") + `]}`))
	f.Add([]byte(`{"items":[` + strings.Join(fuzzItems[18:], ",") + `]}`))
	f.Add([]byte(`{"items":[]}`))
	f.Add([]byte(`{"items":[{},{},{},{},{},{}]}`))
	f.Add([]byte(`{"items":[{"biz":"lock","device":"d","payload":"a","dedup_key":"z"},{"biz":"lock","device":"d","payload":"b","dedup_key":"z"}]}`))
	f.Add([]byte(`{"items":null,"x":1}`))
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		r := e.post(t, "/v1/sync/batch", "all-key", body)
		if r.status != http.StatusOK {
			checkError(t, "POST /v1/sync/batch", r.status, r.raw)
			return
		}
		var req struct {
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			t.Fatalf("batch %q accepted but its items do not decode: %v", body, err)
		}
		var out struct {
			Results []json.RawMessage `json:"results"`
		}
		if err := json.Unmarshal(r.raw, &out); err != nil || len(out.Results) != len(req.Items) || len(req.Items) == 0 {
			t.Fatalf("batch of %d items answered %q", len(req.Items), r.raw)
		}
		for i, raw := range out.Results {
			item := req.Items[i]
			alone := e.post(t, "/v1/sync", "all-key", item)
			var res fuzzResult
			var eb struct {
				Error *struct{ Code string } `json:"error"`
			}
			if err := json.Unmarshal(raw, &eb); err == nil && eb.Error != nil {
				if alone.status == http.StatusOK {
					t.Fatalf("item %d %q: batch error %s, alone accepted", i, item, raw)
				}
				if code := checkError(t, "alone", alone.status, alone.raw); code != eb.Error.Code {
					t.Fatalf("item %d %q: batch code %s, alone %s", i, item, eb.Error.Code, code)
				}
				continue
			}
			if err := json.Unmarshal(raw, &res); err != nil {
				t.Fatalf("item %d: result %q", i, raw)
			}
			if alone.status != http.StatusOK {
				t.Fatalf("item %d %q: accepted in the batch (%s), refused alone: %d %s", i, item, raw, alone.status, alone.raw)
			}
			e.checkStored(t, item, res)
		}
	})
}
