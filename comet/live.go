package comet

import (
	"encoding/binary"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
)

// Live pages are written without building wirepb messages. A global oplog
// pushed to N sessions used to be converted (wirepb.Oplog) and marshalled N
// times; its wire form is now encoded once when it is pushed (liveOp.wire) and
// each session's SYNC frame is concatenated from those bytes with protowire,
// in the field order the generated code writes (live_test.go proves the bytes
// decode to the message the generated code would build).
//
// When a whole Broadcast call's oplogs make up a session's round unchanged —
// the common case of a global fan-out, where every session is in step — the
// frame is the same for all of them, so it is built once per call
// (liveBatch.frame) and shared: the transport only reads frame bytes.

// Field numbers of pkg/protocol/pb/wire.proto.
const (
	fieldSyncPages = 1 // Sync.pages

	fieldPageChannel = 1 // ChannelPage.channel
	fieldPageBiz     = 2
	fieldPageAfter   = 3
	fieldPageUpto    = 4
	fieldPageOplogs  = 5
	fieldPageLive    = 8

	fieldOplogID           = 1 // Oplog.id
	fieldOplogPayload      = 2
	fieldOplogCreatedMs    = 3
	fieldOplogValidUntilMs = 4
)

// liveOp is one live oplog as sessions receive it: the oplog (shared
// read-only by every session it was pushed to) and its wire form.
type liveOp struct {
	op *oplog.Oplog
	// wire is the encoded wirepb.Oplog message (no tag, no length), shared
	// read-only.
	wire []byte
	// batch is the Broadcast call that pushed it (nil for Comet.Push): its
	// shared frame serves the sessions whose round is exactly batch.ops.
	batch *liveBatch
}

func newLiveOp(op *oplog.Oplog) *liveOp {
	return &liveOp{op: op, wire: appendWireOplog(make([]byte, 0, wireOplogLen(op)), op)}
}

// wireOplogLen is the encoded length of op's wirepb.Oplog.
func wireOplogLen(op *oplog.Oplog) int {
	n := 0
	if op.Id != 0 {
		n += 1 + protowire.SizeVarint(op.Id)
	}
	if len(op.Payload) > 0 {
		n += 1 + protowire.SizeBytes(len(op.Payload))
	}
	if op.CreatedMs != 0 {
		n += 1 + protowire.SizeVarint(uint64(op.CreatedMs))
	}
	if op.ValidUntilMs != 0 {
		n += 1 + protowire.SizeVarint(uint64(op.ValidUntilMs))
	}
	return n
}

// appendWireOplog appends op as a wirepb.Oplog message: the fields a device
// sees (id, payload, created_ms, valid_until_ms), zero values omitted.
func appendWireOplog(b []byte, op *oplog.Oplog) []byte {
	if op.Id != 0 {
		b = protowire.AppendTag(b, fieldOplogID, protowire.VarintType)
		b = protowire.AppendVarint(b, op.Id)
	}
	if len(op.Payload) > 0 {
		b = protowire.AppendTag(b, fieldOplogPayload, protowire.BytesType)
		b = protowire.AppendBytes(b, op.Payload)
	}
	if op.CreatedMs != 0 {
		b = protowire.AppendTag(b, fieldOplogCreatedMs, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(op.CreatedMs))
	}
	if op.ValidUntilMs != 0 {
		b = protowire.AppendTag(b, fieldOplogValidUntilMs, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(op.ValidUntilMs))
	}
	return b
}

// livePages recycles livePage values (session.releaseLive).
var livePages = sync.Pool{New: func() any { return new(livePage) }}

// maxPooledPageOps bounds the ops capacity of a recycled page, so one burst
// does not pin a large array in the pool.
const maxPooledPageOps = 256

// livePage is the live page of one channel being built in a drain round:
// (after, upto] with the delivered oplogs, as a wirepb.ChannelPage with
// live=true.
type livePage struct {
	after, upto uint64
	ops         []*liveOp
	// payload is the payload bytes of ops, bounded by maxLivePage.
	payload int
}

