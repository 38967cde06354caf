package dedupe_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/queue"
	"github.com/msync/msync/pkg/queue/dedupe"
	"github.com/msync/msync/pkg/queue/memory"
	"github.com/msync/msync/pkg/queue/queuetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func oplogMsg(t *testing.T, channel string, id uint64) queue.Message {
	t.Helper()
	b, err := proto.Marshal(&pb.QueueMsg{Body: &pb.QueueMsg_Oplog{Oplog: &oplog.Oplog{
		Channel: channel, Id: id, Biz: "b", Payload: []byte("payload-with-bytes"), CreatedMs: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	return queue.Message{Key: channel, Value: b}
}

func kickMsg(t *testing.T, device string) queue.Message {
	t.Helper()
	b, err := proto.Marshal(&pb.QueueMsg{Body: &pb.QueueMsg_Kick{Kick: &pb.KickMsg{Comet: "c", Key: device}}})
	if err != nil {
		t.Fatal(err)
	}
	return queue.Message{Key: device, Value: b}
}

// TestOplogID checks the hand-rolled wire reader against the generated code.
func TestOplogID(t *testing.T) {
	mk := func(m *pb.QueueMsg) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name    string
		value   []byte
		channel string
		id      uint64
		ok      bool
	}{
		{"oplog", oplogMsg(t, "chat/u/alice", 42).Value, "chat/u/alice", 42, true},
		{"large id", oplogMsg(t, "x/g", 1<<62).Value, "x/g", 1 << 62, true},
		{"kick", kickMsg(t, "dev").Value, "", 0, false},
		{"push", mk(&pb.QueueMsg{Body: &pb.QueueMsg_Push{Push: &pb.PushTarget{All: true}}}), "", 0, false},
		{"oplog without id", mk(&pb.QueueMsg{Body: &pb.QueueMsg_Oplog{Oplog: &oplog.Oplog{Channel: "a/g"}}}), "", 0, false},
		{"oplog without channel", mk(&pb.QueueMsg{Body: &pb.QueueMsg_Oplog{Oplog: &oplog.Oplog{Id: 3}}}), "", 0, false},
		{"empty", nil, "", 0, false},
		{"garbage", []byte{0xff, 0xff, 0xff}, "", 0, false},
		{"truncated", oplogMsg(t, "chat/u/alice", 42).Value[:10], "", 0, false},
		// Two oneof members on the wire: the last wins, so this is a kick.
		{"oplog then kick", append(oplogMsg(t, "a/g", 5).Value, kickMsg(t, "d").Value...), "", 0, false},
		{"kick then oplog", append(kickMsg(t, "d").Value, oplogMsg(t, "a/g", 5).Value...), "a/g", 5, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Cross-check with proto.Unmarshal where it decodes.
			var qm pb.QueueMsg
			if err := proto.Unmarshal(tt.value, &qm); err == nil && tt.ok {
				if got := qm.GetOplog(); got.GetChannel() != tt.channel || got.GetId() != tt.id {
					t.Fatalf("test table disagrees with proto: %v", got)
				}
			}
			ch, id, ok := dedupe.OplogID(queue.Message{Value: tt.value})
			if ch != tt.channel || id != tt.id || ok != tt.ok {
				t.Fatalf("OplogID = (%q, %d, %v), want (%q, %d, %v)", ch, id, ok, tt.channel, tt.id, tt.ok)
			}
		})
	}
}

type sink struct {
	mu  sync.Mutex
	got []string
}

func (s *sink) add(msgs []queue.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		ch, id, ok := dedupe.OplogID(m)
		if ok {
			s.got = append(s.got, fmt.Sprintf("%s#%d", ch, id))
		} else {
			s.got = append(s.got, "other:"+m.Key)
		}
	}
}

func (s *sink) snapshot() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

func newMemory(t *testing.T, cfg memory.Config) *memory.Queue {
	t.Helper()
	q, err := memory.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func wrap(t *testing.T, inner queue.Consumer, channels int) *dedupe.Consumer {
	t.Helper()
	c, err := dedupe.New(dedupe.Config{Consumer: inner, Channels: channels})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, 2*time.Millisecond, func() error {
		if !cond() {
			return fmt.Errorf("still waiting for %s", what)
		}
		return nil
	})
}

