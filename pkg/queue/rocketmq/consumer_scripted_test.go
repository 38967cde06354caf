//go:build !race

package rocketmq

// rocketmq-client-go v2.1.2 has a data race of its own: rmqClient.Shutdown
// sets a plain bool (close) that the consumer's lock and pull goroutines read
// in rmqClient.InvokeSync, so stopping a running push consumer is reported by
// the race detector however the caller synchronises. This test therefore
// runs only without -race (make test runs this package again without it, in
// test-norace). The producer is not affected: Producer.Shutdown waits for the
// Sends in flight, and the client's own producer goroutines do not use that
// path.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/queue"
	"github.com/msync/msync/pkg/queue/dedupe"
	"github.com/msync/msync/pkg/queue/queuetest"
)

// TestConsumerOnScriptedBroker starts the real push consumer against the
// scripted name server and broker and checks what it sends: the route from
// the configured name server, a heartbeat declaring an orderly-capable
// CLUSTERING consumer of the group and topic, LOCK_BATCH_MQ for the queues
// it was assigned (orderly consumption locks queues), and on Shutdown the
// unlock and the closed connection.
func TestConsumerOnScriptedBroker(t *testing.T) {
	const topic, queues = "msync_push", 4
	srv := startRemoting(t, topic, queues, nil)
	c := newTestConsumer(t, Config{NameServers: []string{srv.nsAddr()}, Topic: topic, Group: "msync_job_test", ConsumeFrom: "first"})
	if err := c.Consume(func(context.Context, []queue.Message) error { return nil }); err != nil {
		t.Fatalf("Consume: %v", err)
	}
	if err := c.Consume(func(context.Context, []queue.Message) error { return nil }); !errors.Is(err, ErrConsuming) {
		t.Fatalf("second Consume = %v, want ErrConsuming", err)
	}
	locked := func() map[int]bool {
		reqs, _ := srv.snapshot()
		got := map[int]bool{}
		for _, r := range reqs {
			if r.Code != codeLockBatch || r.Role != "broker" {
				continue
			}
			var body struct {
				Group string `json:"consumerGroup"`
				MQs   []struct {
					Topic   string `json:"topic"`
					QueueID int    `json:"queueId"`
				} `json:"mqSet"`
			}
			if err := json.Unmarshal(r.Body, &body); err != nil {
				t.Fatalf("lock body %q: %v", r.Body, err)
			}
			for _, mq := range body.MQs {
				if body.Group == "msync_job_test" && mq.Topic == topic {
					got[mq.QueueID] = true
				}
			}
		}
		return got
	}
	testutil.Eventually(t, 15*time.Second, 20*time.Millisecond, func() error {
		if got := locked(); len(got) < queues {
			return fmt.Errorf("locked queues %v, want all %d: the orderly consumer has not locked its queues", got, queues)
		}
		return nil
	})
	reqs, _ := srv.snapshot()
	var route, heartbeat bool
	for _, r := range reqs {
		switch {
		case r.Code == codeGetRouteInfo && r.Role == "namesrv" && r.ExtFields["topic"] == topic:
			route = true
		case r.Code == codeHeartbeat && r.Role == "broker":
			var hb struct {
				Consumers []struct {
					Group string `json:"groupName"`
					Model string `json:"messageModel"`
					Where string `json:"consumeFromWhere"`
					Subs  []struct {
						Topic string `json:"topic"`
					} `json:"subscriptionDataSet"`
				} `json:"consumerDataSet"`
			}
			if err := json.Unmarshal(r.Body, &hb); err != nil {
				t.Fatalf("heartbeat body %q: %v", r.Body, err)
			}
			for _, cd := range hb.Consumers {
				if cd.Group != "msync_job_test" {
					continue
				}
				if cd.Model != "CLUSTERING" || cd.Where != "CONSUME_FROM_FIRST_OFFSET" {
					t.Fatalf("heartbeat consumer data: model %q from %q, want CLUSTERING / CONSUME_FROM_FIRST_OFFSET", cd.Model, cd.Where)
				}
				for _, s := range cd.Subs {
					heartbeat = heartbeat || s.Topic == topic
				}
			}
		}
	}
	if !route || !heartbeat {
		t.Fatalf("route asked of the name server: %v, heartbeat with the subscription: %v", route, heartbeat)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	reqs, _ = srv.snapshot()
	unlocked := slices.ContainsFunc(reqs, func(r request) bool { return r.Code == codeUnlockBatch && r.Role == "broker" })
	if !unlocked {
		t.Fatal("Shutdown did not unlock the queues")
	}
	// v2.1.2 sends no UNREGISTER_CLIENT: a broker drops the consumer from
	// the group (and rebalances its queues to the other job instances) when
	// the connection closes, so the connection must be closed.
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := srv.openConns("broker"); n > 0 {
			return fmt.Errorf("%d connections to the broker still open after Shutdown", n)
		}
		return nil
	})
}

