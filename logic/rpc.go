package logic

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/api"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/auth"
	"github.com/msync/msync/pkg/biz"
	"github.com/msync/msync/pkg/directory"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/queue"
	"github.com/msync/msync/pkg/rpc"
	"github.com/msync/msync/pkg/store"
)

// Bounds on what one comet call may ask for, so a bad client cannot make
// logic do unbounded work.
const (
	maxConnectBizs = 256
	maxSyncCursors = 256
	maxPlatformLen = 32
	maxAppVersion  = 32
)

// Connect authenticates a device session, registers it in the directory
// (kicking a previous session of the device on another comet/key) and tells
// the comet where to start each channel.
func (l *Logic) Connect(ctx context.Context, req *pb.ConnectReq) (*pb.ConnectReply, error) {
	reply, result, err := l.connect(ctx, req)
	l.m.connects.WithLabelValues(result).Inc()
	return reply, err
}

func (l *Logic) connect(ctx context.Context, req *pb.ConnectReq) (*pb.ConnectReply, string, error) {
	claims, err := l.cfg.Tokens.VerifyClaims(req.GetToken())
	user := claims.User
	switch {
	case errors.Is(err, auth.ErrTokenExpired):
		return nil, "token_expired", api.Error(protocol.CodeTokenExpired, "token expired")
	case err != nil:
		return nil, "token_invalid", api.Error(protocol.CodeTokenInvalid, "token invalid")
	}
	if err := validateSession(req); err != nil {
		return nil, "bad_auth", api.Error(protocol.CodeBadAuth, "%v", err)
	}
	if err := l.peerIsComet(ctx, req.Comet); err != nil {
		return nil, "forbidden", err
	}
	log := l.log.With("device", req.Device, "user", user, "comet", req.Comet, "key", req.Key)
	if result, err := l.checkPrincipal(ctx, log, claims, req.Device); err != nil {
		return nil, result, err
	}

	reply := &pb.ConnectReply{User: user, HeartbeatMs: uint32(l.cfg.HeartbeatInterval.Milliseconds())}
	seen := make(map[string]bool, len(req.Bizs))
	for _, name := range req.Bizs {
		if seen[name] {
			continue
		}
		seen[name] = true
		b, err := l.cfg.Bizs.Get(name)
		switch {
		case err != nil:
			reply.Rejected = append(reply.Rejected, &pb.Rejected{Biz: name, Reason: "unknown biz"})
		case !b.Persistent:
			// Online only: its oplogs arrive as PUSH frames carrying the biz
			// (no channel, no sync point), so it is neither a channel nor
			// rejected.
		default:
			reply.Channels = append(reply.Channels, &pb.ChannelStart{Biz: b.Name, Channel: b.Channel(user, req.Device)})
		}
	}

	if len(reply.Channels) > 0 {
		// from: the client's point > the server's stored point > 0.
		client := make(map[string]uint64, len(req.Points))
		for _, p := range req.Points {
			client[p.GetChannel()] = p.GetId()
		}
		missing := false
		for _, ch := range reply.Channels {
			if p, ok := client[ch.Channel]; ok {
				ch.From = p
			} else {
				missing = true
			}
		}
		// The stored points are only a fallback for channels the client sent
		// no point for; a reconnecting SDK sends them all, and skipping the
		// read spares the store an iterator per connect in a reconnect storm.
		if missing {
			sctx, cancel := l.storeCtx(ctx)
			stored, err := l.cfg.Store.SyncPoints(sctx, req.Device)
			cancel()
			if err != nil {
				l.m.storeErrors.WithLabelValues("sync_points").Inc()
				log.Warn("connect: reading sync points failed", "err", err)
				return nil, "unavailable", api.Error(protocol.CodeUnavailable, "store unavailable")
			}
			for _, ch := range reply.Channels {
				if _, ok := client[ch.Channel]; !ok {
					ch.From = stored[ch.Channel]
				}
			}
		}
		if err := l.raiseShared(ctx, user, reply.Channels, client); err != nil {
			log.Warn("connect: reading shared sync points failed", "err", err)
			return nil, "unavailable", api.Error(protocol.CodeUnavailable, "store unavailable")
		}
	}

	t := &pb.Ticket{Comet: req.Comet, Key: req.Key, User: user, Device: req.Device,
		Platform: req.Platform, AppVersion: req.AppVersion, Channels: make([]string, len(reply.Channels))}
	for i, ch := range reply.Channels {
		t.Channels[i] = ch.Channel
	}
	if reply.Ticket, err = l.signTicket(t); err != nil {
		return nil, "unavailable", api.Error(protocol.CodeUnavailable, "signing the session ticket: %v", err)
	}
	prev, err := l.cfg.Directory.Put(ctx, directory.Session{
		User: user, Device: req.Device, Platform: req.Platform, AppVersion: req.AppVersion,
		Comet: req.Comet, Key: req.Key, Since: l.cfg.Now(),
	})
	if err != nil {
		log.Warn("connect: directory put failed", "err", err)
		return nil, "unavailable", api.Error(protocol.CodeUnavailable, "directory unavailable")
	}
	if prev != nil && (prev.Comet != req.Comet || prev.Key != req.Key) {
		l.m.replaced.Inc()
		l.kick(ctx, log, req.Device, prev, protocol.CodeReplaced, "replaced by a newer session of the device")
	}
	return reply, "ok", nil
}

