package comet

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/protocol"
	wirepb "github.com/msync/msync/pkg/protocol/pb"
)

// This file holds the real-time side of a comet: non-persistent PUSH frames
// (to connection keys, to a room, to every session), rooms joined by the
// client (ROOM_JOIN/ROOM_LEAVE) or by the server (pb.CometServer.Rooms), and
// the heartbeat interval negotiation.
//
// A PUSH is written straight from the calling goroutine to the session's
// Conn (Conn methods are goroutine-safe): it has no ordering relation to the
// session's sync state machine, so it does not go through the drain task,
// and the connection's byte-bounded write queue is its only buffer (overflow
// closes the connection as for any slow consumer). One encoded frame is
// shared read-only by every connection it goes to.

const roomShards = 64

// errTooManyRooms: a join would put a session in more than MaxRooms rooms.
var errTooManyRooms = errors.New("comet: too many rooms")

// errSessionGone: the session finished; it cannot join rooms any more.
var errSessionGone = errors.New("comet: session finished")

// sessionRooms is a session's real-time state, touched by any goroutine.
type sessionRooms struct {
	// ready is set once AUTH_REPLY was written: a PUSH must not overtake it.
	ready atomic.Bool
	mu    struct {
		sync.Mutex
		set    map[string]struct{}
		closed bool // leaveAll ran: join nothing more
	}
}

// roomIndex maps room -> sessions, sharded by room name, so a room push
// touches one shard and only the room's members, never a scan of all
// sessions.
//
// Lock order: sessionRooms.mu, then roomShard.mu (join and leave hold the
// session's lock while updating shards, so a session's set and the index
// agree). Members reads one shard and takes no other lock.
type roomIndex struct {
	shards [roomShards]roomShard
}

type roomShard struct {
	mu struct {
		sync.Mutex
		rooms map[string]map[*session]struct{}
	}
}

func (x *roomIndex) shard(room string) *roomShard {
	h := uint32(2166136261)
	for i := 0; i < len(room); i++ {
		h ^= uint32(room[i])
		h *= 16777619
	}
	return &x.shards[h%roomShards]
}

// join adds s to rooms, all or nothing: over max rooms nothing is joined.
func (x *roomIndex) join(s *session, rooms []string, maxRooms int) error {
	s.rooms.mu.Lock()
	defer s.rooms.mu.Unlock()
	if s.rooms.mu.closed {
		return errSessionGone
	}
	fresh := 0
	seen := make(map[string]struct{}, len(rooms))
	for _, r := range rooms {
		if _, in := s.rooms.mu.set[r]; !in {
			if _, dup := seen[r]; !dup {
				fresh++
				seen[r] = struct{}{}
			}
		}
	}
	if len(s.rooms.mu.set)+fresh > maxRooms {
		return fmt.Errorf("%w: in %d, joining %d more, at most %d", errTooManyRooms, len(s.rooms.mu.set), fresh, maxRooms)
	}
	if s.rooms.mu.set == nil {
		s.rooms.mu.set = make(map[string]struct{}, fresh)
	}
	for r := range seen {
		s.rooms.mu.set[r] = struct{}{}
		sh := x.shard(r)
		sh.mu.Lock()
		if sh.mu.rooms == nil {
			sh.mu.rooms = make(map[string]map[*session]struct{})
		}
		m := sh.mu.rooms[r]
		if m == nil {
			m = make(map[*session]struct{})
			sh.mu.rooms[r] = m
		}
		m[s] = struct{}{}
		sh.mu.Unlock()
	}
	return nil
}

// leave removes s from rooms; rooms it is not in are ignored.
func (x *roomIndex) leave(s *session, rooms []string) {
	s.rooms.mu.Lock()
	defer s.rooms.mu.Unlock()
	for _, r := range rooms {
		if _, in := s.rooms.mu.set[r]; !in {
			continue
		}
		delete(s.rooms.mu.set, r)
		x.removeLocked(s, r)
	}
}

// leaveAll removes s from every room for good; called when it finishes.
func (x *roomIndex) leaveAll(s *session) {
	s.rooms.mu.Lock()
	defer s.rooms.mu.Unlock()
	s.rooms.mu.closed = true
	for r := range s.rooms.mu.set {
		x.removeLocked(s, r)
	}
	s.rooms.mu.set = nil
}

