package comet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/api"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
	wirepb "github.com/msync/msync/pkg/protocol/pb"
)

const (
	// maxQueuedFrames bounds client frames waiting for the drain task
	// (protocol.MaxInFlightFrames, documented). A well-behaved client has a
	// handful in flight (AUTH, a heartbeat, one ACK per channel); past the
	// limit the session handles the frames before it and then closes with
	// ERROR 1010, so an earlier fault's code is the one the client sees.
	maxQueuedFrames = protocol.MaxInFlightFrames
	// maxQueuedPushes bounds live pushes waiting for the drain task. Beyond it
	// pushes are not queued but folded into a per-channel resync mark, so a
	// stalled session costs at most this many oplogs of memory and loses none.
	maxQueuedPushes = 1024
	// maxRounds bounds how many queue batches one drain task handles before
	// it yields its pool worker, so a busy session cannot pin a worker.
	maxRounds = 16
	// maxSyncFrame is a soft bound on one SYNC frame: merged pages beyond it
	// go out in further frames, so a multi-channel backlog does not become one
	// frame larger than the transport's write queue.
	maxSyncFrame = 256 << 10
	// maxLivePage bounds the payload bytes of one live page: consecutive live
	// pushes of a round share a page until it reaches this size.
	maxLivePage = 64 << 10
)

type eventKind uint8

const (
	evFrame eventKind = iota
	evPush
	evClose
	evWake    // a valid_from timer of a channel fired (wake.go)
	evReorder // a channel's reorder window ended (reorder.go)
	evDrained // the connection's write queue drained (Conn.NotifyDrained)
	evLimit   // a frame limit was passed (limits.go); channel holds the limit name

	// evResponse: an RPC call finished (rpc.go); frame.Seq is the request
	// id, frame.Body the encoded RESPONSE frame.
	evResponse
)

// event is one input of a session, handled in arrival order.
type event struct {
	kind  eventKind
	frame protocol.Frame // evFrame; the body is owned by the session
	op    *liveOp        // evPush; shared read-only between sessions
	err   error          // evClose
	// channel is the channel whose valid_from timer fired (evWake), or
	// the limit passed (evLimit, whose frame.Seq is the offending frame's).
	channel string
}

// identity is what other goroutines may read about an authenticated session.
// It is immutable once published.
type identity struct {
	user, device string
	// channels is the session's own set (session.chans), shared rather than
	// copied: handleAuth fills it before ident is published and nobody
	// writes it afterwards, so concurrent reads are safe. Only membership
	// may be read here: the *channel values belong to the drain task.
	channels *channelSet
}

// setTicket stores a ticket from a logic reply. It keeps its own slice
// header: &reply.Ticket would keep the whole reply (its channel list and
// strings) alive as long as the session, ~0.3 KB per idle session.
func (s *session) setTicket(t []byte) {
	s.ticket.Store(&t)
}

// ticketBytes is the session's current ticket (nil before AUTH).
func (s *session) ticketBytes() []byte {
	if t := s.ticket.Load(); t != nil {
		return *t
	}
	return nil
}

// phase is a session's lifecycle, owned by the drain task.
type phase uint8

const (
	phaseNew     phase = iota // waiting for AUTH
	phaseAuthed               // syncing and live
	phaseClosing              // ERROR/close sent; waits for the transport's onClose
	phaseDone                 // finished: removed, logic told
)

// session is one connection. Other goroutines only touch mu, ident and
// hbDeadline; everything else belongs to the drain task (at most one runs at a
// time, guaranteed by mu.scheduled).
type session struct {
	c    *Comet
	conn Conn
	key  string

	ident atomic.Pointer[identity] // nil until AUTH succeeded
	// ticket is logic's signed proof of this session for Sync and Ack;
	// set at AUTH, replaced by the renewer (comet.go) before it expires.
	ticket     atomic.Pointer[[]byte]
	hbDeadline atomic.Int64 // liveness deadline in ns; 0 before AUTH
	rooms      sessionRooms // rooms.go: PUSH readiness and room membership
	rpc        sessionRPC   // rpc.go: requests in flight (drain task)

	mu struct {
		sync.Mutex
		events    []event
		frames    int32             // evFrame entries in events
		pushes    int32             // evPush entries in events
		overflow  map[string]uint64 // channel -> highest live id not queued
		scheduled bool              // a drain task is submitted or running
		closed    bool              // evClose queued: accept nothing more
		refusing  bool              // evLimit queued: drop further frames
		frameTat  int64             // frame rate bucket (limits.go)
		byteTat   int64             // byte rate bucket
	}

	// Drain-task state.
	log        slog.Logger // a value: no allocation per session (sessionlog.go)
	user       string
	device     string
	platform   string
	appVersion string
	heartbeat  time.Duration
	chans      channelSet // filled by handleAuth, then read-only (shared with identity)
	liveRound  []*channel // channels with a live page in this round
	roundMs    int64      // unix ms for validity checks in this round; 0 = not read yet
	// roundQueued is the connection's Queued() when this round first
	// delivered live (-1: not read yet), roundBytes the live payload bytes
	// of the round so far: past Comet.paceLive the rest of a burst goes
	// through the paced store sync instead of the write queue.
	roundQueued int
	roundBytes  int
	// syncCap limits the channels one Logic.Sync fetches after pages had to
	// be dropped for lack of write-queue room (0: no limit), so a slow
	// reader's multi-channel backlog is not re-read from the store per page.
	syncCap  int32 // int32 beside the flags and phase: session stays in the 384-byte size class
	phase    phase
	ackArmed bool
	// compress: the session negotiated compression at AUTH (compress.go).
	// Written before rooms.ready is stored, so PUSH writers that saw
	// ready read it without a race.
	compress bool
	// ackProgress: a backlog page was acked this round; the ack deadline
	// of the pages still in flight restarts (the device is reading).
	ackProgress bool
	spare       []event
}

