package e2e

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
)

const waitFor = 20 * time.Second

func TestOnlineDeviceReceivesPublishesInOrder(t *testing.T) {
	t.Parallel()
	n := startNode(t, "")
	d := dial(t, n)
	reply := d.auth(n.token(t, "alice"), "phone", "demo")
	ch := oplog.UserChannel("demo", "alice")
	if len(reply.Channels) != 1 || reply.Channels[0].Channel != ch || reply.User != "alice" || reply.HeartbeatMs == 0 {
		t.Fatalf("auth reply %v", reply)
	}

	res := n.publish(t, toUser("alice", "hello"))
	if res.ID != 1 || res.Channel != ch || res.Duplicate {
		t.Fatalf("first publish %+v", res)
	}
	if got := d.waitGot(1, waitFor); got[0].Payload != "hello" {
		t.Fatalf("got %+v", got)
	}

	// 1,000 more from 10 concurrent publishers: the device sees ids 1..1001 in order.
	payloads := publishConcurrently(t, n, "alice", 10, 100)
	d.waitGot(1001, waitFor)
	payloads[1] = "hello"
	checkInOrder(t, d, ch, 1, 1001, func(id uint64) string { return payloads[id] })
}

// publishConcurrently publishes workers*each oplogs to user's demo channel
// and returns id -> payload for every acknowledged one.
func publishConcurrently(t *testing.T, n *node, user string, workers, each int) map[uint64]string {
	t.Helper()
	var mu sync.Mutex
	payloads := map[uint64]string{}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				p := fmt.Sprintf("w%d-%d", w, i)
				res := n.publish(t, toUser(user, p))
				mu.Lock()
				if _, dup := payloads[res.ID]; dup {
					t.Errorf("id %d assigned twice", res.ID)
				}
				payloads[res.ID] = p
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return payloads
}

func TestOfflineDeviceGetsExactlyTheMissedOplogs(t *testing.T) {
	t.Parallel()
	n := startNode(t, "")
	ch := oplog.UserChannel("demo", "bob")
	d := dial(t, n)
	d.auth(n.token(t, "bob"), "tablet", "demo")
	for i := 1; i <= 3; i++ {
		n.publish(t, toUser("bob", fmt.Sprint("p", i)))
	}
	d.waitGot(3, waitFor)

	d.close() // offline
	for i := 4; i <= 8; i++ {
		n.publish(t, toUser("bob", fmt.Sprint("p", i)))
	}
	d2 := d.reconnect(n)
	reply := d2.auth(n.token(t, "bob"), "tablet", "demo")
	if reply.Channels[0].From != 3 {
		t.Fatalf("server starts from %d, want the device's point 3", reply.Channels[0].From)
	}
	d2.waitGot(5, waitFor)
	checkInOrder(t, d2, ch, 4, 8, func(id uint64) string { return fmt.Sprint("p", id) })

	// Without points of its own (a reinstalled app), the device resumes from
	// the server's stored sync point, which its acks advanced to 8.
	n.publish(t, toUser("bob", "p9"))
	d2.waitGot(6, waitFor)
	d2.close()
	d3 := dial(t, n)
	eventually(t, waitFor, "server sync point 9", func() bool {
		var st struct {
			Channels []struct {
				Channel   string `json:"channel"`
				SyncPoint uint64 `json:"sync_point"`
			} `json:"channels"`
		}
		call(t, "GET", n.api()+"/v1/devices/tablet/sync", "test-key", nil, &st)
		return len(st.Channels) == 1 && st.Channels[0].SyncPoint == 9
	})
	if r := d3.auth(n.token(t, "bob"), "tablet", "demo"); r.Channels[0].From != 9 {
		t.Fatalf("from = %d, want the stored point 9", r.Channels[0].From)
	}
}

func TestSecondDeviceOfUserGetsFullHistory(t *testing.T) {
	t.Parallel()
	n := startNode(t, "")
	ch := oplog.UserChannel("demo", "carol")
	phone := dial(t, n)
	phone.auth(n.token(t, "carol"), "phone", "demo")
	for i := 1; i <= 120; i++ { // more than one page (page_limit 50)
		n.publish(t, toUser("carol", fmt.Sprint("m", i)))
	}
	phone.waitGot(120, waitFor)

	laptop := dial(t, n)
	laptop.auth(n.token(t, "carol"), "laptop", "demo")
	laptop.waitGot(120, waitFor)
	n.publish(t, toUser("carol", "m121"))
	phone.waitGot(121, waitFor)
	laptop.waitGot(121, waitFor)
	for _, d := range []*device{phone, laptop} {
		checkInOrder(t, d, ch, 1, 121, func(id uint64) string { return fmt.Sprint("m", id) })
	}
}

func TestDeviceTargetReachesOnlyThatDevice(t *testing.T) {
	t.Parallel()
	n := startNode(t, "")
	a := dial(t, n)
	a.auth(n.token(t, "dave"), "dev-a", "cmd", "demo")
	b := dial(t, n)
	b.auth(n.token(t, "dave"), "dev-b", "cmd", "demo")

	res := n.publish(t, map[string]any{"biz": "cmd", "device": "dev-a", "payload": "lock"})
	if res.Channel != oplog.DeviceChannel("cmd", "dev-a") {
		t.Fatalf("channel %q", res.Channel)
	}
	// A later user-target publish reaches both, so by the time b has it,
	// b would have had the device oplog too if it were misrouted.
	n.publish(t, toUser("dave", "both"))
	a.waitGot(2, waitFor)
	b.waitGot(1, waitFor)
	time.Sleep(100 * time.Millisecond) // a deliberate gap, waiting for nothing: a stray or duplicate oplog would arrive in it
	for _, r := range b.received() {
		if r.Channel != oplog.UserChannel("demo", "dave") {
			t.Fatalf("dev-b received %+v", r)
		}
	}
	checkInOrder(t, a, oplog.DeviceChannel("cmd", "dev-a"), 1, 1, func(uint64) string { return "lock" })
}