// removeLocked drops s from room's shard. REQUIRES: s.rooms.mu.
func (x *roomIndex) removeLocked(s *session, room string) {
	sh := x.shard(room)
	sh.mu.Lock()
	if m := sh.mu.rooms[room]; m != nil {
		delete(m, s)
		if len(m) == 0 {
			delete(sh.mu.rooms, room) // empty rooms cost nothing
		}
	}
	sh.mu.Unlock()
}

// members returns a snapshot of room's sessions.
func (x *roomIndex) members(room string) []*session {
	sh := x.shard(room)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	m := sh.mu.rooms[room]
	out := make([]*session, 0, len(m))
	for s := range m {
		out = append(out, s)
	}
	return out
}

// roomsOf returns the rooms s is in (tests).
func (s *session) roomsOf() []string {
	s.rooms.mu.Lock()
	defer s.rooms.mu.Unlock()
	out := make([]string, 0, len(s.rooms.mu.set))
	for r := range s.rooms.mu.set {
		out = append(out, r)
	}
	return out
}

// ---- writing PUSH frames ----

// pushFrame encodes m as a PUSH frame; the result is shared read-only.
func pushFrame(m *pb.PushMsg) (*sharedOut, error) {
	b, err := protocol.Encode(protocol.OpPush, 0, &wirepb.Push{Room: m.GetRoom(), Payload: m.GetPayload(), CreatedMs: m.GetCreatedMs(), Biz: m.GetBiz()})
	return &sharedOut{op: protocol.OpPush, raw: b}, err
}

// writePush writes frame to s if its AUTH_REPLY went out; it reports whether
// the frame was queued.
func (c *Comet) writePush(s *session, frame *sharedOut) bool {
	if !s.rooms.ready.Load() {
		return false
	}
	if err := s.conn.Write(frame.frameFor(s)); err != nil { // compressed once per push (compress.go)
		return false // closing, or the queue overflowed and the conn closes
	}
	c.metrics.framesOut[opSlot(protocol.OpPush)].Inc()
	return true
}

// pushKeys writes m to the sessions with keys and counts the deliveries.
func (c *Comet) pushKeys(keys []string, m *pb.PushMsg) uint32 {
	frame, err := pushFrame(m)
	if err != nil {
		c.log.Error("encode push", "err", err)
		return 0
	}
	var n uint32
	for _, key := range keys {
		if s := c.lookup(key); s != nil && c.writePush(s, frame) {
			n++
		}
	}
	return n
}

// broadcastOne writes m to the members of m.room, or to every session when
// the room is empty.
func (c *Comet) broadcastOne(m *pb.PushMsg) uint32 {
	frame, err := pushFrame(m)
	if err != nil {
		c.log.Error("encode push", "err", err)
		return 0
	}
	var targets []*session
	if m.GetRoom() != "" {
		targets = c.rooms.members(m.GetRoom())
	} else {
		targets = c.snapshot()
	}
	var n uint32
	for _, s := range targets {
		if c.writePush(s, frame) {
			n++
		}
	}
	return n
}

// Rooms joins and leaves rooms on behalf of the sessions with req's keys
// (server-side rooms): leaves first, then joins. Unknown keys and sessions
// not yet authenticated are skipped; a join over MaxRooms or with a bad room
// name is refused for that session (logged) and nothing of it joined.
func (c *Comet) Rooms(_ context.Context, req *pb.RoomsReq) (*pb.Empty, error) {
	if c.closing.Load() {
		return nil, ErrShutdown
	}
	for _, r := range append(append([]string(nil), req.GetJoin()...), req.GetLeave()...) {
		if err := protocol.ValidRoom(r); err != nil {
			return nil, fmt.Errorf("comet: rooms: %w", err)
		}
	}
	for _, key := range req.GetKeys() {
		s := c.lookup(key)
		if s == nil || s.ident.Load() == nil {
			continue
		}
		c.rooms.leave(s, req.GetLeave())
		if len(req.GetJoin()) > 0 {
			if err := c.rooms.join(s, req.GetJoin(), c.cfg.MaxRooms); err != nil {
				c.log.Warn("server-side room join refused", "conn", key, "err", err)
			}
		}
	}
	return &pb.Empty{}, nil
}

