package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/msync/msync/pkg/protocol"
)

// TestRoomsBookkeeping: JoinRoom/LeaveRoom validate locally (so a client
// never earns a 4xxx from the server for a room) and remember the rooms the
// SDK joins on every connection.
func TestRoomsBookkeeping(t *testing.T) {
	c, err := New("127.0.0.1:1", Options{TokenProvider: func(context.Context) (string, error) { return "t", nil }, Device: "d"})
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "a b", "tab\t", string(make([]byte, protocol.MaxRoomName+1))} {
		if err := c.JoinRoom(bad); !errors.Is(err, protocol.ErrBadRoom) {
			t.Fatalf("JoinRoom(%q) = %v, want ErrBadRoom", bad, err)
		}
	}
	for i := range protocol.DefaultMaxRooms {
		if err := c.JoinRoom(fmt.Sprintf("r%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.JoinRoom("r00"); err != nil { // already in: not a new room
		t.Fatalf("re-join: %v", err)
	}
	if err := c.JoinRoom("one-more"); !errors.Is(err, ErrTooManyRooms) {
		t.Fatalf("JoinRoom over the limit = %v, want ErrTooManyRooms", err)
	}
	if err := c.LeaveRoom("r05"); err != nil {
		t.Fatal(err)
	}
	if err := c.LeaveRoom("never"); err != nil {
		t.Fatal(err)
	}
	if err := c.JoinRoom("one-more"); err != nil {
		t.Fatalf("JoinRoom after a leave: %v", err)
	}
	rooms := c.Rooms()
	if len(rooms) != protocol.DefaultMaxRooms || slices.Contains(rooms, "r05") || !slices.IsSorted(rooms) {
		t.Fatalf("Rooms() = %v", rooms)
	}
	if _, err := New("127.0.0.1:1", Options{TokenProvider: func(context.Context) (string, error) { return "t", nil }, Device: "d", Heartbeat: -1}); !errors.Is(err, ErrBadOptions) {
		t.Fatalf("negative Heartbeat: %v, want ErrBadOptions", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.JoinRoom("late"); !errors.Is(err, ErrClosed) {
		t.Fatalf("JoinRoom after Close = %v, want ErrClosed", err)
	}
}
