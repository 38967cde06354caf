package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/pkg/client"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

// realtimeConfig is testConfig plus the real-time knobs under test: heartbeat
// bounds, a small room limit and a small push payload limit.
const realtimeConfig = `
secret: ` + testSecret + `
dev: true # short test keys
api_keys:
  - {key: test-key, bizs: ["*"]}
  - {key: demo-only, bizs: [demo]}
comet:
  addr: 127.0.0.1:0
  ws_addr: 127.0.0.1:0
  heartbeat: 6s # inside [min, max], so AUTH without a wish is told the default
  heartbeat_min: 1s
  heartbeat_max: 10s
  max_rooms: 3
  client_rooms: ["*"]
  auth_timeout: 5s
  ack_timeout: 30s
logic:
  http_addr: 127.0.0.1:0
  max_push_payload: 64
bizs:
  - {name: demo, target: user, ttl: 7d}
  - {name: cmd, target: device, ttl: 1d}
`

func startRealtimeNode(t testing.TB) *node {
	t.Helper()
	return startNodeWith(t, realtimeConfig, "")
}

// pushes returns the payloads ("room|payload") of the PUSH frames received
// so far, in order, without consuming other frames.
func (d *device) pushes() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, f := range d.other {
		if f.Op != protocol.OpPush {
			continue
		}
		var p pb.Push
		if err := protocol.Unmarshal(f, &p); err != nil {
			d.t.Errorf("bad PUSH body: %v", err)
			continue
		}
		out = append(out, p.Room+"|"+string(p.Payload))
	}
	return out
}

// roomOp sends ROOM_JOIN/ROOM_LEAVE and waits for its ROOM_REPLY, which
// must not be a refusal.
func (d *device) roomOp(op protocol.Op, room string) {
	d.t.Helper()
	if r := d.roomReply(op, room); r.Code != 0 {
		d.t.Fatalf("ROOM_REPLY %q refused: %d %s", room, r.Code, r.Message)
	}
}

// roomReply sends ROOM_JOIN/ROOM_LEAVE and returns its ROOM_REPLY.
func (d *device) roomReply(op protocol.Op, room string) *pb.Room {
	d.t.Helper()
	d.mu.Lock()
	d.sendLocked(op, &pb.Room{Room: room})
	seq := d.seq
	d.mu.Unlock()
	f := d.expect(protocol.OpRoomReply, 5*time.Second)
	var r pb.Room
	if err := protocol.Unmarshal(f, &r); err != nil || f.Seq != seq || r.Room != room {
		d.t.Fatalf("ROOM_REPLY seq %d room %q (%v), want seq %d room %q", f.Seq, r.Room, err, seq, room)
	}
	return &r
}

func (n *node) push(t testing.TB, body map[string]any) {
	t.Helper()
	var out map[string]any
	if code := call(t, "POST", n.api()+"/v1/push", "test-key", body, &out); code != 200 || out["queued"] != true {
		t.Fatalf("push %v: %d %v", body, code, out)
	}
}

// metric sums a metric of the node's registry over the series matching labels.
func (n *node) metric(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	fams, err := n.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// settlePushes waits until job routed `routed` push queue messages in total
// and the comet wrote `frames` PUSH frames in total, then checks for a short
// while that no further PUSH frame is written: the negative half of "reaches
// exactly the online targets".
func (n *node) settlePushes(t testing.TB, routed, frames int) {
	t.Helper()
	eventually(t, 5*time.Second, fmt.Sprintf("%d push messages routed", routed), func() bool {
		return n.metric(t, "msync_job_messages_total", map[string]string{"kind": "push"}) >= float64(routed)
	})
	out := map[string]string{"op": "PUSH"}
	eventually(t, 5*time.Second, fmt.Sprintf("%d PUSH frames written (now %v)", frames, n.metric(t, "msync_comet_frames_out_total", out)), func() bool {
		return n.metric(t, "msync_comet_frames_out_total", out) >= float64(frames)
	})
	// Job counts a message when it routes it and writes PUSH frames right
	// after; a wrongly routed push would show up within this window.
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		if got := n.metric(t, "msync_comet_frames_out_total", out); got != float64(frames) {
			t.Fatalf("comet wrote %v PUSH frames, want exactly %d", got, frames)
		}
		time.Sleep(10 * time.Millisecond) // a deliberate window (see above), waiting for nothing
	}
}

