package logic

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/msync/msync/pkg/biz"
	"github.com/msync/msync/pkg/oplog"
)

// Error codes in HTTP error bodies: {"error": {"code": ..., "message": ...}}.
const (
	CodeBadRequest       = "bad_request"
	CodeUnauthorized     = "unauthorized"
	CodeForbidden        = "forbidden"
	CodeNotFound         = "not_found"
	CodeUnknownBiz       = "unknown_biz"
	CodeMethodNotAllowed = "method_not_allowed"
	CodePayloadTooLarge  = "payload_too_large"
	CodeNotSupported     = "not_supported"
	CodeUnavailable      = "unavailable"
	// CodeOutcomeUnknown (504): the store did not confirm a write in time;
	// it may be stored. Retry with the same dedup_key.
	CodeOutcomeUnknown = "outcome_unknown"
	// CodeInsufficientStorage (507): the store's disk is full; nothing was
	// stored, reads still work.
	CodeInsufficientStorage = "insufficient_storage"
	// CodeRateLimited (429, with Retry-After): the API key is over its
	// publish budget (Config.RateLimits); nothing was stored.
	CodeRateLimited = "rate_limited"
	CodeInternal    = "internal"
)

// apiError is an error a business caller sees, with its HTTP status.
type apiError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) *apiError {
	return errorf(http.StatusBadRequest, CodeBadRequest, format, args...)
}

type errorBody struct {
	Error *apiError `json:"error"`
}

// apiHandler is the shape of every route: it writes its success response
// itself and returns the error for handle to write, so no handler writes an
// error and forgets to return.
type apiHandler func(w http.ResponseWriter, r *http.Request) *apiError

func (l *Logic) routes() http.Handler {
	mux := http.NewServeMux()
	route := func(pattern, name string, h apiHandler) {
		mux.Handle(pattern, l.instrument(name, h))
	}
	route("POST /v1/sync", "sync", l.handlePublish)
	route("POST /v1/sync/batch", "sync_batch", l.handleBatch)
	route("GET /v1/devices/{device}/sync", "device_sync", l.handleDeviceSync)
	route("GET /v1/bizs", "bizs", l.handleBizs)
	route("GET /v1/receipts", "receipts", l.handleReceipts) // receipts.go
	route("POST /v1/users/{user}/revoke_tokens", "revoke_tokens", l.handleRevokeTokens)
	route("GET /healthz", "healthz", l.handleHealthz)
	route("GET /metrics", "metrics",
		l.opsOnly(promhttp.HandlerFor(l.gather, promhttp.HandlerOpts{ErrorLog: slogPrinter{l}})))
	// Method-less patterns catch the other methods of known paths (the
	// method-qualified ones above are more specific), so they get a JSON 405
	// instead of the mux's plain-text one.
	methods := map[string]string{
		"/v1/sync": "POST", "/v1/sync/batch": "POST", "/v1/devices/{device}/sync": "GET",
		"/v1/bizs": "GET", "/healthz": "GET", "/metrics": "GET", "/v1/users/{user}/revoke_tokens": "POST",
		"/v1/receipts": "GET",
	}
	for path, allow := range l.realtimeRoutes(route) { // push.go
		methods[path] = allow
	}
	for path, allow := range methods {
		route(path, "other", func(w http.ResponseWriter, _ *http.Request) *apiError {
			w.Header().Set("Allow", allow)
			return errorf(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "use %s", allow)
		})
	}
	for prefix, h := range l.cfg.Mount { // validated: literal, no overlap with the routes above
		route(prefix, "mount", l.opsOnly(h))
	}
	route("/", "other", func(_ http.ResponseWriter, r *http.Request) *apiError {
		return noRoute(r)
	})
	return mux
}

func noRoute(r *http.Request) *apiError {
	return errorf(http.StatusNotFound, CodeNotFound, "no route for %s %s", r.Method, r.URL.Path)
}

// opsOnly serves h to loopback callers only, unless Config.PublicOps.
func (l *Logic) opsOnly(h http.Handler) apiHandler {
	return func(w http.ResponseWriter, r *http.Request) *apiError {
		if !l.cfg.PublicOps {
			host, _, err := net.SplitHostPort(r.RemoteAddr)
			if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
				return noRoute(r)
			}
		}
		h.ServeHTTP(w, r)
		return nil
	}
}

type slogPrinter struct{ l *Logic }

func (p slogPrinter) Println(v ...any) { p.l.log.Warn("metrics handler", "err", fmt.Sprint(v...)) }

