package protocol

import (
	"bytes"
	"compress/flate"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/msync/msync/pkg/protocol/pb"
)

// orderJSON is a realistic ~2 KB oplog payload (an order with items), the
// kind of body compression is for.
func orderJSON(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"type":"order.updated","order":{"id":"ord_8f3a2c91","status":"shipped","currency":"EUR","customer":{"id":"cus_1029","name":"Alice Martin","email":"alice.martin@example.com"},"items":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"sku":"SKU-`)
		b.WriteString(strings.Repeat(string(rune('A'+i%26)), 3))
		b.WriteString(`-0`)
		b.WriteByte(byte('0' + i%10))
		b.WriteString(`","name":"Organic green tea, 100 g","quantity":2,"unit_price":"4.90","tax_rate":"0.07"}`)
	}
	b.WriteString(`],"shipping":{"carrier":"DHL","tracking":"JD014600006281234567","address":{"street":"12 Rue de Rivoli","city":"Paris","zip":"75001","country":"FR"}},"updated_at":"2026-12-03T16:32:10Z"}}`)
	return []byte(b.String())
}

func syncFrame(t testing.TB, payload []byte) []byte {
	t.Helper()
	b, err := Encode(OpSync, 0, &pb.Sync{Pages: []*pb.ChannelPage{{Channel: "orders/u/alice", Biz: "orders", After: 6, Upto: 7, Live: true,
		Oplogs: []*pb.Oplog{{Id: 7, Payload: payload, CreatedMs: 1764779530000}}}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCompressRoundTrip(t *testing.T) {
	c, err := NewCompressor(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	frame := syncFrame(t, orderJSON(20))
	z := c.Compress(frame)
	if z == nil {
		t.Fatalf("a %d-byte JSON frame was not compressed", len(frame))
	}
	f, n, err := Decode(z, 0)
	if err != nil || n != len(z) {
		t.Fatalf("Decode compressed = %v, %d of %d", err, n, len(z))
	}
	if !f.Compressed() || f.Op&^FlagCompressed != OpSync || len(z) >= len(frame)/2 {
		t.Fatalf("op %#x, %d -> %d bytes", uint32(f.Op), len(frame), len(z))
	}
	got, err := Inflate(f, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Op != OpSync || got.Compressed() || !bytes.Equal(got.Body, frame[HeaderSize:]) {
		t.Fatalf("inflated %s, %d bytes, equal %v", got.Op, len(got.Body), bytes.Equal(got.Body, frame[HeaderSize:]))
	}
	// Not compressed: Inflate is the identity.
	plain, _, _ := Decode(frame, 0)
	if same, err := Inflate(plain, 0); err != nil || &same.Body[0] != &plain.Body[0] {
		t.Fatalf("Inflate of a plain frame: %v", err)
	}
}

func TestCompressThresholdAndIncompressible(t *testing.T) {
	c, _ := NewCompressor(1024, 6)
	small := AppendFrame(nil, OpPush, 0, bytes.Repeat([]byte("a"), 1023))
	if c.Compress(small) != nil || c.Worth(small) {
		t.Fatal("a 1023-byte body was compressed with min 1024")
	}
	at := AppendFrame(nil, OpPush, 0, bytes.Repeat([]byte("a"), 1024))
	if c.Compress(at) == nil {
		t.Fatal("a 1024-byte body was not compressed with min 1024")
	}
	random := make([]byte, 4096)
	r := rand.NewChaCha8([32]byte{1})
	_, _ = r.Read(random)
	if z := c.Compress(AppendFrame(nil, OpPush, 0, random)); z != nil {
		t.Fatalf("random bytes compressed to %d (would grow): must be sent as they are", len(z))
	}
	// Already flagged: never compressed twice.
	z := c.Compress(at)
	if c.Compress(z) != nil {
		t.Fatal("a compressed frame was compressed again")
	}
	for _, tc := range []struct{ min, level int }{{-1, 0}, {0, -2}, {0, 10}} {
		if _, err := NewCompressor(tc.min, tc.level); err == nil {
			t.Errorf("NewCompressor(%d, %d) accepted", tc.min, tc.level)
		}
	}
}

// deflate compresses b without the Compressor's checks (the attacker's side).
func deflate(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.BestCompression)
	_, _ = w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestInflateBomb(t *testing.T) {
	// 64 MiB of zeros deflate to about 64 KiB; 1 MiB to about 1 KiB.
	bomb := deflate(t, make([]byte, 1<<20))
	f := Frame{Op: OpRequest | FlagCompressed, Seq: 3, Body: bomb}
	_, err := Inflate(f, DefaultMaxFrame)
	if !errors.Is(err, ErrInflateTooLarge) {
		t.Fatalf("a %d-byte bomb of 1 MiB: %v, want ErrInflateTooLarge", len(bomb), err)
	}
	// Exactly at the limit is fine, one byte more is not.
	limit := DefaultMaxFrame - HeaderSize
	if g, err := Inflate(Frame{Op: OpRequest | FlagCompressed, Body: deflate(t, make([]byte, limit))}, 0); err != nil || len(g.Body) != limit {
		t.Fatalf("body of exactly the limit: %v", err)
	}
	if _, err := Inflate(Frame{Op: OpRequest | FlagCompressed, Body: deflate(t, make([]byte, limit+1))}, 0); !errors.Is(err, ErrInflateTooLarge) {
		t.Fatalf("limit+1: %v", err)
	}
}

func TestInflateCorrupt(t *testing.T) {
	good := deflate(t, []byte(strings.Repeat("hello ", 100)))
	for name, body := range map[string][]byte{
		"empty":     nil,
		"garbage":   []byte{0xff, 0xff, 0xff, 0xff},
		"truncated": good[:len(good)/2],
		"trailing":  append(append([]byte{}, good...), 0, 1, 2),
	} {
		if _, err := Inflate(Frame{Op: OpSync | FlagCompressed, Body: body}, 0); !errors.Is(err, ErrBadCompression) {
			t.Errorf("%s: %v, want ErrBadCompression", name, err)
		}
	}
}

func TestChooseCompression(t *testing.T) {
	on := []string{CompressionDeflate}
	for _, tc := range []struct {
		offered, enabled []string
		want             string
	}{
		{nil, on, ""},
		{[]string{"zstd", "deflate"}, on, "deflate"},
		{[]string{"deflate"}, nil, ""},
		{[]string{"gzip", "br"}, on, ""},
	} {
		if got := ChooseCompression(tc.offered, tc.enabled); got != tc.want {
			t.Errorf("Choose(%v, %v) = %q, want %q", tc.offered, tc.enabled, got, tc.want)
		}
	}
}

// TestCompressVectors pins the example of docs/protocol.md §18: a PUSH whose
// body is compressed (Go's level-6 output; other encoders produce other
// bytes, every inflater decodes them).
func TestCompressVectors(t *testing.T) {
	c, _ := NewCompressor(16, 6)
	frame, _ := Encode(OpPush, 0, &pb.Push{Payload: []byte(vectorPayload)})
	z := c.Compress(frame)
	const want = "0000002a00100001800000080000000012" + "72ad56ca2d4e57b252ca48cdc9c957208b54aa05040000ffff"
	if got := hex.EncodeToString(z); got != want {
		t.Fatalf("compressed PUSH\n got %s\nwant %s\n%s", got, want, hex.Dump(z))
	}
	// The offer and the choice (§18 "Example bytes").
	auth, _ := Encode(OpAuth, 1, &pb.Auth{Token: "tkn", Device: "dev1", Platform: "web", Bizs: []string{"chat"}, Compression: []string{CompressionDeflate}})
	reply, _ := Encode(OpAuthReply, 1, &pb.AuthReply{User: "alice", Session: "k1", HeartbeatMs: 30000, MaxRequests: 16, Compression: CompressionDeflate})
	for name, tc := range map[string]struct {
		frame []byte
		want  string
	}{
		"auth":       {auth, "0000002f001000010000000100000001" + "0a03746b6e120464657631 1a03776562 2a0463686174 4207 6465666c617465"},
		"auth-reply": {reply, "0000002a001000010000000200000001" + "0a05616c696365 12026b31 18b0ea01 3010 3a07 6465666c617465"},
	} {
		if got, want := hex.EncodeToString(tc.frame), strings.ReplaceAll(tc.want, " ", ""); got != want {
			t.Errorf("%s\n got %s\nwant %s", name, got, want)
		}
	}
	f, _, _ := Decode(z, 0)
	back, err := Inflate(f, 0)
	var p pb.Push
	if err != nil || Unmarshal(back, &p) != nil || string(p.Payload) != vectorPayload {
		t.Fatalf("vector does not decode: %v %v", err, &p)
	}
}

const vectorPayload = `{"msg":"hello hello hello hello hello hello hello hello hello hello"}`