// wantPushes waits for d's pushes and compares them with want, ignoring
// order: pushes to different targets (a user, a room) travel in different
// queue partitions, which job consumes concurrently, so their relative order
// is not guaranteed.
func wantPushes(t testing.TB, name string, d *device, want ...string) {
	t.Helper()
	eventually(t, 5*time.Second, name+" pushes", func() bool { return len(d.pushes()) >= len(want) })
	if got := d.pushes(); !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
		t.Fatalf("%s got pushes %q, want %q", name, got, want)
	}
}

// TestRealtimePushTargets: a push to a user, a device, a room or everyone
// reaches exactly the sessions online at that moment (and in the room), is
// never stored, and is not replayed to a device that connects or reconnects
// later.
func TestRealtimePushTargets(t *testing.T) {
	n := startRealtimeNode(t)
	a1, a2, b1 := dial(t, n), dial(t, n), dial(t, n)
	a1.auth(n.token(t, "alice"), "a1", "demo")
	a2.auth(n.token(t, "alice"), "a2", "demo")
	b1.auth(n.token(t, "bob"), "b1", "demo")
	a1.roomOp(protocol.OpRoomJoin, "lobby")
	b1.roomOp(protocol.OpRoomJoin, "other")

	n.push(t, map[string]any{"user": "alice", "payload": "to-alice"})
	n.push(t, map[string]any{"device": "b1", "payload": "to-b1"})
	n.push(t, map[string]any{"device": "c1", "payload": "to-offline-c1"})
	n.push(t, map[string]any{"user": "carol", "payload": "to-offline-carol"})
	n.push(t, map[string]any{"room": "lobby", "payload": "to-lobby"})
	n.push(t, map[string]any{"room": "empty", "payload": "to-nobody"})
	// a1 2 (user, lobby) + a2 1 + b1 1 = 4 frames; offline and empty-room
	// targets none.
	n.settlePushes(t, 6, 4)
	wantPushes(t, "a1", a1, "|to-alice", "lobby|to-lobby")
	wantPushes(t, "a2", a2, "|to-alice")
	wantPushes(t, "b1", b1, "|to-b1")

	n.push(t, map[string]any{"all": true, "payload": "to-all"})
	n.settlePushes(t, 7, 7)
	wantPushes(t, "a1", a1, "|to-alice", "lobby|to-lobby", "|to-all")
	wantPushes(t, "a2", a2, "|to-alice", "|to-all")
	wantPushes(t, "b1", b1, "|to-b1", "|to-all")

	// Nothing of it was stored: no channel has an oplog.
	for _, ch := range []string{"demo/u/alice", "demo/u/bob", "cmd/d/c1"} {
		if maxID, err := n.Store.MaxID(context.Background(), ch); err != nil || maxID != 0 {
			t.Fatalf("%s max id %d (%v) after pushes", ch, maxID, err)
		}
	}

	// Devices coming online later get none of the earlier pushes, and a
	// reconnected session is in no room until it joins again.
	c1 := dial(t, n)
	c1.auth(n.token(t, "carol"), "c1", "demo")
	a1 = a1.reconnect(n)
	a1.auth(n.token(t, "alice"), "a1", "demo")
	// The old a1 session must be gone (and out of its rooms) before the
	// room push, or it could still take it: a1 (new), a2, b1, c1.
	eventually(t, 5*time.Second, "4 sessions", func() bool {
		return n.metric(t, "msync_comet_sessions", nil) == 4
	})
	n.push(t, map[string]any{"room": "lobby", "payload": "lobby-after"})
	n.push(t, map[string]any{"device": "c1", "payload": "c1-now"})
	n.settlePushes(t, 9, 8)
	wantPushes(t, "c1", c1, "|c1-now")
	if got := a1.pushes(); len(got) != 0 {
		t.Fatalf("reconnected a1 got %q", got)
	}
}

