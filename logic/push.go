package logic

import (
	"context"
	"errors"
	"net/http"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/biz"
	"github.com/msync/msync/pkg/directory"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/queue"
)

// The real-time business API: non-persistent pushes, server-side rooms,
// kick, online and stats. These act on devices across bizs, so they need an
// API key allowed every biz ("*"); a key limited to some bizs gets 403.
//
// Pushes and room changes go through the queue to job like oplogs do, and
// are never stored: a 200 means "queued", not "delivered". Whoever is online
// (or in the room) when job handles the message gets it; nobody else ever
// does.

// CodeNotOnline: the device has no session (kick, rooms).
const CodeNotOnline = "not_online"

// DefaultMaxPushPayload is the default bound on a push payload. Pushes are
// meant for small signals (typing, presence, "new data, pull"); a room or
// "all" push is copied into every receiving connection's write queue.
const DefaultMaxPushPayload = 32 << 10

// maxKickReason bounds the reason a KICK frame carries.
const maxKickReason = 256

type pushReq struct {
	User   string `json:"user"`
	Device string `json:"device"`
	Room   string `json:"room"`
	All    bool   `json:"all"`
	payloadFields
}

type roomsReq struct {
	Device string   `json:"device"`
	Join   []string `json:"join"`
	Leave  []string `json:"leave"`
}

type kickReq struct {
	Device string `json:"device"`
	Reason string `json:"reason"`
}

// realtimeRoutes registers the endpoints of this file on route, and returns
// their paths with allowed methods for the JSON 405 answers.
func (l *Logic) realtimeRoutes(route func(pattern, name string, h apiHandler)) map[string]string {
	route("POST /v1/push", "push", l.handlePush)
	route("POST /v1/rooms", "rooms", l.handleRooms)
	route("POST /v1/kick", "kick", l.handleKick)
	route("GET /v1/online", "online", l.handleOnline)
	route("GET /v1/stats", "stats", l.handleStats)
	return map[string]string{"/v1/push": "POST", "/v1/rooms": "POST", "/v1/kick": "POST",
		"/v1/online": "GET", "/v1/stats": "GET"}
}

// adminKey checks the bearer key and that it may act on every biz.
func (l *Logic) adminKey(r *http.Request) *apiError {
	key, aerr := l.apiKey(r)
	if aerr != nil {
		return aerr
	}
	if l.cfg.APIKeys.Check(key, "*") != nil {
		return errorf(http.StatusForbidden, CodeForbidden, "this endpoint needs an API key allowed every biz (\"*\")")
	}
	return nil
}

// maxPushPayload is Config.MaxPushPayload or its default.
func (l *Logic) maxPushPayload() int {
	if l.cfg.MaxPushPayload > 0 {
		return l.cfg.MaxPushPayload
	}
	return DefaultMaxPushPayload
}

func (l *Logic) handlePush(w http.ResponseWriter, r *http.Request) *apiError {
	var req pushReq
	if aerr := l.adminRequest(w, r, &req); aerr != nil {
		return aerr
	}
	target, key, aerr := pushTarget(&req)
	if aerr != nil {
		return aerr
	}
	payload, aerr := req.payloadBytes()
	if aerr != nil {
		return aerr
	}
	if len(payload) > l.maxPushPayload() {
		return errorf(http.StatusRequestEntityTooLarge, CodePayloadTooLarge,
			"payload is %d bytes, over the push limit of %d", len(payload), l.maxPushPayload())
	}
	target.Msg = &pb.PushMsg{Room: target.Room, Payload: payload, CreatedMs: l.cfg.Now().UnixMilli()}
	if aerr := l.enqueue(r.Context(), key, &pb.QueueMsg{Body: &pb.QueueMsg_Push{Push: target}}); aerr != nil {
		return aerr
	}
	writeJSON(w, http.StatusOK, map[string]any{"queued": true})
	return nil
}