// kick asks job to close a session via the queue (keyed by device, so kicks
// of one device stay in order). Best effort: a session we fail to kick
// expires from the directory and stops receiving pushes routed by it.
func (l *Logic) kick(ctx context.Context, log *slog.Logger, device string, s *directory.Session, code protocol.Code, reason string) {
	v, err := proto.Marshal(&pb.QueueMsg{Body: &pb.QueueMsg_Kick{Kick: &pb.KickMsg{
		Comet: s.Comet, Key: s.Key, Code: uint32(code), Reason: reason}}})
	if err == nil {
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.QueueTimeout)
		err = l.cfg.Queue.Send(qctx, queue.Message{Key: device, Value: v})
		cancel()
	}
	if err != nil {
		l.m.queueFailures.Inc()
		log.Warn("queueing kick of the previous session failed", "prev_comet", s.Comet, "prev_key", s.Key, "err", err)
	}
}

func validateSession(req *pb.ConnectReq) error {
	var errs []error
	if req.Comet == "" || req.Key == "" {
		errs = append(errs, fmt.Errorf("comet and key are required"))
	}
	if err := oplog.ValidID("device", req.Device); err != nil {
		errs = append(errs, err)
	}
	if req.Platform == "" || len(req.Platform) > maxPlatformLen || !validPlatform(req.Platform) {
		errs = append(errs, fmt.Errorf("platform %q: want 1-%d of [A-Za-z0-9_-]", req.Platform, maxPlatformLen))
	}
	// An empty version is allowed: such a device matches no version-bounded oplog.
	if req.AppVersion != "" && (len(req.AppVersion) > maxAppVersion || !oplog.ValidVersion(req.AppVersion)) {
		errs = append(errs, fmt.Errorf("app_version %q: want dotted numeric like 5.12.0", req.AppVersion))
	}
	if len(req.Bizs) > maxConnectBizs {
		errs = append(errs, fmt.Errorf("%d bizs: at most %d", len(req.Bizs), maxConnectBizs))
	}
	return errors.Join(errs...)
}

// Disconnect removes the session from the directory if it is still (comet, key).
func (l *Logic) Disconnect(ctx context.Context, req *pb.DisconnectReq) (*pb.Empty, error) {
	if err := l.peerIsComet(ctx, req.Comet); err != nil {
		return nil, err
	}
	if err := l.cfg.Directory.Delete(ctx, req.Device, req.Comet, req.Key); err != nil {
		l.log.Warn("disconnect: directory delete failed", "device", req.Device, "comet", req.Comet, "err", err)
		return nil, api.Error(protocol.CodeUnavailable, "directory unavailable")
	}
	return &pb.Empty{}, nil
}