// TestRealtimeRoomsByServer: POST /v1/rooms joins and leaves rooms for the
// device's current session.
func TestRealtimeRoomsByServer(t *testing.T) {
	n := startRealtimeNode(t)
	a1, b1 := dial(t, n), dial(t, n)
	a1.auth(n.token(t, "alice"), "a1", "demo")
	b1.auth(n.token(t, "bob"), "b1", "demo")
	rooms := func(body map[string]any) {
		t.Helper()
		var out map[string]any
		if code := call(t, "POST", n.api()+"/v1/rooms", "test-key", body, &out); code != 200 {
			t.Fatalf("rooms %v: %d %v", body, code, out)
		}
	}
	rooms(map[string]any{"device": "a1", "join": []string{"vip", "news"}})
	// Queue messages of different keys are unordered: wait until the join
	// is applied before pushing to the room.
	eventually(t, 5*time.Second, "server-side join", func() bool {
		return n.metric(t, "msync_job_comet_calls_total", map[string]string{"op": "rooms", "result": "ok"}) >= 1
	})
	n.push(t, map[string]any{"room": "vip", "payload": "v1"})
	n.settlePushes(t, 1, 1)
	wantPushes(t, "a1", a1, "vip|v1")

	rooms(map[string]any{"device": "a1", "leave": []string{"vip"}})
	eventually(t, 5*time.Second, "server-side leave", func() bool {
		return n.metric(t, "msync_job_comet_calls_total", map[string]string{"op": "rooms", "result": "ok"}) >= 2
	})
	n.push(t, map[string]any{"room": "vip", "payload": "v2"})
	n.push(t, map[string]any{"room": "news", "payload": "n1"})
	n.settlePushes(t, 3, 2)
	wantPushes(t, "a1", a1, "vip|v1", "news|n1")
	if got := b1.pushes(); len(got) != 0 {
		t.Fatalf("b1 got %q", got)
	}
}

// TestRealtimeKickAndOnline: GET /v1/online lists the user's sessions; POST
// /v1/kick closes one with KICK 1007 and the reason; the device may connect
// again.
func TestRealtimeKickAndOnline(t *testing.T) {
	n := startRealtimeNode(t)
	before := time.Now().Add(-time.Second)
	a1, a2 := dial(t, n), dial(t, n)
	a1.authAsRT(n.token(t, "alice"), "a1", "ios", "5.1.0", "demo")
	a2.authAsRT(n.token(t, "alice"), "a2", "android", "", "demo")

	type dev struct {
		Device, Platform, Comet string
		AppVersion              string    `json:"app_version"`
		Since                   time.Time `json:"since"`
	}
	var online struct {
		User    string `json:"user"`
		Devices []dev  `json:"devices"`
	}
	if code := call(t, "GET", n.api()+"/v1/online?user=alice", "test-key", nil, &online); code != 200 || len(online.Devices) != 2 {
		t.Fatalf("online: %d %+v", code, online)
	}
	d := online.Devices[0]
	if d.Device != "a1" || d.Platform != "ios" || d.AppVersion != "5.1.0" || d.Comet != n.Comet.ID() || d.Since.Before(before) || d.Since.After(time.Now()) {
		t.Fatalf("online a1: %+v", d)
	}

	var out map[string]any
	if code := call(t, "POST", n.api()+"/v1/kick", "test-key", map[string]any{"device": "a2", "reason": "support session ended"}, &out); code != 200 {
		t.Fatalf("kick: %d %v", code, out)
	}
	eventually(t, 5*time.Second, "KICK", func() bool {
		a2.mu.Lock()
		defer a2.mu.Unlock()
		return len(a2.kicks) > 0
	})
	a2.mu.Lock()
	k := a2.kicks[0]
	a2.mu.Unlock()
	if protocol.Code(k.Code) != protocol.CodeKicked || k.Reason != "support session ended" {
		t.Fatalf("KICK %d %q, want 1007 with the reason", k.Code, k.Reason)
	}
	a2.expectClosed(5 * time.Second)
	eventually(t, 5*time.Second, "a2 offline", func() bool {
		call(t, "GET", n.api()+"/v1/online?user=alice", "test-key", nil, &online)
		return len(online.Devices) == 1 && online.Devices[0].Device == "a1"
	})
	// Reconnect allowed: 1007 is in the 1xxx range.
	a2 = dial(t, n)
	a2.auth(n.token(t, "alice"), "a2", "demo")
	if code := call(t, "POST", n.api()+"/v1/kick", "test-key", map[string]any{"device": "zz"}, &out); code != 404 {
		t.Fatalf("kick offline device: %d %v", code, out)
	}
}