func newSession(c *Comet, conn Conn, key string) *session {
	s := &session{c: c, conn: conn, key: key}
	s.log = newSessionLogger(s) // sessionlog.go: attributes added per record
	return s
}

// ---- called by the transport and the push API (any goroutine) ----

// onFrame queues a client frame. It never blocks: a frame past
// maxQueuedFrames waiting, or past the connection's frame or byte rate,
// queues an evLimit instead, behind the frames already queued, and the
// frames after it are dropped.
func (s *session) onFrame(f protocol.Frame) {
	if d := s.hbDeadline.Load(); d > 0 {
		// Any frame proves liveness, not only HEARTBEAT.
		s.conn.SetDeadline(time.Duration(d), protocol.CodeHeartbeatTimeout)
	}
	now := s.c.mono()
	r := &s.c.rates
	s.mu.Lock()
	if s.mu.closed || s.mu.refusing {
		s.mu.Unlock()
		return
	}
	var limit string
	var n *atomic.Uint64
	switch {
	case s.mu.frames >= maxQueuedFrames:
		limit, n = limitInFlight, &s.c.limited.inFlight
	case !r.frames.allow(&s.mu.frameTat, now, 1):
		limit, n = limitFrameRate, &s.c.limited.frameRate
	case !r.bytes.allow(&s.mu.byteTat, now, int64(protocol.HeaderSize+len(f.Body))):
		limit, n = limitByteRate, &s.c.limited.byteRate
	}
	if limit != "" {
		n.Add(1)
		s.mu.refusing = true
		s.mu.events = append(s.mu.events, event{kind: evLimit, channel: limit, frame: protocol.Frame{Seq: f.Seq}})
	} else {
		s.mu.frames++
		s.mu.events = append(s.mu.events, event{kind: evFrame, frame: f})
	}
	submit := s.scheduleLocked()
	s.mu.Unlock()
	if submit {
		s.c.submit(s)
	}
}

// onClose queues the end of the session; the transport calls it exactly once.
func (s *session) onClose(err error) {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return
	}
	s.mu.closed = true
	s.mu.events = append(s.mu.events, event{kind: evClose, err: err})
	submit := s.scheduleLocked()
	s.mu.Unlock()
	if submit {
		s.c.submit(s)
	}
}

// push queues live oplogs of one of the session's channels, in order (all of
// ops are of channel ch). It returns how many the session took responsibility
// for: queued, or (queue full) folded into a resync of the channel, which
// re-reads them from the store. Several oplogs cost one lock and at most one
// drain task, and the drain round that takes them writes them as one page.
func (s *session) push(ch string, ops ...*liveOp) uint32 {
	id := s.ident.Load()
	if id == nil {
		// Not authenticated yet: the backlog read that follows AUTH starts
		// after the push was stored, so it covers these oplogs.
		return 0
	}
	if id.channels.get(ch) == nil {
		return 0
	}
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return 0
	}
	for _, op := range ops {
		if s.mu.pushes >= maxQueuedPushes {
			if s.mu.overflow == nil {
				s.mu.overflow = make(map[string]uint64)
			}
			if op.op.Id > s.mu.overflow[ch] {
				s.mu.overflow[ch] = op.op.Id
			}
			s.c.metrics.pushResync.Inc()
		} else {
			s.mu.pushes++
			s.mu.events = append(s.mu.events, event{kind: evPush, op: op})
		}
	}
	submit := s.scheduleLocked()
	s.mu.Unlock()
	if submit {
		s.c.submit(s)
	}
	return uint32(len(ops))
}

// onDrained queues a drain-task round after the connection's write queue
// emptied (Conn.NotifyDrained): held-back backlog pages go out then.
func (s *session) onDrained() {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return
	}
	s.mu.events = append(s.mu.events, event{kind: evDrained})
	submit := s.scheduleLocked()
	s.mu.Unlock()
	if submit {
		s.c.submit(s)
	}
}

// kick sends KICK{code, reason} and closes.
func (s *session) kick(code protocol.Code, reason string) {
	s.c.metrics.kicks.Inc()
	s.c.metrics.framesOut[opSlot(protocol.OpKick)].Inc()
	s.conn.Close(protocol.KickFrame(code, reason), fmt.Errorf("%w: %w", ErrKicked, protocol.Errorf(code, "%s", reason)))
}

// scheduleLocked marks the session scheduled and reports whether the caller
// must submit a drain task. REQUIRES: s.mu.
func (s *session) scheduleLocked() bool {
	if s.mu.scheduled {
		return false
	}
	s.mu.scheduled = true
	return true
}

