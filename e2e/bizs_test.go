package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/pkg/client"
	"github.com/msync/msync/pkg/directory"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

// bizsConfig is testConfig's node with one biz per sync configuration of
// docs/protocol.md §16; the shared testConfig stays untouched.
const bizsConfig = `
secret: ` + testSecret + `
dev: true # short test keys
api_keys:
  - {key: test-key, bizs: ["*"]}
comet:
  addr: 127.0.0.1:0
  ws_addr: 127.0.0.1:0
  heartbeat: 10s
  auth_timeout: 5s
  ack_timeout: 30s
  page_limit: 50
  write_queue_bytes: 1048576
logic:
  http_addr: 127.0.0.1:0
bizs:
  - {name: gnews, target: user, scope: global, backlog: "latest:3"}
  - {name: gcmd, target: device, scope: global}
  - {name: feed, target: user}
  - {name: recent, target: user, backlog: "latest:3"}
  - {name: inbox, target: user, multi_device: false}
  - {name: account, target: user, consistency: true}
  - {name: live, target: user, persistent: false}
`

// authAs is device.auth with a platform and app version.
func (d *device) authAs(token, id, platform, version string, bizs ...string) *pb.AuthReply {
	d.t.Helper()
	d.mu.Lock()
	req := &pb.Auth{Token: token, Device: id, Platform: platform, AppVersion: version, Bizs: bizs}
	for ch, p := range d.points {
		req.Points = append(req.Points, &pb.ChannelPoint{Channel: ch, Id: p})
	}
	d.sendLocked(protocol.OpAuth, req)
	d.mu.Unlock()
	var r pb.AuthReply
	if err := protocol.Unmarshal(d.expect(protocol.OpAuthReply, 5*time.Second), &r); err != nil {
		d.t.Fatal(err)
	}
	return &r
}

// ids returns the ids the device got on channel, in arrival order.
func (d *device) ids(channel string) []uint64 {
	var out []uint64
	for _, r := range d.received() {
		if r.Channel == channel {
			out = append(out, r.ID)
		}
	}
	return out
}

func (d *device) point(channel string) uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.points[channel]
}

func (d *device) skippedOf(channel string) uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.skipped[channel]
}

// settle waits until the device's point on channel reaches upto (so every
// page up to there was applied) and checks it got exactly want, in order,
// with no duplicate and no gap.
func (d *device) settle(channel string, upto uint64, want ...uint64) {
	d.t.Helper()
	eventually(d.t, 5*time.Second, channel+" point", func() bool { return d.point(channel) >= upto })
	if got := d.ids(channel); !slices.Equal(got, want) {
		d.t.Fatalf("%s: got ids %v, want %v", channel, got, want)
	}
	if dups, gaps := d.violations(); dups != 0 || gaps != 0 {
		d.t.Fatalf("%s: %d duplicates, %d gaps", channel, dups, gaps)
	}
}

// barrier makes sure the comet handled everything queued for this session
// before now (pushes and frames are handled in order).
func (d *device) barrier() {
	d.t.Helper()
	d.sendMsg(protocol.OpHeartbeat, &pb.Heartbeat{})
	d.expect(protocol.OpHeartbeatReply, 5*time.Second)
}