// pageLen is the encoded length of p as ch's ChannelPage.
func (p *livePage) pageLen(ch *channel) int {
	n := 2 // live = true
	if ch.name != "" {
		n += 1 + protowire.SizeBytes(len(ch.name))
	}
	if ch.biz != "" {
		n += 1 + protowire.SizeBytes(len(ch.biz))
	}
	if p.after != 0 {
		n += 1 + protowire.SizeVarint(p.after)
	}
	if p.upto != 0 {
		n += 1 + protowire.SizeVarint(p.upto)
	}
	for _, op := range p.ops {
		n += 1 + protowire.SizeBytes(len(op.wire))
	}
	return n
}

// appendPage appends p as ch's ChannelPage message, fields in number order
// like the generated code (more and skipped are zero on a live page).
func (p *livePage) appendPage(b []byte, ch *channel) []byte {
	if ch.name != "" {
		b = protowire.AppendTag(b, fieldPageChannel, protowire.BytesType)
		b = protowire.AppendString(b, ch.name)
	}
	if ch.biz != "" {
		b = protowire.AppendTag(b, fieldPageBiz, protowire.BytesType)
		b = protowire.AppendString(b, ch.biz)
	}
	if p.after != 0 {
		b = protowire.AppendTag(b, fieldPageAfter, protowire.VarintType)
		b = protowire.AppendVarint(b, p.after)
	}
	if p.upto != 0 {
		b = protowire.AppendTag(b, fieldPageUpto, protowire.VarintType)
		b = protowire.AppendVarint(b, p.upto)
	}
	for _, op := range p.ops {
		b = protowire.AppendTag(b, fieldPageOplogs, protowire.BytesType)
		b = protowire.AppendBytes(b, op.wire)
	}
	b = protowire.AppendTag(b, fieldPageLive, protowire.VarintType)
	return protowire.AppendVarint(b, 1)
}

// livePart is one page of a SYNC frame: a channel and its live page.
type livePart struct {
	ch   *channel
	page *livePage
	n    int // page's encoded length
}

// appendLiveSync appends a SYNC frame (seq 0) holding parts as
// wirepb.Sync{pages}.
func appendLiveSync(b []byte, parts []livePart) []byte {
	start := len(b)
	b = protocol.AppendFrame(b, protocol.OpSync, 0, nil)
	for _, pt := range parts {
		b = protowire.AppendTag(b, fieldSyncPages, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(pt.n))
		b = pt.page.appendPage(b, pt.ch)
	}
	// The header's first field is the frame length (protocol.AppendFrame
	// wrote it for an empty body).
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b
}

// syncPartLen is what one page adds to a Sync body: tag, length, page.
func syncPartLen(n int) int { return 1 + protowire.SizeBytes(n) }

// liveBatch is the oplogs of one channel pushed by one Broadcast call, in
// order, and the SYNC frame a session writes when its round delivered exactly
// them as one page right after its previous frame.
type liveBatch struct {
	ops []*liveOp

	once  sync.Once
	biz   string    // of the channel the frame was built for
	frame sharedOut // shared read-only; built on first use
}

// sharedFrame returns the batch's frame when p (ch's live page, the only page
// of the round) is exactly the batch, else nil.
func (lb *liveBatch) sharedFrame(ch *channel, p *livePage) *sharedOut {
	if len(p.ops) != len(lb.ops) || p.after != lb.ops[0].op.Id-1 || p.upto != lb.ops[len(lb.ops)-1].op.Id {
		return nil
	}
	for i, op := range p.ops {
		if op != lb.ops[i] {
			return nil
		}
	}
	// Same channel, after, upto and oplogs: every such session writes the
	// same bytes; the first one builds them.
	lb.once.Do(func() {
		n := p.pageLen(ch)
		lb.biz = ch.biz
		lb.frame.op = protocol.OpSync
		lb.frame.raw = appendLiveSync(make([]byte, 0, protocol.HeaderSize+syncPartLen(n)), []livePart{{ch: ch, page: p, n: n}})
	})
	if lb.biz != ch.biz {
		return nil
	}
	return &lb.frame
}