// ---- the drain task ----

// drain handles queued events in order until the queue is empty. It runs on
// a pool worker; mu.scheduled guarantees one at a time per session.
func (s *session) drain() {
	defer func() {
		if r := recover(); r != nil {
			// A bug in the state machine must not wedge the session (scheduled
			// would stay set): close it and let the close event finish it.
			s.log.Error("session panic", "panic", r)
			s.phase = max(s.phase, phaseClosing)
			s.conn.Close(protocol.ErrorFrame(0, protocol.CodeUnavailable, "internal error"), fmt.Errorf("comet: panic: %v", r))
			s.c.submit(s)
		}
	}()
	for range maxRounds {
		s.mu.Lock()
		if len(s.mu.events) == 0 && len(s.mu.overflow) == 0 {
			// Idle: keep no event slices. Most connections are idle most
			// of the time, and one small allocation per drain task is
			// cheaper than ~100-200 B held by each of them.
			s.mu.events, s.spare = nil, nil
			s.mu.scheduled = false
			s.mu.Unlock()
			return
		}
		evs, overflow := s.mu.events, s.mu.overflow
		s.mu.events, s.mu.overflow, s.spare = s.spare, nil, nil
		s.mu.frames, s.mu.pushes = 0, 0
		s.mu.Unlock()

		s.roundMs, s.roundQueued, s.roundBytes = 0, -1, 0
		for i := range evs {
			s.handle(&evs[i])
			evs[i] = event{} // drop references for the GC
		}
		if cap(evs) <= 2*maxQueuedPushes {
			s.spare = evs[:0]
		}
		for ch, id := range overflow {
			s.resyncOverflow(ch, id)
		}
		if s.phase == phaseAuthed {
			s.flushLive()
			s.syncNeeded()
			s.updateAckDeadline()
		}
	}
	// Still busy: yield the worker and queue behind other sessions.
	s.c.submit(s)
}

func (s *session) handle(ev *event) {
	switch ev.kind {
	case evClose:
		s.finish(ev.err)
	case evFrame:
		if s.phase < phaseClosing {
			s.handleFrame(ev.frame)
		}
	case evPush:
		if s.phase == phaseAuthed {
			s.handlePush(ev.op)
		}
	case evWake:
		if s.phase == phaseAuthed {
			s.handleWake(ev.channel)
		}
	case evReorder:
		if s.phase == phaseAuthed {
			s.handleReorder(ev.channel) // reorder.go
		}
	case evLimit:
		code, msg := limitError(ev.channel)
		s.fail(ev.frame.Seq, code, msg, ErrOverload)
	case evResponse:
		s.handleResponse(ev) // rpc.go
	case evDrained:
		// Nothing to do here: the round ends with syncNeeded, which sends
		// what waited for room in the write queue.
	}
}

func (s *session) handleFrame(f protocol.Frame) {
	if f.Compressed() && !s.inflate(&f) { // compress.go
		return
	}
	s.c.metrics.framesIn[opSlot(f.Op)].Inc()
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("frame in", "op", f.Op, "seq", f.Seq, "bytes", len(f.Body))
	}
	if !f.Op.Known() {
		s.fail(f.Seq, protocol.CodeUnknownOp, fmt.Sprintf("unknown op %d", uint32(f.Op)), ErrProtocol)
		return
	}
	if s.phase == phaseNew && f.Op != protocol.OpAuth {
		s.fail(f.Seq, protocol.CodeNotAuthed, fmt.Sprintf("%s before AUTH", f.Op), ErrProtocol)
		return
	}
	switch f.Op {
	case protocol.OpAuth:
		if s.phase != phaseNew {
			s.fail(f.Seq, protocol.CodeOutOfOrder, "second AUTH", ErrProtocol)
			return
		}
		s.handleAuth(f)
	case protocol.OpHeartbeat:
		s.handleHeartbeat(f) // rooms.go: may renegotiate the interval
	case protocol.OpRoomJoin, protocol.OpRoomLeave:
		s.handleRoom(f) // rooms.go
	case protocol.OpAck:
		s.handleAck(f)
	case protocol.OpSyncReq:
		s.handleSyncReq(f)
	case protocol.OpRequest:
		s.handleRequest(f) // rpc.go
	case protocol.OpError:
		// A client may say why it is leaving; it closes the connection itself.
		var e wirepb.Error
		if protocol.Unmarshal(f, &e) == nil {
			s.log.Info("client error", "code", e.Code, "message", e.Message)
		}
	default:
		// Server-to-client ops, and rooms, which this comet does not serve.
		s.fail(f.Seq, protocol.CodeUnknownOp, fmt.Sprintf("op %s not accepted from clients", f.Op), ErrProtocol)
	}
}

