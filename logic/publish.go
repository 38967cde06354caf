package logic

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/biz"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/queue"
	"github.com/msync/msync/pkg/store"
)

// Limits on publish fields that the biz config does not set.
const (
	maxDedupKey   = 256
	maxPlatforms  = 16
	maxPlatformID = 32
)

// publishReq is one item of POST /v1/sync and /v1/sync/batch.
type publishReq struct {
	Biz    string `json:"biz"`
	User   string `json:"user"`
	Device string `json:"device"`
	Global bool   `json:"global"`
	payloadFields
	DedupKey   string      `json:"dedup_key"`
	ValidFrom  string      `json:"valid_from"`
	ValidUntil string      `json:"valid_until"`
	TTL        string      `json:"ttl"`
	Filters    *filtersReq `json:"filters"`
}

// payloadFields are the payload of a publish or push item: text in payload,
// or any bytes in payload_base64; exactly one is set.
type payloadFields struct {
	Payload       *string `json:"payload"`
	PayloadBase64 *string `json:"payload_base64"`
}

// payloadBytes returns the payload the item carries.
func (p *payloadFields) payloadBytes() ([]byte, *apiError) {
	switch {
	case p.Payload != nil && p.PayloadBase64 != nil:
		return nil, badRequest("set one of payload and payload_base64, not both")
	case p.Payload != nil:
		return []byte(*p.Payload), nil
	case p.PayloadBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*p.PayloadBase64)
		if err != nil {
			return nil, badRequest("payload_base64: %v", err)
		}
		return b, nil
	}
	return nil, badRequest("payload or payload_base64: required")
}

type filtersReq struct {
	Platforms  []string `json:"platforms"`
	MinVersion string   `json:"min_version"`
	MaxVersion string   `json:"max_version"`
}

// prepare validates one publish item for API key `key` at now and builds its
// oplog (without id). Checks run in the order their errors are most useful:
// which biz, may this key use it, then the item's fields.
func (l *Logic) prepare(key string, req *publishReq, now time.Time) (*oplog.Oplog, *apiError) {
	if req.Biz == "" {
		return nil, badRequest("biz: required")
	}
	b, err := l.cfg.Bizs.Get(req.Biz)
	if err != nil {
		return nil, errorf(http.StatusNotFound, CodeUnknownBiz, "unknown biz %q", req.Biz)
	}
	if aerr := l.checkBizKey(key, b); aerr != nil {
		return nil, aerr
	}
	if aerr := checkVolatile(b, req); aerr != nil { // bizs.go
		return nil, aerr
	}
	if aerr := checkOwner(b, req); aerr != nil {
		return nil, aerr
	}

	payload, aerr := req.payloadBytes()
	if aerr != nil {
		return nil, aerr
	}
	if len(payload) > b.MaxPayload {
		return nil, errorf(http.StatusRequestEntityTooLarge, CodePayloadTooLarge,
			"payload is %d bytes, over biz %q's max_payload of %d", len(payload), b.Name, b.MaxPayload)
	}
	if len(req.DedupKey) > maxDedupKey {
		return nil, badRequest("dedup_key: %d bytes, at most %d", len(req.DedupKey), maxDedupKey)
	}

	op := &oplog.Oplog{
		Channel:   b.Channel(req.User, req.Device),
		Biz:       b.Name,
		Payload:   payload,
		CreatedMs: now.UnixMilli(),
		DedupKey:  req.DedupKey,
	}
	if aerr := setValidity(op, b, req, now); aerr != nil {
		return nil, aerr
	}
	if aerr := setFilters(op, req.Filters); aerr != nil {
		return nil, aerr
	}
	return op, nil
}

// checkOwner requires exactly the owner the biz's target and scope need.
func checkOwner(b *biz.Biz, req *publishReq) *apiError {
	switch {
	case b.Scope == biz.ScopeGlobal:
		if !req.Global || req.User != "" || req.Device != "" {
			return badRequest("biz %q has global scope: set \"global\": true and no user or device", b.Name)
		}
		return nil
	case req.Global:
		return badRequest("biz %q is not global: set %q instead of \"global\"", b.Name, b.Target)
	case b.Target == biz.TargetDevice:
		if req.Device == "" || req.User != "" {
			return badRequest("biz %q targets devices: set \"device\" (and no \"user\")", b.Name)
		}
		if err := oplog.ValidID("device", req.Device); err != nil {
			return badRequest("%v", err)
		}
	default:
		if req.User == "" || req.Device != "" {
			return badRequest("biz %q targets users: set \"user\" (and no \"device\")", b.Name)
		}
		if err := oplog.ValidID("user", req.User); err != nil {
			return badRequest("%v", err)
		}
	}
	return nil
}

