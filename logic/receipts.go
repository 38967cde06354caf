package logic

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/msync/msync/pkg/biz"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/store"
)

// Receipts paging: GET /v1/receipts?limit= (docs/http-api.md).
const (
	defaultReceiptsLimit = 100
	maxReceiptsLimit     = 1000
)

// receipt is one device's answer in GET /v1/receipts and in webhook POSTs.
type receipt struct {
	Channel string `json:"channel,omitempty"`
	Device  string `json:"device"`
	// Upto: the device has acknowledged every oplog of the channel up to
	// this id (its sync point).
	Upto    uint64 `json:"upto"`
	AckedAt string `json:"acked_at"`
}

func newReceipt(r store.Receipt, withChannel bool) receipt {
	out := receipt{Device: r.Device, Upto: r.ID, AckedAt: r.AckedAt.UTC().Format(time.RFC3339Nano)}
	if withChannel {
		out.Channel = r.Channel
	}
	return out
}

type receiptsResponse struct {
	Channel string `json:"channel"`
	ID      uint64 `json:"id"`
	MaxID   uint64 `json:"max_id"`
	// Acked: the devices whose sync point is at or past ID.
	Acked []receipt `json:"acked"`
	// Pending: the devices that acked something in the channel, but not ID yet.
	Pending []receipt `json:"pending"`
	// Next, when set, is the `after` of the next page.
	Next string `json:"next,omitempty"`
}

// handleReceipts serves GET /v1/receipts: which devices acknowledged oplog
// id of a channel, and when, from the stored sync points. The channel is
// named either as `channel` or like a publish: `biz` plus `user`, `device`
// or `global=true`.
func (l *Logic) handleReceipts(w http.ResponseWriter, r *http.Request) *apiError {
	key, aerr := l.apiKey(r)
	if aerr != nil {
		return aerr
	}
	q := r.URL.Query()
	ch, b, aerr := l.receiptsChannel(q)
	if aerr != nil {
		return aerr
	}
	if aerr := l.checkBizKey(key, b); aerr != nil {
		return aerr
	}
	id, err := strconv.ParseUint(q.Get("id"), 10, 64)
	if err != nil || id == 0 {
		return badRequest("id: want an oplog id (a positive integer), got %q", q.Get("id"))
	}
	limit := defaultReceiptsLimit
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > maxReceiptsLimit {
			return badRequest("limit: want 1..%d, got %q", maxReceiptsLimit, s)
		}
	}
	after := q.Get("after")
	if after != "" {
		if err := oplog.ValidID("after", after); err != nil {
			return badRequest("%v", err)
		}
	}
	ctx, cancel := l.storeCtx(r.Context())
	defer cancel()
	maxID, err := l.cfg.Store.MaxID(ctx, ch)
	if err != nil {
		return l.storeError("max_id", err)
	}
	if id > maxID {
		return errorf(http.StatusNotFound, CodeNotFound, "channel %q has no oplog %d (its max id is %d)", ch, id, maxID)
	}
	rs, err := l.cfg.Store.ChannelReceipts(ctx, ch, after, limit)
	if err != nil {
		return l.storeError("channel_receipts", err)
	}
	out := receiptsResponse{Channel: ch, ID: id, MaxID: maxID, Acked: []receipt{}, Pending: []receipt{}}
	for _, rc := range rs {
		if strings.HasPrefix(rc.Device, sharedDevicePrefix) {
			continue // the shared point of multi_device:false bizs, not a device
		}
		if rc.ID >= id {
			out.Acked = append(out.Acked, newReceipt(rc, false))
		} else {
			out.Pending = append(out.Pending, newReceipt(rc, false))
		}
	}
	if len(rs) == limit {
		out.Next = rs[len(rs)-1].Device
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// receiptsChannel resolves the channel a receipts query names.
func (l *Logic) receiptsChannel(q url.Values) (string, *biz.Biz, *apiError) {
	ch, name := q.Get("channel"), q.Get("biz")
	user, device, global := q.Get("user"), q.Get("device"), q.Get("global")
	switch {
	case ch != "" && (name != "" || user != "" || device != "" || global != ""):
		return "", nil, badRequest("name the channel either by channel or by biz with user, device or global, not both")
	case ch != "":
		bn, _, _, err := oplog.ParseChannel(ch)
		if err != nil {
			return "", nil, badRequest("channel: %v", err)
		}
		b, err := l.cfg.Bizs.Get(bn)
		if err != nil {
			return "", nil, errorf(http.StatusNotFound, CodeUnknownBiz, "%v", err)
		}
		return ch, b, nil
	case name == "":
		return "", nil, badRequest("missing channel (or biz with user, device or global)")
	}
	b, err := l.cfg.Bizs.Get(name)
	if err != nil {
		return "", nil, errorf(http.StatusNotFound, CodeUnknownBiz, "%v", err)
	}
	n := 0
	for _, v := range []string{user, device, global} {
		if v != "" {
			n++
		}
	}
	switch {
	case n != 1:
		return "", nil, badRequest("name exactly one of user, device or global=true with biz")
	case global != "" && (global != "true" || b.Scope != biz.ScopeGlobal):
		return "", nil, badRequest("global=true needs a global-scope biz")
	case global == "" && b.Scope == biz.ScopeGlobal:
		return "", nil, badRequest("biz %q is global: use global=true", b.Name)
	case user != "" && b.Target != biz.TargetUser:
		return "", nil, badRequest("biz %q targets devices: use device", b.Name)
	case device != "" && b.Target != biz.TargetDevice:
		return "", nil, badRequest("biz %q targets users: use user", b.Name)
	}
	for _, v := range []struct{ what, s string }{{"user", user}, {"device", device}} {
		if v.s != "" {
			if err := oplog.ValidID(v.what, v.s); err != nil {
				return "", nil, badRequest("%v", err)
			}
		}
	}
	return b.Channel(user, device), b, nil
}
