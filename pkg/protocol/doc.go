// Package protocol is the msync wire codec: the fixed frame header, op codes,
// wire error codes and protobuf bodies (package pb). It does no I/O, so the
// gateway, the comet, the SDK and fuzzers share it. All functions are
// goroutine-safe; a Frame's Body aliases the buffer it was decoded from.
//
// Frame layout (big endian), see docs/protocol.md:
//
//	0   uint32 length      whole frame, header included
//	4   uint16 header len  16 in version 1; a reader skips extra header bytes
//	6   uint16 version     1
//	8   uint32 op
//	12  uint32 seq         client-chosen; replies echo it
//	16  body               protobuf message of the op
package protocol