// setValidity fills the validity window. The window starts at valid_from
// (or now) and lasts the item's ttl, else the biz's; it never lasts more than
// biz.MaxTTL (longer ttls and valid_untils are capped), so the store's
// retention stays bounded.
func setValidity(op *oplog.Oplog, b *biz.Biz, req *publishReq, now time.Time) *apiError {
	start := now
	if req.ValidFrom != "" {
		t, err := time.Parse(time.RFC3339Nano, req.ValidFrom)
		if err != nil {
			return badRequest("valid_from: want RFC 3339 (2006-01-02T15:04:05Z): %v", err)
		}
		op.ValidFromMs = t.UnixMilli()
		if t.After(now) {
			start = t
		}
	}
	if req.TTL != "" && req.ValidUntil != "" {
		return badRequest("set one of ttl and valid_until, not both")
	}
	limit := start.Add(biz.MaxTTL)
	until := start.Add(b.TTL)
	switch {
	case req.TTL != "":
		d, err := biz.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			return badRequest("ttl %q: want a positive duration like \"36h\" or \"7d\"", req.TTL)
		}
		until = start.Add(min(d, biz.MaxTTL))
	case req.ValidUntil != "":
		t, err := time.Parse(time.RFC3339Nano, req.ValidUntil)
		if err != nil {
			return badRequest("valid_until: want RFC 3339 (2006-01-02T15:04:05Z): %v", err)
		}
		if !t.After(now) {
			return badRequest("valid_until %s is not in the future", req.ValidUntil)
		}
		until = t
	}
	if until.After(limit) {
		until = limit
	}
	if op.ValidFromMs != 0 && until.UnixMilli() <= op.ValidFromMs {
		return badRequest("valid_until must be after valid_from")
	}
	op.ValidUntilMs = until.UnixMilli()
	return nil
}

func setFilters(op *oplog.Oplog, f *filtersReq) *apiError {
	if f == nil {
		return nil
	}
	if len(f.Platforms) > maxPlatforms {
		return badRequest("filters.platforms: %d entries, at most %d", len(f.Platforms), maxPlatforms)
	}
	for _, p := range f.Platforms {
		if p == "" || len(p) > maxPlatformID || !validPlatform(p) {
			return badRequest("filters.platforms: %q: want 1-%d of [a-z0-9_-]", p, maxPlatformID)
		}
		op.Platforms = append(op.Platforms, strings.ToLower(p))
	}
	for _, v := range []struct{ name, v string }{{"min_version", f.MinVersion}, {"max_version", f.MaxVersion}} {
		if v.v != "" && !oplog.ValidVersion(v.v) {
			return badRequest("filters.%s %q: want a dotted numeric version like \"5.12.0\"", v.name, v.v)
		}
	}
	if f.MinVersion != "" && f.MaxVersion != "" && oplog.CompareVersions(f.MinVersion, f.MaxVersion) > 0 {
		return badRequest("filters: min_version %s is above max_version %s", f.MinVersion, f.MaxVersion)
	}
	op.MinVersion, op.MaxVersion = f.MinVersion, f.MaxVersion
	return nil
}

// validPlatform: letters (any case), digits, '_' and '-'.
func validPlatform(p string) bool {
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

func (l *Logic) storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, l.cfg.AppendTimeout)
}

// storeError logs and counts a failed store call and maps it to a response.
func (l *Logic) storeError(op string, err error) *apiError {
	l.m.storeErrors.WithLabelValues(op).Inc()
	if errors.Is(err, store.ErrInvalid) {
		l.log.Error("store rejected a request logic built", "op", op, "err", err)
		return errorf(http.StatusInternalServerError, CodeInternal, "internal error")
	}
	if errors.Is(err, store.ErrInsufficientStorage) {
		l.log.Error("store refuses writes: disk full", "op", op, "err", err)
		return errorf(http.StatusInsufficientStorage, CodeInsufficientStorage, "the store's disk is full, nothing was stored: retry later (with the same dedup_key)")
	}
	if errors.Is(err, store.ErrOutcomeUnknown) {
		l.log.Warn("store call gave up mid-write", "op", op, "err", err)
		return errorf(http.StatusGatewayTimeout, CodeOutcomeUnknown, "the store did not confirm the write in time: it may or may not be stored; retry with the same dedup_key, which returns the stored id if it was")
	}
	l.log.Warn("store call failed", "op", op, "err", err)
	return errorf(http.StatusServiceUnavailable, CodeUnavailable, "store unavailable: the oplog was not acknowledged and may or may not be stored; retry with the same dedup_key (the same id comes back if it was)")
}

