package comet

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/msync/msync/pkg/api"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/protocol"
	wirepb "github.com/msync/msync/pkg/protocol/pb"
)

func (cl *client) expectPush(room, payload string) {
	cl.t.Helper()
	var p wirepb.Push
	cl.expect(protocol.OpPush, &p)
	if p.Room != room || string(p.Payload) != payload {
		cl.t.Fatalf("PUSH room %q payload %q, want %q %q", p.Room, p.Payload, room, payload)
	}
}

func (cl *client) room(op protocol.Op, room string) {
	cl.t.Helper()
	seq := cl.sendMsg(op, &wirepb.Room{Room: room})
	var r wirepb.Room
	f := cl.expect(protocol.OpRoomReply, &r)
	if f.Seq != seq || r.Room != room || r.Code != 0 {
		cl.t.Fatalf("ROOM_REPLY seq %d room %q code %d, want %d %q 0", f.Seq, r.Room, r.Code, seq, room)
	}
}

// A join over MaxRooms is a refusal in the ROOM_REPLY, not a close: the
// session stays, is not in the room, and may join it after leaving another.
func TestRoomsLimitRefusesAndKeepsTheConnection(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *fakeLogic) { c.MaxRooms = 2 })
	cl := e.dial()
	cl.auth("good-alice", "a1", "ios", "1.0.0", nil)
	cl.room(protocol.OpRoomJoin, "r1")
	cl.room(protocol.OpRoomJoin, "r2")
	seq := cl.sendMsg(protocol.OpRoomJoin, &wirepb.Room{Room: "r3"})
	var r wirepb.Room
	if f := cl.expect(protocol.OpRoomReply, &r); f.Seq != seq || r.Room != "r3" || r.Code != uint32(protocol.CodeTooManyRooms) || r.Message == "" {
		t.Fatalf("ROOM_REPLY seq %d %+v, want seq %d room r3 code %d with a reason", f.Seq, &r, seq, protocol.CodeTooManyRooms)
	}
	if n := broadcast(t, e.c, "r3", "x"); n != 0 {
		t.Fatalf("broadcast to r3 reached %d sessions after a refused join", n)
	}
	cl.room(protocol.OpRoomLeave, "r1")
	cl.room(protocol.OpRoomJoin, "r3")
	if n := broadcast(t, e.c, "r3", "y"); n != 1 {
		t.Fatalf("broadcast to r3 reached %d sessions, want 1", n)
	}
}

func broadcast(t *testing.T, c *Comet, room, payload string) uint32 {
	t.Helper()
	r, err := c.Broadcast(context.Background(), &pb.BroadcastReq{Push: &pb.PushMsg{Room: room, Payload: []byte(payload), CreatedMs: 7}})
	if err != nil {
		t.Fatal(err)
	}
	return r.Delivered
}

func TestRoomsJoinLeaveBroadcast(t *testing.T) {
	e := newEnv(t, nil)
	a, b := e.dial(), e.dial()
	a.auth("good-alice", "a1", "ios", "1.0.0", nil)
	b.auth("good-bob", "b1", "ios", "1.0.0", nil)
	a.room(protocol.OpRoomJoin, "lobby")
	a.room(protocol.OpRoomJoin, "lobby") // idempotent

	if n := broadcast(t, e.c, "lobby", "hi"); n != 1 {
		t.Fatalf("room broadcast delivered %d, want 1", n)
	}
	a.expectPush("lobby", "hi")
	b.expectQuiet()

	if n := broadcast(t, e.c, "", "all"); n != 2 {
		t.Fatalf("broadcast to all delivered %d, want 2", n)
	}
	a.expectPush("", "all")
	b.expectPush("", "all")

	// Several pushes in one call keep their order.
	r, err := e.c.Broadcast(context.Background(), &pb.BroadcastReq{Push: &pb.PushMsg{Room: "lobby", Payload: []byte("1")},
		Pushes: []*pb.PushMsg{{Room: "other", Payload: []byte("x")}, {Room: "lobby", Payload: []byte("2")}}})
	if err != nil || r.Delivered != 2 {
		t.Fatalf("batched broadcast: %v, delivered %d, want 2", err, r.GetDelivered())
	}
	a.expectPush("lobby", "1")
	a.expectPush("lobby", "2")

	a.room(protocol.OpRoomLeave, "lobby")
	a.room(protocol.OpRoomLeave, "never-joined")
	if n := broadcast(t, e.c, "lobby", "gone"); n != 0 {
		t.Fatalf("broadcast after leave delivered %d", n)
	}
	a.expectQuiet()
	if got := e.c.rooms.members("lobby"); len(got) != 0 {
		t.Fatalf("lobby still has %d members", len(got))
	}
}

