package protocol

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Body compression (docs/protocol.md §18). The client lists the algorithms
// it decodes in Auth.compression, the server names the one it chose in
// AuthReply.compression, and from then on either side may send a frame whose
// body is compressed: the top bit of the op field (FlagCompressed) says so.
// Each frame is compressed on its own (no shared window between frames), so
// a frame encoded once can go to many sessions and a receiver keeps no state
// per connection.

// FlagCompressed is the bit of the header's op field that marks a compressed
// body. Frame.Op carries it as received; Inflate clears it.
const FlagCompressed Op = 1 << 31

// CompressionDeflate is raw deflate (RFC 1951: no zlib or gzip wrapper), the
// one algorithm every platform decodes without a library: Go compress/flate,
// browsers' DecompressionStream("deflate-raw"), java.util.zip.Inflater(nowrap).
const CompressionDeflate = "deflate"

// DefaultCompressMinBytes is the body size below which frames are sent
// uncompressed: a deflate block costs a few bytes and a small JSON body
// barely shrinks, so compressing heartbeats and acks only burns CPU.
const DefaultCompressMinBytes = 1024

// Compressed reports whether f's body is compressed (FlagCompressed).
func (f Frame) Compressed() bool { return f.Op&FlagCompressed != 0 }

// ChooseCompression returns the first algorithm of offered (the client's
// Auth.compression, in its order) that this package supports and enabled
// allows, or "" for none.
func ChooseCompression(offered, enabled []string) string {
	for _, a := range offered {
		if a != CompressionDeflate {
			continue
		}
		for _, e := range enabled {
			if e == a {
				return a
			}
		}
	}
	return ""
}

// Compressor compresses frame bodies with raw deflate at one level. It is
// goroutine-safe; flate writers (about 1 MiB of state each at level 9, less
// at lower levels) are pooled rather than kept per connection.
type Compressor struct {
	minBytes int
	level    int
	pool     sync.Pool // *flate.Writer
}

// NewCompressor returns a compressor for bodies of at least minBytes (zero:
// DefaultCompressMinBytes) at flate level (1 fastest … 9 smallest; zero:
// flate.BestSpeed, which on JSON gets most of level 9's gain for a fraction
// of the CPU, see docs/benchmarks.md).
func NewCompressor(minBytes, level int) (*Compressor, error) {
	if minBytes == 0 {
		minBytes = DefaultCompressMinBytes
	}
	if level == 0 {
		level = flate.BestSpeed
	}
	if minBytes < 0 {
		return nil, fmt.Errorf("protocol: compression min bytes %d: want >= 0", minBytes)
	}
	if level < flate.BestSpeed || level > flate.BestCompression {
		return nil, fmt.Errorf("protocol: compression level %d: want %d-%d", level, flate.BestSpeed, flate.BestCompression)
	}
	return &Compressor{minBytes: minBytes, level: level}, nil
}

// MinBytes is the smallest body the compressor compresses.
func (c *Compressor) MinBytes() int { return c.minBytes }

// Worth reports whether frame (a whole encoded frame) is big enough to
// compress. It does not allocate: the uncompressed path stays free.
func (c *Compressor) Worth(frame []byte) bool {
	return len(frame)-HeaderSize >= c.minBytes && len(frame) >= HeaderSize && frame[8]&0x80 == 0
}

// sliceWriter appends to a byte slice (flate's output).
type sliceWriter struct{ b []byte }

func (w *sliceWriter) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

// Compress returns a new frame with frame's op, seq and flag set and its
// body deflated, or nil when the body is below MinBytes or would not shrink
// (random or already compressed data): the caller then sends frame as it is.
// frame is not modified.
func (c *Compressor) Compress(frame []byte) []byte {
	if !c.Worth(frame) {
		return nil
	}
	body := frame[HeaderSize:]
	// JSON usually deflates to a quarter or less; start at half so most
	// frames need no regrowth.
	w := &sliceWriter{b: make([]byte, HeaderSize, HeaderSize+len(body)/2+64)}
	fw, _ := c.pool.Get().(*flate.Writer)
	if fw == nil {
		fw, _ = flate.NewWriter(w, c.level) // level validated by NewCompressor
	} else {
		fw.Reset(w)
	}
	_, werr := fw.Write(body)
	cerr := fw.Close()
	fw.Reset(nil) // drop the reference to w's buffer before pooling
	c.pool.Put(fw)
	if werr != nil || cerr != nil || len(w.b) >= len(frame) {
		return nil
	}
	out := w.b
	copy(out, frame[:HeaderSize])
	binary.BigEndian.PutUint32(out[0:4], uint32(len(out)))
	binary.BigEndian.PutUint16(out[4:6], HeaderSize)
	out[8] |= 0x80
	return out
}

// inflater is a pooled flate reader with its source.
type inflater struct {
	src bytes.Reader
	r   io.ReadCloser
}

var inflaters = sync.Pool{New: func() any {
	in := new(inflater)
	in.r = flate.NewReader(&in.src)
	return in
}}

// Inflate returns f with its body decompressed and FlagCompressed cleared
// (a frame without the flag is returned as it is). maxFrame bounds the
// decompressed frame, header included, exactly like the wire limit (0 =
// DefaultMaxFrame): a body that would inflate past it is refused with
// ErrInflateTooLarge after reading at most maxFrame bytes of output, so a
// small frame cannot make the receiver allocate more than its frame limit
// (a decompression bomb). A corrupt stream, or bytes after its end, is
// ErrBadCompression. The new body is freshly allocated.
func Inflate(f Frame, maxFrame int) (Frame, error) {
	if !f.Compressed() {
		return f, nil
	}
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrame
	}
	limit := maxFrame - HeaderSize
	in := inflaters.Get().(*inflater)
	defer inflaters.Put(in)
	in.src.Reset(f.Body)
	if err := in.r.(flate.Resetter).Reset(&in.src, nil); err != nil {
		return Frame{}, fmt.Errorf("%w: %v", ErrBadCompression, err)
	}
	// Start near a typical JSON ratio; grow up to limit+1 so "one byte too
	// many" is seen without reading the rest of a bomb.
	out := make([]byte, 0, min(limit+1, max(512, 4*len(f.Body))))
	for {
		if len(out) == cap(out) {
			if len(out) > limit {
				break
			}
			out = append(out, 0)[:len(out)]
			if cap(out) > limit+1 {
				out = out[: len(out) : limit+1]
			}
		}
		n, err := in.r.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Frame{}, fmt.Errorf("%w: %s: %v", ErrBadCompression, f.Op&^FlagCompressed, err)
		}
	}
	if len(out) > limit {
		return Frame{}, fmt.Errorf("%w: %s inflates past %d bytes", ErrInflateTooLarge, f.Op&^FlagCompressed, maxFrame)
	}
	if in.src.Len() > 0 {
		return Frame{}, fmt.Errorf("%w: %s: %d bytes after the deflate stream", ErrBadCompression, f.Op&^FlagCompressed, in.src.Len())
	}
	return Frame{Op: f.Op &^ FlagCompressed, Seq: f.Seq, Body: out}, nil
}
