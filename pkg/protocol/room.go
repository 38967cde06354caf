package protocol

import (
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// Room limits shared by the comet, logic's HTTP API and SDKs (docs/protocol.md
// §13), so a name one tier accepts is never refused by another.
const (
	// MaxRoomName is the longest room name in bytes.
	MaxRoomName = 128
	// DefaultMaxRooms is how many rooms one session may be in unless the
	// comet is configured otherwise.
	DefaultMaxRooms = 64
)

// ErrBadRoom: a room name is empty, too long, not UTF-8, or has whitespace or
// control characters.
var ErrBadRoom = errors.New("protocol: bad room name")

// ValidRoom reports whether name is a usable room name: 1-MaxRoomName bytes
// of UTF-8 without whitespace or control characters (room names end up in
// logs and JSON; invisible characters would make two rooms look alike).
func ValidRoom(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrBadRoom)
	case len(name) > MaxRoomName:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrBadRoom, len(name), MaxRoomName)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: not UTF-8", ErrBadRoom)
	}
	for _, r := range name {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("%w: %q has whitespace or control characters", ErrBadRoom, name)
		}
	}
	return nil
}
