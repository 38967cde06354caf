package logic_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/msync/msync/pkg/api/pb"
)

// receiptsOf returns "device=upto" of the acked and pending lists of a
// 200 answer.
func receiptsOf(t *testing.T, out map[string]any) (acked, pending string) {
	t.Helper()
	list := func(k string) string {
		items, ok := out[k].([]any)
		if !ok {
			t.Fatalf("%s is not a list in %v", k, out)
		}
		var s []string
		for _, it := range items {
			m := it.(map[string]any)
			if at, _ := m["acked_at"].(string); at == "" {
				t.Fatalf("receipt without acked_at: %v", m)
			}
			s = append(s, fmt.Sprintf("%v=%v", m["device"], m["upto"]))
		}
		return strings.Join(s, ",")
	}
	return list("acked"), list("pending")
}

func (e *env) ack(user, device, ch string, id uint64) {
	e.t.Helper()
	if _, err := e.l.Ack(context.Background(), e.ackTicketed(&pb.AckReq{Items: []*pb.AckItem{
		{Device: device, User: user, Channel: ch, Id: id}}})); err != nil {
		e.t.Fatalf("Ack: %v", err)
	}
}

func TestReceiptsAppearAfterTheAck(t *testing.T) {
	e := newEnv(t, nil)
	for range 3 {
		e.publish(`{"biz":"chat","user":"alice","payload":"x"}`)
	}
	get := func(query string) (string, string, map[string]any) {
		t.Helper()
		return e.receipts("chat-key", query)
	}
	// Published, delivered to nobody yet: no receipt.
	if a, p, out := get("channel=chat/u/alice&id=1"); a != "" || p != "" || out["max_id"] != 3.0 {
		t.Fatalf("before any ack: acked %q pending %q (%v)", a, p, out)
	}
	e.ack("alice", "phone", "chat/u/alice", 2)
	if a, p, _ := get("channel=chat/u/alice&id=2"); a != "phone=2" || p != "" {
		t.Fatalf("id 2 after phone acked 2: acked %q pending %q", a, p)
	}
	if a, p, _ := get("channel=chat/u/alice&id=3"); a != "" || p != "phone=2" {
		t.Fatalf("id 3 after phone acked 2: acked %q pending %q", a, p)
	}
	e.ack("alice", "tablet", "chat/u/alice", 3)
	// By user: the same channel named like a publish.
	if a, p, _ := get("biz=chat&user=alice&id=3"); a != "tablet=3" || p != "phone=2" {
		t.Fatalf("by user, id 3: acked %q pending %q", a, p)
	}
	// Paging by device.
	a, _, out := get("channel=chat/u/alice&id=1&limit=1")
	if a != "phone=2" || out["next"] != "phone" {
		t.Fatalf("page 1: %q next %v", a, out["next"])
	}
	a, _, out = get("channel=chat/u/alice&id=1&limit=1&after=phone")
	if a != "tablet=3" || out["next"] != "tablet" {
		t.Fatalf("page 2: %q next %v", a, out["next"])
	}
	if a, p, out := get("channel=chat/u/alice&id=1&limit=1&after=tablet"); a != "" || p != "" || out["next"] != nil {
		t.Fatalf("page 3: %q %q next %v", a, p, out["next"])
	}
	// A multi_device:false biz keeps a shared point besides the device's:
	// only real devices are listed.
	e.publish(`{"biz":"solo","user":"bob","payload":"x"}`)
	e.ack("bob", "bob-phone", "solo/u/bob", 1)
	if a, p, _ := e.receipts("all-key", "biz=solo&user=bob&id=1"); a != "bob-phone=1" || p != "" {
		t.Fatalf("solo: acked %q pending %q", a, p)
	}
}

// receipts GETs /v1/receipts?query, which must answer 200, and returns its
// acked and pending lists (see receiptsOf) and the whole answer.
func (e *env) receipts(key, query string) (acked, pending string, out map[string]any) {
	e.t.Helper()
	status, out := e.do("GET", "/v1/receipts?"+query, key, "")
	if status != 200 {
		e.t.Fatalf("GET /v1/receipts?%s = %d %v", query, status, out)
	}
	acked, pending = receiptsOf(e.t, out)
	return acked, pending, out
}

func TestReceiptsBadInput(t *testing.T) {
	e := newEnv(t, nil)
	e.publish(`{"biz":"chat","user":"alice","payload":"x"}`)
	e.publish(`{"biz":"lock","device":"d1","payload":"x"}`)
	long := strings.Repeat("x", 129)
	for _, tt := range []struct {
		name, query, key string
		status           int
		code             string
	}{
		{"no channel", "id=1", "all-key", 400, "bad_request"},
		{"malformed channel", "channel=chat&id=1", "all-key", 400, "bad_request"},
		{"no id", "channel=chat/u/alice", "all-key", 400, "bad_request"},
		{"id zero", "channel=chat/u/alice&id=0", "all-key", 400, "bad_request"},
		{"id not a number", "channel=chat/u/alice&id=one", "all-key", 400, "bad_request"},
		{"negative id", "channel=chat/u/alice&id=-1", "all-key", 400, "bad_request"},
		{"channel and biz", "channel=chat/u/alice&biz=chat&user=alice&id=1", "all-key", 400, "bad_request"},
		{"biz without owner", "biz=chat&id=1", "all-key", 400, "bad_request"},
		{"user on a device biz", "biz=lock&user=alice&id=1", "all-key", 400, "bad_request"},
		{"global on an appointed biz", "biz=chat&global=true&id=1", "all-key", 400, "bad_request"},
		{"over-long user", "biz=chat&user=" + long + "&id=1", "all-key", 400, "bad_request"},
		{"bad limit", "channel=chat/u/alice&id=1&limit=1001", "all-key", 400, "bad_request"},
		{"unauthenticated", "channel=chat/u/alice&id=1", "", 401, "unauthorized"},
		{"unknown key", "channel=chat/u/alice&id=1", "nope", 401, "unauthorized"},
		{"foreign biz key", "channel=lock/d/d1&id=1", "chat-key", 403, "forbidden"},
		{"foreign biz key by biz", "biz=lock&device=d1&id=1", "chat-key", 403, "forbidden"},
		{"unknown biz", "channel=chta/u/alice&id=1", "all-key", 404, "unknown_biz"},
		{"id past the channel's end", "channel=chat/u/alice&id=2", "all-key", 404, "not_found"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, out := e.do("GET", "/v1/receipts?"+tt.query, tt.key, "")
			if status != tt.status || errCode(out) != tt.code {
				t.Fatalf("GET /v1/receipts?%s = %d %v, want %d %s", tt.query, status, out, tt.status, tt.code)
			}
		})
	}
	e.st.fail.Store(true)
	status, out := e.do("GET", "/v1/receipts?channel=chat/u/alice&id=1", "all-key", "")
	e.st.fail.Store(false)
	if status != 503 || errCode(out) != "unavailable" {
		t.Fatalf("store down: %d %v", status, out)
	}
}