// Renew extends the directory TTL of a comet's sessions. A request carrying
// grpc_addr (cluster mode) also registers the comet in the directory's comet
// registry for the same TTL, which is how job discovers comets.
//
// Under mutual TLS the caller must be the comet it names, and may register
// only an address its certificate is valid for. Tickets past half their
// life are replaced in the reply.
func (l *Logic) Renew(ctx context.Context, req *pb.RenewReq) (*pb.RenewReply, error) {
	if err := l.peerIsComet(ctx, req.Comet); err != nil {
		return nil, err
	}
	if req.GrpcAddr != "" {
		host, _, err := net.SplitHostPort(req.GrpcAddr)
		if err != nil || !rpc.PeerMayServe(ctx, host) {
			l.log.Warn("renew: refusing a comet address its certificate does not name", "comet", req.Comet, "addr", req.GrpcAddr)
			return nil, status.Errorf(codes.PermissionDenied, "logic: comet %q may not register %q: not a host of its certificate", req.Comet, req.GrpcAddr)
		}
		reg, ok := l.cfg.Directory.(directory.Comets)
		if !ok {
			return nil, api.Error(protocol.CodeUnavailable, "directory keeps no comet registry")
		}
		if err := reg.RegisterComet(ctx, req.Comet, req.GrpcAddr); err != nil {
			l.log.Warn("renew: comet registration failed", "comet", req.Comet, "addr", req.GrpcAddr, "err", err)
			return nil, api.Error(protocol.CodeUnavailable, "directory unavailable")
		}
	}
	devices := make([]string, 0, len(req.Sessions))
	reply := &pb.RenewReply{}
	bad := 0
	for _, s := range req.Sessions {
		devices = append(devices, s.GetDevice())
		if len(s.Ticket) == 0 {
			continue
		}
		t, err := l.openTicket(ctx, s.Ticket)
		if err != nil || t.Comet != req.Comet || t.Key != s.Key || t.Device != s.Device {
			bad++
			continue
		}
		if l.stale(t) {
			fresh, err := l.signTicket(t)
			if err == nil {
				reply.Tickets = append(reply.Tickets, &pb.RenewedTicket{Key: s.Key, Ticket: fresh})
			}
		}
	}
	if bad > 0 {
		l.log.Warn("renew: tickets not renewed (expired, forged or another session's)", "comet", req.Comet, "count", bad)
	}
	if err := l.cfg.Directory.Renew(ctx, req.Comet, devices); err != nil {
		l.log.Warn("renew: directory renew failed", "comet", req.Comet, "sessions", len(devices), "err", err)
		return nil, api.Error(protocol.CodeUnavailable, "directory unavailable")
	}
	return reply, nil
}

// peerIsComet refuses a call naming another comet than the verified
// peer's certificate does (mutual TLS). Without TLS (loopback, or
// in-process) there is no peer identity and the comet field is taken as is.
func (l *Logic) peerIsComet(ctx context.Context, comet string) error {
	id, ok := rpc.PeerIdentity(ctx)
	if !ok || id.Comet == comet {
		return nil
	}
	l.log.Warn("refusing a call for another comet", "peer_comet", id.Comet, "named_comet", comet)
	return status.Errorf(codes.PermissionDenied, "logic: peer is comet %q, not %q", id.Comet, comet)
}

// sessionOf opens a Sync's ticket and returns the request with the
// session's fields from it; bare fields that differ are refused.
func (l *Logic) sessionOf(ctx context.Context, req *pb.SyncReq) (*pb.SyncReq, *pb.Ticket, error) {
	t, err := l.openTicket(ctx, req.Ticket)
	if err != nil {
		l.m.ticketRefusals.Inc()
		l.log.Warn("sync refused", "device", req.Device, "err", err)
		// The client reconnects, and a fresh Connect gives a fresh ticket.
		return nil, nil, api.Error(protocol.CodeUnavailable, "%v: reconnect", err)
	}
	for _, f := range [][2]string{{req.Device, t.Device}, {req.User, t.User}, {req.Platform, t.Platform}, {req.AppVersion, t.AppVersion}} {
		if f[0] != "" && f[0] != f[1] {
			l.m.ticketRefusals.Inc()
			return nil, nil, api.Error(protocol.CodeOutOfOrder, "sync fields differ from the session ticket")
		}
	}
	return &pb.SyncReq{Device: t.Device, User: t.User, Platform: t.Platform, AppVersion: t.AppVersion,
		Cursors: req.Cursors, Limit: req.Limit}, t, nil
}