// serverPoint waits for the server-side sync point of (device, channel).
func (n *node) serverPoint(t testing.TB, device, channel string, want uint64) {
	t.Helper()
	eventually(t, 5*time.Second, "server point of "+device, func() bool {
		pts, err := n.Store.SyncPoints(context.Background(), device)
		return err == nil && pts[channel] == want
	})
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// Global scope: one channel for everyone, each device with its own point;
// live pushes reach every online device, filters are applied per device and
// advance its point silently; backlog latest:N jumps and says so.
func TestBizGlobalFiltersLatestN(t *testing.T) {
	n := startNodeWith(t, bizsConfig, "")
	const ch = "gnews/g"
	a := dial(t, n)
	a.authAs(n.token(t, "alice"), "a-ios", "ios", "1.0.0", "gnews")
	b := dial(t, n)
	b.authAs(n.token(t, "bob"), "b-android", "android", "2.0.0", "gnews")
	pub := func(filters map[string]any) {
		req := map[string]any{"biz": "gnews", "global": true, "payload": "x"}
		if filters != nil {
			req["filters"] = filters
		}
		n.publish(t, req)
	}
	// One oplog first, so both channels are live before the burst (a burst
	// during the initial sync would be a backlog, where latest:3 applies).
	pub(nil)
	a.settle(ch, 1, 1)
	b.settle(ch, 1, 1)
	pub(map[string]any{"platforms": []string{"android"}}) // 2
	pub(nil)                                              // 3
	pub(map[string]any{"min_version": "2.0"})             // 4
	pub(map[string]any{"platforms": []string{"ios", "android"}})
	pub(nil) // 6
	a.settle(ch, 6, 1, 3, 5, 6)
	b.settle(ch, 6, 1, 2, 3, 4, 5, 6)
	n.serverPoint(t, "a-ios", ch, 6)

	// Offline: 10 more; latest:3 keeps 14..16 of which 14 is android only.
	a = a.reconnect(n)
	a.close()
	b = b.reconnect(n)
	b.close()
	for i := 7; i <= 16; i++ {
		if i == 14 {
			pub(map[string]any{"platforms": []string{"android"}})
		} else {
			pub(nil)
		}
	}
	a = a.reconnect(n)
	a.authAs(n.token(t, "alice"), "a-ios", "ios", "1.0.0", "gnews")
	b = b.reconnect(n)
	b.authAs(n.token(t, "bob"), "b-android", "android", "2.0.0", "gnews")
	a.settle(ch, 16, 15, 16)
	b.settle(ch, 16, 14, 15, 16)
	if s := a.skippedOf(ch); s != 7 {
		t.Fatalf("a: skipped %d, want 7 (8..13 plus 7)", s)
	}
	if s := b.skippedOf(ch); s != 7 {
		t.Fatalf("b: skipped %d, want 7", s)
	}
	// A device that never synced: latest 3 of 16, skipped 13.
	c := dial(t, n)
	c.authAs(n.token(t, "carol"), "c-web", "web", "3.0", "gnews")
	c.settle(ch, 16, 15, 16)
	if s := c.skippedOf(ch); s != 13 {
		t.Fatalf("c: skipped %d, want 13", s)
	}
	// Live again after the backlog, to every device.
	pub(nil)
	for _, d := range []*device{a, b, c} {
		eventually(t, 5*time.Second, "live 17", func() bool { return d.point(ch) == 17 })
		if got := d.ids(ch); got[len(got)-1] != 17 {
			t.Fatalf("last id %d, want 17", got[len(got)-1])
		}
	}
}

// Global scope with target device: every registered device gets every
// oplog, online live and offline from the backlog (policy all).
func TestBizGlobalDeviceTarget(t *testing.T) {
	n := startNodeWith(t, bizsConfig, "")
	const ch = "gcmd/g"
	on := dial(t, n)
	on.authAs(n.token(t, "u1"), "dev-on", "ios", "1.0.0", "gcmd")
	other := dial(t, n) // registered another biz only: must not get gcmd
	other.authAs(n.token(t, "u2"), "dev-other", "ios", "1.0.0", "feed")
	for range 5 {
		n.publish(t, map[string]any{"biz": "gcmd", "global": true, "payload": "cmd"})
	}
	on.settle(ch, 5, 1, 2, 3, 4, 5)
	off := dial(t, n)
	off.authAs(n.token(t, "u3"), "dev-off", "android", "1.0.0", "gcmd")
	off.settle(ch, 5, 1, 2, 3, 4, 5)
	other.barrier()
	if got := other.received(); len(got) != 0 {
		t.Fatalf("device without gcmd got %v", got)
	}
	// Publishing to a global biz with an owner is refused.
	var res publishResult
	if code := call(t, "POST", n.api()+"/v1/sync", "test-key", map[string]any{"biz": "gcmd", "device": "dev-on", "payload": "x"}, &res); code != 400 {
		t.Fatalf("owner on a global biz: status %d", code)
	}
}

// Filters on an appointed channel: filtered oplogs advance the point
// silently, live and from the backlog; never a hole, never a resend.
func TestBizFiltersAdvanceSilently(t *testing.T) {
	n := startNodeWith(t, bizsConfig, "")
	const ch = "feed/u/dora"
	d := dial(t, n)
	d.authAs(n.token(t, "dora"), "dora-1", "harmony", "5.2.0", "feed")
	pub := func(filters map[string]any) {
		req := map[string]any{"biz": "feed", "user": "dora", "payload": "p"}
		if filters != nil {
			req["filters"] = filters
		}
		n.publish(t, req)
	}
	match := []map[string]any{nil, {"platforms": []string{"HARMONY"}}, {"min_version": "5.2", "max_version": "5.10"}}
	miss := []map[string]any{{"platforms": []string{"ios"}}, {"min_version": "5.3"}, {"max_version": "5.1.9"}}
	// live: 1 ok, 2 miss, 3 miss, 4 ok, 5 miss, 6 ok, 7 miss, 8 ok. A skipped
	// live oplog costs no frame: the next page's after covers it (7 here).
	pub(match[0])
	pub(miss[0])
	pub(miss[1])
	pub(match[1])
	pub(miss[2])
	pub(match[2])
	pub(miss[0])
	pub(match[0])
	d.settle(ch, 8, 1, 4, 6, 8)
	n.serverPoint(t, "dora-1", ch, 8)
	// backlog: the same pattern while offline, ending with filtered ones
	d = d.reconnect(n)
	d.close()
	pub(miss[1])  // 9
	pub(match[0]) // 10
	pub(miss[2])  // 11
	pub(miss[0])  // 12
	pub(match[1]) // 13
	pub(miss[1])  // 14
	d = d.reconnect(n)
	d.authAs(n.token(t, "dora"), "dora-1", "harmony", "5.2.0", "feed")
	d.settle(ch, 14, 10, 13)
	n.serverPoint(t, "dora-1", ch, 14)
	// A device without an app version matches no version-bounded oplog.
	nv := dial(t, n)
	nv.authAs(n.token(t, "dora"), "dora-2", "harmony", "", "feed")
	nv.settle(ch, 14, 1, 4, 8, 10, 13)
}

// Backlog latest:N through the SDK: the app gets the newest N in order and
// an EventSkipped with the count, never a silent gap.
func TestBizLatestNSkippedSDK(t *testing.T) {
	n := startNodeWith(t, bizsConfig, "")
	const ch = "recent/u/erin"
	for range 10 {
		n.publish(t, map[string]any{"biz": "recent", "user": "erin", "payload": "r"})
	}
	var got recorder[client.Oplog]
	var skippedEvents recorder[client.Event]
	tok := n.token(t, "erin")
	c := startSDK(t, n.Comet.Addr().String(), client.Options{
		TokenProvider: func(context.Context) (string, error) { return tok, nil },
		Device:        "erin-1", Platform: "ios", AppVersion: "1.0.0",
		OnEvent: func(e client.Event) {
			if e.Kind == client.EventSkipped {
				skippedEvents.add(e)
			}
		},
	}, map[string]client.Handler{"recent": oplogs(&got)})
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, func() error {
		if p := c.SyncPoint(ch); p != 10 {
			return fmt.Errorf("SDK sync point %d, want 10; handler got %v", p, idsOf(got.all()))
		}
		return nil
	})
	if ids := idsOf(got.all()); !slices.Equal(ids, []uint64{8, 9, 10}) {
		t.Fatalf("handler got %v, want [8 9 10]", ids)
	}
	skipped := skippedEvents.all()
	if len(skipped) != 1 || skipped[0].Count != 7 || skipped[0].Channel != ch || skipped[0].Biz != "recent" {
		t.Fatalf("skipped events %+v, want one with count 7", skipped)
	}
}