// TestConformanceScriptedBroker runs the queue conformance suite through the
// real client — producer, name-server lookup, hash selector, rebalance,
// queue locks, pulls, orderly consumption with suspension and redelivery,
// offset commits — against the scripted name server and broker. What it
// cannot show is how a real broker behaves (persistence, long-poll timing,
// rebalancing between several consumers): that is TestConformanceRealBroker.
func TestConformanceScriptedBroker(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) (queue.Producer, queue.Consumer) {
		const topic = "msync_push"
		srv := startRemoting(t, topic, 8, nil)
		cfg := Config{NameServers: []string{srv.nsAddr()}, Topic: topic, Group: "msync_job", ConsumeFrom: "first",
			MaxBatch: 16, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
		p := newTestProducer(t, cfg)
		cfg.Instance = uniqueInstance(t)
		c, err := NewConsumer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return p, c
	})
}

// TestConsumerCommitsAndResumes: a consumer that handled messages commits
// their offsets; a new consumer of the same group resumes after them
// instead of starting over.
func TestConsumerCommitsAndResumes(t *testing.T) {
	const topic = "msync_push"
	srv := startRemoting(t, topic, 2, nil)
	cfg := Config{NameServers: []string{srv.nsAddr()}, Topic: topic, Group: "msync_job", ConsumeFrom: "first"}
	p := newTestProducer(t, cfg)
	send := func(vals ...string) {
		for _, v := range vals {
			if err := p.Send(context.Background(), queue.Message{Key: "k", Value: []byte(v)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	consume := func() (*Consumer, func() []string) {
		c := newTestConsumer(t, cfg)
		var mu sync.Mutex
		var got []string
		if err := c.Consume(func(_ context.Context, msgs []queue.Message) error {
			mu.Lock()
			defer mu.Unlock()
			for _, m := range msgs {
				got = append(got, string(m.Value))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return c, func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(got) }
	}
	send("1", "2", "3")
	c1, got1 := consume()
	waitUntil(t, "first consumer got 1..3", func() bool { return len(got1()) >= 3 })
	// The client records a success in its offset table after the handler
	// returned, and reports it to the broker in its next pull (as a real
	// broker's pulls carry commitOffset): wait for that, so Shutdown cannot
	// race the client's bookkeeping (a Shutdown that does would only make
	// the next owner redeliver the last batch).
	q := wantQueue("k", 2)
	waitUntil(t, "the commit of offset 3", func() bool { return srv.committed()[q] == 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c1.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if want := []string{"1", "2", "3"}; !slices.Equal(got1(), want) {
		t.Fatalf("first consumer got %v, want %v", got1(), want)
	}
	if off := srv.committed()[q]; off != 3 {
		t.Fatalf("committed offset of queue %d after Shutdown = %d, want 3 (all: %v)", q, off, srv.committed())
	}
	send("4", "5")
	_, got2 := consume()
	waitUntil(t, "second consumer got 4..5", func() bool { return len(got2()) >= 2 })
	if want := []string{"4", "5"}; !slices.Equal(got2(), want) {
		t.Fatalf("second consumer got %v, want %v (resumes after the committed offset)", got2(), want)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, 5*time.Millisecond, func() error {
		if !cond() {
			return fmt.Errorf("still waiting for %s", what)
		}
		return nil
	})
}

// TestDuplicateSendDedupedEndToEnd: a send that times out although the
// broker stored the message, retried by the client and by the caller,
// stores the oplog several times; job's consumer wrapped in dedupe hands it
// over once, in order.
func TestDuplicateSendDedupedEndToEnd(t *testing.T) {
	const topic = "msync_push"
	var slowOnce sync.Once
	srv := startRemoting(t, topic, 4, func(m sentMsg) (int, time.Duration) {
		delay := time.Duration(0)
		if ch, id, ok := dedupe.OplogID(queue.Message{Value: m.Body}); ok && ch == "chat/u/alice" && id == 2 {
			slowOnce.Do(func() { delay = time.Second }) // stored, but the reply comes too late
		}
		return resSuccess, delay
	})
	cfg := Config{NameServers: []string{srv.nsAddr()}, Topic: topic, Group: "msync_job", ConsumeFrom: "first", SendTimeout: 300 * time.Millisecond}
	p := newTestProducer(t, cfg)
	oplogMsg := func(id uint64) queue.Message {
		b, err := proto.Marshal(&pb.QueueMsg{Body: &pb.QueueMsg_Oplog{Oplog: &oplog.Oplog{Channel: "chat/u/alice", Id: id, Payload: []byte("p")}}})
		if err != nil {
			t.Fatal(err)
		}
		return queue.Message{Key: "chat/u/alice", Value: b}
	}
	ctx := context.Background()
	for id := uint64(1); id <= 3; id++ {
		err := p.Send(ctx, oplogMsg(id))
		// Usually the slow Send times out (ErrSend) and the caller resends.
		// On a loaded machine the client's own immediate retry can be
		// answered before the expired deadline is noticed: then the Send
		// succeeds, having stored id 2 more than once all the same.
		if id == 2 && err != nil {
			if !errors.Is(err, ErrSend) {
				t.Fatalf("slow Send = %v, want ErrSend (timeout) or success", err)
			}
			err = p.Send(ctx, oplogMsg(id)) // the caller's retry
		}
		if err != nil {
			t.Fatalf("Send %d: %v", id, err)
		}
	}
	// v2.1.2 retries after a timeout and still writes each retry although
	// the context expired, so the timed-out Send alone stored id 2 up to
	// 1+Retries (3) times; with the caller's retry up to 4 copies.
	_, sent := srv.snapshot()
	if len(sent) < 4 {
		t.Fatalf("broker stored %d messages, want id 2 at least twice (the slow copy and a resend)", len(sent))
	}
	dups := int64(len(sent) - 3)
	inner := newTestConsumer(t, cfg)
	c, err := dedupe.New(dedupe.Config{Consumer: inner})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var ids []uint64
	if err := c.Consume(func(_ context.Context, msgs []queue.Message) error {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range msgs {
			_, id, _ := dedupe.OplogID(m)
			ids = append(ids, id)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "every message handled or dropped", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return c.Dropped() == dups && len(ids) >= 3
	})
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(ids, []uint64{1, 2, 3}) {
		t.Fatalf("handler got ids %v, want [1 2 3]", ids)
	}
}

// TestConsumeFromLastPinsNewGroup: a broker tells a group without an offset
// "0" (as a real one does while the queue is young), so the client alone
// would replay the topic. Consume first commits each queue's end as the new
// group's offset (creating the group the broker does not know yet), and the
// consumer gets only what was sent after; a second Consume of the group
// resumes from the committed offsets instead of pinning again.
func TestConsumeFromLastPinsNewGroup(t *testing.T) {
	const topic = "msync_push"
	srv := startRemoting(t, topic, 2, nil)
	cfg := Config{NameServers: []string{srv.nsAddr()}, Topic: topic, Group: "msync_job", ConsumeFrom: "last"}
	p := newTestProducer(t, cfg)
	send := func(vals ...string) {
		t.Helper()
		for _, v := range vals {
			if err := p.Send(context.Background(), queue.Message{Key: "k" + v, Value: []byte(v)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	consume := func() (*Consumer, func() []string) {
		c := newTestConsumer(t, cfg)
		var mu sync.Mutex
		var got []string
		if err := c.Consume(func(_ context.Context, msgs []queue.Message) error {
			mu.Lock()
			defer mu.Unlock()
			for _, m := range msgs {
				got = append(got, string(m.Value))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return c, func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(got) }
	}
	send("old1", "old2", "old3", "old4")
	ends := map[int]int64{}
	_, sent := srv.snapshot()
	for _, m := range sent {
		ends[m.QueueID]++
	}
	c1, got1 := consume()
	if c := srv.committed(); len(c) != 2 || c[0] != ends[0] || c[1] != ends[1] {
		t.Fatalf("after Consume the group's offsets are %v, want each queue's end %v", c, ends)
	}
	send("new1", "new2")
	waitUntil(t, "the first consumer got new1 and new2", func() bool { return len(got1()) >= 2 })
	time.Sleep(300 * time.Millisecond) // a replay would come right behind
	if g := got1(); len(g) != 2 || slices.ContainsFunc(g, func(v string) bool { return v[:3] == "old" }) {
		t.Fatalf("a new group with consume_from last got %v, want only new1 and new2", g)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c1.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	committed := srv.committed()
	send("new3")
	reqs, _ := srv.snapshot()
	_, got2 := consume()
	waitUntil(t, "the second consumer got new3", func() bool { return slices.Contains(got2(), "new3") })
	if g := got2(); slices.ContainsFunc(g, func(v string) bool { return v[:3] == "old" }) {
		t.Fatalf("the resumed group got %v: replayed messages from before its first start", g)
	}
	after, _ := srv.snapshot()
	for _, r := range after[len(reqs):] {
		if r.Code == codeUpdateOffset && r.ExtFields["consumerGroup"] == cfg.Group {
			if off, _ := strconv.ParseInt(r.ExtFields["commitOffset"], 10, 64); off < committed[mustAtoi(t, r.ExtFields["queueId"])] {
				t.Fatalf("the second Consume moved queue %s back to %d (committed %v)", r.ExtFields["queueId"], off, committed)
			}
		}
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
