package client

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/msync/msync/pkg/protocol"
)

// Body compression (docs/protocol.md §18). Unless Options.DisableCompression
// is set the client lists raw deflate in AUTH; when the server chooses it,
// frames with the compressed flag are inflated before they are handled
// (bounded by Options.MaxFrame), and REQUEST bodies of 1 KiB and more are
// sent compressed.

// clientCompressor compresses outgoing frames at the default threshold and
// flate level 1 (cannot fail with these arguments).
var clientCompressor, _ = protocol.NewCompressor(0, 0)

// CompressionStats counts the compressed frames of this client since New:
// their number and their bytes on the wire and after inflating (or before
// compressing), header included.
type CompressionStats struct {
	FramesIn, BytesInWire, BytesInRaw    uint64
	FramesOut, BytesOutWire, BytesOutRaw uint64
}

type compressCounters struct {
	framesIn, bytesInWire, bytesInRaw    atomic.Uint64
	framesOut, bytesOutWire, bytesOutRaw atomic.Uint64
}

// CompressionStats returns the client's compression counters.
func (c *Client) CompressionStats() CompressionStats {
	z := &c.zstats
	return CompressionStats{
		FramesIn: z.framesIn.Load(), BytesInWire: z.bytesInWire.Load(), BytesInRaw: z.bytesInRaw.Load(),
		FramesOut: z.framesOut.Load(), BytesOutWire: z.bytesOutWire.Load(), BytesOutRaw: z.bytesOutRaw.Load(),
	}
}

// offeredCompression is Auth.compression.
func (c *Client) offeredCompression() []string {
	if c.opts.DisableCompression {
		return nil
	}
	return []string{protocol.CompressionDeflate}
}

// readFrame reads the next frame and inflates it when compressed. A
// compressed frame the session did not negotiate, a corrupt one, or one
// that inflates past MaxFrame ends the session like a bad frame.
func (s *session) readFrame(deadline time.Time) (protocol.Frame, error) {
	f, err := s.conn.ReadFrame(deadline)
	if err != nil || !f.Compressed() {
		return f, err
	}
	if !s.compress {
		return f, fmt.Errorf("%w: compressed %s without negotiated compression", ErrProtocol, f.Op&^protocol.FlagCompressed)
	}
	wire := len(f.Body)
	g, err := protocol.Inflate(f, s.c.opts.MaxFrame)
	if err != nil {
		return f, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	z := &s.c.zstats
	z.framesIn.Add(1)
	z.bytesInWire.Add(uint64(wire + protocol.HeaderSize))
	z.bytesInRaw.Add(uint64(len(g.Body) + protocol.HeaderSize))
	return g, nil
}

// deflate compresses an outgoing REQUEST frame when negotiated and worth it.
func (s *session) deflate(op protocol.Op, b []byte) []byte {
	if !s.compress || op != protocol.OpRequest {
		return b
	}
	z := clientCompressor.Compress(b)
	if z == nil {
		return b
	}
	st := &s.c.zstats
	st.framesOut.Add(1)
	st.bytesOutWire.Add(uint64(len(z)))
	st.bytesOutRaw.Add(uint64(len(b)))
	return z
}