func (s *session) handleAuth(f protocol.Frame) {
	var a wirepb.Auth
	if err := protocol.Unmarshal(f, &a); err != nil {
		s.fail(f.Seq, protocol.CodeBadFrame, err.Error(), ErrProtocol)
		return
	}
	if !s.c.authLimit.allow(s.c.rates.auth, s.conn.RemoteAddr(), s.c.mono()) {
		s.c.limited.authIP.Add(1)
		s.fail(f.Seq, protocol.CodeAuthRateLimited, "too many AUTH attempts from this address", ErrRejected)
		return
	}
	req := &pb.ConnectReq{
		Comet: s.c.cfg.ID, Key: s.key, Token: a.Token, Device: a.Device, Platform: a.Platform,
		AppVersion: a.AppVersion, Bizs: a.Bizs, RemoteAddr: s.conn.RemoteAddr(),
	}
	if len(a.Points) > 0 {
		req.Points = make([]*pb.Point, len(a.Points))
		for i, p := range a.Points {
			req.Points[i] = &pb.Point{Channel: p.Channel, Id: p.Id}
		}
	}
	ctx, cancel := s.c.callCtx()
	reply, err := s.c.cfg.Logic.Connect(ctx, req)
	cancel()
	if err != nil {
		s.c.metrics.logicErrs.WithLabelValues("connect").Inc()
		code, msg := api.CodeOf(err)
		// Debug, not info: a client can fail AUTH as often as it connects
		// (msync_comet_errors_total counts them by code).
		if s.log.Enabled(context.Background(), slog.LevelDebug) {
			s.log.Debug("auth rejected", "device", a.Device, "code", code, "err", err)
		}
		s.fail(f.Seq, code, msg, ErrRejected)
		if code == protocol.CodeUnavailable {
			// A timed-out Connect may still have registered the session in
			// logic's directory; withdraw it rather than wait for its TTL.
			ctx, cancel := s.c.callCtx()
			_, _ = s.c.cfg.Logic.Disconnect(ctx, &pb.DisconnectReq{Comet: s.c.cfg.ID, Key: s.key, Device: a.Device})
			cancel()
		}
		return
	}

	s.user, s.device, s.platform, s.appVersion = reply.User, a.Device, a.Platform, a.AppVersion
	s.setTicket(reply.Ticket)
	base := s.c.cfg.HeartbeatInterval
	if reply.HeartbeatMs > 0 {
		base = time.Duration(reply.HeartbeatMs) * time.Millisecond
	}
	s.heartbeat = s.c.heartbeatFor(a.HeartbeatMs, base) // rooms.go: the client's wish within bounds
	out := &wirepb.AuthReply{User: reply.User, Session: s.key, HeartbeatMs: uint32(s.heartbeat / time.Millisecond),
		MaxRequests: uint32(s.c.cfg.MaxRequests), Compression: s.negotiate(a.Compression)}
	for _, cs := range reply.Channels {
		if !s.chans.add(newChannel(cs.Biz, cs.Channel, cs.From)) {
			continue // listed twice
		}
		out.Channels = append(out.Channels, &wirepb.ChannelInfo{Biz: cs.Biz, Channel: cs.Channel, From: cs.From})
	}
	for _, r := range reply.Rejected {
		out.Rejected = append(out.Rejected, &wirepb.RejectedBiz{Biz: r.Biz, Reason: r.Reason})
	}
	s.phase = phaseAuthed
	s.ident.Store(&identity{user: s.user, device: s.device, channels: &s.chans})
	for _, ch := range s.chans.order {
		if isGlobal(ch.name) {
			// After ident: Broadcast pushes need it. Before the first sync,
			// which reads every oplog stored before this point.
			s.c.global.add(ch.name, s)
		}
	}
	s.c.metrics.sessions.Inc()
	d := heartbeatDeadline(s.heartbeat)
	s.hbDeadline.Store(int64(d))
	s.conn.SetDeadline(d, protocol.CodeHeartbeatTimeout)
	s.write(protocol.OpAuthReply, f.Seq, out)
	s.rooms.ready.Store(true) // PUSH frames may follow AUTH_REPLY now
	s.log.Info("session authenticated", "platform", s.platform, "app_version", s.appVersion,
		"channels", len(s.chans.order), "rejected", len(out.Rejected))
	// Every channel starts in chNeedSync: the drain round ends with one
	// Logic.Sync for all of them.
}

func (s *session) handleAck(f protocol.Frame) {
	var a wirepb.Ack
	if err := protocol.Unmarshal(f, &a); err != nil {
		s.fail(f.Seq, protocol.CodeBadFrame, err.Error(), ErrProtocol)
		return
	}
	for _, p := range a.Points {
		ch := s.chans.get(p.Channel)
		if ch == nil {
			s.fail(f.Seq, protocol.CodeOutOfOrder, fmt.Sprintf("ACK for channel %q not in this session", p.Channel), ErrProtocol)
			return
		}
		if p.Id > ch.toldMax {
			s.fail(f.Seq, protocol.CodeOutOfOrder, fmt.Sprintf("ACK %d of %q beyond %d sent", p.Id, p.Channel, ch.toldMax), ErrProtocol)
			return
		}
		if p.Id > ch.acked {
			ch.acked = p.Id
			s.c.acks.add(s.device, s.user, ch.name, p.Id, s.ticketBytes())
		}
		if ch.st == chAwaitAck && p.Id >= ch.inflight {
			s.ackProgress = true
			if reason := ch.pageAcked(); reason != "" {
				s.c.metrics.resyncs.WithLabelValues(reason).Inc()
			}
		}
	}
}

