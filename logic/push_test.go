package logic_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/msync/msync/logic"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/directory"
	"github.com/msync/msync/pkg/store"
)

func TestPushQueuesTargets(t *testing.T) {
	e := newEnv(t, nil)
	for _, body := range []string{
		`{"user":"alice","payload":"u"}`,
		`{"device":"d1","payload_base64":"AAE="}`,
		`{"room":"lobby","payload":"r"}`,
		`{"all":true,"payload":"a"}`,
	} {
		if status, out := e.do("POST", "/v1/push", "all-key", body); status != 200 || out["queued"] != true {
			t.Fatalf("push %s = %d %v", body, status, out)
		}
	}
	msgs, keys := e.waitQueued(4)
	want := []struct {
		key     string
		target  func(*pb.PushTarget) bool
		payload string
	}{
		{"push/u/alice", func(p *pb.PushTarget) bool { return p.User == "alice" }, "u"},
		{"push/d/d1", func(p *pb.PushTarget) bool { return p.Device == "d1" }, "\x00\x01"},
		{"push/r/lobby", func(p *pb.PushTarget) bool { return p.Room == "lobby" && p.Msg.Room == "lobby" }, "r"},
		{"push/all", func(p *pb.PushTarget) bool { return p.All }, "a"},
	}
	for i, w := range want {
		p := msgs[i].GetPush()
		if keys[i] != w.key || p == nil || !w.target(p) || string(p.Msg.GetPayload()) != w.payload || p.Msg.CreatedMs != e.clk.Now().UnixMilli() {
			t.Errorf("queue msg %d = key %q %v, want %s payload %q", i, keys[i], p, w.key, w.payload)
		}
	}
	// Never stored: nothing in the store for alice.
	if maxID, err := e.st.MaxID(context.Background(), "chat/u/alice"); err != nil || maxID != 0 {
		t.Fatalf("store has chat/u/alice max %d (%v) after pushes", maxID, err)
	}
}

func TestRealtimeBadInput(t *testing.T) {
	e := newEnv(t, func(c *logic.Config) { c.MaxPushPayload = 8 })
	if _, err := e.dir.Put(context.Background(), directory.Session{User: "alice", Device: "d1", Comet: "c1", Key: "k1", Platform: "ios"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, path, key, body string
		status                        int
		code                          string
	}{
		{"push no key", "POST", "/v1/push", "", `{"all":true,"payload":"x"}`, 401, "unauthorized"},
		{"push bad key", "POST", "/v1/push", "nope", `{"all":true,"payload":"x"}`, 401, "unauthorized"},
		{"push limited key", "POST", "/v1/push", "chat-key", `{"all":true,"payload":"x"}`, 403, "forbidden"},
		{"push bad JSON", "POST", "/v1/push", "all-key", `{"all":`, 400, "bad_request"},
		{"push unknown field", "POST", "/v1/push", "all-key", `{"all":true,"payload":"x","biz":"chat"}`, 400, "bad_request"},
		{"push no target", "POST", "/v1/push", "all-key", `{"payload":"x"}`, 400, "bad_request"},
		{"push two targets", "POST", "/v1/push", "all-key", `{"user":"a","room":"r","payload":"x"}`, 400, "bad_request"},
		{"push bad room", "POST", "/v1/push", "all-key", `{"room":"a b","payload":"x"}`, 400, "bad_request"},
		{"push no payload", "POST", "/v1/push", "all-key", `{"all":true}`, 400, "bad_request"},
		{"push both payloads", "POST", "/v1/push", "all-key", `{"all":true,"payload":"x","payload_base64":"eA=="}`, 400, "bad_request"},
		{"push bad base64", "POST", "/v1/push", "all-key", `{"all":true,"payload_base64":"!!"}`, 400, "bad_request"},
		{"push oversized", "POST", "/v1/push", "all-key", `{"all":true,"payload":"123456789"}`, 413, "payload_too_large"},
		{"push GET", "GET", "/v1/push", "all-key", ``, 405, "method_not_allowed"},
		{"rooms no device", "POST", "/v1/rooms", "all-key", `{"join":["r"]}`, 400, "bad_request"},
		{"rooms nothing", "POST", "/v1/rooms", "all-key", `{"device":"d1"}`, 400, "bad_request"},
		{"rooms empty name", "POST", "/v1/rooms", "all-key", `{"device":"d1","join":[""]}`, 400, "bad_request"},
		{"rooms too many", "POST", "/v1/rooms", "all-key", `{"device":"d1","join":[` + strings.Repeat(`"r",`, 64) + `"r"]}`, 400, "bad_request"},
		{"rooms offline", "POST", "/v1/rooms", "all-key", `{"device":"d9","join":["r"]}`, 404, "not_online"},
		{"rooms limited key", "POST", "/v1/rooms", "chat-key", `{"device":"d1","join":["r"]}`, 403, "forbidden"},
		{"kick no device", "POST", "/v1/kick", "all-key", `{"reason":"x"}`, 400, "bad_request"},
		{"kick offline", "POST", "/v1/kick", "all-key", `{"device":"d9"}`, 404, "not_online"},
		{"kick long reason", "POST", "/v1/kick", "all-key", `{"device":"d1","reason":"` + strings.Repeat("x", 300) + `"}`, 400, "bad_request"},
		{"kick bad JSON", "POST", "/v1/kick", "all-key", `[]`, 400, "bad_request"},
		{"online no user", "GET", "/v1/online", "all-key", ``, 400, "bad_request"},
		{"online limited key", "GET", "/v1/online?user=alice", "chat-key", ``, 403, "forbidden"},
		{"stats none", "GET", "/v1/stats", "all-key", ``, 400, "bad_request"},
		{"stats both", "GET", "/v1/stats?user=a&device=b", "all-key", ``, 400, "bad_request"},
		{"stats no key", "GET", "/v1/stats?user=a", "", ``, 401, "unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, out := e.do(tt.method, tt.path, tt.key, tt.body)
			if status != tt.status || errCode(out) != tt.code {
				t.Fatalf("%s %s %s = %d %v, want %d %s", tt.method, tt.path, tt.body, status, out, tt.status, tt.code)
			}
		})
	}
	if msgs, _ := e.queuedMsgs(); len(msgs) != 0 {
		t.Fatalf("bad requests queued %d messages", len(msgs))
	}
	e.q.fail.Store(true)
	if status, out := e.do("POST", "/v1/push", "all-key", `{"all":true,"payload":"x"}`); status != http.StatusServiceUnavailable || errCode(out) != "unavailable" {
		t.Fatalf("push with the queue down = %d %v", status, out)
	}
}