func TestDedupKeyReturnsSameID(t *testing.T) {
	t.Parallel()
	n := startNode(t, "")
	req := map[string]any{"biz": "demo", "user": "erin", "payload": "x", "dedup_key": "order-42"}
	first := n.publish(t, req)
	n.publish(t, toUser("erin", "other"))
	again := n.publish(t, req)
	if first.Duplicate || !again.Duplicate || again.ID != first.ID {
		t.Fatalf("first %+v, again %+v", first, again)
	}
	d := dial(t, n)
	d.auth(n.token(t, "erin"), "phone", "demo")
	d.waitGot(2, waitFor)
	time.Sleep(100 * time.Millisecond) // a deliberate gap, waiting for nothing: a stray or duplicate oplog would arrive in it
	checkInOrder(t, d, oplog.UserChannel("demo", "erin"), 1, 2, func(id uint64) string { return map[uint64]string{1: "x", 2: "other"}[id] })
}

func TestFiftyConcurrentPublishersOneChannel(t *testing.T) {
	t.Parallel()
	n := startNode(t, "")
	ch := oplog.UserChannel("demo", "frank")
	d1, d2 := dial(t, n), dial(t, n)
	d1.auth(n.token(t, "frank"), "one", "demo")
	d2.auth(n.token(t, "frank"), "two", "demo")
	payloads := publishConcurrently(t, n, "frank", 50, 20)
	for id := uint64(1); id <= 1000; id++ {
		if _, ok := payloads[id]; !ok {
			t.Fatalf("ids not dense: %d missing", id)
		}
	}
	for _, d := range []*device{d1, d2} {
		d.waitGot(1000, waitFor)
		checkInOrder(t, d, ch, 1, 1000, func(id uint64) string { return payloads[id] })
	}
}

func TestPublishesRacingReconnectBacklog(t *testing.T) {
	t.Parallel()
	n := startNode(t, "")
	ch := oplog.UserChannel("demo", "gina")
	d := dial(t, n)
	d.auth(n.token(t, "gina"), "phone", "demo")
	n.publish(t, toUser("gina", "1"))
	d.waitGot(1, waitFor)
	d.close()
	for i := 2; i <= 300; i++ { // backlog of six pages
		n.publish(t, toUser("gina", fmt.Sprint(i)))
	}
	// Reconnect while live publishes keep coming: the backlog sync and the
	// real-time pushes race on the same channel.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 301; i <= 600; i++ {
			n.publish(t, toUser("gina", fmt.Sprint(i)))
		}
	}()
	d2 := d.reconnect(n)
	d2.auth(n.token(t, "gina"), "phone", "demo")
	wg.Wait()
	d2.waitGot(599, waitFor)
	time.Sleep(100 * time.Millisecond) // a deliberate gap, waiting for nothing: a stray or duplicate oplog would arrive in it
	checkInOrder(t, d2, ch, 2, 600, func(id uint64) string { return fmt.Sprint(id) })
}

// TestConcurrentPushesToOneConnection drives pushes of three channels (three
// queue partitions, so three concurrent pushers) into one connection. make
// test also runs it without -race, where netpoll's unlocked buffer lives.
func TestConcurrentPushesToOneConnection(t *testing.T) {
	t.Parallel()
	n := startNode(t, "")
	d := dial(t, n)
	d.auth(n.token(t, "hank"), "dev-h", "demo", "cmd", "small")
	const each = 300
	var wg sync.WaitGroup
	for _, req := range []map[string]any{
		{"biz": "demo", "user": "hank"}, {"biz": "cmd", "device": "dev-h"}, {"biz": "small", "user": "hank"},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; i <= each; i++ {
				r := map[string]any{"payload": fmt.Sprint(i)}
				for k, v := range req {
					r[k] = v
				}
				n.publish(t, r)
			}
		}()
	}
	wg.Wait()
	d.waitGot(3*each, waitFor)
	for _, ch := range []string{oplog.UserChannel("demo", "hank"), oplog.DeviceChannel("cmd", "dev-h"), oplog.UserChannel("small", "hank")} {
		checkInOrder(t, d, ch, 1, each, func(id uint64) string { return fmt.Sprint(id) })
	}
	if _, gaps := d.violations(); gaps != 0 {
		t.Fatalf("%d gaps", gaps)
	}
}

func TestRestartKeepsEveryAcknowledgedOplog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	n := startNode(t, dir)
	for i := 1; i <= 25; i++ {
		n.publish(t, toUser("ivan", fmt.Sprint(i)))
	}
	n.stop(t)

	n2 := startNode(t, dir)
	d := dial(t, n2)
	d.auth(n2.token(t, "ivan"), "phone", "demo")
	d.waitGot(25, waitFor)
	if res := n2.publish(t, toUser("ivan", "26")); res.ID != 26 {
		t.Fatalf("id after restart = %d, want 26", res.ID)
	}
	d.waitGot(26, waitFor)
	checkInOrder(t, d, oplog.UserChannel("demo", "ivan"), 1, 26, func(id uint64) string { return fmt.Sprint(id) })
}

var _ = protocol.OpSync