// valid_from while online: nothing before it, delivered at it without any
// other traffic, and what was published after it waits behind it (order).
func TestBizValidFromOnline(t *testing.T) {
	n := startNodeWith(t, bizsConfig, "")
	const ch = "feed/u/fay"
	d := dial(t, n)
	d.authAs(n.token(t, "fay"), "fay-1", "ios", "1.0.0", "feed")
	n.publish(t, map[string]any{"biz": "feed", "user": "fay", "payload": "now"})
	d.settle(ch, 1, 1)
	from := time.Now().Add(1500 * time.Millisecond)
	n.publish(t, map[string]any{"biz": "feed", "user": "fay", "payload": "later", "valid_from": rfc3339(from)})
	n.publish(t, map[string]any{"biz": "feed", "user": "fay", "payload": "after"})
	for time.Until(from) > 150*time.Millisecond {
		if got := d.ids(ch); len(got) != 1 {
			t.Fatalf("got %v %v before valid_from", got, time.Until(from))
		}
		time.Sleep(20 * time.Millisecond) // deliberate: watch that nothing arrives before valid_from
	}
	d.settle(ch, 3, 1, 2, 3)
	if late := time.Since(from); late > time.Second {
		t.Fatalf("delivered %v after valid_from", late)
	}
}

// valid_from while offline: a device connecting before valid_from gets it
// at valid_from (backlog page stops before it; the comet's timer resyncs).
func TestBizValidFromOffline(t *testing.T) {
	n := startNodeWith(t, bizsConfig, "")
	const ch = "feed/u/gus"
	from := time.Now().Add(1500 * time.Millisecond)
	n.publish(t, map[string]any{"biz": "feed", "user": "gus", "payload": "a"})
	n.publish(t, map[string]any{"biz": "feed", "user": "gus", "payload": "later", "valid_from": rfc3339(from)})
	n.publish(t, map[string]any{"biz": "feed", "user": "gus", "payload": "b"})
	d := dial(t, n)
	d.authAs(n.token(t, "gus"), "gus-1", "ios", "1.0.0", "feed")
	d.settle(ch, 1, 1)
	for time.Until(from) > 150*time.Millisecond {
		if got := d.ids(ch); len(got) != 1 {
			t.Fatalf("got %v before valid_from", got)
		}
		time.Sleep(20 * time.Millisecond) // deliberate: watch that nothing arrives before valid_from
	}
	d.settle(ch, 3, 1, 2, 3)
	if late := time.Since(from); late > time.Second {
		t.Fatalf("delivered %v after valid_from", late)
	}
}