// authAsRT authenticates with a platform and app version.
func (d *device) authAsRT(token, id, platform, version string, bizs ...string) *pb.AuthReply {
	d.t.Helper()
	d.mu.Lock()
	d.sendLocked(protocol.OpAuth, &pb.Auth{Token: token, Device: id, Platform: platform, AppVersion: version, Bizs: bizs})
	d.mu.Unlock()
	var r pb.AuthReply
	if err := protocol.Unmarshal(d.expect(protocol.OpAuthReply, 5*time.Second), &r); err != nil {
		d.t.Fatal(err)
	}
	return &r
}

// TestRealtimeReplacedSessionGetsKick: a second connection of the same
// device makes the server send the first one KICK 1006 with the reason, then
// close it; the second session works.
func TestRealtimeReplacedSessionGetsKick(t *testing.T) {
	n := startRealtimeNode(t)
	first := dial(t, n)
	first.auth(n.token(t, "alice"), "dev1", "demo")
	second := dial(t, n)
	second.auth(n.token(t, "alice"), "dev1", "demo")
	eventually(t, 5*time.Second, "KICK on the first session", func() bool {
		first.mu.Lock()
		defer first.mu.Unlock()
		return len(first.kicks) > 0
	})
	first.mu.Lock()
	k := first.kicks[0]
	first.mu.Unlock()
	if protocol.Code(k.Code) != protocol.CodeReplaced || !strings.Contains(k.Reason, "replaced") {
		t.Fatalf("KICK %d %q, want 1006 saying it was replaced", k.Code, k.Reason)
	}
	first.expectClosed(5 * time.Second)
	id := n.publish(t, toUser("alice", "after")).ID
	second.waitGot(1, 5*time.Second)
	checkInOrder(t, second, "demo/u/alice", id, id, nil)
}

// TestRealtimeHeartbeatNegotiation: the client's wish in AUTH and HEARTBEAT
// is clamped into [heartbeat_min, heartbeat_max]; no wish gets the default.
func TestRealtimeHeartbeatNegotiation(t *testing.T) {
	n := startRealtimeNode(t)
	for _, tt := range []struct {
		wish uint32
		want uint32
	}{{0, 6000}, {5000, 5000}, {100, 1000}, {600000, 10000}} {
		d := dial(t, n)
		d.sendMsg(protocol.OpAuth, &pb.Auth{Token: n.token(t, "alice"), Device: fmt.Sprintf("hb-%d", tt.wish), Platform: "ios", HeartbeatMs: tt.wish})
		var r pb.AuthReply
		if err := protocol.Unmarshal(d.expect(protocol.OpAuthReply, 5*time.Second), &r); err != nil {
			t.Fatal(err)
		}
		if r.HeartbeatMs != tt.want {
			t.Fatalf("AUTH wish %d: heartbeat_ms %d, want %d", tt.wish, r.HeartbeatMs, tt.want)
		}
	}
	d := dial(t, n)
	d.auth(n.token(t, "bob"), "hb-renegotiate", "demo")
	for _, tt := range []struct{ wish, want uint32 }{{4000, 4000}, {0, 4000}, {999999, 10000}, {1, 1000}} {
		d.sendMsg(protocol.OpHeartbeat, &pb.Heartbeat{IntervalMs: tt.wish})
		var hr pb.HeartbeatReply
		if err := protocol.Unmarshal(d.expect(protocol.OpHeartbeatReply, 5*time.Second), &hr); err != nil {
			t.Fatal(err)
		}
		if hr.IntervalMs != tt.want {
			t.Fatalf("HEARTBEAT wish %d: interval %d, want %d", tt.wish, hr.IntervalMs, tt.want)
		}
	}
	// At 1 s the deadline is 3x1s+5s: a session that goes silent now is
	// closed with 1002 well before the default interval's 23 s.
	d.expectError(protocol.CodeHeartbeatTimeout, 10*time.Second)
}