func (s *session) handleSyncReq(f protocol.Frame) {
	var r wirepb.SyncReq
	if err := protocol.Unmarshal(f, &r); err != nil {
		s.fail(f.Seq, protocol.CodeBadFrame, err.Error(), ErrProtocol)
		return
	}
	for _, p := range r.Points {
		ch := s.chans.get(p.Channel)
		if ch == nil {
			s.fail(f.Seq, protocol.CodeOutOfOrder, fmt.Sprintf("SYNC_REQ for channel %q not in this session", p.Channel), ErrProtocol)
			return
		}
		if p.Id > ch.toldMax {
			s.fail(f.Seq, protocol.CodeOutOfOrder, fmt.Sprintf("SYNC_REQ %d of %q beyond %d sent", p.Id, p.Channel, ch.toldMax), ErrProtocol)
			return
		}
		s.syncReq(ch, p.Id, false)
	}
}

// syncReq restarts ch from id, or, past the channel's SYNC_REQ rate
// (Limits.SyncReqRate), remembers the lowest point asked for and restarts
// from it when the bucket allows (a wake timer, wake.go): each SYNC_REQ
// costs a store read and a page, so a flood must not multiply them.
func (s *session) syncReq(ch *channel, id uint64, retry bool) {
	if ch.reqDeferred {
		id = min(id, ch.reqPoint)
	}
	now := s.c.mono()
	if !s.c.rates.syncReq.allow(&ch.reqTat, now, 1) {
		ch.reqDeferred, ch.reqPoint = true, id
		if !retry {
			s.c.limited.syncReq.Add(1)
		}
		wait := time.Duration(s.c.rates.syncReq.readyAt(ch.reqTat) - now)
		s.scheduleWake(ch, s.c.now().Add(wait).UnixMilli()+1)
		return
	}
	ch.reqDeferred = false
	ch.resetTo(id)
	s.c.metrics.resyncs.WithLabelValues(resyncSyncReq).Inc()
}

// handlePush applies one live oplog to its channel (docs/protocol.md §7, LIVE).
func (s *session) handlePush(lop *liveOp) {
	m := s.c.metrics
	op := lop.op
	ch := s.chans.get(op.Channel)
	if ch == nil {
		return // push filtered these already; kept for safety
	}
	if op.Id <= ch.sent {
		m.pushDuplicate.Inc()
		return
	}
	if ch.syncing() {
		// The backlog page being fetched or acked may not include it; after
		// the last page is acked, pendingMax > sent syncs again.
		ch.raisePending(op.Id)
		m.pushDeferred.Inc()
		return
	}
	if op.Id > ch.sent+1 {
		// Out of order: wait briefly for the ids before it (reorder.go).
		if s.hold(ch, lop) {
			return
		}
		// A push was missed (dropped upstream, or a SYNC_REQ rewound sent):
		// never write past a hole; fetch the range from the store.
		s.foldHeld(ch)
		ch.raisePending(op.Id)
		ch.st = chNeedSync
		m.pushResync.Inc()
		m.resyncs.WithLabelValues(resyncGap).Inc()
		return
	}
	if s.applyLive(ch, lop) && ch.held != nil {
		s.releaseHeld(ch) // reorder.go
	}
}

// applyLive delivers, skips or defers op (id == ch.sent+1, channel live) and
// reports whether it is covered now (sent advanced).
func (s *session) applyLive(ch *channel, lop *liveOp) bool {
	m := s.c.metrics
	op := lop.op
	if s.roundMs == 0 {
		// One clock read per round, not per oplog: a round takes well under
		// a millisecond per oplog, and validity is in milliseconds.
		s.roundMs = s.c.now().UnixMilli()
	}
	switch oplog.Evaluate(op, s.platform, s.appVersion, s.roundMs) {
	case oplog.Deliver:
		if s.overLive(len(op.Payload)) {
			// The connection's queue is half full: this burst is more than
			// the device reads. The rest goes through the store sync,
			// paced on the queue (syncNeeded), instead of overflowing it.
			ch.raisePending(op.Id)
			ch.st = chNeedSync
			m.pushResync.Inc()
			m.resyncs.WithLabelValues(resyncPaced).Inc()
			return false
		}
		s.appendLive(ch, lop)
		m.pushDelivered.Inc()
	case oplog.Skip:
		// Filtered or expired for this device: covered without a frame. The
		// next frame's after=told tells the client; a live page of this round
		// can say it right away.
		ch.sent = op.Id
		if ch.live != nil {
			ch.live.upto = op.Id
			ch.cover(op.Id)
		}
		m.pushSkipped.Inc()
	case oplog.NotYet:
		// valid_from is in the future. The channel stays live with sent below
		// this id, so the next push of the channel is a gap and syncs; logic's
		// pages stop before a not-yet-valid oplog (and carry next_valid_ms).
		// The channel's valid_from timer syncs it at valid_from, so it is
		// delivered then even without later traffic.
		ch.raisePending(op.Id)
		s.scheduleWake(ch, op.ValidFromMs)
		m.pushResync.Inc()
		return false
	}
	return true
}