// Expiry while offline: expired oplogs are never delivered, also not from
// the backlog, and the point moves past them.
func TestBizExpiryWhileOffline(t *testing.T) {
	n := startNodeWith(t, bizsConfig, "")
	const ch = "feed/u/hal"
	n.publish(t, map[string]any{"biz": "feed", "user": "hal", "payload": "short", "ttl": "1s"})
	n.publish(t, map[string]any{"biz": "feed", "user": "hal", "payload": "keep"})
	n.publish(t, map[string]any{"biz": "feed", "user": "hal", "payload": "until", "valid_until": rfc3339(time.Now().Add(time.Second))})
	n.publish(t, map[string]any{"biz": "feed", "user": "hal", "payload": "short2", "ttl": "1s"})
	time.Sleep(1100 * time.Millisecond) // deliberate: the validity windows end on the wall clock every tier reads
	d := dial(t, n)
	d.authAs(n.token(t, "hal"), "hal-1", "ios", "1.0.0", "feed")
	d.settle(ch, 4, 2)
	n.serverPoint(t, "hal-1", ch, 4)
}

// multi_device false: the user's devices share one sync point. Live pushes
// go to every online device; what one device acked is not sent to another
// that connects later (with its own lower point or with none).
func TestBizMultiDeviceShared(t *testing.T) {
	n := startNodeWith(t, bizsConfig, "")
	const ch = "inbox/u/ivy"
	tok := n.token(t, "ivy")
	pub := func() { n.publish(t, map[string]any{"biz": "inbox", "user": "ivy", "payload": "m"}) }
	a := dial(t, n)
	a.authAs(tok, "ivy-a", "ios", "1.0.0", "inbox")
	b := dial(t, n)
	b.authAs(tok, "ivy-b", "android", "1.0.0", "inbox")
	pub()
	pub()
	pub()
	a.settle(ch, 3, 1, 2, 3)
	b.settle(ch, 3, 1, 2, 3)

	// b offline; a takes 4 and 5.
	b = b.reconnect(n)
	b.close()
	pub()
	pub()
	a.settle(ch, 5, 1, 2, 3, 4, 5)
	n.serverPoint(t, "ivy-a", ch, 5) // the shared point is saved in the same batch
	// b comes back with its point 3: 4 and 5 are covered, not sent.
	b = b.reconnect(n)
	b.authAs(tok, "ivy-b", "android", "1.0.0", "inbox")
	b.settle(ch, 5)
	if got := b.ids(ch); len(got) != 0 {
		t.Fatalf("b got %v after a acked them", got)
	}
	pub() // 6: both online, both get it live
	a.settle(ch, 6, 1, 2, 3, 4, 5, 6)
	b.settle(ch, 6, 6)
	n.serverPoint(t, "ivy-b", ch, 6)

	// A new device without points starts at the shared point.
	c := dial(t, n)
	r := c.authAs(tok, "ivy-c", "web", "1.0.0", "inbox")
	if len(r.Channels) != 1 || r.Channels[0].From != 6 {
		t.Fatalf("new device: channels %v, want from 6", r.Channels)
	}
	c.close()

	// Both offline: 7, 8; a syncs them; b then gets nothing old, only 9.
	a = a.reconnect(n)
	a.close()
	b = b.reconnect(n)
	b.close()
	pub()
	pub()
	a = a.reconnect(n)
	a.authAs(tok, "ivy-a", "ios", "1.0.0", "inbox")
	a.settle(ch, 8, 7, 8)
	n.serverPoint(t, "ivy-a", ch, 8)
	a.close()
	b = b.reconnect(n)
	b.authAs(tok, "ivy-b", "android", "1.0.0", "inbox")
	b.settle(ch, 8)
	pub()
	b.settle(ch, 9, 9)
}

