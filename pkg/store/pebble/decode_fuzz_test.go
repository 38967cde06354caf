package pebble

import (
	"bytes"
	"encoding/binary"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/oplog"
)

// FuzzPageDecoder is the page decoder's differential fuzzer: the input is
// split into several stored values (uint16 length prefixes), decoded in one
// page by one decoder, and each must equal what proto.Unmarshal makes of it
// (both fail, or both succeed with equal messages). Payloads must not share
// capacity, so a caller appending to one cannot overwrite the next.
func FuzzPageDecoder(f *testing.F) {
	full, _ := proto.Marshal(&oplog.Oplog{Channel: "c/d/x", Id: 7, Biz: "chat", Payload: []byte("hello"), CreatedMs: 1,
		ValidFromMs: -5, ValidUntilMs: 1 << 60, Platforms: []string{"ios", "android"}, MinVersion: "1.2", MaxVersion: "3.4", DedupKey: "k"})
	other, _ := proto.Marshal(&oplog.Oplog{Id: 8, Biz: "other", Payload: make([]byte, 5000)})
	unknown := protowire.AppendVarint(protowire.AppendTag(append([]byte(nil), full...), 99, protowire.VarintType), 3)
	wrongType := protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 3)
	badUTF8 := protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), []byte{0xff})
	f.Add(page(full, full, other))
	f.Add(page(unknown, wrongType, badUTF8, full))
	f.Add(page([]byte{}, []byte{0x12, 0x80}))
	f.Add(full)
	f.Fuzz(func(t *testing.T, in []byte) {
		values := split(in)
		d := newPageDecoder(len(values))
		var got, wants []*oplog.Oplog
		var scratch []byte
		for i, v := range values {
			// Like a Pebble iterator, the value's buffer is reused for the
			// next one: scribble over it after decoding.
			scratch = append(scratch[:0], v...)
			op, err := d.decode(scratch)
			for j := range scratch {
				scratch[j] = 0xEE
			}
			var want oplog.Oplog
			werr := proto.Unmarshal(v, &want)
			if (err == nil) != (werr == nil) {
				t.Fatalf("value %d %x: decoder err %v, proto.Unmarshal err %v", i, v, err, werr)
			}
			if err != nil {
				continue
			}
			if !proto.Equal(op, &want) {
				t.Fatalf("value %d %x:\ndecoder %v\nproto   %v", i, v, op, &want)
			}
			got, wants = append(got, op), append(wants, &want)
		}
		// Earlier results must not change when later values are decoded
		// (shared slab and payload chunks), nor when a payload grows.
		for _, op := range got {
			op.Payload = append(op.Payload, 0xAA) // must reallocate, not write into a neighbour
		}
		for i, op := range got {
			op.Payload = op.Payload[:len(op.Payload)-1]
			if !proto.Equal(op, wants[i]) {
				t.Fatalf("oplog %d changed after later decodes or a neighbour's append:\n%v\n%v", i, op, wants[i])
			}
		}
	})
}

func page(vs ...[]byte) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
		b = append(b, v...)
	}
	return b
}

// split undoes page; a short tail becomes the last value.
func split(b []byte) [][]byte {
	var out [][]byte
	for len(b) >= 2 {
		n := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		n = min(n, len(b))
		out = append(out, b[:n])
		b = b[n:]
	}
	if len(b) > 0 {
		out = append(out, b)
	}
	return out
}

// FuzzParseExpiryKey: parseExpiryKey returns exactly what expiryKey wrote,
// and any other key it accepts re-encodes to itself.
func FuzzParseExpiryKey(f *testing.F) {
	f.Add(int64(1700000000000), "chat/u/alice", uint64(7), []byte(nil))
	f.Add(int64(-1), "", uint64(0), []byte{'x', 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff})
	f.Add(int64(0), "a", uint64(1<<63), []byte{'o', 1, 2})
	f.Fuzz(func(t *testing.T, until int64, ch string, id uint64, raw []byte) {
		if len(ch) <= maxNameLen {
			k := expiryKey(until, ch, id)
			gch, gid, err := parseExpiryKey(k)
			if err != nil || gch != ch || gid != id {
				t.Fatalf("parseExpiryKey(expiryKey(%d, %q, %d)) = %q, %d, %v", until, ch, id, gch, gid, err)
			}
		}
		gch, gid, err := parseExpiryKey(raw)
		if err != nil {
			return
		}
		if u := int64(binary.BigEndian.Uint64(raw[1:9])); !bytes.Equal(expiryKey(u, gch, gid), raw) {
			t.Fatalf("accepted %x, which re-encodes differently", raw)
		}
	})
}