// pushTarget validates that exactly one target is set and returns it with
// the queue key (pushes of one target stay in order).
func pushTarget(req *pushReq) (*pb.PushTarget, string, *apiError) {
	n := 0
	for _, set := range []bool{req.User != "", req.Device != "", req.Room != "", req.All} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, "", badRequest("set exactly one target: \"user\", \"device\", \"room\" or \"all\": true")
	}
	switch {
	case req.User != "":
		if err := oplog.ValidID("user", req.User); err != nil {
			return nil, "", badRequest("%v", err)
		}
		return &pb.PushTarget{User: req.User}, "push/u/" + req.User, nil
	case req.Device != "":
		if err := oplog.ValidID("device", req.Device); err != nil {
			return nil, "", badRequest("%v", err)
		}
		return &pb.PushTarget{Device: req.Device}, "push/d/" + req.Device, nil
	case req.Room != "":
		if err := protocol.ValidRoom(req.Room); err != nil {
			return nil, "", badRequest("room: %v", err)
		}
		return &pb.PushTarget{Room: req.Room}, "push/r/" + req.Room, nil
	}
	return &pb.PushTarget{All: true}, "push/all", nil
}

// enqueue produces one queue message; failure is a 503 with nothing queued.
func (l *Logic) enqueue(ctx context.Context, key string, m *pb.QueueMsg) *apiError {
	v, err := proto.Marshal(m)
	if err != nil {
		l.log.Error("encoding queue message failed", "key", key, "err", err)
		return errorf(http.StatusInternalServerError, CodeInternal, "internal error")
	}
	qctx, cancel := context.WithTimeout(ctx, l.cfg.QueueTimeout)
	defer cancel()
	if err := l.cfg.Queue.Send(qctx, queue.Message{Key: key, Value: v}); err != nil {
		l.m.queueFailures.Inc()
		l.log.Warn("queue send failed", "key", key, "err", err)
		return errorf(http.StatusServiceUnavailable, CodeUnavailable, "queue unavailable, nothing was sent: retry")
	}
	return nil
}

// onlineDevice looks a device's session up; an offline device is a 404.
func (l *Logic) onlineDevice(ctx context.Context, device string) (directory.Session, *apiError) {
	if err := oplog.ValidID("device", device); err != nil {
		return directory.Session{}, badRequest("%v", err)
	}
	s, err := l.cfg.Directory.ByDevice(ctx, device)
	switch {
	case errors.Is(err, directory.ErrNotFound):
		return s, errorf(http.StatusNotFound, CodeNotOnline, "device %q is not online", device)
	case err != nil:
		l.log.Warn("directory lookup failed", "device", device, "err", err)
		return s, errorf(http.StatusServiceUnavailable, CodeUnavailable, "directory unavailable: retry")
	}
	return s, nil
}

func (l *Logic) handleRooms(w http.ResponseWriter, r *http.Request) *apiError {
	var req roomsReq
	if aerr := l.adminRequest(w, r, &req); aerr != nil {
		return aerr
	}
	if req.Device == "" {
		return badRequest("device: required")
	}
	n := len(req.Join) + len(req.Leave)
	if n == 0 || len(req.Join) > protocol.DefaultMaxRooms || len(req.Leave) > protocol.DefaultMaxRooms {
		return badRequest("join and leave: 1 to %d rooms each, at least one room in all", protocol.DefaultMaxRooms)
	}
	for _, room := range append(append([]string(nil), req.Join...), req.Leave...) {
		if err := protocol.ValidRoom(room); err != nil {
			return badRequest("%v", err)
		}
	}
	if _, aerr := l.onlineDevice(r.Context(), req.Device); aerr != nil {
		return aerr
	}
	m := &pb.QueueMsg{Body: &pb.QueueMsg_Rooms{Rooms: &pb.RoomsMsg{Device: req.Device, Join: req.Join, Leave: req.Leave}}}
	// Keyed by device, like its kicks: a device's room changes stay in order.
	if aerr := l.enqueue(r.Context(), req.Device, m); aerr != nil {
		return aerr
	}
	writeJSON(w, http.StatusOK, map[string]any{"queued": true})
	return nil
}