func TestKickRoomsOnlineStats(t *testing.T) {
	e := newEnv(t, nil)
	since := e.clk.Now()
	for _, s := range []directory.Session{
		{User: "alice", Device: "d1", Comet: "c1", Key: "k1", Platform: "ios", AppVersion: "1.2.0", Since: since},
		{User: "alice", Device: "d2", Comet: "c2", Key: "k2", Platform: "android", Since: since},
	} {
		if _, err := e.dir.Put(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	if status, out := e.do("POST", "/v1/kick", "all-key", `{"device":"d2","reason":"bye"}`); status != 200 || out["comet"] != "c2" {
		t.Fatalf("kick = %d %v", status, out)
	}
	if status, out := e.do("POST", "/v1/rooms", "all-key", `{"device":"d1","join":["vip"],"leave":["old"]}`); status != 200 {
		t.Fatalf("rooms = %d %v", status, out)
	}
	msgs, keys := e.waitQueued(2)
	if k := msgs[0].GetKick(); keys[0] != "d2" || k.GetComet() != "c2" || k.GetKey() != "k2" || k.GetCode() != 1007 || k.GetReason() != "bye" {
		t.Fatalf("kick msg %q %v", keys[0], msgs[0])
	}
	if r := msgs[1].GetRooms(); keys[1] != "d1" || r.GetDevice() != "d1" || r.Join[0] != "vip" || r.Leave[0] != "old" {
		t.Fatalf("rooms msg %q %v", keys[1], msgs[1])
	}

	status, out := e.do("GET", "/v1/online?user=alice", "all-key", "")
	devs, _ := out["devices"].([]any)
	if status != 200 || len(devs) != 2 {
		t.Fatalf("online = %d %v", status, out)
	}
	d1 := devs[0].(map[string]any)
	if d1["device"] != "d1" || d1["platform"] != "ios" || d1["app_version"] != "1.2.0" || d1["comet"] != "c1" ||
		d1["since"] != since.UTC().Format(time.RFC3339Nano) {
		t.Fatalf("online d1 = %v", d1)
	}
	if status, out := e.do("GET", "/v1/online?user=nobody", "all-key", ""); status != 200 || len(out["devices"].([]any)) != 0 {
		t.Fatalf("online nobody = %d %v", status, out)
	}

	// Stats: 3 chat oplogs to alice, d1 acked 2; 1 lock oplog to d1, unacked.
	for range 3 {
		e.publish(`{"biz":"chat","user":"alice","payload":"x"}`)
	}
	e.publish(`{"biz":"lock","device":"d1","payload":"x"}`)
	if err := e.st.SaveSyncPoints(context.Background(), []store.SyncPoint{{Device: "d1", Channel: "chat/u/alice", ID: 2}}); err != nil {
		t.Fatal(err)
	}
	stats := func(q string) map[string][2]float64 {
		t.Helper()
		status, out := e.do("GET", "/v1/stats?"+q, "all-key", "")
		if status != 200 {
			t.Fatalf("stats %s = %d %v", q, status, out)
		}
		got := map[string][2]float64{}
		for _, b := range out["bizs"].([]any) {
			m := b.(map[string]any)
			got[m["biz"].(string)] = [2]float64{m["published"].(float64), m["delivered"].(float64)}
		}
		return got
	}
	if got := stats("device=d1"); got["chat"] != [2]float64{3, 2} || got["lock"] != [2]float64{1, 0} {
		t.Fatalf("stats device=d1 = %v", got)
	}
	if got := stats("user=alice"); got["chat"] != [2]float64{3, 2} || got["latest"] != [2]float64{0, 0} {
		t.Fatalf("stats user=alice = %v", got)
	}
	if _, ok := stats("user=alice")["lock"]; ok {
		t.Fatal("stats for a user lists a device-target biz")
	}
}
