package rocketmq

import (
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/msync/msync/internal/testutil"
)

// TestMain checks for leaked goroutines after the tests. rocketmq-client-go
// v2.1.2 leaves goroutines behind after Shutdown (issue
// apache/rocketmq-client-go#1147, open), of two kinds:
//
//   - bounded: the client's schedulers (rmqClient.Start.func1.*) sleep up to
//     10s before they first look at the done channel, a pull loop sleeps out
//     its current delay, a consume loop polls an empty process queue for up
//     to 5s. TestMain waits up to leakWait for these to exit instead of
//     ignoring them, so they are proven to end;
//   - bounded but long, ignored by name below: a request in flight when the
//     client shuts down (a pull, held by the broker as a long poll) keeps
//     waiting for its response until its own timeout (30s for a pull):
//     closing the connection does not fail the pending future
//     (remote.ResponseFuture.waitResponse). Our Producer.Shutdown waits for
//     every Send, so none of ours can be among them;
//   - unbounded, ignored by name below: the connection each client opened
//     to the name server, with its reader goroutine
//     (remote.(*remotingClient).receiveResponse): the client's name-server
//     remoting client (internal.namesrvs.nameSrvClient) is never shut down.
//     The scripted server hid it; a real name server keeps the connection
//     open (seen against RocketMQ 5.3.3). One per producer or consumer;
//   - unbounded, ignored by name below: a package-level go-cache janitor
//     (internal.RequestResponseFutureMap, created at init), and each push
//     consumer's statistics goroutines that sleep until the next minute,
//     hour or day before they notice the consumer was shut down
//     (consumer.statsItemSet.init.func4..6).
//
// Every ignored entry names a function of the client, never ours, so a
// goroutine our code leaks is still reported.
func TestMain(m *testing.M) {
	// The client logs at info to stdout by default; keep its errors only.
	SetClientLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	code := m.Run()
	if code == 0 {
		if err := testutil.Poll(leakWait, 100*time.Millisecond, func() error { return goleak.Find(clientLeaks...) }); err != nil {
			fmt.Fprintf(os.Stderr, "goleak after %v: %v\n", leakWait, err)
			code = 1
		}
	}
	os.Exit(code)
}

// leakWait covers the client's longest bounded sleep (10s) with a margin.
const leakWait = 15 * time.Second

var clientLeaks = []goleak.Option{
	goleak.IgnoreTopFunction("github.com/patrickmn/go-cache.(*janitor).Run"),
	goleak.IgnoreTopFunction("github.com/apache/rocketmq-client-go/v2/internal/remote.(*ResponseFuture).waitResponse"),
	goleak.IgnoreAnyFunction("github.com/apache/rocketmq-client-go/v2/internal/remote.(*remotingClient).receiveResponse"),
	goleak.IgnoreAnyFunction("github.com/apache/rocketmq-client-go/v2/consumer.(*statsItemSet).init.func4"),
	goleak.IgnoreAnyFunction("github.com/apache/rocketmq-client-go/v2/consumer.(*statsItemSet).init.func5"),
	goleak.IgnoreAnyFunction("github.com/apache/rocketmq-client-go/v2/consumer.(*statsItemSet).init.func6"),
}
