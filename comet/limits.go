package comet

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/msync/msync/gateway"
	"github.com/msync/msync/pkg/protocol"
)

// Limits is the traffic control of a comet's device connections. Rates are
// token buckets: Rate per second sustained, Burst at once. Each field's
// comment says what zero means; a negative rate turns that limit off.
type Limits struct {
	// FrameRate and FrameBurst bound the frames a connection sends; past
	// them the session handles what came before and closes with ERROR
	// protocol.CodeRateLimited. Zero means 1000/s and a burst of 2000.
	FrameRate  float64
	FrameBurst int
	// ByteRate and ByteBurst bound the bytes of those frames (headers
	// included); past them: ERROR protocol.CodeRateLimited. Zero means
	// 1 MiB/s and a burst of 2 MiB.
	ByteRate  float64
	ByteBurst int
	// AuthRatePerIP and AuthBurstPerIP bound the AUTH attempts from one
	// source address (across its connections); past them the AUTH is
	// answered ERROR protocol.CodeAuthRateLimited without asking logic.
	// Zero rate means off: many devices may share a carrier NAT address.
	// Zero burst means 10.
	AuthRatePerIP  float64
	AuthBurstPerIP int
	// SyncReqRate and SyncReqBurst bound the SYNC_REQs of one channel of a
	// session that are served at once; a SYNC_REQ past them is not refused
	// but served when the bucket allows (requests meanwhile merge into the
	// lowest point asked for). Zero means 1/s and a burst of 3.
	SyncReqRate  float64
	SyncReqBurst int
}

const (
	defaultFrameRate      = 1000
	defaultFrameBurst     = 2000
	defaultByteRate       = 1 << 20
	defaultByteBurst      = 2 << 20
	defaultAuthBurstPerIP = 10
	defaultSyncReqRate    = 1
	defaultSyncReqBurst   = 3

	// maxAuthAddrs bounds the addresses the AUTH limiter remembers; past it
	// entries whose bucket is full again are dropped (they carry no state),
	// and if all are busy the oldest state is forgotten wholesale: a
	// spoofing flood can then get a fresh burst, never unbounded memory.
	maxAuthAddrs = 1 << 16
)

func (l Limits) withDefaults() Limits {
	def := func(r *float64, b *int, rate float64, burst int) {
		if *r == 0 {
			*r = rate
		}
		if *b == 0 {
			*b = burst
		}
	}
	def(&l.FrameRate, &l.FrameBurst, defaultFrameRate, defaultFrameBurst)
	def(&l.ByteRate, &l.ByteBurst, defaultByteRate, defaultByteBurst)
	def(&l.SyncReqRate, &l.SyncReqBurst, defaultSyncReqRate, defaultSyncReqBurst)
	if l.AuthBurstPerIP == 0 {
		l.AuthBurstPerIP = defaultAuthBurstPerIP
	}
	return l
}

// rate is a token bucket kept as a GCRA "theoretical arrival time": one
// int64 of state per limited thing (a session, a channel, an address), so
// an idle session pays 8 bytes per limit, not a struct.
type rate struct {
	interval int64 // ns per unit; 0: unlimited
	window   int64 // burst * interval
}

func newRate(perSec float64, burst int) rate {
	if perSec <= 0 || burst <= 0 {
		return rate{}
	}
	iv := int64(float64(time.Second) / perSec)
	return rate{interval: max(iv, 1), window: max(iv, 1) * int64(burst)}
}

// allow takes n units at now (ns) from the bucket whose state is *tat and
// reports whether they were there.
func (r rate) allow(tat *int64, now, n int64) bool {
	if r.interval == 0 {
		return true
	}
	t := max(*tat, now)
	next := t + n*r.interval
	if next-now > r.window {
		return false
	}
	*tat = next
	return true
}

// readyAt is when allow(tat, ·, 1) succeeds again (ns).
func (r rate) readyAt(tat int64) int64 { return tat + r.interval - r.window }

// rates are a comet's limits, resolved once.
type rates struct {
	frames, bytes, syncReq, auth rate
}

