package pebble

import (
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/oplog"
)

// pageDecoder decodes the stored values of one Read page. Backlog pages are
// the hot path of a reconnect storm (19,000 devices × 100 oplogs), where the
// generic proto.Unmarshal and its three allocations per oplog (message,
// payload, biz) showed up as a tenth of the server's CPU plus most of its GC.
// It allocates the page's messages in one slab, copies payloads into shared
// chunks and reuses the biz string of the previous oplog (a channel's oplogs
// all carry the same biz). A value with anything it does not know (a field
// added by a newer schema, an unexpected wire type) is handed to
// proto.Unmarshal whole, so it decodes exactly what proto.Unmarshal does.
type pageDecoder struct {
	slab  []oplog.Oplog
	chunk []byte
	biz   string
	// left is how many more messages the page may need (sizes the slab).
	left int
}

// payloadChunk is the largest shared payload buffer; payloads above
// maxChunkPayload get their own allocation so one big oplog does not waste a
// chunk.
const (
	payloadChunk    = 16 << 10
	maxChunkPayload = 4 << 10
)

func newPageDecoder(n int) *pageDecoder { return &pageDecoder{left: n} }

// decode returns the oplog stored as v. v may be reused after it returns.
func (d *pageDecoder) decode(v []byte) (*oplog.Oplog, error) {
	if len(d.slab) == 0 {
		d.slab = make([]oplog.Oplog, max(min(d.left, 256), 1))
	}
	op := &d.slab[0]
	d.slab = d.slab[1:]
	d.left--
	if d.fast(op, v) {
		return op, nil
	}
	proto.Reset(op)
	if err := proto.Unmarshal(v, op); err != nil { // copies v
		return nil, err
	}
	return op, nil
}

// fast decodes v into the zero op and reports whether it could; on false op
// is partly filled and the caller starts over.
func (d *pageDecoder) fast(op *oplog.Oplog, v []byte) bool {
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 {
			return false
		}
		v = v[n:]
		switch typ {
		case protowire.VarintType:
			x, n := protowire.ConsumeVarint(v)
			if n < 0 {
				return false
			}
			v = v[n:]
			switch num {
			case 2:
				op.Id = x
			case 5:
				op.CreatedMs = int64(x)
			case 6:
				op.ValidFromMs = int64(x)
			case 7:
				op.ValidUntilMs = int64(x)
			default:
				return false
			}
		case protowire.BytesType:
			b, n := protowire.ConsumeBytes(v)
			if n < 0 {
				return false
			}
			v = v[n:]
			// proto.Unmarshal rejects invalid UTF-8 in string fields; leave
			// that (and its error) to it.
			if num != 4 && !utf8.Valid(b) {
				return false
			}
			switch num {
			case 1:
				op.Channel = string(b)
			case 3:
				if string(b) != d.biz { // no allocation for the comparison
					d.biz = string(b)
				}
				op.Biz = d.biz
			case 4:
				op.Payload = d.payload(b)
			case 8:
				op.Platforms = append(op.Platforms, string(b))
			case 9:
				op.MinVersion = string(b)
			case 10:
				op.MaxVersion = string(b)
			case 11:
				op.DedupKey = string(b)
			default:
				return false
			}
		default:
			return false
		}
	}
	return true
}

// payload copies b into the current chunk. The result's capacity is its
// length, so a caller appending to one payload cannot overwrite the next.
func (d *pageDecoder) payload(b []byte) []byte {
	if len(b) > maxChunkPayload {
		return append(make([]byte, 0, len(b)), b...)
	}
	if cap(d.chunk)-len(d.chunk) < len(b) {
		// Guess the rest of the page from this payload: most pages hold
		// small payloads of similar size, and a fixed chunk would be mostly
		// waste for them.
		d.chunk = make([]byte, 0, min(max(len(b)*(d.left+1), 256), payloadChunk))
	}
	start := len(d.chunk)
	d.chunk = append(d.chunk, b...)
	return d.chunk[start:len(d.chunk):len(d.chunk)]
}
