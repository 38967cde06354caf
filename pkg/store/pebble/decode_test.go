package pebble

import (
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/oplog"
)

// The page decoder must produce exactly what proto.Unmarshal does, for every
// field, for values it decodes itself and for those it hands over.
func TestPageDecoderMatchesProtoUnmarshal(t *testing.T) {
	full := &oplog.Oplog{Channel: "c/d/x", Id: 7, Biz: "chat", Payload: []byte("hello"), CreatedMs: 1,
		ValidFromMs: -5, ValidUntilMs: 1 << 60, Platforms: []string{"ios", "android"},
		MinVersion: "1.2", MaxVersion: "3.4", DedupKey: "k"}
	var values [][]byte
	for _, m := range []*oplog.Oplog{{}, full, {Biz: "chat", Payload: []byte{}}, {Biz: "other", Payload: make([]byte, 5000)}} {
		v, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		values = append(values, v)
	}
	// Repeated scalars (last wins), an unknown field (kept by the fallback),
	// a wrong wire type for a known field.
	v := protowire.AppendTag(nil, 2, protowire.VarintType)
	v = protowire.AppendVarint(v, 1)
	v = protowire.AppendTag(v, 2, protowire.VarintType)
	v = protowire.AppendVarint(v, 9)
	values = append(values, v)
	values = append(values, protowire.AppendVarint(protowire.AppendTag(append([]byte(nil), values[1]...), 99, protowire.VarintType), 3))
	values = append(values, protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 3))
	// Random payloads and bizs through one decoder, as in a page.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		m := &oplog.Oplog{Id: uint64(i + 1), Biz: []string{"a", "b"}[rng.IntN(2)], Payload: make([]byte, rng.IntN(6000))}
		for j := range m.Payload {
			m.Payload[j] = byte(rng.Uint32())
		}
		v, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		values = append(values, v)
	}

	dec := newPageDecoder(len(values))
	var got []*oplog.Oplog
	for i, v := range values {
		want := new(oplog.Oplog)
		if err := proto.Unmarshal(v, want); err != nil {
			t.Fatalf("value %d: proto.Unmarshal: %v", i, err)
		}
		op, err := dec.decode(v)
		if err != nil {
			t.Fatalf("value %d: %v", i, err)
		}
		clear(v) // the decoder must have copied what it keeps
		if !proto.Equal(op, want) {
			t.Fatalf("value %d: decoded %v, proto.Unmarshal %v", i, op, want)
		}
		got = append(got, op)
	}
	for i, op := range got { // still intact after the later values were decoded
		if op.Id != 0 && i >= 7 && op.Id != uint64(i-7+1) {
			t.Fatalf("value %d: id %d changed after decoding the next ones", i, op.Id)
		}
	}
	if !proto.Equal(got[1], full) {
		t.Fatalf("full oplog decoded as %v", got[1])
	}
	if got[4].Id != 9 {
		t.Fatalf("repeated id: got %d, want the last (9)", got[4].Id)
	}
	if len(got[5].ProtoReflect().GetUnknown()) == 0 || !proto.Equal(withoutUnknown(got[5]), full) {
		t.Fatalf("unknown field: decoded %v", got[5])
	}
	// Appending to one payload must not overwrite the next one's bytes
	// (payloads share chunks).
	checked := 0
	for i := 7; i+1 < len(got); i++ {
		p0, p1 := got[i].Payload, got[i+1].Payload
		if len(p0) == 0 || len(p1) == 0 || len(p0) > maxChunkPayload || len(p1) > maxChunkPayload {
			continue
		}
		keep := append([]byte(nil), p1...)
		_ = append(p0, ^p1[0])
		if string(p1) != string(keep) {
			t.Fatalf("append to payload %d changed payload %d", i, i+1)
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no neighbouring chunked payloads to check")
	}
}

func withoutUnknown(m *oplog.Oplog) *oplog.Oplog {
	c := proto.Clone(m).(*oplog.Oplog)
	c.ProtoReflect().SetUnknown(nil)
	return c
}

// A value that is not a valid message fails like proto.Unmarshal does.
func TestPageDecoderRejectsGarbage(t *testing.T) {
	// A bad tag; a payload longer than the value; a biz that is not UTF-8.
	for _, v := range [][]byte{{0xff}, {0x22, 0x05, 'a'}, {0x1a, 0x01, 0xff}} {
		perr := proto.Unmarshal(v, new(oplog.Oplog))
		if _, err := newPageDecoder(1).decode(v); (err == nil) != (perr == nil) || err == nil {
			t.Fatalf("decode(%x) = %v, proto.Unmarshal = %v", v, err, perr)
		}
	}
}
