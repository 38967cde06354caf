//go:build integration

package rocketmq

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msync/msync/pkg/queue"
)

// What a real RocketMQ 5.3 broker does that the scripted remoting server
// did not.

func realCfg(t *testing.T, name string) Config {
	t.Helper()
	ns := os.Getenv("MSYNC_ROCKETMQ_NAMESRV")
	if ns == "" {
		t.Skip("MSYNC_ROCKETMQ_NAMESRV is not set: no RocketMQ name server (e.g. MSYNC_ROCKETMQ_NAMESRV=127.0.0.1:9876 make test-integration)")
	}
	id := fmt.Sprintf("%s_%d", name, time.Now().UnixNano())
	return Config{
		NameServers: strings.Split(ns, ";"),
		Topic:       "msync_real_" + id,
		Group:       "msync_real_" + id,
		Instance:    "real-" + id,
		SendTimeout: 10 * time.Second,
		MinBackoff:  10 * time.Millisecond,
		MaxBackoff:  200 * time.Millisecond,
	}
}

func realProducer(t *testing.T, cfg Config) *Producer {
	t.Helper()
	p, err := NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("producer Shutdown: %v", err)
		}
	})
	warmup(t, p)
	return p
}

// collector records the values a consumer was handed.
type collector struct {
	mu   sync.Mutex
	seen map[string]int
}

func (c *collector) handler(_ context.Context, msgs []queue.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range msgs {
		if m.Key != warmupKey {
			c.seen[string(m.Value)]++
		}
	}
	return nil
}

func (c *collector) count(prefix string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for v := range c.seen {
		if strings.HasPrefix(v, prefix) {
			n++
		}
	}
	return n
}

func consume(t *testing.T, cfg Config, h queue.Handler) *Consumer {
	t.Helper()
	c, err := NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Consume(h); err != nil {
		t.Fatalf("Consume: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.Shutdown(ctx)
	})
	return c
}

func sendN(t *testing.T, p *Producer, prefix string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range n {
		m := queue.Message{Key: fmt.Sprintf("key-%d", i%8), Value: fmt.Appendf(nil, "%s-%d", prefix, i)}
		if err := p.Send(ctx, m); err != nil {
			t.Fatalf("send %s-%d: %v", prefix, i, err)
		}
	}
}

// ConsumeFrom "last" promises a new group exactly the messages sent after
// Consume returned: none before, every one after. A real broker answers a
// new group's offset query with 0 (not "not found") while the queue's first
// message is in memory, so the client alone would replay the whole topic
// (pin.go); a filter by store time let through the messages stored in the
// same millisecond as Consume's start.
func TestConsumeFromLastNewGroupRealBroker(t *testing.T) {
	cfg := realCfg(t, "last")
	p := realProducer(t, cfg)
	sendN(t, p, "old", 40)

	cfg.ConsumeFrom = "last"
	col := &collector{seen: make(map[string]int)}
	consume(t, cfg, col.handler)
	// At once: the group's start is fixed by Consume, not by its first
	// rebalance, so nothing sent from now on may be missed.
	sendN(t, p, "new", 40)
	waitCount(t, col, "new", 40, 90*time.Second)
	time.Sleep(time.Second) // a replay of the old ones would have come with the new ones
	if old := col.count("old"); old > 0 {
		t.Fatalf("a new group with consume_from last was handed %d of the 40 messages sent before it started", old)
	}
}

// A consumer that stops (Shutdown unlocks its queues) hands them over at
// once: measured 3s on 5.3.3.
func TestSuccessorAfterStoppedConsumerRealBroker(t *testing.T) {
	cfg := realCfg(t, "stopped")
	cfg.ConsumeFrom = "first"
	p := realProducer(t, cfg)

	colA := &collector{seen: make(map[string]int)}
	cfgA := cfg
	cfgA.Instance += "-a"
	a := consume(t, cfgA, colA.handler)
	sendN(t, p, "a", 16)
	waitCount(t, colA, "a", 16, 90*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if err := a.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown a: %v", err)
	}
	cancel()
	successor(t, cfg, p)
}

// A killed consumer (kill -9 of a job process) never unlocks: its queue
// locks stay on the broker until they expire, and only then may a
// successor in the group lock and consume them.
func TestSuccessorAfterKilledConsumerRealBroker(t *testing.T) {
	cfg := realCfg(t, "killed")
	cfg.ConsumeFrom = "first"
	p := realProducer(t, cfg)

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperConsumerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "MSYNC_RMQ_HELPER="+strings.Join([]string{cfg.NameServers[0], cfg.Topic, cfg.Group, cfg.Instance + "-a"}, ","))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
		}
		_ = cmd.Wait()
	})
	got := make(chan string, 64)
	go func() { // ends when the helper's stdout closes (it is killed)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "got "); ok {
				got <- v
			}
		}
		close(got)
	}()
	sendN(t, p, "a", 16)
	seen := make(map[string]bool)
	timeout := time.After(90 * time.Second)
	for len(seen) < 16 {
		select {
		case v, ok := <-got:
			if !ok {
				t.Fatal("helper consumer exited early")
			}
			seen[v] = true
		case <-timeout:
			t.Fatalf("helper consumed %d of 16 in 90s", len(seen))
		}
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no unlock, no unregister
		t.Fatal(err)
	}
	killed = true
	successor(t, cfg, p)
}