func TestRoomsClosedSessionLeavesEverything(t *testing.T) {
	e := newEnv(t, nil)
	a := e.dial()
	a.auth("good-alice", "a1", "ios", "1.0.0", nil)
	a.room(protocol.OpRoomJoin, "r1")
	a.room(protocol.OpRoomJoin, "r2")
	a.conn.Close(nil, errors.New("test: hang up"))
	eventually(t, "rooms emptied", func() bool {
		return len(e.c.rooms.members("r1")) == 0 && len(e.c.rooms.members("r2")) == 0
	})
	// A server-side join racing the close must not resurrect it.
	if err := e.c.rooms.join(a.sess, []string{"r3"}, 10); !errors.Is(err, errSessionGone) {
		t.Fatalf("join after close: %v, want errSessionGone", err)
	}
}

func TestRoomsBadInput(t *testing.T) {
	tests := []struct {
		name string
		auth bool
		run  func(cl *client)
		code protocol.Code
	}{
		{"join before auth", false, func(cl *client) { cl.sendMsg(protocol.OpRoomJoin, &wirepb.Room{Room: "r"}) }, protocol.CodeNotAuthed},
		{"leave before auth", false, func(cl *client) { cl.sendMsg(protocol.OpRoomLeave, &wirepb.Room{Room: "r"}) }, protocol.CodeNotAuthed},
		{"empty room", true, func(cl *client) { cl.sendMsg(protocol.OpRoomJoin, &wirepb.Room{}) }, protocol.CodeBadFrame},
		{"room too long", true, func(cl *client) {
			cl.sendMsg(protocol.OpRoomJoin, &wirepb.Room{Room: strings.Repeat("r", protocol.MaxRoomName+1)})
		}, protocol.CodeBadFrame},
		{"room with space", true, func(cl *client) { cl.sendMsg(protocol.OpRoomLeave, &wirepb.Room{Room: "a b"}) }, protocol.CodeBadFrame},
		{"undecodable body", true, func(cl *client) { cl.sendRaw(protocol.OpRoomJoin, []byte{0xff, 0xff}) }, protocol.CodeBadFrame},
		{"room reply from client", true, func(cl *client) { cl.sendMsg(protocol.OpRoomReply, &wirepb.Room{Room: "r"}) }, protocol.CodeUnknownOp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config, _ *fakeLogic) { c.MaxRooms = 2 })
			cl := e.dial()
			if tt.auth {
				cl.auth("good-alice", "a1", "ios", "1.0.0", nil)
			}
			tt.run(cl)
			cl.expectError(tt.code)
		})
	}
}

func TestServerSideRoomsAndKeyedPush(t *testing.T) {
	e := newEnv(t, nil)
	a, b, unauthed := e.dial(), e.dial(), e.dial()
	a.auth("good-alice", "a1", "ios", "1.0.0", nil)
	b.auth("good-bob", "b1", "ios", "1.0.0", nil)

	if _, err := e.c.Rooms(context.Background(), &pb.RoomsReq{Keys: []string{a.key, unauthed.key, "nope"}, Join: []string{"vip", "news"}}); err != nil {
		t.Fatal(err)
	}
	if n := broadcast(t, e.c, "vip", "v"); n != 1 {
		t.Fatalf("vip delivered %d, want 1", n)
	}
	a.expectPush("vip", "v")
	if _, err := e.c.Rooms(context.Background(), &pb.RoomsReq{Keys: []string{a.key}, Leave: []string{"vip"}}); err != nil {
		t.Fatal(err)
	}
	if n := broadcast(t, e.c, "vip", "v2"); n != 0 {
		t.Fatalf("vip after leave delivered %d", n)
	}
	if got := a.sess.roomsOf(); len(got) != 1 || got[0] != "news" {
		t.Fatalf("rooms of a: %v, want [news]", got)
	}
	if _, err := e.c.Rooms(context.Background(), &pb.RoomsReq{Keys: []string{a.key}, Join: []string{""}}); err == nil {
		t.Fatal("Rooms accepted an empty room name")
	}

	// Keyed pushes: only the named, authenticated sessions.
	r, err := e.c.Push(context.Background(), &pb.PushReq{Items: []*pb.PushItem{
		{Keys: []string{b.key, unauthed.key, "nope"}, Push: &pb.PushMsg{Payload: []byte("direct")}}}})
	if err != nil || r.Delivered != 1 {
		t.Fatalf("keyed push: %v, delivered %d, want 1", err, r.GetDelivered())
	}
	b.expectPush("", "direct")
	a.expectQuiet()
	select {
	case f := <-unauthed.conn.out:
		t.Fatalf("session before AUTH got %s", describe(f))
	default:
	}
}