// overLive adds n live bytes to the round and reports whether they would
// take the connection's queue past Comet.paceLive. The first bytes of a
// round on an empty queue always go, however large.
func (s *session) overLive(n int) bool {
	if s.roundQueued < 0 {
		s.roundQueued = s.conn.Queued() // once per round, not per oplog
	}
	before := s.roundQueued + s.roundBytes
	s.roundBytes += n
	return before > 0 && before+n > s.c.paceLive
}

func (s *session) appendLive(ch *channel, lop *liveOp) {
	op := lop.op
	if ch.live != nil && ch.live.payload+len(op.Payload) > maxLivePage {
		// A burst of large oplogs: write what this channel has so far, so
		// no single frame outgrows the connection's write queue. Same
		// channel, same order; the next page's after is this one's upto.
		s.writeLive([]*channel{ch})
	}
	if ch.live == nil {
		ch.live = livePages.Get().(*livePage)
		ch.live.after = ch.told
		if !ch.inRound {
			ch.inRound = true
			s.liveRound = append(s.liveRound, ch)
		}
	}
	ch.live.ops = append(ch.live.ops, lop)
	ch.live.payload += len(op.Payload)
	ch.live.upto = op.Id
	ch.cover(op.Id)
}

// resyncOverflow folds live pushes the queue could not hold into a resync.
func (s *session) resyncOverflow(name string, id uint64) {
	ch := s.chans.get(name)
	if ch == nil || s.phase != phaseAuthed || id <= ch.sent {
		return
	}
	ch.raisePending(id)
	if !ch.syncing() {
		ch.st = chNeedSync
		s.c.metrics.resyncs.WithLabelValues(resyncOverflow).Inc()
	}
}

// flushLive writes this round's live pages as one SYNC frame.
func (s *session) flushLive() {
	if len(s.liveRound) == 0 {
		return
	}
	s.writeLive(s.liveRound)
	for i, ch := range s.liveRound {
		ch.inRound = false
		s.liveRound[i] = nil
	}
	s.liveRound = s.liveRound[:0]
}

// writeLive writes the live pages of chans (those whose page is not nil) as
// SYNC frames of about maxSyncFrame bytes each, and clears the pages. A
// round that delivered exactly one Broadcast call's oplogs writes that call's
// shared frame (live.go).
func (s *session) writeLive(chans []*channel) {
	if len(chans) == 1 && chans[0].live != nil && len(chans[0].live.ops) > 0 {
		ch := chans[0]
		if lb := ch.live.ops[0].batch; lb != nil {
			if f := lb.sharedFrame(ch, ch.live); f != nil {
				s.put(protocol.OpSync, f.frameFor(s)) // compressed once per batch
				s.releaseLive(ch)
				return
			}
		}
	}
	var buf [4]livePart // most rounds have one or two channels
	parts := buf[:0]
	size := 0
	for _, ch := range chans {
		if ch.live == nil {
			continue
		}
		n := ch.live.pageLen(ch)
		if len(parts) > 0 && size+syncPartLen(n) > maxSyncFrame {
			s.send(protocol.OpSync, appendLiveSync(make([]byte, 0, protocol.HeaderSize+size), parts))
			parts, size = parts[:0], 0
		}
		parts = append(parts, livePart{ch: ch, page: ch.live, n: n})
		size += syncPartLen(n)
	}
	if len(parts) > 0 {
		s.send(protocol.OpSync, appendLiveSync(make([]byte, 0, protocol.HeaderSize+size), parts))
	}
	for _, ch := range chans {
		if ch.live != nil {
			s.releaseLive(ch)
		}
	}
}

// releaseLive drops ch's written live page and recycles it: a page per
// channel per round would be an allocation per delivery, and keeping one per
// channel would cost idle sessions memory.
func (s *session) releaseLive(ch *channel) {
	p := ch.live
	ch.live = nil
	clear(p.ops)
	if cap(p.ops) <= maxPooledPageOps {
		*p = livePage{ops: p.ops[:0]}
		livePages.Put(p)
	}
}

