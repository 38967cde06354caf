package comet

import (
	"errors"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/msync/msync/pkg/protocol"
)

// Body compression (docs/protocol.md §18). The session decides once, at
// AUTH, from the client's list and Config.Compression; send then compresses
// the SYNC, PUSH and RESPONSE frames whose body reaches MinBytes. A frame
// that goes to many sessions (a broadcast PUSH, a shared live frame) is
// compressed once for all of them (sharedOut). Frames below the threshold,
// and every frame of a session without compression, cost one branch and no
// allocation.

// Compression configures body compression.
type Compression struct {
	// Disabled turns compression off: AUTH_REPLY names no algorithm, so
	// every frame stays uncompressed, and a compressed client frame is
	// ERROR 4000. Zero: enabled.
	Disabled bool
	// Algorithms are those the comet accepts; the client's order of
	// preference decides among them. Zero: ["deflate"], the only one.
	Algorithms []string
	// MinBytes is the smallest body the comet compresses; smaller ones go
	// out as they are (compressing heartbeats and acks only burns CPU).
	// Zero: protocol.DefaultCompressMinBytes (1 KiB).
	MinBytes int
	// Level is the flate level, 1 (fastest) to 9 (smallest). Zero: 1, which
	// on JSON oplogs gets within a few percent of 9 at a third of the CPU
	// (docs/benchmarks.md).
	Level int
}

func (cc *Compression) setDefaults() {
	if len(cc.Algorithms) == 0 {
		cc.Algorithms = []string{protocol.CompressionDeflate}
	}
}

// validate returns every problem of cc (Config.validate joins them).
func (cc *Compression) validate() []error {
	var errs []error
	for _, a := range cc.Algorithms {
		if a != protocol.CompressionDeflate {
			errs = append(errs, fmt.Errorf("%w: Compression.Algorithms: %q unknown (want %q)", ErrInvalidConfig, a, protocol.CompressionDeflate))
		}
	}
	if cc.MinBytes < 0 {
		errs = append(errs, fmt.Errorf("%w: Compression.MinBytes %d: want >= 0", ErrInvalidConfig, cc.MinBytes))
	}
	if cc.Level < 0 || cc.Level > 9 {
		errs = append(errs, fmt.Errorf("%w: Compression.Level %d: want 1-9", ErrInvalidConfig, cc.Level))
	}
	return errs
}

// newCompressor is nil when compression is off.
func newCompressor(cc Compression) (*protocol.Compressor, error) {
	if cc.Disabled {
		return nil, nil
	}
	z, err := protocol.NewCompressor(cc.MinBytes, cc.Level)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return z, nil
}

// compressOp reports whether the comet compresses frames of op: the bulky
// ones. AUTH_REPLY announces the choice and stays plain.
func compressOp(op protocol.Op) bool {
	return op == protocol.OpSync || op == protocol.OpPush || op == protocol.OpResponse
}

// negotiate picks the session's compression from the client's list; it
// runs in handleAuth, before the session is published (PUSH writers read
// s.compress only after rooms.ready, which is stored after it).
func (s *session) negotiate(offered []string) string {
	if s.c.comp == nil {
		return ""
	}
	alg := protocol.ChooseCompression(offered, s.c.cfg.Compression.Algorithms)
	s.compress = alg != ""
	return alg
}

// deflate returns b compressed when the session negotiated compression, op
// is one the comet compresses and the body is big enough and shrinks;
// else b itself.
func (s *session) deflate(op protocol.Op, b []byte) []byte {
	if !s.compress || !compressOp(op) || !s.c.comp.Worth(b) {
		return b
	}
	z := s.c.comp.Compress(b)
	if z == nil {
		return b
	}
	s.c.metrics.compressed(len(b), len(z))
	return z
}

// inflate undoes a client frame's compression (docs/protocol.md §18): a
// compressed frame on a session that did not negotiate compression (or
// before AUTH) is ERROR 4000, a corrupt body 4000, and one that would
// decompress past the frame limit ERROR 4008 without allocating more than
// the limit. It reports false when the session was failed.
func (s *session) inflate(f *protocol.Frame) bool {
	if !s.compress {
		s.fail(f.Seq, protocol.CodeBadFrame, "compressed frame without negotiated compression", ErrProtocol)
		return false
	}
	wire := len(f.Body)
	g, err := protocol.Inflate(*f, s.c.cfg.Gateway.MaxFrame)
	switch {
	case errors.Is(err, protocol.ErrInflateTooLarge):
		s.c.metrics.inflateBombs.Inc()
		s.fail(f.Seq, protocol.CodeInflateTooLarge, err.Error(), ErrProtocol)
		return false
	case err != nil:
		s.fail(f.Seq, protocol.CodeBadFrame, err.Error(), ErrProtocol)
		return false
	}
	s.c.metrics.inflated(len(g.Body), wire)
	*f = g
	return true
}

// sharedOut is one frame written to many sessions, compressed at most once
// (the first session that wants it compressed pays).
type sharedOut struct {
	op   protocol.Op
	raw  []byte
	once sync.Once
	z    []byte // nil: not worth it
}

// frameFor returns the bytes to write to s.
func (o *sharedOut) frameFor(s *session) []byte {
	if !s.compress || !compressOp(o.op) || !s.c.comp.Worth(o.raw) {
		return o.raw
	}
	o.once.Do(func() { o.z = s.c.comp.Compress(o.raw) })
	if o.z == nil {
		return o.raw
	}
	s.c.metrics.compressed(len(o.raw), len(o.z))
	return o.z
}

// compressMetrics count compressed frames and their bytes before and after,
// per direction (msync_comet_compression_*).
type compressMetrics struct {
	zFramesOut, zFramesIn    prometheus.Counter
	zRawOut, zWireOut        prometheus.Counter
	zRawIn, zWireIn          prometheus.Counter
	inflateBombs             prometheus.Counter
	compressFrames, compress *prometheus.CounterVec
}

func newCompressMetrics(labels prometheus.Labels) compressMetrics {
	frames := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "msync_comet_compressed_frames_total",
		Help: "Frames with a compressed body, by direction (out: to clients, in: from clients).", ConstLabels: labels}, []string{"dir"})
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "msync_comet_compression_bytes_total",
		Help: "Bytes of compressed frames before (stage=raw) and after (stage=wire) compression, by direction.", ConstLabels: labels}, []string{"dir", "stage"})
	return compressMetrics{
		zFramesOut: frames.WithLabelValues("out"), zFramesIn: frames.WithLabelValues("in"),
		zRawOut: bytes.WithLabelValues("out", "raw"), zWireOut: bytes.WithLabelValues("out", "wire"),
		zRawIn: bytes.WithLabelValues("in", "raw"), zWireIn: bytes.WithLabelValues("in", "wire"),
		inflateBombs: prometheus.NewCounter(prometheus.CounterOpts{Name: "msync_comet_inflate_refused_total",
			Help: "Client frames refused because they decompress past the frame limit (ERROR 4008).", ConstLabels: labels}),
		compressFrames: frames, compress: bytes,
	}
}

func (m *compressMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.compressFrames, m.compress, m.inflateBombs}
}

func (m *compressMetrics) compressed(raw, wire int) {
	m.zFramesOut.Inc()
	m.zRawOut.Add(float64(raw))
	m.zWireOut.Add(float64(wire))
}

func (m *compressMetrics) inflated(raw, wire int) {
	m.zFramesIn.Inc()
	m.zRawIn.Add(float64(raw + protocol.HeaderSize))
	m.zWireIn.Add(float64(wire + protocol.HeaderSize))
}
