package protocol

import (
	"fmt"
	"strings"

	"github.com/msync/msync/pkg/protocol/pb"
)

// Code is a wire error or kick code (ERROR and KICK bodies). The range tells
// a client what to do, which matters on mobile where a wrong retry loop drains
// batteries:
//
//	1000-1999  reconnect with backoff and resync from the sync points
//	2000-2999  get a new token, then reconnect
//	3000-3999  a request was refused (a limit): the connection stays up;
//	           sent in a reply (ROOM_REPLY), never in ERROR or KICK
//	4000-4999  do not reconnect: the client or its configuration is wrong
type Code uint32

const (
	CodeServerShutdown   Code = 1000 // comet is going away
	CodeSlowConsumer     Code = 1001 // write queue overflowed
	CodeHeartbeatTimeout Code = 1002 // no heartbeat within the deadline
	CodeAckTimeout       Code = 1003 // a backlog page was not acked in time
	CodeUnavailable      Code = 1004 // a dependency (logic, store) failed; retry
	CodeAuthTimeout      Code = 1005 // no AUTH within the auth timeout
	CodeReplaced         Code = 1006 // another session of the same device connected
	CodeKicked           Code = 1007 // the business kicked this device; reconnect allowed
	// Traffic limits: reconnect with backoff (they say which limit was hit).
	CodeTooManyConnsPerIP Code = 1008 // the source address has too many connections
	CodeTooManyConns      Code = 1009 // the comet is at its connection cap
	CodeTooManyInFlight   Code = 1010 // more than MaxInFlightFrames frames waiting to be handled
	CodeRateLimited       Code = 1011 // frames or bytes per second over the connection's limit
	CodeAuthRateLimited   Code = 1012 // too many AUTH attempts from the source address
	CodeTooManyCursors    Code = 1013 // a Sync asked logic for more channels than it serves at once
	CodeStaleSession      Code = 1014 // the session's channels changed on the server (biz config): reconnect for the new list

	CodeTokenExpired     Code = 2001 // token expired: fetch a new one
	CodeTokenInvalid     Code = 2002 // token does not verify: fetch a new one
	CodeDeviceNotAllowed Code = 2003 // the device id belongs to another user: a token naming the device is needed
	CodeTokenRevoked     Code = 2004 // the user's tokens issued before a cut-off were revoked: fetch a new one

	// Refusals (a reply says so; the connection stays up).
	CodeTooManyRooms Code = 3001 // ROOM_JOIN beyond comet.max_rooms: leave a room first

	CodeBadFrame      Code = 4000 // malformed header or body
	CodeFrameTooLarge Code = 4001 // frame over the server's limit
	CodeUnknownOp     Code = 4002 // op not part of the protocol
	CodeNotAuthed     Code = 4003 // op before AUTH
	CodeBadAuth       Code = 4004 // AUTH fields invalid (device id, version ...)
	CodeOutOfOrder    Code = 4005 // op not valid in this state (second AUTH, ack beyond sent)
	CodeForbidden     Code = 4006 // kicked for good: do not reconnect
	CodeRoomForbidden Code = 4007 // ROOM_JOIN of a room clients may not join (comet.client_rooms)
	// Compression (docs/protocol.md §18).
	CodeInflateTooLarge Code = 4008 // a compressed body decompresses past the frame limit (a decompression bomb)
)

// MaxInFlightFrames is how many frames a client may have sent and not yet
// had handled (pipelined without waiting for replies); past it the server
// answers ERROR CodeTooManyInFlight after handling those before it.
const MaxInFlightFrames = 256

// Reconnect reports whether a client should reconnect after this code
// ended its connection: every code below 4000 (3xxx never ends one; if it
// did, reconnecting is the safe reading), none from 4000 up.
func (c Code) Reconnect() bool { return c < 4000 }

// Refusal reports whether c refuses one request (in a reply) and leaves the
// connection up: the app may retry that request later.
func (c Code) Refusal() bool { return c >= 3000 && c < 4000 }

// NeedsToken reports whether a client must obtain a new token first.
func (c Code) NeedsToken() bool { return c >= 2000 && c < 3000 }

// WireError is an error that carries a wire code.
type WireError struct {
	Code    Code
	Message string
}

func (e *WireError) Error() string { return fmt.Sprintf("msync error %d: %s", e.Code, e.Message) }

// Errorf builds a WireError.
func Errorf(code Code, format string, args ...any) *WireError {
	return &WireError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorFrame encodes an ERROR frame; seq echoes the offending frame (0 if none).
// Invalid UTF-8 in msg (messages may quote client input) is replaced: proto3
// refuses to marshal it, which would silently drop the frame.
func ErrorFrame(seq uint32, code Code, msg string) []byte {
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	b, _ := Encode(OpError, seq, &pb.Error{Code: uint32(code), Message: msg}) // cannot fail for valid UTF-8
	return b
}

// KickFrame encodes a KICK frame.
func KickFrame(code Code, reason string) []byte {
	reason = strings.ToValidUTF8(reason, "\uFFFD") // as in ErrorFrame
	b, _ := Encode(OpKick, 0, &pb.Kick{Code: uint32(code), Reason: reason})
	return b
}