func newRates(l Limits) rates {
	return rates{
		frames:  newRate(l.FrameRate, l.FrameBurst),
		bytes:   newRate(l.ByteRate, l.ByteBurst),
		syncReq: newRate(l.SyncReqRate, l.SyncReqBurst),
		auth:    newRate(l.AuthRatePerIP, l.AuthBurstPerIP),
	}
}

// authLimiter is the AUTH bucket of every source address.
type authLimiter struct {
	mu  sync.Mutex
	tat map[netip.Addr]int64
}

// allow takes one AUTH attempt of the address of remote ("ip:port").
func (al *authLimiter) allow(r rate, remote string, now int64) bool {
	if r.interval == 0 {
		return true
	}
	ip := netip.Addr{}
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		ip = ap.Addr().Unmap()
	}
	al.mu.Lock()
	defer al.mu.Unlock()
	if al.tat == nil {
		al.tat = make(map[netip.Addr]int64)
	}
	t, ok := al.tat[ip]
	if !ok && len(al.tat) >= maxAuthAddrs {
		for a, at := range al.tat {
			if at <= now {
				delete(al.tat, a)
			}
		}
		if len(al.tat) >= maxAuthAddrs {
			clear(al.tat)
		}
	}
	if !r.allow(&t, now, 1) {
		return false
	}
	al.tat[ip] = t
	return true
}

// Limit names (label "limit" of msync_comet_limited_total).
const (
	limitConns     = "conns"        // gateway: MaxConns
	limitConnsIP   = "conns_per_ip" // gateway: MaxConnsPerIP
	limitFrameRate = "frame_rate"
	limitByteRate  = "byte_rate"
	limitInFlight  = "in_flight"
	limitAuthIP    = "auth_per_ip"
	limitSyncReq   = "sync_req" // deferred, not refused
)

// limitCounters count what the limits refused or deferred. The comet's
// own are atomics; the gateway's connection refusals are read from its
// Stats when scraped.
type limitCounters struct {
	frameRate, byteRate, inFlight, authIP, syncReq atomic.Uint64
	gw                                             atomic.Pointer[gateway.Server]
}

// limitsCollector exports limitCounters as msync_comet_limited_total.
type limitsCollector struct {
	lc   *limitCounters
	desc *prometheus.Desc
}

func newLimitsCollector(lc *limitCounters, cometID string) *limitsCollector {
	return &limitsCollector{lc: lc, desc: prometheus.NewDesc("msync_comet_limited_total",
		"Connections, frames and requests refused (or, for sync_req, deferred) by a traffic limit, by limit.",
		[]string{"limit"}, prometheus.Labels{"comet": cometID})}
}

func (lc *limitsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- lc.desc }

func (lc *limitsCollector) Collect(ch chan<- prometheus.Metric) {
	var conns, perIP uint64
	if gw := lc.lc.gw.Load(); gw != nil {
		st := gw.Stats()
		conns, perIP = st.RefusedConns, st.RefusedConnsPerIP
	}
	for _, v := range []struct {
		name string
		n    uint64
	}{
		{limitConns, conns}, {limitConnsIP, perIP},
		{limitFrameRate, lc.lc.frameRate.Load()}, {limitByteRate, lc.lc.byteRate.Load()},
		{limitInFlight, lc.lc.inFlight.Load()}, {limitAuthIP, lc.lc.authIP.Load()},
		{limitSyncReq, lc.lc.syncReq.Load()},
	} {
		ch <- prometheus.MustNewConstMetric(lc.desc, prometheus.CounterValue, float64(v.n), v.name)
	}
}

// limitError is the wire code and message of a frame-level limit.
func limitError(limit string) (protocol.Code, string) {
	switch limit {
	case limitInFlight:
		return protocol.CodeTooManyInFlight, "too many frames in flight"
	case limitByteRate:
		return protocol.CodeRateLimited, "bytes per second over the connection's limit"
	}
	return protocol.CodeRateLimited, "frames per second over the connection's limit"
}