// TestRealtimeStats: published counts follow the channels, delivered counts
// follow what devices acked.
func TestRealtimeStats(t *testing.T) {
	n := startRealtimeNode(t)
	d := dial(t, n)
	d.auth(n.token(t, "alice"), "a1", "demo", "cmd")
	for i := range 3 {
		n.publish(t, toUser("alice", fmt.Sprint(i)))
	}
	n.publish(t, map[string]any{"biz": "cmd", "device": "zz", "payload": "not a1's"})
	d.waitGot(3, 5*time.Second)
	n.serverPointRT(t, "a1", "demo/u/alice", 3)
	n.publish(t, map[string]any{"biz": "cmd", "device": "a1", "payload": "x"})
	d.waitGot(4, 5*time.Second)
	n.serverPointRT(t, "a1", "cmd/d/a1", 1)

	type st struct {
		Biz                  string
		Published, Delivered uint64
	}
	var out struct {
		Bizs []st `json:"bizs"`
	}
	if code := call(t, "GET", n.api()+"/v1/stats?device=a1", "test-key", nil, &out); code != 200 {
		t.Fatalf("stats: %d", code)
	}
	if want := []st{{"cmd", 1, 1}, {"demo", 3, 3}}; !slices.Equal(out.Bizs, want) {
		t.Fatalf("stats device=a1 %+v, want %+v", out.Bizs, want)
	}
	n.publish(t, toUser("alice", "late"))
	if code := call(t, "GET", n.api()+"/v1/stats?user=alice", "test-key", nil, &out); code != 200 {
		t.Fatalf("stats: %d", code)
	}
	got := map[string]st{}
	for _, s := range out.Bizs {
		got[s.Biz] = s
	}
	if s := got["demo"]; s.Published != 4 || s.Delivered < 3 {
		t.Fatalf("stats user=alice demo %+v, want published 4, delivered >= 3", s)
	}
}

func (n *node) serverPointRT(t testing.TB, device, channel string, want uint64) {
	t.Helper()
	eventually(t, 5*time.Second, fmt.Sprintf("server point %s %s = %d", device, channel, want), func() bool {
		pts, err := n.Store.SyncPoints(context.Background(), device)
		return err == nil && pts[channel] >= want
	})
}

// TestRealtimeBadInput: every new endpoint and op answers bad input with its
// documented error.
func TestRealtimeBadInput(t *testing.T) {
	n := startRealtimeNode(t)
	a := dial(t, n)
	a.auth(n.token(t, "alice"), "a1", "demo")
	for _, tt := range []struct {
		name, method, path, key string
		body                    any
		status                  int
		code                    string
	}{
		{"push bad JSON", "POST", "/v1/push", "test-key", `{"all":tru`, 400, "bad_request"},
		{"push bad key", "POST", "/v1/push", "wrong", map[string]any{"all": true, "payload": "x"}, 401, "unauthorized"},
		{"push limited key", "POST", "/v1/push", "demo-only", map[string]any{"all": true, "payload": "x"}, 403, "forbidden"},
		{"push unknown target", "POST", "/v1/push", "test-key", map[string]any{"group": "g", "payload": "x"}, 400, "bad_request"},
		{"push no target", "POST", "/v1/push", "test-key", map[string]any{"payload": "x"}, 400, "bad_request"},
		{"push oversized", "POST", "/v1/push", "test-key", map[string]any{"all": true, "payload": strings.Repeat("x", 65)}, 413, "payload_too_large"},
		{"push empty room", "POST", "/v1/push", "test-key", `{"room":"","payload":"x"}`, 400, "bad_request"},
		{"rooms bad JSON", "POST", "/v1/rooms", "test-key", `nope`, 400, "bad_request"},
		{"rooms empty name", "POST", "/v1/rooms", "test-key", map[string]any{"device": "a1", "join": []string{""}}, 400, "bad_request"},
		{"rooms offline", "POST", "/v1/rooms", "test-key", map[string]any{"device": "zz", "join": []string{"r"}}, 404, "not_online"},
		{"kick bad key", "POST", "/v1/kick", "", map[string]any{"device": "a1"}, 401, "unauthorized"},
		{"kick bad device", "POST", "/v1/kick", "test-key", map[string]any{"device": strings.Repeat("d", 200)}, 400, "bad_request"},
		{"online no user", "GET", "/v1/online", "test-key", nil, 400, "bad_request"},
		{"stats bad owner", "GET", "/v1/stats?user=a&device=b", "test-key", nil, 400, "bad_request"},
		{"stats wrong method", "POST", "/v1/stats?user=a", "test-key", nil, 405, "method_not_allowed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out struct {
				Error *struct{ Code, Message string } `json:"error"`
			}
			code := call(t, tt.method, n.api()+tt.path, tt.key, tt.body, &out)
			if code != tt.status || out.Error == nil || out.Error.Code != tt.code || out.Error.Message == "" {
				t.Fatalf("%s %s: %d %+v, want %d %s", tt.method, tt.path, code, out.Error, tt.status, tt.code)
			}
		})
	}
	// The good session is untouched by all that.
	if got := a.pushes(); len(got) != 0 {
		t.Fatalf("a1 got %q", got)
	}

	// Room ops: before AUTH, empty name (too many rooms: TestRealtimeRoomLimit).
	for _, tt := range []struct {
		name string
		run  func(d *device)
		code protocol.Code
	}{
		{"join before auth", func(d *device) { d.sendMsg(protocol.OpRoomJoin, &pb.Room{Room: "r"}) }, protocol.CodeNotAuthed},
		{"empty room name", func(d *device) {
			d.auth(n.token(t, "bob"), "b-empty", "demo")
			d.sendMsg(protocol.OpRoomJoin, &pb.Room{})
		}, protocol.CodeBadFrame},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := dial(t, n)
			tt.run(d)
			d.expectError(tt.code, 5*time.Second)
		})
	}
}