// Sync returns the next page of each requested channel of one session. A
// page covers (after, upto]: oplogs in it that do not apply to the device
// (filters, expired) are left out, and the page ends just before an oplog
// that is not valid yet, so the device never passes it.
func (l *Logic) Sync(ctx context.Context, req *pb.SyncReq) (*pb.SyncReply, error) {
	if len(req.Cursors) > maxSyncCursors {
		return nil, api.Error(protocol.CodeTooManyCursors, "%d cursors: at most %d", len(req.Cursors), maxSyncCursors)
	}
	req, t, err := l.sessionOf(ctx, req)
	if err != nil {
		return nil, err
	}
	limit := l.cfg.PageLimit
	if req.Limit > 0 && int(req.Limit) < limit {
		limit = int(req.Limit)
	}
	now := l.cfg.Now().UnixMilli()
	reply := &pb.SyncReply{Pages: make([]*pb.Page, 0, len(req.Cursors))}
	for _, c := range req.Cursors {
		if !hasChannel(t, c.GetChannel()) {
			l.m.ticketRefusals.Inc()
			return nil, api.Error(protocol.CodeStaleSession, "channel %q is not part of this session", c.GetChannel())
		}
		b, err := l.sessionChannel(req, c.GetChannel())
		if err != nil {
			return nil, err
		}
		if err := l.checkConsistency(ctx, req, b); err != nil {
			return nil, err
		}
		page, err := l.page(ctx, req, b, c, limit, now)
		if err != nil {
			return nil, err
		}
		l.m.syncOplogs.Add(float64(len(page.Oplogs)))
		reply.Pages = append(reply.Pages, page)
	}
	l.m.syncs.Inc()
	return reply, nil
}

// sessionChannel returns the biz of ch if ch belongs to the session: its
// user's channel, its device's channel, or a global channel, of a known
// persistent biz. Anything else is a client asking for what it did not get
// in its AUTH_REPLY.
func (l *Logic) sessionChannel(req *pb.SyncReq, ch string) (*biz.Biz, error) {
	name, _, _, err := oplog.ParseChannel(ch)
	if err != nil {
		return nil, api.Error(protocol.CodeStaleSession, "channel %q is not part of this session", ch)
	}
	b, err := l.cfg.Bizs.Get(name)
	if err != nil || !b.Persistent || b.Channel(req.User, req.Device) != ch ||
		(b.Scope != biz.ScopeGlobal && b.Target == biz.TargetUser && req.User == "") {
		return nil, api.Error(protocol.CodeStaleSession, "channel %q is not part of this session", ch)
	}
	return b, nil
}