// ---- client ops (drain task) ----

// clientMayJoin reports whether Config.ClientRooms opens room to ROOM_JOIN.
func (c *Comet) clientMayJoin(room string) bool {
	for _, p := range c.cfg.ClientRooms {
		if p == "*" || strings.HasPrefix(room, p) {
			return true
		}
	}
	return false
}

// handleRoom serves ROOM_JOIN and ROOM_LEAVE: bad room name -> ERROR 4000,
// a room not open to clients -> ERROR 4007, over MaxRooms -> ROOM_REPLY
// {room, code 3001} (refused, the connection stays up), else ROOM_REPLY{room}
// with the same seq.
func (s *session) handleRoom(f protocol.Frame) {
	var r wirepb.Room
	if err := protocol.Unmarshal(f, &r); err != nil {
		s.fail(f.Seq, protocol.CodeBadFrame, err.Error(), ErrProtocol)
		return
	}
	if err := protocol.ValidRoom(r.Room); err != nil {
		s.fail(f.Seq, protocol.CodeBadFrame, err.Error(), ErrProtocol)
		return
	}
	if f.Op == protocol.OpRoomJoin {
		if !s.c.clientMayJoin(r.Room) {
			s.fail(f.Seq, protocol.CodeRoomForbidden, fmt.Sprintf("room %q is not open to clients: the business adds sessions to it", r.Room), ErrProtocol)
			return
		}
		if err := s.c.rooms.join(s, []string{r.Room}, s.c.cfg.MaxRooms); errors.Is(err, errTooManyRooms) {
			// A limit, not a fault: a lowered MaxRooms must not stop an SDK
			// for good, so refuse the join and keep the connection.
			s.c.metrics.errorCode(protocol.CodeTooManyRooms)
			s.write(protocol.OpRoomReply, f.Seq, &wirepb.Room{Room: r.Room, Code: uint32(protocol.CodeTooManyRooms), Message: err.Error()})
			return
		} else if err != nil {
			s.fail(f.Seq, protocol.CodeOutOfOrder, err.Error(), ErrProtocol)
			return
		}
	} else {
		s.c.rooms.leave(s, []string{r.Room})
	}
	s.write(protocol.OpRoomReply, f.Seq, &wirepb.Room{Room: r.Room})
}

// ---- heartbeat negotiation ----

// heartbeatFor picks a session's interval: the client's wish (ms, 0 = none)
// clamped into [HeartbeatMin, HeartbeatMax]; without a wish, base (logic's
// ConnectReply.heartbeat_ms, else HeartbeatInterval, or the session's
// current interval) unchanged.
func (c *Comet) heartbeatFor(wish uint32, base time.Duration) time.Duration {
	if wish == 0 {
		return base
	}
	return min(max(time.Duration(wish)*time.Millisecond, c.cfg.HeartbeatMin), c.cfg.HeartbeatMax)
}

// handleHeartbeat answers HEARTBEAT; a non-zero interval_ms renegotiates the
// interval, and the liveness deadline follows the new interval at once.
func (s *session) handleHeartbeat(f protocol.Frame) {
	var h wirepb.Heartbeat
	if err := protocol.Unmarshal(f, &h); err != nil {
		s.fail(f.Seq, protocol.CodeBadFrame, err.Error(), ErrProtocol)
		return
	}
	if h.IntervalMs > 0 {
		if d := s.c.heartbeatFor(h.IntervalMs, s.heartbeat); d != s.heartbeat {
			s.heartbeat = d
			dl := heartbeatDeadline(d)
			s.hbDeadline.Store(int64(dl))
			s.conn.SetDeadline(dl, protocol.CodeHeartbeatTimeout)
		}
	}
	s.write(protocol.OpHeartbeatReply, f.Seq, &wirepb.HeartbeatReply{IntervalMs: uint32(s.heartbeat / time.Millisecond)})
}