// consistency true: a user-target oplog reaches only devices where that
// user is the latest to have logged in, also a stale session of a device
// that switched user, live and from the backlog.
func TestBizConsistencySwitchedUser(t *testing.T) {
	n := startNodeWith(t, bizsConfig, "")
	const ch = "account/u/jo"
	pub := func() { n.publish(t, map[string]any{"biz": "account", "user": "jo", "payload": "acct"}) }
	shared := dial(t, n) // a shared tablet, jo logged in
	shared.authAs(n.token(t, "jo"), "tablet", "ios", "1.0.0", "account")
	phone := dial(t, n) // jo's own phone
	phone.authAs(n.token(t, "jo"), "jo-phone", "ios", "1.0.0", "account")
	pub()
	shared.settle(ch, 1, 1)
	phone.settle(ch, 1, 1)

	// kim logs in on the tablet through another comet whose kick of the
	// old session never arrives: the old session is stale but open.
	if _, err := n.Directory.Put(context.Background(), directory.Session{User: "kim", Device: "tablet",
		Platform: "ios", Comet: "comet-elsewhere", Key: "k1", Since: time.Now()}); err != nil {
		t.Fatal(err)
	}
	pub() // 2: live, only jo's phone
	phone.settle(ch, 2, 1, 2)
	shared.barrier()
	if got := shared.ids(ch); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("stale session got %v", got)
	}
	// Backlog: the stale session asks for jo's channel again: refused and
	// closed, nothing sent.
	shared.sendMsg(protocol.OpSyncReq, &pb.SyncReq{Points: []*pb.ChannelPoint{{Channel: ch, Id: 1}}})
	shared.expectError(protocol.CodeReplaced, 5*time.Second)
	if got := shared.ids(ch); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("stale session got %v", got)
	}

	// kim really logs in on the tablet: her channel only, none of jo's. The
	// tablet is jo's (its first user), so kim's token must name it: the
	// business hands the device over by minting her login token for it.
	tablet := shared.reconnect(n)
	tablet.sendMsg(protocol.OpAuth, &pb.Auth{Token: n.token(t, "kim"), Device: "tablet", Platform: "ios", Bizs: []string{"account"}})
	tablet.expectError(protocol.CodeDeviceNotAllowed, 5*time.Second)
	tablet = tablet.reconnect(n)
	r := tablet.authAs(n.deviceToken(t, "kim", "tablet"), "tablet", "ios", "1.0.0", "account")
	if len(r.Channels) != 1 || r.Channels[0].Channel != "account/u/kim" {
		t.Fatalf("kim's channels %v", r.Channels)
	}
	pub() // 3
	phone.settle(ch, 3, 1, 2, 3)
	tablet.barrier()
	if got := tablet.ids(ch); len(got) != 0 {
		t.Fatalf("tablet as kim got jo's %v", got)
	}
	// jo logs back in on the tablet: she is the current user again and gets
	// what she missed, in order.
	tablet = tablet.reconnect(n)
	tablet.authAs(n.deviceToken(t, "jo", "tablet"), "tablet", "ios", "1.0.0", "account")
	tablet.settle(ch, 3, 2, 3)
}