// syncNeeded fetches the next page of every channel that needs one with a
// single Logic.Sync and writes the pages merged into SYNC frames.
func (s *session) syncNeeded() {
	var cursors []*pb.Cursor
	var fetching []*channel
	waiting := false // channels left for a later call (syncCap)
	unacked := 0     // bytes of backlog pages written and not acked yet
	for _, ch := range s.chans.order {
		if ch.st == chAwaitAck {
			unacked += int(ch.pageBytes)
		}
		if ch.st == chNeedSync {
			if s.syncCap > 0 && len(fetching) >= int(s.syncCap) {
				waiting = true
				continue
			}
			ch.st = chFetching
			s.foldHeld(ch) // reorder.go: the page reads held ids from the store
			cursors = append(cursors, &pb.Cursor{Channel: ch.name, After: ch.sent})
			fetching = append(fetching, ch)
		}
	}
	if len(cursors) == 0 {
		return
	}
	// Pace backlog pages on what the device has not taken yet: the bytes
	// queued on the connection and those of pages written but not acked
	// (socket buffers hold megabytes the queue does not see). A device on
	// a slow link takes the backlog as fast as it reads, instead of being
	// closed as a slow consumer with all of it queued at once, and each
	// page is acked within about paceBacklog bytes of reading.
	queued := s.conn.Queued()
	if queued+unacked >= s.c.paceBacklog {
		for _, ch := range fetching {
			ch.st = chNeedSync
		}
		if unacked == 0 {
			s.conn.NotifyDrained() // else the ACK of a page resumes it
		}
		return
	}
	budget := s.c.paceBacklog - queued - unacked
	dropped := 0
	ctx, cancel := s.c.callCtx()
	reply, err := s.c.cfg.Logic.Sync(ctx, &pb.SyncReq{
		Device: s.device, User: s.user, Platform: s.platform, AppVersion: s.appVersion,
		Cursors: cursors, Limit: s.c.cfg.PageLimit, Ticket: s.ticketBytes(),
	})
	cancel()
	if err != nil {
		for _, ch := range fetching {
			ch.st = chNeedSync
		}
		s.c.metrics.logicErrs.WithLabelValues("sync").Inc()
		code, msg := api.CodeOf(err)
		s.log.Warn("sync failed", "channels", len(cursors), "code", code, "err", err)
		s.fail(0, code, msg, ErrRejected)
		return
	}
	var pages []*wirepb.ChannelPage
	for _, p := range reply.Pages {
		ch := s.chans.get(p.Channel)
		if ch == nil || ch.st != chFetching {
			s.log.Warn("sync reply: unexpected page", "channel", p.Channel)
			continue
		}
		if p.NextValidMs > 0 {
			s.scheduleWake(ch, p.NextValidMs)
		}
		n := pageBytes(p)
		if (len(pages) > 0 || unacked > 0) && n > budget {
			// No room: fetched again once the queue drains or an ACK comes.
			ch.st = chNeedSync
			dropped++
			continue
		}
		if page := s.applyPage(ch, p); page != nil {
			pages = append(pages, page)
			ch.pageBytes = int32(min(n, 1<<31-1))
			budget -= n
		}
	}
	if dropped > 0 {
		s.syncCap = int32(max(1, len(pages)))
	} else if s.syncCap > 0 {
		if s.syncCap *= 2; int(s.syncCap) >= len(s.chans.order) {
			s.syncCap = 0
		}
	}
	if (dropped > 0 || waiting) && unacked == 0 && len(pages) == 0 {
		s.conn.NotifyDrained() // nothing in flight whose ACK would resume it
	}
	for _, ch := range fetching {
		if ch.st == chFetching {
			// No page, or one without progress (nothing new, or logic stopped
			// before a not-yet-valid oplog): the channel is live from sent.
			ch.st = chLive
		}
	}
	if len(pages) > 0 {
		// Arm before writing: once the frame is out, the page's clock runs.
		s.conn.SetAckDeadline(s.c.cfg.AckTimeout)
		s.ackArmed = true
		s.writePages(pages)
	}
}

// pageBytes estimates the wire size of logic's page p.
func pageBytes(p *pb.Page) int {
	n := 64
	for _, op := range p.Oplogs {
		n += len(op.Payload) + 32
	}
	return n
}

// applyPage turns logic's page into a wire page and moves the channel to
// awaitAck; it returns nil when the page makes no progress.
func (s *session) applyPage(ch *channel, p *pb.Page) *wirepb.ChannelPage {
	if p.After != ch.sent && s.log.Enabled(context.Background(), slog.LevelWarn) {
		s.log.Warn("sync reply: page after differs from cursor", "channel", ch.name, "after", p.After, "cursor", ch.sent)
	}
	if p.MaxId < ch.sent && len(p.Oplogs) == 0 && !ch.wrote {
		// Only for the point the client brought: once this session wrote
		// ids of the channel, the store holds them, and a lower max is a
		// store anomaly to keep out of the client's point.
		return s.rewind(ch, p.MaxId)
	}
	upto := max(p.Upto, ch.sent)
	var oplogs []*wirepb.Oplog
	for _, op := range p.Oplogs {
		if op.Id > ch.sent && op.Id <= upto { // never resend what is covered
			oplogs = append(oplogs, wireOplog(op))
		}
	}
	if upto == ch.sent && len(oplogs) == 0 {
		return nil
	}
	more := upto < p.MaxId
	// after=told, not the cursor: ids in (told, sent] were skipped live
	// pushes the client never heard of; this page covers them too.
	page := &wirepb.ChannelPage{Channel: ch.name, Biz: ch.biz, After: ch.told, Upto: upto,
		Oplogs: oplogs, More: more, Skipped: p.Skipped}
	ch.cover(upto)
	ch.inflight, ch.more, ch.st = upto, more, chAwaitAck
	return page
}

// rewind answers a channel whose point is above everything the store holds
// (the device kept a point across a store reset, or made one up): it would
// otherwise drop every new oplog as a duplicate. The page (after = the
// point, upto = maxID < after) tells the client to adopt maxID; the ids above
// it will be assigned to new oplogs (docs/protocol.md §8, "Rewind").
func (s *session) rewind(ch *channel, maxID uint64) *wirepb.ChannelPage {
	s.log.Info("sync point ahead of the channel: rewinding", "channel", ch.name, "point", ch.sent, "max_id", maxID)
	s.c.metrics.resyncs.WithLabelValues(resyncRewind).Inc()
	page := &wirepb.ChannelPage{Channel: ch.name, Biz: ch.biz, After: ch.told, Upto: maxID}
	ch.sent, ch.told = maxID, maxID
	ch.inflight, ch.more, ch.st = maxID, false, chAwaitAck
	return page
}