// statusWriter records the status code for the request metric.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// instrument adapts h to http.Handler, writing the error it returns, and
// counts requests by route name (a fixed set, so the label's cardinality is
// bounded whatever paths clients send).
func (l *Logic) instrument(name string, h apiHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		if aerr := h(sw, r); aerr != nil {
			writeError(sw, aerr)
		}
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		l.m.httpRequests.WithLabelValues(name, strconv.Itoa(sw.code)).Inc()
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	// The client may be gone; there is nobody to tell about a write error.
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *apiError) {
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="msync"`)
	}
	writeJSON(w, e.Status, errorBody{Error: e})
}

// apiKey returns the bearer key after checking it exists (any biz).
func (l *Logic) apiKey(r *http.Request) (string, *apiError) {
	h := r.Header.Get("Authorization")
	scheme, key, ok := strings.Cut(h, " ")
	if h == "" || !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(key) == "" {
		return "", errorf(http.StatusUnauthorized, CodeUnauthorized, "missing API key: send Authorization: Bearer <key>")
	}
	key = strings.TrimSpace(key)
	if err := l.cfg.APIKeys.Check(key, ""); err != nil {
		return "", errorf(http.StatusUnauthorized, CodeUnauthorized, "unknown API key")
	}
	return key, nil
}

// decodeStrict decodes exactly one JSON value into v, rejecting unknown
// fields and trailing data.
func decodeStrict(r io.Reader, v any) *apiError {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return decodeError(err)
		}
		return badRequest("bad JSON: trailing data after the object")
	}
	return nil
}

func decodeError(err error) *apiError {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errorf(http.StatusRequestEntityTooLarge, CodePayloadTooLarge, "request body over %d bytes", mbe.Limit)
	}
	if errors.Is(err, io.EOF) {
		return badRequest("bad JSON: empty body")
	}
	return badRequest("bad JSON: %v", err)
}

// publishResult is one published item; always with all three fields.
type publishResult struct {
	ID        uint64 `json:"id"`
	Channel   string `json:"channel"`
	Duplicate bool   `json:"duplicate"`
}

func (l *Logic) handlePublish(w http.ResponseWriter, r *http.Request) *apiError {
	key, aerr := l.apiKey(r)
	if aerr != nil {
		return aerr
	}
	var req publishReq
	if aerr := decodeStrict(http.MaxBytesReader(w, r.Body, l.cfg.MaxBodyBytes), &req); aerr != nil {
		return aerr
	}
	op, aerr := l.prepare(key, &req, l.cfg.Now())
	if aerr == nil {
		aerr = l.allow(w, key, 1, len(op.Payload))
	}
	if aerr != nil {
		return aerr
	}
	results, aerr := l.publish(r.Context(), []*oplog.Oplog{op})
	if aerr != nil {
		return aerr
	}
	writeJSON(w, http.StatusOK, publishResult{ID: results[0].ID, Channel: op.Channel, Duplicate: results[0].Duplicate})
	return nil
}

// decodeBatch decodes a batch body into its items; itemErrs[i] is item i's
// decoding error, if any. A batch whose items all decode is decoded in one
// pass; otherwise each item is decoded on its own, so a bad item gets its
// own error and the others are still published.
func decodeBatch(r io.Reader) (items []publishReq, itemErrs []*apiError, aerr *apiError) {
	body, err := io.ReadAll(r)
	if err != nil {
		return nil, nil, decodeError(err)
	}
	var all struct {
		Items []publishReq `json:"items"`
	}
	if decodeStrict(bytes.NewReader(body), &all) == nil {
		return all.Items, make([]*apiError, len(all.Items)), nil
	}
	var raw struct {
		Items []json.RawMessage `json:"items"`
	}
	if aerr := decodeStrict(bytes.NewReader(body), &raw); aerr != nil {
		return nil, nil, aerr
	}
	items, itemErrs = make([]publishReq, len(raw.Items)), make([]*apiError, len(raw.Items))
	for i, b := range raw.Items {
		if aerr := decodeStrict(bytes.NewReader(b), &items[i]); aerr != nil {
			items[i], itemErrs[i] = publishReq{}, aerr
		}
	}
	return items, itemErrs, nil
}

func (l *Logic) handleBatch(w http.ResponseWriter, r *http.Request) *apiError {
	key, aerr := l.apiKey(r)
	if aerr != nil {
		return aerr
	}
	items, itemErrs, aerr := decodeBatch(http.MaxBytesReader(w, r.Body, l.cfg.MaxBodyBytes))
	if aerr != nil {
		return aerr
	}
	switch {
	case len(items) == 0:
		return badRequest("items: want 1 to %d items", l.cfg.MaxBatch)
	case len(items) > l.cfg.MaxBatch:
		return badRequest("items: %d items, over the limit of %d", len(items), l.cfg.MaxBatch)
	}
	now := l.cfg.Now()
	// Each result is a publishResult or an errorBody, in item order.
	out := make([]any, len(items))
	ops := make([]*oplog.Oplog, 0, len(items))
	idx := make([]int, 0, len(items)) // ops[i] answers out[idx[i]]
	for i := range items {
		aerr := itemErrs[i]
		var op *oplog.Oplog
		if aerr == nil {
			op, aerr = l.prepare(key, &items[i], now)
		}
		if aerr != nil {
			out[i] = errorBody{Error: aerr}
			continue
		}
		ops = append(ops, op)
		idx = append(idx, i)
	}
	size := 0
	for _, op := range ops {
		size += len(op.Payload)
	}
	if len(ops) > 0 {
		if aerr := l.allow(w, key, len(ops), size); aerr != nil {
			return aerr
		}
		// One Append for every valid item: one group commit, and ids in
		// item order within each channel.
		results, aerr := l.publish(r.Context(), ops)
		if aerr != nil {
			return aerr
		}
		for i, res := range results {
			out[idx[i]] = publishResult{ID: res.ID, Channel: ops[i].Channel, Duplicate: res.Duplicate}
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": out})
	return nil
}

type channelState struct {
	Channel   string `json:"channel"`
	SyncPoint uint64 `json:"sync_point"`
	MaxID     uint64 `json:"max_id"`
	Lag       uint64 `json:"lag"`
}

func (l *Logic) handleDeviceSync(w http.ResponseWriter, r *http.Request) *apiError {
	key, aerr := l.apiKey(r)
	if aerr != nil {
		return aerr
	}
	device := r.PathValue("device")
	if err := oplog.ValidID("device", device); err != nil {
		return badRequest("%v", err)
	}
	ctx, cancel := l.storeCtx(r.Context())
	defer cancel()
	points, err := l.cfg.Store.SyncPoints(ctx, device)
	if err != nil {
		return l.storeError("sync_points", err)
	}
	chans := make([]string, 0, len(points))
	for ch := range points {
		// Only the channels of bizs the key may use: a key limited to one
		// biz learns nothing of the others.
		if name, _, _, err := oplog.ParseChannel(ch); err == nil && l.cfg.APIKeys.Check(key, name) == nil {
			chans = append(chans, ch)
		}
	}
	sort.Strings(chans)
	out := make([]channelState, 0, len(chans))
	for _, ch := range chans {
		maxID, err := l.cfg.Store.MaxID(ctx, ch)
		if err != nil {
			return l.storeError("max_id", err)
		}
		st := channelState{Channel: ch, SyncPoint: points[ch], MaxID: maxID}
		if maxID > st.SyncPoint {
			st.Lag = maxID - st.SyncPoint
		}
		out = append(out, st)
	}
	writeJSON(w, http.StatusOK, map[string]any{"device": device, "channels": out})
	return nil
}

type bizInfo struct {
	Name        string `json:"name"`
	Target      string `json:"target"`
	Scope       string `json:"scope"`
	MultiDevice bool   `json:"multi_device"`
	Persistent  bool   `json:"persistent"`
	TTL         string `json:"ttl"`
	Backlog     string `json:"backlog"`
	Consistency bool   `json:"consistency"`
	MaxPayload  int    `json:"max_payload"`
}

func (l *Logic) handleBizs(w http.ResponseWriter, r *http.Request) *apiError {
	if _, aerr := l.apiKey(r); aerr != nil {
		return aerr
	}
	all := l.cfg.Bizs.All()
	out := make([]bizInfo, 0, len(all))
	for _, b := range all {
		out = append(out, bizInfo{Name: b.Name, Target: b.Target, Scope: b.Scope, MultiDevice: b.MultiDevice,
			Persistent: b.Persistent, TTL: formatDuration(b.TTL), Backlog: b.Backlog(), Consistency: b.Consistency,
			MaxPayload: b.MaxPayload})
	}
	writeJSON(w, http.StatusOK, map[string]any{"bizs": out})
	return nil
}

// formatDuration renders whole days as "7d" (the config syntax), else Go's form.
func formatDuration(d time.Duration) string {
	const day = 24 * time.Hour
	if d > 0 && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	return d.String()
}

// checkBizKey maps an API key's permission for b to an error.
func (l *Logic) checkBizKey(key string, b *biz.Biz) *apiError {
	// apiKey already established that the key exists, so any failure here
	// is a key that is not allowed this biz.
	if err := l.cfg.APIKeys.Check(key, b.Name); err != nil {
		return errorf(http.StatusForbidden, CodeForbidden, "API key not allowed biz %q", b.Name)
	}
	return nil
}
