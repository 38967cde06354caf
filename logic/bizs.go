package logic

import (
	"context"
	"errors"
	"net/http"

	"github.com/msync/msync/pkg/api"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/biz"
	"github.com/msync/msync/pkg/directory"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/store"
)

// sharedDevicePrefix names the pseudo-device under which the store keeps the
// shared sync points of multi_device:false bizs: one per (user, channel).
// Device ids cannot contain control characters (oplog.ValidID), so no real
// device collides with it.
const sharedDevicePrefix = "\x01shared\x01"

func sharedDevice(user string) string { return sharedDevicePrefix + user }

// sharedOwner returns the user whose devices share one sync point of ch, if
// ch is a user channel of a multi_device:false biz.
func (l *Logic) sharedOwner(ch string) (string, bool) {
	name, kind, owner, err := oplog.ParseChannel(ch)
	if err != nil || kind != oplog.KindUser {
		return "", false
	}
	b, err := l.cfg.Bizs.Get(name)
	if err != nil || b.MultiDevice || b.Target != biz.TargetUser || b.Scope != biz.ScopeAppointed {
		return "", false
	}
	return owner, true
}

// sharedPoint is the extra sync point an ack of id in ch raises: the user's
// shared point when the biz is multi_device:false.
func (l *Logic) sharedPoint(ch string, id uint64) (store.SyncPoint, bool) {
	user, ok := l.sharedOwner(ch)
	if !ok {
		return store.SyncPoint{}, false
	}
	return store.SyncPoint{Device: sharedDevice(user), Channel: ch, ID: id}, true
}

// sharedFloor is the shared sync point of (user, ch) for multi_device:false
// bizs (0 otherwise): ids at or below it were acked by one of the user's
// devices and are not sent to the others.
func (l *Logic) sharedFloor(ctx context.Context, req *pb.SyncReq, b *biz.Biz, ch string) (uint64, error) {
	if b.MultiDevice || b.Target != biz.TargetUser || b.Scope != biz.ScopeAppointed {
		return 0, nil
	}
	pts, err := l.cfg.Store.SyncPoints(ctx, sharedDevice(req.User))
	if err != nil {
		return 0, l.rpcStoreError("sync_points", ch, err)
	}
	return pts[ch], nil
}

// raiseShared sets `from` of the multi_device:false channels for which the
// client sent no point to max(the device's stored point, the user's shared
// point). A channel with a client point keeps it: its pages then cover the
// shared range without listing it (see sharedFloor), which avoids a gap
// round trip on a client that holds a lower point.
func (l *Logic) raiseShared(ctx context.Context, user string, chans []*pb.ChannelStart, client map[string]uint64) error {
	var shared map[string]uint64
	for _, ch := range chans {
		if _, sent := client[ch.Channel]; sent {
			continue
		}
		if _, ok := l.sharedOwner(ch.Channel); !ok {
			continue
		}
		if shared == nil {
			sctx, cancel := l.storeCtx(ctx)
			pts, err := l.cfg.Store.SyncPoints(sctx, sharedDevice(user))
			cancel()
			if err != nil {
				l.m.storeErrors.WithLabelValues("sync_points").Inc()
				return err
			}
			shared = pts
		}
		ch.From = max(ch.From, shared[ch.Channel])
	}
	return nil
}

// checkConsistency refuses to sync a consistency:true channel to a session
// whose device has since been logged in by another user (a stale session
// that was not closed yet): the directory's entry for the device is its
// latest authenticated session. The comet closes the session with the error.
// A device missing from the directory (its entry expired while the session
// lives, e.g. renewals failing) is not refused: nothing says another user
// logged in there.
func (l *Logic) checkConsistency(ctx context.Context, req *pb.SyncReq, b *biz.Biz) error {
	if !b.Consistency {
		return nil
	}
	cur, err := l.cfg.Directory.ByDevice(ctx, req.Device)
	switch {
	case err == nil:
		if cur.User != req.User {
			l.log.Info("sync refused: device switched user", "device", req.Device, "session_user", req.User, "current_user", cur.User)
			return api.Error(protocol.CodeReplaced, "device %q is now logged in by another user", req.Device)
		}
		return nil
	case isNotFound(err):
		return nil
	default:
		l.log.Warn("sync: directory lookup failed", "device", req.Device, "err", err)
		return api.Error(protocol.CodeUnavailable, "directory unavailable")
	}
}

func isNotFound(err error) bool { return errors.Is(err, directory.ErrNotFound) }

// checkVolatile refuses, for a non-persistent biz, the publish fields that
// need the oplog to be stored: its oplogs go at once to the online devices
// and nowhere else (no id, no backlog, no redelivery).
func checkVolatile(b *biz.Biz, req *publishReq) *apiError {
	if b.Persistent {
		return nil
	}
	for _, f := range []struct {
		name string
		set  bool
	}{{"dedup_key", req.DedupKey != ""}, {"valid_from", req.ValidFrom != ""}, {"valid_until", req.ValidUntil != ""},
		{"ttl", req.TTL != ""}, {"filters", req.Filters != nil}} {
		if f.set {
			return badRequest("biz %q is not persistent (online devices only, nothing stored): %s needs a persistent biz", b.Name, f.name)
		}
	}
	return nil
}

// pushVolatile sends ops[i] for each i in idx, oplogs of non-persistent
// bizs, as non-persistent pushes (PushTarget with the biz set) to the
// owner's online devices, or to everyone for a global biz. publish calls it
// before storing the persistent ones: a queue failure is a 503 before
// anything is stored, so the call can be retried; a store failure after the
// pushes were queued is a 503 too, and a retry pushes again (non-persistent
// delivery is at most once per call, not idempotent).
func (l *Logic) pushVolatile(ctx context.Context, ops []*oplog.Oplog, idx []int) *apiError {
	for _, i := range idx {
		op := ops[i]
		t, err := volatileTarget(op)
		if err != nil {
			l.log.Error("non-persistent oplog with a bad channel", "channel", op.Channel, "err", err)
			return errorf(http.StatusInternalServerError, CodeInternal, "internal error")
		}
		t.Msg = &pb.PushMsg{Biz: op.Biz, Payload: op.Payload, CreatedMs: op.CreatedMs}
		if aerr := l.enqueue(ctx, op.Channel, &pb.QueueMsg{Body: &pb.QueueMsg_Push{Push: t}}); aerr != nil { // push.go
			return aerr
		}
		l.m.published.WithLabelValues(op.Biz).Inc()
	}
	return nil
}

// volatileTarget is whom a non-persistent oplog goes to, from its channel.
func volatileTarget(op *oplog.Oplog) (*pb.PushTarget, error) {
	_, kind, owner, err := oplog.ParseChannel(op.Channel)
	if err != nil {
		return nil, err
	}
	switch kind {
	case oplog.KindUser:
		return &pb.PushTarget{User: owner}, nil
	case oplog.KindDevice:
		return &pb.PushTarget{Device: owner}, nil
	default:
		return &pb.PushTarget{All: true}, nil
	}
}