// successor starts a second consumer in cfg's group and waits until it
// consumed messages of every key (so of every queue) sent after it started.
func successor(t *testing.T, cfg Config, p *Producer) {
	t.Helper()
	stopped := time.Now()
	colB := &collector{seen: make(map[string]int)}
	cfgB := cfg
	cfgB.Instance += "-b"
	consume(t, cfgB, colB.handler)
	sendN(t, p, "b", 16)
	waitCount(t, colB, "b", 16, failoverBound)
	t.Logf("successor consumed every queue %v after its predecessor stopped", time.Since(stopped).Round(time.Second))
}

// TestHelperConsumerProcess is the consumer process the kill test kills; it
// does nothing unless started by it (MSYNC_RMQ_HELPER set).
func TestHelperConsumerProcess(t *testing.T) {
	spec := os.Getenv("MSYNC_RMQ_HELPER")
	if spec == "" {
		return
	}
	f := strings.Split(spec, ",")
	cfg := Config{NameServers: []string{f[0]}, Topic: f[1], Group: f[2], Instance: f[3], ConsumeFrom: "first"}
	c, err := NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Consume(func(_ context.Context, msgs []queue.Message) error {
		for _, m := range msgs {
			fmt.Printf("got %s\n", m.Value)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Minute) // until killed; the parent's test bounds it
}

// failoverBound: the broker's queue lock lifetime (15s as scripts/engines.sh
// runs it, rocketmq.broker.rebalance.lockMaxLiveTime) plus one client
// rebalance (20s) and the client's 3s re-lock pause, with a margin for a
// loaded machine. RocketMQ's default lifetime of 60s does not fit.
const failoverBound = 90 * time.Second

func waitCount(t *testing.T, c *collector, prefix string, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for c.count(prefix) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d %q messages consumed after %v", c.count(prefix), n, prefix, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A topic no broker has (a typo in queue.rocketmq.topic, or a broker with
// autoCreateTopicEnable=false) is one clear error naming the setting.
func TestMissingTopicRealBroker(t *testing.T) {
	cfg := realCfg(t, "missing")
	c, err := NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Consume(func(context.Context, []queue.Message) error { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = c.Shutdown(ctx)
	if !errors.Is(err, ErrNoTopic) || !strings.Contains(err.Error(), "queue.rocketmq.topic") || !strings.Contains(err.Error(), cfg.Topic) {
		t.Fatalf("Consume on a topic no broker has = %v; want ErrNoTopic naming queue.rocketmq.topic and the topic", err)
	}
}

// restartBound: from the restarted broker serving again to a message sent
// after the restart being consumed. The client re-registers and re-locks on
// its 20s rebalance; a loaded machine gets a margin.
const restartBound = 60 * time.Second

// brokerDowntime outlasts the client's own lock lifetime (30s) and a
// rebalance (20s): the restart the chaos run saw took 190s on a loaded
// machine, and live pushes stalled after it.
var brokerDowntime = func() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("MSYNC_RMQ_BROKER_DOWNTIME")); err == nil {
		return d
	}
	return 40 * time.Second
}()

// A broker restart (scripts/engines.sh down broker; up broker, data kept):
// once it serves again, a message sent then reaches the running consumer
// within restartBound, for every queue.
func TestLiveAfterBrokerRestartRealBroker(t *testing.T) {
	ctl := os.Getenv("MSYNC_ENGINES_CTL")
	if ctl == "" {
		t.Skip("MSYNC_ENGINES_CTL is not set: no scripts/engines.sh to restart the broker with (make test-integration sets it)")
	}
	cfg := realCfg(t, "restart")
	cfg.ConsumeFrom = "first"
	p := realProducer(t, cfg)
	col := &collector{seen: make(map[string]int)}
	consume(t, cfg, col.handler)
	sendN(t, p, "before", 16)
	waitCount(t, col, "before", 16, 90*time.Second)

	for _, step := range []string{"down", "up"} {
		if step == "up" {
			time.Sleep(brokerDowntime)
		}
		cmd := exec.Command(ctl, step, "broker")
		cmd.Env = append(os.Environ(), "MSYNC_ENGINES_FRESH=0") // keep the data
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %s broker: %v\n%s", ctl, step, err, out)
		}
	}
	served := time.Now()
	// Each message is resent until the broker takes it (the producer's
	// connection and route recover first); a copy is fine, a miss is not.
	ctx, cancel := context.WithTimeout(context.Background(), restartBound)
	defer cancel()
	var sendErrs int
	for i := range 16 {
		m := queue.Message{Key: fmt.Sprintf("key-%d", i%8), Value: fmt.Appendf(nil, "after-%d", i)}
		for {
			err := p.Send(ctx, m)
			if err == nil {
				break
			}
			sendErrs++
			if ctx.Err() != nil {
				t.Fatalf("send after-%d: the broker took no message within %v of serving again: %v", i, restartBound, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	sent := time.Since(served)
	waitCount(t, col, "after", 16, restartBound-sent)
	t.Logf("after the broker served again: sends accepted after %v (%d failed attempts), all 16 consumed after %v",
		sent.Round(100*time.Millisecond), sendErrs, time.Since(served).Round(100*time.Millisecond))
}
