package protocol

import (
	"encoding/binary"
	"fmt"

	"google.golang.org/protobuf/proto"
)

const (
	// HeaderSize is the header length this version writes.
	HeaderSize = 16
	// Version is the protocol version this package writes and accepts.
	Version = 1
	// DefaultMaxFrame bounds frames a server accepts from a client.
	DefaultMaxFrame = 64 << 10
)

// Op is a frame's operation.
type Op uint32

// Ops. Odd numbers travel client -> server, even ones server -> client, except
// ERROR which either side may send.
const (
	OpAuth           Op = 1
	OpAuthReply      Op = 2
	OpHeartbeat      Op = 3
	OpHeartbeatReply Op = 4
	OpAck            Op = 5
	OpSync           Op = 6
	OpSyncReq        Op = 7
	OpPush           Op = 8
	OpRoomJoin       Op = 9
	OpKick           Op = 10
	OpRoomLeave      Op = 11
	OpRoomReply      Op = 12
	OpError          Op = 14
	OpRequest        Op = 15 // request.go: RPC to a business upstream
	OpResponse       Op = 16
)

var opNames = map[Op]string{
	OpAuth: "AUTH", OpAuthReply: "AUTH_REPLY", OpHeartbeat: "HEARTBEAT",
	OpHeartbeatReply: "HEARTBEAT_REPLY", OpAck: "ACK", OpSync: "SYNC",
	OpSyncReq: "SYNC_REQ", OpPush: "PUSH", OpRoomJoin: "ROOM_JOIN", OpKick: "KICK",
	OpRoomLeave: "ROOM_LEAVE", OpRoomReply: "ROOM_REPLY", OpError: "ERROR",
	OpRequest: "REQUEST", OpResponse: "RESPONSE",
}

func (o Op) String() string {
	if s, ok := opNames[o]; ok {
		return s
	}
	return fmt.Sprintf("OP(%d)", uint32(o))
}

// Known reports whether o is an op of this protocol version.
func (o Op) Known() bool { _, ok := opNames[o]; return ok }

// Frame is one decoded frame. Body aliases the decoded buffer.
type Frame struct {
	Op   Op
	Seq  uint32
	Body []byte
}

// Header is the fixed part of a frame.
type Header struct {
	Length    uint32 // whole frame
	HeaderLen uint16
	Version   uint16
	Op        Op
	Seq       uint32
}

// ParseHeader reads the header at the start of b and validates it against
// maxFrame (0 = DefaultMaxFrame). It returns ErrShortFrame when b is shorter
// than HeaderSize; it does not need the body.
func ParseHeader(b []byte, maxFrame int) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, ErrShortFrame
	}
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrame
	}
	h := Header{
		Length:    binary.BigEndian.Uint32(b[0:4]),
		HeaderLen: binary.BigEndian.Uint16(b[4:6]),
		Version:   binary.BigEndian.Uint16(b[6:8]),
		Op:        Op(binary.BigEndian.Uint32(b[8:12])),
		Seq:       binary.BigEndian.Uint32(b[12:16]),
	}
	switch {
	case h.Version != Version:
		return h, fmt.Errorf("%w: version %d", ErrBadHeader, h.Version)
	case h.HeaderLen < HeaderSize:
		return h, fmt.Errorf("%w: header length %d", ErrBadHeader, h.HeaderLen)
	case h.Length < uint32(h.HeaderLen):
		return h, fmt.Errorf("%w: length %d < header length %d", ErrBadHeader, h.Length, h.HeaderLen)
	case h.Length > uint32(maxFrame):
		return h, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, h.Length, maxFrame)
	}
	return h, nil
}

// Decode decodes the first frame of b. It returns the frame and the number of
// bytes it used, or ErrShortFrame when b holds only part of a frame.
func Decode(b []byte, maxFrame int) (Frame, int, error) {
	h, err := ParseHeader(b, maxFrame)
	if err != nil {
		return Frame{}, 0, err
	}
	if len(b) < int(h.Length) {
		return Frame{}, 0, ErrShortFrame
	}
	return Frame{Op: h.Op, Seq: h.Seq, Body: b[h.HeaderLen:h.Length]}, int(h.Length), nil
}

// AppendFrame appends a frame with a raw body to dst.
func AppendFrame(dst []byte, op Op, seq uint32, body []byte) []byte {
	dst = appendHeader(dst, uint32(HeaderSize+len(body)), op, seq)
	return append(dst, body...)
}

// AppendMessage appends a frame whose body is m marshalled, without an
// intermediate buffer.
func AppendMessage(dst []byte, op Op, seq uint32, m proto.Message) ([]byte, error) {
	start := len(dst)
	dst = appendHeader(dst, 0, op, seq)
	var err error
	dst, err = proto.MarshalOptions{}.MarshalAppend(dst, m)
	if err != nil {
		return dst[:start], fmt.Errorf("protocol: marshal %s: %w", op, err)
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start))
	return dst, nil
}

// Encode returns a new frame holding m.
func Encode(op Op, seq uint32, m proto.Message) ([]byte, error) {
	return AppendMessage(make([]byte, 0, HeaderSize+proto.Size(m)), op, seq, m)
}

// Unmarshal decodes f's body into m, wrapping failures in ErrBadBody.
func Unmarshal(f Frame, m proto.Message) error {
	if err := proto.Unmarshal(f.Body, m); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadBody, f.Op, err)
	}
	return nil
}

func appendHeader(dst []byte, length uint32, op Op, seq uint32) []byte {
	dst = binary.BigEndian.AppendUint32(dst, length)
	dst = binary.BigEndian.AppendUint16(dst, HeaderSize)
	dst = binary.BigEndian.AppendUint16(dst, Version)
	dst = binary.BigEndian.AppendUint32(dst, uint32(op))
	return binary.BigEndian.AppendUint32(dst, seq)
}
