package comet

// RPC over the long connection (docs/protocol.md §17): a REQUEST frame names a
// configured upstream; the comet calls it over HTTP with the session's verified
// identity and answers with a RESPONSE frame of the same id.
//
// The drain task only checks a REQUEST and starts its call: the HTTP round trip
// runs on a goroutine of its own, bounded per session (Config.MaxRequests) and
// per service (Upstream.MaxInFlight), so a slow upstream never holds up the
// session's frames, SYNC pages or heartbeats. The answer comes back as an
// evResponse event and is written by the drain task like any other frame, so
// it is ordered with the session's ERROR/close and never written after it.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/protocol"
	wirepb "github.com/msync/msync/pkg/protocol/pb"
)

// Upstream is one business service REQUEST frames may name. Each field's
// comment says what zero means.
type Upstream struct {
	// Name is the service name clients use: 1-64 of [A-Za-z0-9_.-]. Required.
	Name string
	// URL is the base URL the request's path is appended to: http:// (HTTP/1.1),
	// h2c:// (HTTP/2 over cleartext, prior knowledge) or https://. Required.
	URL string
	// Timeout bounds one call, connect to the end of the body; zero 5s.
	Timeout time.Duration
	// MaxInFlight bounds the calls to this service in flight on this comet
	// (more are answered 605); zero 256.
	MaxInFlight int
	// MaxRequestBytes bounds a request body (more: 606); zero 32 KiB, at
	// most MaxUpstreamRequestBytes (a REQUEST must fit a client frame).
	MaxRequestBytes int
	// MaxResponseBytes bounds the answer, body and headers (more: 607); zero
	// 256 KiB, at most half the connection write queue.
	MaxResponseBytes int
	// The headers carrying the session's identity; a client's own copies are
	// removed. Zero: X-Msync-User, X-Msync-Device, X-Msync-Platform,
	// X-Msync-App-Version.
	UserHeader, DeviceHeader, PlatformHeader, AppVersionHeader string
}

const (
	defaultUpstreamTimeout   = 5 * time.Second
	defaultUpstreamInFlight  = 256
	defaultMaxRequestBytes   = 32 << 10
	defaultMaxResponseBytes  = 256 << 10
	defaultMaxRequests       = protocol.DefaultMaxRequests
	maxMaxRequests           = 256 // a session's frame queue (protocol.MaxInFlightFrames)
	maxUpstreamInFlight      = 1 << 16
	maxUpstreamTimeout       = 5 * time.Minute
	unknownServiceLabel      = "_unknown" // metrics label: client-chosen names must not create series
	rpcIdleConnTimeout       = 60 * time.Second
	rpcReasonMaxBytes        = 256
	defaultUserHeader        = "X-Msync-User"
	defaultDeviceHeader      = "X-Msync-Device"
	defaultPlatformHeader    = "X-Msync-Platform"
	defaultAppVersionHeader  = "X-Msync-App-Version"
	MaxUpstreamRequestBytes  = 60 << 10 // leaves room for the rest of a 64 KiB REQUEST frame
	rpcResponseFrameOverhead = 64
)

func (u Upstream) withDefaults(maxResponse int) (Upstream, error) {
	if u.Timeout == 0 {
		u.Timeout = defaultUpstreamTimeout
	}
	if u.MaxInFlight == 0 {
		u.MaxInFlight = defaultUpstreamInFlight
	}
	if u.MaxRequestBytes == 0 {
		u.MaxRequestBytes = defaultMaxRequestBytes
	}
	if u.MaxResponseBytes == 0 {
		u.MaxResponseBytes = min(defaultMaxResponseBytes, maxResponse)
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&u.UserHeader, defaultUserHeader)
	def(&u.DeviceHeader, defaultDeviceHeader)
	def(&u.PlatformHeader, defaultPlatformHeader)
	def(&u.AppVersionHeader, defaultAppVersionHeader)
	var errs []error
	if !protocol.ValidServiceName(u.Name) {
		errs = append(errs, fmt.Errorf("name %q: want 1-%d of [A-Za-z0-9_.-]", u.Name, protocol.MaxServiceName))
	}
	if _, _, err := parseUpstreamURL(u.URL); err != nil {
		errs = append(errs, err)
	}
	if u.Timeout < 0 || u.Timeout > maxUpstreamTimeout {
		errs = append(errs, fmt.Errorf("timeout %s: want 0-%s", u.Timeout, maxUpstreamTimeout))
	}
	if u.MaxInFlight < 0 || u.MaxInFlight > maxUpstreamInFlight {
		errs = append(errs, fmt.Errorf("max_in_flight %d: want 0-%d", u.MaxInFlight, maxUpstreamInFlight))
	}
	if u.MaxRequestBytes < 0 || u.MaxRequestBytes > MaxUpstreamRequestBytes {
		errs = append(errs, fmt.Errorf("max_request_bytes %d: want 0-%d", u.MaxRequestBytes, MaxUpstreamRequestBytes))
	}
	if u.MaxResponseBytes < 0 || u.MaxResponseBytes > maxResponse {
		errs = append(errs, fmt.Errorf("max_response_bytes %d: want 0-%d (half the write queue)", u.MaxResponseBytes, maxResponse))
	}
	seen := map[string]bool{}
	for _, h := range u.identityHeaders() {
		l := strings.ToLower(h)
		if !protocol.ValidHeaderName(h) || protocol.IsHopHeader(l) || seen[l] {
			errs = append(errs, fmt.Errorf("identity header %q: want distinct HTTP tokens, not hop-by-hop", h))
		}
		seen[l] = true
	}
	if err := errors.Join(errs...); err != nil {
		return u, fmt.Errorf("%w: upstream %q: %w", ErrInvalidConfig, u.Name, err)
	}
	return u, nil
}