// TestRealtimeSDK: the Go SDK hands pushes to OnPush, joins rooms, and joins
// them again after a reconnect (here: a kick).
func TestRealtimeSDK(t *testing.T) {
	n := startRealtimeNode(t)
	var got recorder[client.Push]
	var connects atomic.Int32
	c := newSDK(t, n.Comet.Addr().String(), client.Options{
		TokenProvider: func(context.Context) (string, error) { return n.token(t, "alice"), nil },
		Device:        "sdk-1",
		Heartbeat:     3 * time.Second,
		BackoffMin:    10 * time.Millisecond,
		BackoffMax:    50 * time.Millisecond,
		OnEvent: func(e client.Event) {
			if e.Kind == client.EventConnected {
				connects.Add(1)
			}
		},
		OnPush: got.add,
	}, map[string]client.Handler{"demo": ignore})
	if err := c.JoinRoom("lobby"); err != nil {
		t.Fatal(err)
	}
	if err := c.JoinRoom("bad room"); err == nil {
		t.Fatal("JoinRoom accepted a name with a space")
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	pushesOf := func() []string {
		var out []string
		for _, p := range got.all() {
			out = append(out, p.Room+"|"+string(p.Payload))
			if p.Created.IsZero() {
				t.Errorf("push %q without created time", p.Payload)
			}
		}
		return out
	}
	// The room join is sent right after AUTH_REPLY, concurrently with the
	// app's first calls: push to the room every 100ms until one arrives.
	pushUntil := func(what string, body map[string]any, want string) {
		t.Helper()
		testutil.Eventually(t, 10*time.Second, 0, func() error {
			n.push(t, body)
			return testutil.Poll(100*time.Millisecond, 5*time.Millisecond, func() error {
				if got := pushesOf(); !slices.Contains(got, want) {
					return fmt.Errorf("%s: SDK got pushes %q", what, got)
				}
				return nil
			})
		})
	}
	eventually(t, 5*time.Second, "connected", func() bool { return connects.Load() == 1 })
	pushUntil("room push via SDK", map[string]any{"room": "lobby", "payload": "hello"}, "lobby|hello")
	n.push(t, map[string]any{"user": "alice", "payload": "direct"})
	eventually(t, 5*time.Second, "user push via SDK", func() bool { return slices.Contains(pushesOf(), "|direct") })

	// Kick: the SDK reconnects and joins the room again.
	var out map[string]any
	if code := call(t, "POST", n.api()+"/v1/kick", "test-key", map[string]any{"device": "sdk-1"}, &out); code != 200 {
		t.Fatalf("kick: %d %v", code, out)
	}
	eventually(t, 10*time.Second, "reconnected", func() bool { return connects.Load() == 2 })
	pushUntil("room push after reconnect", map[string]any{"room": "lobby", "payload": "again"}, "lobby|again")
	if err := c.LeaveRoom("lobby"); err != nil {
		t.Fatal(err)
	}
	if rooms := c.Rooms(); len(rooms) != 0 {
		t.Fatalf("rooms after leave: %v", rooms)
	}
	var online struct {
		Devices []struct{ Device string } `json:"devices"`
	}
	if code := call(t, "GET", n.api()+"/v1/online?user=alice", "test-key", nil, &online); code != http.StatusOK || len(online.Devices) != 1 {
		t.Fatalf("online after reconnect: %d %+v", code, online)
	}
}

// TestRealtimeRoomLimit: a ROOM_JOIN beyond comet.max_rooms (3 here) is
// refused with ROOM_REPLY code 3001 and the connection stays up: the session
// is not in that room, and after leaving another one it can join it.
func TestRealtimeRoomLimit(t *testing.T) {
	n := startRealtimeNode(t)
	d := dial(t, n)
	d.auth(n.token(t, "bob"), "b-many", "demo")
	for i := range 3 {
		d.roomOp(protocol.OpRoomJoin, fmt.Sprint("r", i))
	}
	if r := d.roomReply(protocol.OpRoomJoin, "r3"); r.Code != uint32(protocol.CodeTooManyRooms) || r.Message == "" {
		t.Fatalf("4th join: ROOM_REPLY code %d %q, want %d with a reason", r.Code, r.Message, protocol.CodeTooManyRooms)
	}
	n.push(t, map[string]any{"room": "r3", "payload": "not-in-r3"})
	n.push(t, map[string]any{"room": "r0", "payload": "fence"})
	wantPushes(t, "b-many", d, "r0|fence") // r3's push would have come first
	d.roomOp(protocol.OpRoomLeave, "r0")
	d.roomOp(protocol.OpRoomJoin, "r3")
	n.push(t, map[string]any{"room": "r3", "payload": "in-r3"})
	wantPushes(t, "b-many", d, "r0|fence", "r3|in-r3")
}

// TestRealtimeSDKRoomLimit: an SDK that joins more rooms than the comet's
// max_rooms (3 here, below the SDK's own 64) is refused the extra room and
// keeps its connection: no stop, no reconnect, the other rooms still work.
func TestRealtimeSDKRoomLimit(t *testing.T) {
	n := startRealtimeNode(t)
	var mu sync.Mutex
	var events []client.Event
	var got []string
	c, err := client.New(n.Comet.Addr().String(), client.Options{
		TokenProvider: func(context.Context) (string, error) { return n.token(t, "alice"), nil },
		Device:        "sdk-limit-1",
		BackoffMin:    10 * time.Millisecond,
		BackoffMax:    50 * time.Millisecond,
		OnEvent: func(e client.Event) {
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
		},
		OnPush: func(p client.Push) {
			mu.Lock()
			got = append(got, p.Room+"|"+string(p.Payload))
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RegisterBiz("demo", func(context.Context, client.Oplog) error { return nil }); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if err := c.JoinRoom(fmt.Sprint("r", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Shutdown(ctx); err != nil {
			t.Errorf("client shutdown: %v", err)
		}
	})
	kinds := func() (refused []client.Event, other []client.EventKind) {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range events {
			if e.Kind == client.EventRoomRefused {
				refused = append(refused, e)
			} else {
				other = append(other, e.Kind)
			}
		}
		return refused, other
	}
	// Rooms are joined in sorted order after AUTH_REPLY: r3 is the fourth.
	eventually(t, 10*time.Second, "one room refusal", func() bool { r, _ := kinds(); return len(r) >= 1 })
	if r, o := kinds(); len(r) != 1 || r[0].Room != "r3" || r[0].Code != protocol.CodeTooManyRooms || r[0].Reason == "" {
		t.Fatalf("refusals %+v (other events %v), want one for r3 with code %d and a reason", r, o, protocol.CodeTooManyRooms)
	}
	if rooms := c.Rooms(); !slices.Equal(rooms, []string{"r0", "r1", "r2"}) {
		t.Fatalf("Rooms() = %v after the refusal, want r0-r2", rooms)
	}
	// The same connection still serves rooms: r2's ROOM_REPLY came before
	// r3's refusal, so a push to r2 now arrives; nothing stopped or
	// reconnected.
	n.push(t, map[string]any{"room": "r2", "payload": "still-up"})
	eventually(t, 10*time.Second, "push to r2", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(got, "r2|still-up")
	})
	if _, other := kinds(); !slices.Equal(other, []client.EventKind{client.EventConnected}) {
		t.Fatalf("events besides the refusal: %v, want only one connected", other)
	}
}