func (l *Logic) page(ctx context.Context, req *pb.SyncReq, b *biz.Biz, c *pb.Cursor, limit int, now int64) (*pb.Page, error) {
	after := c.GetAfter()
	page := &pb.Page{Channel: c.Channel, Biz: b.Name, After: after}
	sctx, cancel := l.storeCtx(ctx)
	defer cancel()
	readAfter := after
	if shared, err := l.sharedFloor(sctx, req, b, c.Channel); err != nil {
		return nil, err
	} else if shared > readAfter {
		// multi_device false: what another device of the user acked is
		// covered by this page without being listed (processed elsewhere).
		readAfter = shared
	}
	if b.LatestN > 0 {
		// backlog latest:N: jump over all but the newest N, and say so in
		// skipped so the SDK reports it rather than seeing a silent gap.
		maxID, err := l.cfg.Store.MaxID(sctx, c.Channel)
		if err != nil {
			return nil, l.rpcStoreError("max_id", c.Channel, err)
		}
		if maxID > readAfter+uint64(b.LatestN) {
			page.Skipped = maxID - uint64(b.LatestN) - readAfter
			readAfter = maxID - uint64(b.LatestN)
		}
	}
	ops, maxID, err := l.cfg.Store.Read(sctx, c.Channel, readAfter, limit)
	if err != nil {
		return nil, l.rpcStoreError("read", c.Channel, err)
	}
	page.MaxId = maxID
	// A store reporting maxID below the cursor (the client is ahead, e.g.
	// after a store reset) yields an empty page that does not go backwards.
	page.Upto = max(maxID, readAfter)
	if len(ops) >= limit {
		page.Upto = ops[len(ops)-1].Id
	}
	bytes := 0
	for _, op := range ops {
		switch oplog.Evaluate(op, req.Platform, req.AppVersion, now) {
		case oplog.Deliver:
			page.Oplogs = append(page.Oplogs, op)
			// Bound the page in bytes too, so it stays well inside a
			// connection's write queue; it always carries at least one oplog.
			if bytes += len(op.Payload); bytes >= l.cfg.MaxPageBytes {
				page.Upto = op.Id
				return page, nil
			}
		case oplog.NotYet:
			page.Upto = op.Id - 1
			// The comet re-syncs the channel at valid_from (a timer of the
			// session), so an online device gets it then without other traffic.
			page.NextValidMs = op.ValidFromMs
			return page, nil
		}
	}
	return page, nil
}

func (l *Logic) rpcStoreError(op, channel string, err error) error {
	l.m.storeErrors.WithLabelValues(op).Inc()
	l.log.Warn("sync: store call failed", "op", op, "channel", channel, "err", err)
	return api.Error(protocol.CodeUnavailable, "store unavailable")
}

// Ack stores the acknowledged ids as the devices' server-side sync points,
// all items in one store call. Malformed items, and items whose ticket does
// not cover their device and channel, are dropped (logged), not failing the
// others: they come from a comet, not a client.
func (l *Logic) Ack(ctx context.Context, req *pb.AckReq) (*pb.Empty, error) {
	points := make([]store.SyncPoint, 0, len(req.Items))
	opened := make(map[string]*pb.Ticket) // one HMAC per session of the batch
	refused := 0
	var lastErr error
	for _, it := range req.Items {
		t, ok := opened[string(it.GetTicket())]
		if !ok {
			var err error
			if t, err = l.openTicket(ctx, it.GetTicket()); err != nil {
				lastErr = err
			}
			opened[string(it.GetTicket())] = t
		}
		if t == nil || t.Device != it.GetDevice() || (it.GetUser() != "" && it.GetUser() != t.User) || !hasChannel(t, it.GetChannel()) {
			refused++
			continue
		}
		if it.GetDevice() == "" || it.GetId() == 0 {
			l.log.Warn("ack: dropping malformed item", "device", it.GetDevice(), "channel", it.GetChannel(), "id", it.GetId())
			continue
		}
		if _, _, _, err := oplog.ParseChannel(it.GetChannel()); err != nil {
			l.log.Warn("ack: dropping item with a bad channel", "device", it.GetDevice(), "err", err)
			continue
		}
		points = append(points, store.SyncPoint{Device: it.Device, Channel: it.Channel, ID: it.Id})
		if sp, ok := l.sharedPoint(it.Channel, it.Id); ok {
			points = append(points, sp)
		}
	}
	if refused > 0 {
		l.m.ticketRefusals.Add(float64(refused))
		l.log.Warn("ack: dropping items the session ticket does not cover", "items", refused, "err", lastErr)
	}
	if len(points) == 0 {
		return &pb.Empty{}, nil
	}
	sctx, cancel := l.storeCtx(ctx)
	defer cancel()
	if err := l.cfg.Store.SaveSyncPoints(sctx, points); err != nil {
		l.m.storeErrors.WithLabelValues("save_sync_points").Inc()
		l.log.Warn("ack: saving sync points failed", "items", len(points), "err", err)
		return nil, api.Error(protocol.CodeUnavailable, "store unavailable")
	}
	l.m.acks.Add(float64(len(points)))
	l.hooks.notify() // webhook.go: never blocks
	return &pb.Empty{}, nil
}