func (l *Logic) handleKick(w http.ResponseWriter, r *http.Request) *apiError {
	var req kickReq
	if aerr := l.adminRequest(w, r, &req); aerr != nil {
		return aerr
	}
	if req.Device == "" {
		return badRequest("device: required")
	}
	if len(req.Reason) > maxKickReason {
		return badRequest("reason: %d bytes, at most %d", len(req.Reason), maxKickReason)
	}
	s, aerr := l.onlineDevice(r.Context(), req.Device)
	if aerr != nil {
		return aerr
	}
	reason := req.Reason
	if reason == "" {
		reason = "kicked by the business"
	}
	m := &pb.QueueMsg{Body: &pb.QueueMsg_Kick{Kick: &pb.KickMsg{Comet: s.Comet, Key: s.Key,
		Code: uint32(protocol.CodeKicked), Reason: reason}}}
	if aerr := l.enqueue(r.Context(), req.Device, m); aerr != nil {
		return aerr
	}
	writeJSON(w, http.StatusOK, map[string]any{"queued": true, "comet": s.Comet})
	return nil
}

type onlineDevice struct {
	Device     string    `json:"device"`
	Platform   string    `json:"platform"`
	AppVersion string    `json:"app_version"`
	Comet      string    `json:"comet"`
	Since      time.Time `json:"since"`
}

