package dedupe

import (
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/msync/msync/pkg/queue"
)

// Field numbers of the messages OplogID reads; pkg/api/pb/api.proto
// (QueueMsg.oplog = 1) and pkg/oplog/oplog.proto (Oplog.channel = 1,
// Oplog.id = 2). A test checks them against the generated code.
const (
	fieldQueueMsgOplog = 1
	fieldOplogChannel  = 1
	fieldOplogID       = 2
)

// OplogID is the IDFunc for the push stream: it reads only the channel and
// id of a pb.QueueMsg carrying an oplog, skipping the payload without
// copying it. ok is false for any other message (kick, push, rooms), an
// oplog without channel or id, or bytes that are not a valid QueueMsg; those
// pass through undeduped and the real decoder reports them.
func OplogID(m queue.Message) (channel string, id uint64, ok bool) {
	oplog, found := field(m.Value, fieldQueueMsgOplog)
	if !found {
		return "", 0, false
	}
	b := oplog
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", 0, false
		}
		b = b[n:]
		switch {
		case num == fieldOplogChannel && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return "", 0, false
			}
			channel, b = string(v), b[n:]
		case num == fieldOplogID && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return "", 0, false
			}
			id, b = v, b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return "", 0, false
			}
			b = b[n:]
		}
	}
	if channel == "" || id == 0 {
		return "", 0, false
	}
	return channel, id, true
}

// field returns field num of the top-level message b if it is the last field
// (a later oneof member would win).
func field(b []byte, num protowire.Number) (v []byte, found bool) {
	for len(b) > 0 {
		n0, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
		if n0 == num && typ == protowire.BytesType {
			val, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, false
			}
			v, found, b = val, true, b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(n0, typ, b)
		if n < 0 {
			return nil, false
		}
		// QueueMsg holds only its body oneof: another member after the oplog
		// replaces it (last one wins). An unknown field lands here too and
		// makes the message pass undeduped, the safe direction.
		v, found, b = nil, false, b[n:]
	}
	return v, found
}