// publish answers ops in order: the oplogs of non-persistent bizs become
// pushes (pushVolatile, bizs.go), queued first; the others are stored and
// queued (appendAndQueue). Volatile results have ID 0.
func (l *Logic) publish(ctx context.Context, ops []*oplog.Oplog) ([]store.AppendResult, *apiError) {
	persistent, volatile := l.split(ops)
	if len(volatile) == 0 {
		return l.appendAndQueue(ctx, ops)
	}
	if aerr := l.pushVolatile(ctx, ops, volatile); aerr != nil {
		return nil, aerr
	}
	results := make([]store.AppendResult, len(ops))
	if len(persistent) == 0 {
		return results, nil
	}
	stored := make([]*oplog.Oplog, len(persistent))
	for j, i := range persistent {
		stored[j] = ops[i]
	}
	res, aerr := l.appendAndQueue(ctx, stored)
	if aerr != nil {
		return nil, aerr
	}
	for j, i := range persistent {
		results[i] = res[j]
	}
	return results, nil
}

// split returns the indexes in ops of the oplogs of persistent bizs and of
// the others.
func (l *Logic) split(ops []*oplog.Oplog) (persistent, volatile []int) {
	for i, op := range ops {
		if b, err := l.cfg.Bizs.Get(op.Biz); err == nil && !b.Persistent {
			volatile = append(volatile, i)
		} else {
			persistent = append(persistent, i)
		}
	}
	return persistent, volatile
}

// appendAndQueue appends ops durably (one store call, one group commit),
// then produces the new ones to the queue. Only the append can fail the call.
func (l *Logic) appendAndQueue(ctx context.Context, ops []*oplog.Oplog) ([]store.AppendResult, *apiError) {
	began := time.Now()
	defer func() { l.m.publishSecs.Observe(time.Since(began).Seconds()) }()
	turn := l.order.enter(distinctChannels(ops)) // order.go
	defer l.order.leave(turn)
	// Detached from the request, bounded by AppendTimeout: a business
	// client hanging up mid-commit must not turn a write that completes into
	// one of unknown outcome.
	actx, cancel := l.storeCtx(context.WithoutCancel(ctx))
	results, err := l.cfg.Store.Append(actx, ops)
	cancel()
	if err == nil && len(results) != len(ops) {
		err = errors.New("store returned a result count different from the ops")
	}
	if err != nil {
		if errors.Is(err, store.ErrOutcomeUnknown) {
			// The commit may still land: queue it then (repair.go).
			l.awaitLateAppend(err, ops)
		}
		return nil, l.storeError("append", err)
	}
	l.produce(ctx, ops, results, turn)
	return results, nil
}

// produce puts the stored (non-duplicate) ops on the queue, in id order per
// channel after this process's calls holding lower ids (turn; nil: no wait).
// A failed send is logged and repaired (repair.go), never failing the call.
func (l *Logic) produce(ctx context.Context, ops []*oplog.Oplog, results []store.AppendResult, turn *orderCall) {
	msgs := make([]queue.Message, 0, len(ops))
	first := make(map[string]uint64)
	for i, res := range results {
		op := ops[i]
		if res.Duplicate {
			l.m.duplicates.WithLabelValues(op.Biz).Inc()
			continue
		}
		l.m.published.WithLabelValues(op.Biz).Inc()
		op.Id = res.ID
		if f, ok := first[op.Channel]; !ok || res.ID < f {
			first[op.Channel] = res.ID
		}
		v, err := proto.Marshal(&pb.QueueMsg{Body: &pb.QueueMsg_Oplog{Oplog: op}})
		if err != nil { // cannot happen for a valid message; the oplog is stored regardless
			l.log.Error("encoding queue message failed", "channel", op.Channel, "id", res.ID, "err", err)
			l.m.queueFailures.Inc()
			continue
		}
		msgs = append(msgs, queue.Message{Key: op.Channel, Value: v})
	}
	if len(msgs) > 0 {
		if turn != nil && l.order.wait(turn, first) {
			l.m.orderTimeouts.Inc()
		}
		// Detached from the request: the oplogs are stored, so a client that
		// hung up must not stop their push. Bounded by QueueTimeout.
		qctx, qcancel := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.QueueTimeout)
		err := l.cfg.Queue.Send(qctx, msgs...)
		qcancel()
		l.health.noteQueue(err)
		if err != nil {
			l.m.queueFailures.Inc()
			l.log.Warn("queue send failed after store append; the channels' tails are re-pushed after the repair delay",
				"messages", len(msgs), "first_channel", msgs[0].Key, "err", err)
			l.scheduleRepair(distinctChannels(ops)...)
		}
	}
}

// distinctChannels lists the channels of ops, each once.
func distinctChannels(ops []*oplog.Oplog) []string {
	out := make([]string, 0, 1)
	if len(ops) <= 16 { // a scan beats a map for a few items
		for _, op := range ops {
			if !slices.Contains(out, op.Channel) {
				out = append(out, op.Channel)
			}
		}
		return out
	}
	seen := make(map[string]struct{}, len(ops))
	for _, op := range ops {
		if _, ok := seen[op.Channel]; !ok {
			seen[op.Channel] = struct{}{}
			out = append(out, op.Channel)
		}
	}
	return out
}