func (l *Logic) handleOnline(w http.ResponseWriter, r *http.Request) *apiError {
	if aerr := l.adminKey(r); aerr != nil {
		return aerr
	}
	user := r.URL.Query().Get("user")
	if err := oplog.ValidID("user", user); err != nil {
		return badRequest("%v", err)
	}
	sessions, err := l.cfg.Directory.ByUser(r.Context(), user)
	if err != nil {
		l.log.Warn("directory lookup failed", "user", user, "err", err)
		return errorf(http.StatusServiceUnavailable, CodeUnavailable, "directory unavailable: retry")
	}
	out := make([]onlineDevice, 0, len(sessions))
	for _, s := range sessions {
		out = append(out, onlineDevice{Device: s.Device, Platform: s.Platform, AppVersion: s.AppVersion,
			Comet: s.Comet, Since: s.Since.UTC()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	writeJSON(w, http.StatusOK, map[string]any{"user": user, "devices": out})
	return nil
}

// bizStats is one biz's counters in GET /v1/stats.
type bizStats struct {
	Biz string `json:"biz"`
	// Published is the number of oplogs ever published to the owner's
	// channels of the biz: the channels' max ids (ids are dense from 1), so
	// it includes expired ones and costs one read per channel.
	Published uint64 `json:"published"`
	// Delivered is the number of those the device acknowledged: its stored
	// sync points (filtered-out oplogs count as processed, as in the
	// protocol). For a user: the highest point among the user's online
	// devices.
	Delivered uint64 `json:"delivered"`
}

// handleStats reports published and delivered counts per biz for a user or a
// device. Both come from what the store already keeps durably (channel max
// ids and acked sync points), so counting adds nothing to the publish or ack
// path.
func (l *Logic) handleStats(w http.ResponseWriter, r *http.Request) *apiError {
	if aerr := l.adminKey(r); aerr != nil {
		return aerr
	}
	q := r.URL.Query()
	user, device := q.Get("user"), q.Get("device")
	if (user == "") == (device == "") {
		return badRequest("set exactly one of the query parameters user and device")
	}
	ctx, cancel := l.storeCtx(r.Context())
	defer cancel()
	var (
		out  []bizStats
		aerr *apiError
	)
	if device != "" {
		if err := oplog.ValidID("device", device); err != nil {
			return badRequest("%v", err)
		}
		out, aerr = l.deviceStats(ctx, device)
	} else {
		if err := oplog.ValidID("user", user); err != nil {
			return badRequest("%v", err)
		}
		out, aerr = l.userStats(ctx, user)
	}
	if aerr != nil {
		return aerr
	}
	resp := map[string]any{"bizs": out}
	if device != "" {
		resp["device"] = device
	} else {
		resp["user"] = user
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// deviceStats: every channel the device has a point in, plus the device's own
// channels of device-target bizs (published to, maybe never acked).
func (l *Logic) deviceStats(ctx context.Context, device string) ([]bizStats, *apiError) {
	points, err := l.cfg.Store.SyncPoints(ctx, device)
	if err != nil {
		return nil, l.storeError("sync_points", err)
	}
	chans := make(map[string]uint64, len(points))
	for ch, p := range points {
		chans[ch] = p
	}
	for _, b := range l.cfg.Bizs.All() {
		if b.Persistent && b.Scope != biz.ScopeGlobal && b.Target == biz.TargetDevice {
			ch := b.Channel("", device)
			if _, ok := chans[ch]; !ok {
				chans[ch] = 0
			}
		}
	}
	per := map[string]*bizStats{}
	for ch, p := range chans {
		name, _, _, err := oplog.ParseChannel(ch)
		if err != nil {
			continue
		}
		maxID, err := l.cfg.Store.MaxID(ctx, ch)
		if err != nil {
			return nil, l.storeError("max_id", err)
		}
		st := per[name]
		if st == nil {
			st = &bizStats{Biz: name}
			per[name] = st
		}
		st.Published += maxID
		st.Delivered += min(p, maxID)
	}
	return sortedStats(per), nil
}

// userStats: the user's channel of each user-target biz; delivered is the
// highest point among the user's online devices (the store keeps points per
// device, and which offline devices a user has is not recorded).
func (l *Logic) userStats(ctx context.Context, user string) ([]bizStats, *apiError) {
	sessions, err := l.cfg.Directory.ByUser(ctx, user)
	if err != nil {
		l.log.Warn("directory lookup failed", "user", user, "err", err)
		return nil, errorf(http.StatusServiceUnavailable, CodeUnavailable, "directory unavailable: retry")
	}
	devPoints := make([]map[string]uint64, 0, len(sessions))
	for _, s := range sessions {
		p, err := l.cfg.Store.SyncPoints(ctx, s.Device)
		if err != nil {
			return nil, l.storeError("sync_points", err)
		}
		devPoints = append(devPoints, p)
	}
	per := map[string]*bizStats{}
	for _, b := range l.cfg.Bizs.All() {
		if !b.Persistent || b.Scope == biz.ScopeGlobal || b.Target != biz.TargetUser {
			continue
		}
		ch := b.Channel(user, "")
		maxID, err := l.cfg.Store.MaxID(ctx, ch)
		if err != nil {
			return nil, l.storeError("max_id", err)
		}
		st := &bizStats{Biz: b.Name, Published: maxID}
		for _, p := range devPoints {
			st.Delivered = max(st.Delivered, min(p[ch], maxID))
		}
		per[b.Name] = st
	}
	return sortedStats(per), nil
}

func sortedStats(per map[string]*bizStats) []bizStats {
	out := make([]bizStats, 0, len(per))
	for _, st := range per {
		out = append(out, *st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Biz < out[j].Biz })
	return out
}

// adminRequest checks the all-biz API key of a cross-biz endpoint and
// decodes its JSON body strictly into req.
func (l *Logic) adminRequest(w http.ResponseWriter, r *http.Request, req any) *apiError {
	if aerr := l.adminKey(r); aerr != nil {
		return aerr
	}
	return decodeStrict(http.MaxBytesReader(w, r.Body, l.cfg.MaxBodyBytes), req)
}