func TestDropsRepeatsAndLateLowerIDs(t *testing.T) {
	// One partition and everything buffered before Consume: deterministic batches.
	q := newMemory(t, memory.Config{Partitions: 1, MaxBatch: 4})
	c := wrap(t, q, 0)
	in := []queue.Message{
		oplogMsg(t, "a/u/1", 1), oplogMsg(t, "a/u/1", 2), oplogMsg(t, "a/u/1", 2), // repeat in batch
		kickMsg(t, "dev"), kickMsg(t, "dev"), // not oplogs: never deduped
		oplogMsg(t, "a/u/1", 1),                      // repeat across batches
		oplogMsg(t, "b/g", 7), oplogMsg(t, "b/g", 5), // late lower id
		oplogMsg(t, "a/u/1", 3), oplogMsg(t, "a/u/1", 3), // all dropped -> batch may be empty
	}
	if err := q.Send(context.Background(), in...); err != nil {
		t.Fatal(err)
	}
	s := &sink{}
	if err := c.Consume(func(_ context.Context, msgs []queue.Message) error {
		if len(msgs) == 0 {
			t.Error("handler called with an empty batch")
		}
		s.add(msgs)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{"a/u/1#1", "a/u/1#2", "other:dev", "other:dev", "b/g#7", "a/u/1#3"}
	waitFor(t, "all delivered", func() bool { return len(s.snapshot()) >= len(want) && q.Len() == 0 })
	if got := s.snapshot(); !slices.Equal(got, want) {
		t.Fatalf("handler saw %v, want %v", got, want)
	}
	if d := c.Dropped(); d != 4 {
		t.Fatalf("Dropped = %d, want 4", d)
	}
}

// TestFailedBatchIsNotRecorded: a batch whose handler failed must come back
// whole, not be dropped as "already seen".
func TestFailedBatchIsNotRecorded(t *testing.T) {
	q := newMemory(t, memory.Config{Partitions: 1, MaxBatch: 8, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	c := wrap(t, q, 0)
	if err := q.Send(context.Background(), oplogMsg(t, "a/d/x", 1), oplogMsg(t, "a/d/x", 2)); err != nil {
		t.Fatal(err)
	}
	s := &sink{}
	var calls int
	if err := c.Consume(func(_ context.Context, msgs []queue.Message) error {
		calls++ // one partition: calls are sequential
		if calls == 1 {
			return errors.New("fail once")
		}
		s.add(msgs)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "redelivery", func() bool { return len(s.snapshot()) == 2 })
	if got := s.snapshot(); !slices.Equal(got, []string{"a/d/x#1", "a/d/x#2"}) {
		t.Fatalf("after a failure the handler saw %v", got)
	}
}

func TestLRUBound(t *testing.T) {
	q := newMemory(t, memory.Config{Partitions: 1, MaxBatch: 1})
	c := wrap(t, q, 2)
	// a, b, c fill a 2-entry LRU: a is evicted, so its repeat passes; c's is caught.
	in := []queue.Message{oplogMsg(t, "x/u/a", 1), oplogMsg(t, "x/u/b", 1), oplogMsg(t, "x/u/c", 1),
		oplogMsg(t, "x/u/a", 1), oplogMsg(t, "x/u/c", 1)}
	if err := q.Send(context.Background(), in...); err != nil {
		t.Fatal(err)
	}
	s := &sink{}
	if err := c.Consume(func(_ context.Context, msgs []queue.Message) error { s.add(msgs); return nil }); err != nil {
		t.Fatal(err)
	}
	want := []string{"x/u/a#1", "x/u/b#1", "x/u/c#1", "x/u/a#1"}
	waitFor(t, "all handled", func() bool { return q.Len() == 0 && c.Dropped()+int64(len(s.snapshot())) == 5 })
	if got := s.snapshot(); !slices.Equal(got, want) {
		t.Fatalf("handler saw %v, want %v", got, want)
	}
}

func TestConfig(t *testing.T) {
	if _, err := dedupe.New(dedupe.Config{Channels: -1}); !errors.Is(err, dedupe.ErrInvalidConfig) {
		t.Fatalf("New = %v, want ErrInvalidConfig", err)
	}
	c, err := dedupe.New(dedupe.Config{Consumer: newMemory(t, memory.Config{})})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Consume(nil); !errors.Is(err, dedupe.ErrNilHandler) {
		t.Fatalf("Consume(nil) = %v", err)
	}
	if err := c.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestConformance: the wrapper keeps the queue contract (the suite's messages
// are not oplogs, so they all pass through).
func TestConformance(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) (queue.Producer, queue.Consumer) {
		q := newMemory(t, memory.Config{Partitions: 8, Buffer: 64, MaxBatch: 16, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
		c, err := dedupe.New(dedupe.Config{Consumer: q})
		if err != nil {
			t.Fatal(err)
		}
		return q, c
	})
}