func (u Upstream) identityHeaders() [4]string {
	return [4]string{u.UserHeader, u.DeviceHeader, u.PlatformHeader, u.AppVersionHeader}
}

// parseUpstreamURL returns the URL to append paths to (h2c:// becomes http://)
// and whether the transport speaks HTTP/2 cleartext.
func parseUpstreamURL(raw string) (string, bool, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", false, fmt.Errorf("url %q: %w", raw, err)
	}
	h2c := false
	switch u.Scheme {
	case "http", "https":
	case "h2c":
		h2c, u.Scheme = true, "http"
	default:
		return "", false, fmt.Errorf("url %q: want http://, h2c:// or https://", raw)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", false, fmt.Errorf("url %q: want scheme://host[:port][/prefix], no user, query or fragment", raw)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u.String(), h2c, nil
}

// service is a configured Upstream with its HTTP client. It is immutable
// except for the in-flight counter, which SetUpstreams carries over to the
// service of the same name so a reload does not double the limit.
type service struct {
	Upstream
	base     string
	client   *http.Client
	strip    map[string]bool // lower-case identity header names
	inFlight *atomic.Int64
	m        serviceMetrics
}

type serviceMetrics struct {
	duration prometheus.Observer
	inFlight prometheus.Gauge
}

type upstreamSet map[string]*service

// rpcRouter owns the upstreams and the call goroutines.
type rpcRouter struct {
	c           *Comet
	set         atomic.Pointer[upstreamSet]
	maxResponse int

	ctx    context.Context // parents every call; cancelled by stop
	cancel context.CancelFunc
	life   struct {
		sync.Mutex // serializes SetUpstreams, and wg.Add against stop
		stopped    bool
	}
	wg sync.WaitGroup

	requests *prometheus.CounterVec   // service, status
	errors   *prometheus.CounterVec   // service, reason
	duration *prometheus.HistogramVec // service
	inFlight *prometheus.GaugeVec     // service
}

// sessionRPC is a session's RPC state, owned by the drain task.
type sessionRPC struct {
	st *rpcCalls // nil until the session's first call: an idle session holds 8 bytes, not 32
}

type rpcCalls struct {
	inflight map[uint32]struct{} // request ids sent to upstreams, not yet answered
	ctx      context.Context     // cancelled when the session ends
	cancel   context.CancelFunc
}

// inflight is the session's calls in flight (nil, readable, before the first).
func (r *sessionRPC) inflight() map[uint32]struct{} {
	if r.st == nil {
		return nil
	}
	return r.st.inflight
}

func newRPCRouter(c *Comet, ups []Upstream, maxResponse int) (*rpcRouter, error) {
	labels := prometheus.Labels{"comet": c.cfg.ID}
	rt := &rpcRouter{c: c, maxResponse: maxResponse,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "msync_comet_rpc_requests_total",
			Help: "REQUEST frames answered, by service and status (2xx..5xx from the upstream, or msync's own 6xx).", ConstLabels: labels},
			[]string{"service", "status"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "msync_comet_rpc_errors_total",
			Help: "REQUEST frames msync answered itself (no upstream answer), by service and reason.", ConstLabels: labels},
			[]string{"service", "reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "msync_comet_rpc_duration_seconds",
			Help:        "Time from a REQUEST handled to its RESPONSE queued, for calls sent to an upstream.",
			ConstLabels: labels, Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}},
			[]string{"service"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "msync_comet_rpc_in_flight",
			Help: "Calls in flight to each upstream.", ConstLabels: labels}, []string{"service"}),
	}
	for _, col := range []prometheus.Collector{rt.requests, rt.errors, rt.duration, rt.inFlight} {
		if err := c.cfg.Registerer.Register(col); err != nil {
			return nil, fmt.Errorf("comet: metrics: %w", err)
		}
	}
	rt.ctx, rt.cancel = context.WithCancel(context.Background())
	if err := rt.setUpstreams(ups); err != nil {
		rt.cancel()
		return nil, err
	}
	return rt, nil
}