// persistent false: online devices only, nothing stored, no backlog. The
// oplog arrives as a PUSH frame carrying its biz; the SDK hands it to the
// biz handler (ID 0: no sync point, never resent).
func TestBizNonPersistent(t *testing.T) {
	n := startNodeWith(t, bizsConfig, "")
	a1 := dial(t, n)
	a1.authAs(n.token(t, "liv"), "liv-1", "ios", "1.0.0", "live")
	bob := dial(t, n)
	bob.authAs(n.token(t, "bob"), "bob-1", "ios", "1.0.0", "live")

	var sdkOps recorder[client.Oplog]
	tok := n.token(t, "liv")
	c := startSDK(t, n.Comet.Addr().String(), client.Options{
		TokenProvider: func(context.Context) (string, error) { return tok, nil },
		Device:        "liv-sdk", Platform: "android", AppVersion: "1.0.0",
	}, map[string]client.Handler{"live": oplogs(&sdkOps)})
	eventually(t, 5*time.Second, "sdk connected", c.Connected)

	for i := range 3 {
		res := n.publish(t, map[string]any{"biz": "live", "user": "liv", "payload": fmt.Sprintf("p%d", i)})
		if res.ID != 0 || res.Duplicate {
			t.Fatalf("non-persistent publish: %+v", res)
		}
	}
	for i := range 3 {
		var p pb.Push
		if err := protocol.Unmarshal(a1.expect(protocol.OpPush, 5*time.Second), &p); err != nil {
			t.Fatal(err)
		}
		if p.Biz != "live" || string(p.Payload) != fmt.Sprintf("p%d", i) {
			t.Fatalf("push %d: biz %q payload %q", i, p.Biz, p.Payload)
		}
	}
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, func() error {
		if got := sdkOps.all(); len(got) != 3 {
			return fmt.Errorf("SDK handler got %d oplogs, want 3: %+v", len(got), got)
		}
		return nil
	})
	for i, op := range sdkOps.all() {
		if op.Biz != "live" || op.ID != 0 || string(op.Payload) != fmt.Sprintf("p%d", i) {
			t.Fatalf("sdk oplog %d: %+v", i, op)
		}
	}
	bob.barrier()
	a1.barrier()
	for _, d := range []*device{a1, bob} {
		d.mu.Lock()
		for _, f := range d.other {
			if f.Op == protocol.OpPush {
				t.Errorf("unexpected extra PUSH")
			}
		}
		d.mu.Unlock()
	}
	// Nothing stored, so a device connecting now gets nothing.
	if max, err := n.Store.MaxID(context.Background(), "live/u/liv"); err != nil || max != 0 {
		t.Fatalf("stored max id %d, %v", max, err)
	}
	late := dial(t, n)
	r := late.authAs(n.token(t, "liv"), "liv-2", "ios", "1.0.0", "live")
	if len(r.Channels) != 0 || len(r.Rejected) != 0 {
		t.Fatalf("non-persistent biz: channels %v rejected %v, want none", r.Channels, r.Rejected)
	}
	late.barrier()
	late.mu.Lock()
	defer late.mu.Unlock()
	for _, f := range late.other {
		if f.Op == protocol.OpPush {
			t.Fatal("late device got a PUSH of a non-persistent oplog published before it connected")
		}
	}
}
