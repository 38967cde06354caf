package client

import (
	"fmt"
	"time"

	"github.com/msync/msync/pkg/protocol"
)

// EventKind says what an Event reports.
type EventKind int

const (
	// EventConnected: AUTH_REPLY arrived; User and Session are set.
	EventConnected EventKind = iota + 1
	// EventDisconnected: a connection attempt or session ended. Err says
	// why; RetryIn is the delay before the next attempt, 0 when the client
	// will not retry by itself (closed, background, user cleared, stopped).
	EventDisconnected
	// EventKicked: the server sent KICK{Code, Reason}. A disconnect follows.
	EventKicked
	// EventSkipped: the server skipped Count older oplogs of Channel by the
	// biz's backlog policy (latest:N). They are gone by design, not lost by
	// error; an app may want to do a full refresh of that data.
	EventSkipped
	// EventAuthRejected: the server does not sync the bizs in Rejected.
	EventAuthRejected
	// EventStopped: the server answered with a 4xxx code (Code, Err); the
	// client does not reconnect until UpdateUser is called.
	EventStopped
	// EventStoreError: saving a sync point failed (Err, Channel). Delivery
	// continues; after a restart those oplogs may be delivered again.
	EventStoreError
	// EventRewound: the sync point of Channel was above everything the
	// server holds (its store was reset, or the point came from another
	// deployment); the client moved it back From -> To. Ids above To will
	// be used again for new oplogs: an app that keys data by oplog id
	// should refresh that channel's data.
	EventRewound
	// EventRoomRefused: the server refused to join Room (Code, a 3xxx
	// limit such as protocol.CodeTooManyRooms; Reason). The connection stays
	// up and the client no longer counts the room as joined: JoinRoom it
	// again once under the limit.
	EventRoomRefused
)

func (k EventKind) String() string {
	switch k {
	case EventConnected:
		return "connected"
	case EventDisconnected:
		return "disconnected"
	case EventKicked:
		return "kicked"
	case EventSkipped:
		return "skipped"
	case EventAuthRejected:
		return "auth_rejected"
	case EventStopped:
		return "stopped"
	case EventStoreError:
		return "store_error"
	case EventRewound:
		return "rewound"
	case EventRoomRefused:
		return "room_refused"
	}
	return fmt.Sprintf("event(%d)", int(k))
}

// Event is passed to Options.OnEvent. Fields not listed for a kind are zero.
type Event struct {
	Kind     EventKind
	User     string        // Connected
	Session  string        // Connected
	Err      error         // Disconnected, Stopped, StoreError
	RetryIn  time.Duration // Disconnected
	Code     protocol.Code // Kicked, Stopped, RoomRefused
	Reason   string        // Kicked, RoomRefused
	Room     string        // RoomRefused
	Biz      string        // Skipped, Rewound
	Channel  string        // Skipped, StoreError, Rewound
	Count    uint64        // Skipped
	From, To uint64        // Rewound
	Rejected []RejectedBiz // AuthRejected
}

// RejectedBiz is a biz the server refused in AUTH_REPLY, with its reason.
type RejectedBiz struct {
	Biz    string
	Reason string
}