// SetUpstreams replaces the comet's upstreams (a configuration reload): calls
// in flight finish on the settings they started with, new REQUESTs use the
// new set. On error nothing changes; the error lists every bad upstream.
func (c *Comet) SetUpstreams(ups []Upstream) error { return c.rpc.setUpstreams(ups) }

// Upstreams returns the names of the configured upstreams, sorted.
func (c *Comet) Upstreams() []string {
	set := *c.rpc.set.Load()
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (rt *rpcRouter) setUpstreams(ups []Upstream) error {
	rt.life.Lock()
	defer rt.life.Unlock()
	var old upstreamSet
	if p := rt.set.Load(); p != nil {
		old = *p
	}
	next := make(upstreamSet, len(ups))
	var errs []error
	for _, u := range ups {
		u, err := u.withDefaults(rt.maxResponse)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if next[u.Name] != nil {
			errs = append(errs, fmt.Errorf("%w: upstream %q listed twice", ErrInvalidConfig, u.Name))
			continue
		}
		next[u.Name] = rt.newService(u, old[u.Name])
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	rt.set.Store(&next)
	for name, s := range old {
		if n := next[name]; n == nil || n.client != s.client {
			// Idle connections only: calls in flight keep theirs.
			s.client.CloseIdleConnections()
		}
	}
	return nil
}

func (rt *rpcRouter) newService(u Upstream, prev *service) *service {
	base, h2c, _ := parseUpstreamURL(u.URL) // checked by withDefaults
	tr := &http.Transport{
		Proxy:               nil, // upstreams are internal: never through an environment proxy
		DialContext:         (&net.Dialer{Timeout: u.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: min(u.MaxInFlight, 1024), // every call in flight may need its own HTTP/1.1 connection
		MaxConnsPerHost:     u.MaxInFlight,
		IdleConnTimeout:     rpcIdleConnTimeout,
		DisableCompression:  true, // pass the upstream's bytes and Content-Encoding through unchanged
		ForceAttemptHTTP2:   true,
	}
	if h2c {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = &p
	}
	s := &service{Upstream: u, base: base,
		client: &http.Client{Transport: tr,
			// A redirect would leave the configured upstream; the client gets the 3xx.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		strip:    make(map[string]bool, 4),
		inFlight: new(atomic.Int64),
		m: serviceMetrics{duration: rt.duration.WithLabelValues(u.Name),
			inFlight: rt.inFlight.WithLabelValues(u.Name)},
	}
	if prev != nil {
		s.inFlight = prev.inFlight
	}
	for _, h := range u.identityHeaders() {
		s.strip[strings.ToLower(h)] = true
	}
	return s
}

// stop cancels every call in flight and waits for their goroutines until ctx
// is done. Idempotent.
func (rt *rpcRouter) stop(ctx context.Context) error {
	rt.life.Lock()
	rt.life.stopped = true
	rt.life.Unlock()
	rt.cancel()
	done := make(chan struct{})
	go func() { rt.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("comet: waiting for rpc calls: %w", ctx.Err())
	}
	for _, s := range *rt.set.Load() {
		s.client.CloseIdleConnections()
	}
	return nil
}

// ---- the drain task's side ----

// handleRequest checks a REQUEST and starts its call, or answers it at once.
// It never waits: the call runs on its own goroutine.
func (s *session) handleRequest(f protocol.Frame) {
	var r wirepb.Request
	if err := protocol.Unmarshal(f, &r); err != nil {
		s.fail(f.Seq, protocol.CodeBadFrame, err.Error(), ErrProtocol)
		return
	}
	if r.Id == 0 {
		s.fail(f.Seq, protocol.CodeBadFrame, "REQUEST id 0", ErrProtocol)
		return
	}
	if _, dup := s.rpc.inflight()[r.Id]; dup {
		s.fail(f.Seq, protocol.CodeOutOfOrder, fmt.Sprintf("REQUEST id %d already in flight", r.Id), ErrProtocol)
		return
	}
	rt := s.c.rpc
	svc := (*rt.set.Load())[r.Service]
	label := unknownServiceLabel
	if svc != nil {
		label = svc.Name
	}
	refuse := func(st protocol.Status, reason, msg string) {
		rt.errors.WithLabelValues(label, reason).Inc()
		rt.requests.WithLabelValues(label, statusLabel(st)).Inc()
		s.write(protocol.OpResponse, f.Seq, &wirepb.Response{Id: r.Id, Status: uint32(st), Body: reasonBody(msg)})
	}
	switch {
	case svc == nil:
		refuse(protocol.StatusUnknownService, "unknown_service", "unknown service")
		return
	case len(s.rpc.inflight()) >= s.c.cfg.MaxRequests:
		refuse(protocol.StatusTooManyRequests, "session_limit", fmt.Sprintf("%d requests in flight on this session", len(s.rpc.inflight())))
		return
	case len(r.Body) > svc.MaxRequestBytes:
		refuse(protocol.StatusRequestTooLarge, "request_too_large", fmt.Sprintf("body of %d bytes, limit %d", len(r.Body), svc.MaxRequestBytes))
		return
	}
	if err := protocol.CheckRequest(&r); err != nil {
		refuse(protocol.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if svc.inFlight.Add(1) > int64(svc.MaxInFlight) {
		svc.inFlight.Add(-1)
		refuse(protocol.StatusServiceBusy, "service_limit", fmt.Sprintf("service has %d calls in flight", svc.MaxInFlight))
		return
	}
	rt.life.Lock()
	if rt.life.stopped || s.c.closing.Load() {
		rt.life.Unlock()
		svc.inFlight.Add(-1)
		refuse(protocol.StatusShuttingDown, "shutting_down", "server shutting down")
		return
	}
	rt.wg.Add(1)
	rt.life.Unlock()
	if s.rpc.st == nil {
		ctx, cancel := context.WithCancel(rt.ctx)
		s.rpc.st = &rpcCalls{inflight: make(map[uint32]struct{}), ctx: ctx, cancel: cancel}
	}
	s.rpc.st.inflight[r.Id] = struct{}{}
	svc.m.inFlight.Inc()
	id := callIdentity{user: s.user, device: s.device, platform: s.platform, appVersion: s.appVersion}
	go rt.call(s, s.rpc.st.ctx, svc, f.Seq, &r, id)
}

// handleResponse writes a call's RESPONSE (an evResponse event: the request
// id in frame.Seq, the encoded frame in frame.Body).
func (s *session) handleResponse(ev *event) {
	delete(s.rpc.inflight(), ev.frame.Seq)
	if s.phase == phaseAuthed {
		s.send(protocol.OpResponse, ev.frame.Body)
	}
}

// endRPC cancels the session's calls in flight; their answers are dropped.
func (s *session) endRPC() {
	if s.rpc.st != nil {
		s.rpc.st.cancel()
	}
}

// queueResponse hands a finished call's frame to the drain task (any goroutine).
func (s *session) queueResponse(id uint32, frame []byte) {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return
	}
	s.mu.events = append(s.mu.events, event{kind: evResponse, frame: protocol.Frame{Seq: id, Body: frame}})
	submit := s.scheduleLocked()
	s.mu.Unlock()
	if submit {
		s.c.submit(s)
	}
}

// ---- the call goroutine ----

type callIdentity struct{ user, device, platform, appVersion string }

// call runs one upstream round trip and queues its RESPONSE. Owned by
// rpcRouter.wg; ctx is the session's, cancelled when it ends or the comet stops.
func (rt *rpcRouter) call(s *session, ctx context.Context, svc *service, seq uint32, r *wirepb.Request, id callIdentity) {
	defer rt.wg.Done()
	start := time.Now()
	resp := rt.roundTrip(ctx, svc, r, id)
	svc.inFlight.Add(-1)
	svc.m.inFlight.Dec()
	resp.Id = r.Id
	st := protocol.Status(resp.Status)
	b, err := protocol.AppendMessage(make([]byte, 0, protocol.HeaderSize+proto.Size(resp)), protocol.OpResponse, seq, resp)
	if err != nil {
		// Headers that are not UTF-8 (proto3 strings): answer without them.
		st, resp = protocol.StatusUnavailable, &wirepb.Response{Id: r.Id, Status: uint32(protocol.StatusUnavailable), Body: reasonBody("upstream answer not encodable: " + err.Error())}
		b, _ = protocol.Encode(protocol.OpResponse, seq, resp)
		rt.errors.WithLabelValues(svc.Name, "bad_answer").Inc()
	}
	svc.m.duration.Observe(time.Since(start).Seconds())
	rt.requests.WithLabelValues(svc.Name, statusLabel(st)).Inc()
	s.queueResponse(r.Id, b)
}

func (rt *rpcRouter) roundTrip(ctx context.Context, svc *service, r *wirepb.Request, id callIdentity) *wirepb.Response {
	timeout := svc.Timeout
	if d := time.Duration(r.TimeoutMs) * time.Millisecond; d > 0 && d < timeout {
		timeout = d
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fail := func(st protocol.Status, reason string, err error) *wirepb.Response {
		rt.errors.WithLabelValues(svc.Name, reason).Inc()
		msg := reason
		if err != nil {
			msg = err.Error()
		}
		return &wirepb.Response{Status: uint32(st), Body: reasonBody(msg)}
	}
	method := r.Method
	if method == "" {
		method = http.MethodPost
	}
	req, err := http.NewRequestWithContext(ctx, method, svc.base+r.Path, bytes.NewReader(r.Body))
	if err != nil {
		return fail(protocol.StatusBadRequest, "bad_request", err)
	}
	for k, v := range r.Headers {
		if !svc.strip[strings.ToLower(k)] {
			req.Header.Set(k, v)
		}
	}
	req.Header.Set(svc.UserHeader, id.user)
	req.Header.Set(svc.DeviceHeader, id.device)
	req.Header.Set(svc.PlatformHeader, id.platform)
	req.Header.Set(svc.AppVersionHeader, id.appVersion)
	hr, err := svc.client.Do(req)
	if err != nil {
		return rt.failure(ctx, fail, err)
	}
	defer hr.Body.Close()
	out := &wirepb.Response{Status: uint32(hr.StatusCode)}
	budget := svc.MaxResponseBytes
	for k, vs := range hr.Header {
		if protocol.IsHopHeader(strings.ToLower(k)) {
			continue
		}
		if out.Headers == nil {
			out.Headers = make(map[string]string, len(hr.Header))
		}
		v := strings.Join(vs, ", ")
		out.Headers[k] = v
		budget -= len(k) + len(v) + 8
	}
	if budget < 0 {
		return fail(protocol.StatusResponseTooLarge, "response_too_large", errors.New("response headers over max_response_bytes"))
	}
	if hr.ContentLength > int64(budget) {
		return fail(protocol.StatusResponseTooLarge, "response_too_large",
			fmt.Errorf("response of %d bytes, limit %d", hr.ContentLength, svc.MaxResponseBytes))
	}
	body, err := io.ReadAll(io.LimitReader(hr.Body, int64(budget)+1))
	switch {
	case err != nil:
		return rt.failure(ctx, fail, err)
	case len(body) > budget:
		return fail(protocol.StatusResponseTooLarge, "response_too_large", fmt.Errorf("response over %d bytes", svc.MaxResponseBytes))
	}
	out.Body = body
	return out
}

// failure classifies a failed round trip: our deadline, the comet stopping,
// or the upstream not answering.
func (rt *rpcRouter) failure(ctx context.Context, fail func(protocol.Status, string, error) *wirepb.Response, err error) *wirepb.Response {
	switch {
	case rt.ctx.Err() != nil:
		return fail(protocol.StatusShuttingDown, "shutting_down", nil)
	case errors.Is(ctx.Err(), context.DeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return fail(protocol.StatusTimeout, "timeout", nil)
	case ctx.Err() != nil:
		return fail(protocol.StatusShuttingDown, "session_closed", nil) // nobody reads it
	}
	// The error names the upstream's internal address: logged, not sent.
	rt.c.log.Debug("upstream call failed", "err", err)
	return fail(protocol.StatusUnavailable, "unavailable", errors.New("upstream unavailable"))
}

// statusLabel is the metrics label of a status: the class for an upstream's
// (bounded cardinality whatever upstreams answer), the number for msync's.
func statusLabel(st protocol.Status) string {
	if st.FromUpstream() {
		return strconv.Itoa(int(st)/100) + "xx"
	}
	return strconv.Itoa(int(st))
}

// reasonBody is the short UTF-8 reason msync puts in the body of its own statuses.
func reasonBody(msg string) []byte {
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if len(msg) > rpcReasonMaxBytes {
		msg = msg[:rpcReasonMaxBytes]
	}
	return []byte(msg)
}