// updateAckDeadline clears the ack deadline once no backlog page awaits its
// ACK (it is armed when one is written).
func (s *session) updateAckDeadline() {
	if !s.ackArmed {
		return
	}
	progress := s.ackProgress
	s.ackProgress = false
	for _, ch := range s.chans.order {
		if ch.st == chAwaitAck {
			if progress {
				s.conn.SetAckDeadline(s.c.cfg.AckTimeout)
			}
			return
		}
	}
	s.conn.SetAckDeadline(0)
	s.ackArmed = false
}

// writePages writes pages as SYNC frames of about maxSyncFrame bytes each.
func (s *session) writePages(pages []*wirepb.ChannelPage) {
	var batch []*wirepb.ChannelPage
	size := 0
	for _, p := range pages {
		n := proto.Size(p)
		if len(batch) > 0 && size+n > maxSyncFrame {
			s.write(protocol.OpSync, 0, &wirepb.Sync{Pages: batch})
			batch, size = nil, 0
		}
		batch = append(batch, p)
		size += n
	}
	if len(batch) > 0 {
		s.write(protocol.OpSync, 0, &wirepb.Sync{Pages: batch})
	}
}

// write encodes m and hands the frame to the transport.
func (s *session) write(op protocol.Op, seq uint32, m proto.Message) {
	if s.phase >= phaseClosing {
		return
	}
	b, err := protocol.AppendMessage(make([]byte, 0, protocol.HeaderSize+proto.Size(m)), op, seq, m)
	if err != nil {
		s.log.Error("encode frame", "op", op, "err", err)
		s.fail(0, protocol.CodeUnavailable, "internal error", err)
		return
	}
	s.send(op, b)
}

// send hands an encoded frame to the transport, compressed when the session
// negotiated it and the frame is worth it (compress.go); b may be shared
// with other sessions (the transport only reads it).
func (s *session) send(op protocol.Op, b []byte) {
	s.put(op, s.deflate(op, b))
}

// put hands b to the transport as it is.
func (s *session) put(op protocol.Op, b []byte) {
	if s.phase >= phaseClosing {
		return
	}
	if err := s.conn.Write(b); err != nil {
		// The transport closes the connection itself (slow consumer, closed)
		// and will call onClose; stop producing for it.
		s.log.Debug("write failed", "op", op, "err", err)
		s.phase = phaseClosing
		return
	}
	s.c.metrics.framesOut[opSlot(op)].Inc()
}

// fail sends ERROR{code, msg} and closes the connection.
func (s *session) fail(seq uint32, code protocol.Code, msg string, reason error) {
	if s.phase >= phaseClosing {
		return
	}
	s.phase = phaseClosing
	s.c.metrics.errorCode(code)
	s.c.metrics.framesOut[opSlot(protocol.OpError)].Inc()
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("closing session", "code", code, "message", msg)
	}
	s.conn.Close(protocol.ErrorFrame(seq, code, msg), fmt.Errorf("%w: %w", reason, protocol.Errorf(code, "%s", msg)))
}

// finish ends the session after the transport closed it: remove it from its
// bucket and tell logic. Runs once, from the evClose event.
func (s *session) finish(err error) {
	if s.phase == phaseDone {
		return
	}
	authed := s.ident.Load() != nil
	s.phase = phaseDone
	s.c.removeSession(s)
	s.stopWakes()
	s.stopReorders()
	s.endRPC() // rpc.go
	for _, ch := range s.chans.order {
		if isGlobal(ch.name) {
			s.c.global.remove(ch.name, s)
		}
	}
	s.c.rooms.leaveAll(s)
	if authed {
		s.c.metrics.sessions.Dec()
		ctx, cancel := s.c.callCtx()
		_, derr := s.c.cfg.Logic.Disconnect(ctx, &pb.DisconnectReq{Comet: s.c.cfg.ID, Key: s.key, Device: s.device, User: s.user})
		cancel()
		if derr != nil {
			s.c.metrics.logicErrs.WithLabelValues("disconnect").Inc()
			s.log.Warn("logic disconnect failed", "err", derr)
		}
	}
	if err != nil && authed && !errors.Is(err, ErrShutdown) {
		s.log.Info("session closed", "err", err)
	} else if s.log.Enabled(context.Background(), slog.LevelDebug) {
		// Before AUTH succeeded (bad token, no AUTH, garbage): debug only,
		// so a client cannot flood the log by reconnecting; the counts are
		// in msync_comet_errors_total.
		s.log.Debug("session closed", "err", err)
	}
	s.c.sessionDone()
}

func wireOplog(op *oplog.Oplog) *wirepb.Oplog {
	return &wirepb.Oplog{Id: op.Id, Payload: op.Payload, CreatedMs: op.CreatedMs, ValidUntilMs: op.ValidUntilMs}
}
