package client

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

// Non-persistent pushes and rooms (docs/protocol.md §4, PUSH and ROOM_*).
// Pushes are never stored, never resent and not acked: the app gets those
// that arrive while it is connected, through Options.OnPush. Rooms the app
// joins are remembered by the Client and joined again on every connection,
// so a reconnect does not silently leave them.

// ErrTooManyRooms is returned by JoinRoom when the Client is already in
// protocol.DefaultMaxRooms rooms (the server's default limit).
var ErrTooManyRooms = errors.New("client: too many rooms")

// Push is one non-persistent message as the app receives it.
type Push struct {
	// Room is set for a push to a room the client joined; empty for a push
	// to this user, this device or everyone.
	Room    string
	Payload []byte
	Created time.Time // zero if the server did not say
}

// roomSet is the rooms the app asked for and the session that serves them.
type roomSet struct {
	mu    sync.Mutex
	rooms map[string]struct{}
	cur   *session // the authenticated session, nil when disconnected
}

// JoinRoom joins room now if connected, and on every later connection
// until LeaveRoom. It returns once the ROOM_JOIN is written (or remembered,
// when disconnected); the server confirms with ROOM_REPLY. Room names are
// 1-128 bytes without whitespace (protocol.ValidRoom).
func (c *Client) JoinRoom(room string) error {
	if err := protocol.ValidRoom(room); err != nil {
		return fmt.Errorf("client: join room: %w", err)
	}
	if c.isClosed() {
		return ErrClosed
	}
	c.rooms.mu.Lock()
	if _, in := c.rooms.rooms[room]; !in && len(c.rooms.rooms) >= protocol.DefaultMaxRooms {
		c.rooms.mu.Unlock()
		return fmt.Errorf("%w: at most %d", ErrTooManyRooms, protocol.DefaultMaxRooms)
	}
	if c.rooms.rooms == nil {
		c.rooms.rooms = map[string]struct{}{}
	}
	c.rooms.rooms[room] = struct{}{}
	s := c.rooms.cur
	c.rooms.mu.Unlock()
	if s != nil {
		// A write failure ends that session; the next one joins again.
		_ = s.send(protocol.OpRoomJoin, &pb.Room{Room: room})
	}
	return nil
}

// LeaveRoom leaves room now if connected and stops joining it on later
// connections. Leaving a room the client is not in is not an error.
func (c *Client) LeaveRoom(room string) error {
	if err := protocol.ValidRoom(room); err != nil {
		return fmt.Errorf("client: leave room: %w", err)
	}
	c.rooms.mu.Lock()
	_, in := c.rooms.rooms[room]
	delete(c.rooms.rooms, room)
	s := c.rooms.cur
	c.rooms.mu.Unlock()
	if in && s != nil {
		_ = s.send(protocol.OpRoomLeave, &pb.Room{Room: room})
	}
	return nil
}

// Rooms returns the rooms the client is in (or will join on connecting), sorted.
func (c *Client) Rooms() []string {
	c.rooms.mu.Lock()
	defer c.rooms.mu.Unlock()
	out := make([]string, 0, len(c.rooms.rooms))
	for r := range c.rooms.rooms {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// attachRooms makes s the session that serves rooms and joins every room
// the app asked for. Called once s is authenticated.
func (s *session) attachRooms() {
	c := s.c
	c.rooms.mu.Lock()
	c.rooms.cur = s
	rooms := make([]string, 0, len(c.rooms.rooms))
	for r := range c.rooms.rooms {
		rooms = append(rooms, r)
	}
	c.rooms.mu.Unlock()
	sort.Strings(rooms)
	for _, r := range rooms {
		if s.send(protocol.OpRoomJoin, &pb.Room{Room: r}) != nil {
			return
		}
	}
}

// handleRoomReply acts on a ROOM_REPLY: a confirmation needs nothing; a
// refusal (a 3xxx code, e.g. over the server's comet.max_rooms) drops the
// room from the set, so it is not joined again on every reconnect, and
// tells the app. The connection stays up.
func (s *session) handleRoomReply(f protocol.Frame) error {
	var m pb.Room
	if err := protocol.Unmarshal(f, &m); err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if m.Code == 0 {
		return nil
	}
	c := s.c
	c.rooms.mu.Lock()
	delete(c.rooms.rooms, m.Room)
	c.rooms.mu.Unlock()
	s.log.Warn("room join refused", "room", m.Room, "code", m.Code, "reason", m.Message)
	c.emit(Event{Kind: EventRoomRefused, Room: m.Room, Code: protocol.Code(m.Code), Reason: m.Message})
	return nil
}

// detachRooms forgets s as the rooms session when it ends.
func (s *session) detachRooms() {
	c := s.c
	c.rooms.mu.Lock()
	if c.rooms.cur == s {
		c.rooms.cur = nil
	}
	c.rooms.mu.Unlock()
}

// handlePush hands a PUSH frame to Options.OnPush, or to its biz's handler
// when it carries a biz.
func (s *session) handlePush(f protocol.Frame) error {
	var m pb.Push
	if err := protocol.Unmarshal(f, &m); err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if m.Biz != "" {
		// An oplog of a non-persistent biz: its biz handler (volatile.go).
		s.deliverVolatile(&m)
		return nil
	}
	if m.Biz != "" {
		// An oplog of a non-persistent biz: its biz handler (volatile.go).
		s.deliverVolatile(&m)
		return nil
	}
	if s.c.opts.OnPush == nil {
		return nil
	}
	p := Push{Room: m.Room, Payload: m.Payload}
	if m.CreatedMs > 0 {
		p.Created = time.UnixMilli(m.CreatedMs)
	}
	s.c.opts.OnPush(p)
	return nil
}
