package protocol

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzInflate feeds arbitrary bytes to the decompressor as a compressed body
// (what a hostile peer controls). It must never return more than the frame
// limit, and every failure must be ErrBadCompression or ErrInflateTooLarge.
// The same bytes as a plain body must survive Compress + Inflate unchanged.
func FuzzInflate(f *testing.F) {
	const maxFrame = 4096
	f.Add(deflate(f, []byte(`{"msg":"hello hello hello hello"}`)))
	f.Add(deflate(f, make([]byte, 1<<16))) // a bomb for this limit
	f.Add(deflate(f, make([]byte, maxFrame-HeaderSize)))
	f.Add([]byte{0x01, 0x00, 0x00, 0xff, 0xff})      // empty stored final block
	f.Add([]byte{0x00, 0x05, 0x00, 0xfa, 0xff, 'a'}) // stored block cut short
	f.Add([]byte{})
	c, err := NewCompressor(1, 1)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := Inflate(Frame{Op: OpSync | FlagCompressed, Seq: 1, Body: body}, maxFrame)
		switch {
		case err == nil:
			if len(got.Body) > maxFrame-HeaderSize || got.Compressed() || got.Op != OpSync || got.Seq != 1 {
				t.Fatalf("inflated %d bytes (limit %d), op %#x", len(got.Body), maxFrame-HeaderSize, uint32(got.Op))
			}
		case !errors.Is(err, ErrBadCompression) && !errors.Is(err, ErrInflateTooLarge):
			t.Fatalf("error %v is neither ErrBadCompression nor ErrInflateTooLarge", err)
		}
		if len(body) > maxFrame-HeaderSize {
			return
		}
		z := c.Compress(AppendFrame(nil, OpPush, 9, body))
		if z == nil {
			return // did not shrink: sent uncompressed
		}
		fr, _, err := Decode(z, maxFrame)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Inflate(fr, maxFrame)
		if err != nil || back.Op != OpPush || back.Seq != 9 || !bytes.Equal(back.Body, body) {
			t.Fatalf("round trip: %v, op %s", err, back.Op)
		}
	})
}