func TestHeartbeatNegotiation(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *fakeLogic) {
		c.HeartbeatInterval, c.HeartbeatMin, c.HeartbeatMax = 10*time.Second, 5*time.Second, time.Minute
	})
	for _, tt := range []struct {
		wish uint32
		want time.Duration
	}{
		{0, 10 * time.Second},      // no wish: the default
		{30000, 30 * time.Second},  // within bounds
		{1000, 5 * time.Second},    // below: min
		{3600000, 1 * time.Minute}, // above: max
	} {
		cl := e.dial()
		cl.sendMsg(protocol.OpAuth, &wirepb.Auth{Token: "good-alice", Device: "d", Platform: "ios", HeartbeatMs: tt.wish})
		var r wirepb.AuthReply
		cl.expect(protocol.OpAuthReply, &r)
		if got := time.Duration(r.HeartbeatMs) * time.Millisecond; got != tt.want {
			t.Fatalf("wish %dms: AUTH_REPLY heartbeat %v, want %v", tt.wish, got, tt.want)
		}
		if d, code, _ := cl.conn.deadline(); d != heartbeatDeadline(tt.want) || code != protocol.CodeHeartbeatTimeout {
			t.Fatalf("wish %dms: deadline %v code %d, want %v", tt.wish, d, code, heartbeatDeadline(tt.want))
		}
		cl.conn.Close(nil, errors.New("test: next"))
	}

	// HEARTBEAT renegotiates; an empty one keeps the interval.
	cl := e.dial()
	cl.auth("good-alice", "d2", "ios", "1.0.0", nil)
	for _, step := range []struct {
		wish uint32
		want time.Duration
	}{{20000, 20 * time.Second}, {0, 20 * time.Second}, {1, 5 * time.Second}, {120000, time.Minute}} {
		seq := cl.sendMsg(protocol.OpHeartbeat, &wirepb.Heartbeat{IntervalMs: step.wish})
		var hr wirepb.HeartbeatReply
		f := cl.expect(protocol.OpHeartbeatReply, &hr)
		if f.Seq != seq || time.Duration(hr.IntervalMs)*time.Millisecond != step.want {
			t.Fatalf("HEARTBEAT wish %d: reply seq %d interval %dms, want %v", step.wish, f.Seq, hr.IntervalMs, step.want)
		}
		eventually(t, "deadline follows the interval", func() bool {
			d, _, _ := cl.conn.deadline()
			return d == heartbeatDeadline(step.want)
		})
	}
}

func TestHeartbeatBoundsConfig(t *testing.T) {
	for _, cfg := range []Config{
		{HeartbeatInterval: 10 * time.Second, HeartbeatMin: 20 * time.Second},
		{HeartbeatInterval: 10 * time.Second, HeartbeatMax: 5 * time.Second},
		{MaxRooms: -1},
	} {
		cfg.Logic = api.LocalLogic(newFakeLogic())
		if _, err := cfg.withDefaults(); !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("%+v: err %v, want ErrInvalidConfig", cfg, err)
		}
	}
	c, err := Config{Logic: api.LocalLogic(newFakeLogic())}.withDefaults()
	if err != nil || c.HeartbeatMin != defaultHeartbeatInterval || c.HeartbeatMax != defaultHeartbeatInterval || c.MaxRooms != protocol.DefaultMaxRooms {
		t.Fatalf("defaults: %v %v %v %v", err, c.HeartbeatMin, c.HeartbeatMax, c.MaxRooms)
	}
}

// Security review #6: a room is not open to ROOM_JOIN unless ClientRooms
// lists its prefix, so a client cannot listen to the business's private
// room pushes; the business still puts sessions in any room.
func TestClientRoomsRestrictJoin(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *fakeLogic) { c.ClientRooms = []string{"public-"} })
	mal, ok := e.dial(), e.dial()
	ok.auth("good-alice", "a1", "ios", "1.0.0", nil)
	ok.room(protocol.OpRoomJoin, "public-lobby")
	mal.auth("good-mallory", "m1", "ios", "1.0.0", nil)
	mal.sendMsg(protocol.OpRoomJoin, &wirepb.Room{Room: "board-private"})
	mal.expectError(protocol.CodeRoomForbidden)
	if n := broadcast(t, e.c, "board-private", "Q3 numbers"); n != 0 {
		t.Fatalf("private room broadcast delivered %d, want 0", n)
	}
	if n := broadcast(t, e.c, "public-lobby", "hi"); n != 1 {
		t.Fatalf("public room broadcast delivered %d, want 1", n)
	}
	ok.expectPush("public-lobby", "hi")
}
