package pebble

import (
	"encoding/binary"
	"fmt"
)

// Key layout. Every key starts with a one-byte kind. Strings inside keys are
// length-prefixed (uint16 big-endian) so that one channel's (or device's)
// keys form one contiguous range that no other name can interleave with, and
// numbers are big-endian so byte order is numeric order.
//
//	o | len | channel | id             -> Oplog (proto; channel field cleared)
//	m | len | channel                  -> max id ever assigned (uint64 BE); never deleted
//	d | len | channel | dedup key      -> id of the oplog that used the key (uint64 BE)
//	x | valid_until_ms | len | channel | id -> dedup key ("" if none)
//	p | len | device | channel         -> sync point id (uint64 BE)
//	w | len | device                   -> the user owning the device (principals.go)
//	r | len | user                     -> tokens issued before this unix second are revoked (uint64 BE)
//	q | len | channel | device         -> sync point id, acked-at unix ns (2x uint64 BE) (receipts.go)
//	a | len | biz | acked ns | len | channel | device -> sync point id: the ack feed (receipts.go)
//	c | name                           -> an ack feed consumer's cursor
//	k                                  -> the last acked-at ns handed out (uint64 BE)
//
// The expiry index (x) is ordered by time, so DeleteExpired scans it from the
// start up to its cut-off and deletes each entry with its oplog and dedup key.
// Oplogs with valid_until_ms <= 0 never expire and are not indexed.
const (
	kindOplog     = 'o'
	kindMeta      = 'm'
	kindDedup     = 'd'
	kindExpiry    = 'x'
	kindSyncPoint = 'p'
	kindOwner     = 'w'
	kindNotBefore = 'r'
	kindReceipt   = 'q'
	kindAckFeed   = 'a'
	kindCursor    = 'c'
	kindLastAck   = 'k'
)

// maxNameLen is the longest channel or device name that fits the uint16
// length prefix.
const maxNameLen = 1<<16 - 1

func appendName(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func oplogKey(ch string, id uint64) []byte {
	b := make([]byte, 0, 1+2+len(ch)+8+1) // +1: room for readUpper's suffix
	b = append(b, kindOplog)
	b = appendName(b, ch)
	return binary.BigEndian.AppendUint64(b, id)
}

func metaKey(ch string) []byte {
	return appendName(append(make([]byte, 0, 1+2+len(ch)), kindMeta), ch)
}

func dedupKey(ch, key string) []byte {
	b := appendName(append(make([]byte, 0, 1+2+len(ch)+len(key)), kindDedup), ch)
	return append(b, key...)
}

func expiryKey(untilMs int64, ch string, id uint64) []byte {
	b := make([]byte, 0, 1+8+2+len(ch)+8)
	b = append(b, kindExpiry)
	b = binary.BigEndian.AppendUint64(b, uint64(untilMs))
	b = appendName(b, ch)
	return binary.BigEndian.AppendUint64(b, id)
}

// parseExpiryKey returns the channel and id an expiry index key points to.
func parseExpiryKey(k []byte) (ch string, id uint64, err error) {
	if len(k) < 1+8+2+8 || k[0] != kindExpiry {
		return "", 0, fmt.Errorf("bad expiry key %x", k)
	}
	n := int(binary.BigEndian.Uint16(k[9:]))
	if len(k) != 1+8+2+n+8 {
		return "", 0, fmt.Errorf("bad expiry key %x", k)
	}
	return string(k[11 : 11+n]), binary.BigEndian.Uint64(k[11+n:]), nil
}

func syncPointPrefix(device string) []byte {
	return appendName([]byte{kindSyncPoint}, device)
}

func syncPointKey(device, ch string) []byte {
	return append(syncPointPrefix(device), ch...)
}

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil // p is all 0xff: no upper bound
}

func encodeUint64(v uint64) []byte { return binary.BigEndian.AppendUint64(make([]byte, 0, 8), v) }

func decodeUint64(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("bad uint64 value of %d bytes", len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}
