package comet

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/msync/msync/pkg/protocol"
)

// Live push outcomes (label "result" of msync_comet_live_pushes_total).
const (
	pushDelivered = "delivered"         // written as a live page
	pushSkipped   = "skipped"           // filtered/expired for this device: cursor advanced, no frame
	pushDuplicate = "duplicate"         // id at or below what was already covered
	pushDeferred  = "deferred"          // channel syncing: folded into the backlog (pendingMax)
	pushResync    = "dropped_to_resync" // queue full, gap or not-yet-valid: the store resends it
)

// Resync reasons (label "reason" of msync_comet_resyncs_total).
const (
	resyncGap      = "gap"      // a live id arrived past sent+1
	resyncPending  = "pending"  // pushes arrived while syncing, after the last page
	resyncOverflow = "overflow" // the session's queue overflowed with live pushes
	resyncSyncReq  = "sync_req" // the client asked
	resyncPaced    = "paced"    // a live burst over half the write queue: the rest syncs from the store
	resyncRewind   = "rewind"   // the client's point was above the channel's max id
)

// metrics are the comet's Prometheus collectors. Per-op children are resolved
// once so the hot path does no label lookups.
type metrics struct {
	sessions  prometheus.Gauge
	framesIn  [opSlots]prometheus.Counter
	framesOut [opSlots]prometheus.Counter
	pushes    *prometheus.CounterVec
	resyncs   *prometheus.CounterVec
	kicks     prometheus.Counter
	errors    *prometheus.CounterVec
	logicErrs *prometheus.CounterVec

	pushDelivered, pushSkipped, pushDuplicate, pushDeferred, pushResync prometheus.Counter

	compressMetrics // compress.go
}

// opSlots covers every op of protocol version 1; the last slot counts the rest.
const opSlots = 18

func opSlot(op protocol.Op) int {
	if op.Known() && int(op) < opSlots-1 {
		return int(op)
	}
	return opSlots - 1
}

func newMetrics(reg prometheus.Registerer, cometID string) (*metrics, error) {
	labels := prometheus.Labels{"comet": cometID}
	m := &metrics{
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "msync_comet_sessions",
			Help: "Authenticated sessions on this comet.", ConstLabels: labels}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "msync_comet_live_pushes_total",
			Help: "Live oplog pushes per session, by outcome.", ConstLabels: labels}, []string{"result"}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "msync_comet_resyncs_total",
			Help: "Channels that fell back to syncing from the store, by reason.", ConstLabels: labels}, []string{"reason"}),
		kicks: prometheus.NewCounter(prometheus.CounterOpts{Name: "msync_comet_kicks_total",
			Help: "Sessions closed by Kick.", ConstLabels: labels}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "msync_comet_errors_total",
			Help: "ERROR frames sent, by wire code.", ConstLabels: labels}, []string{"code"}),
		logicErrs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "msync_comet_logic_errors_total",
			Help: "Failed logic calls, by method.", ConstLabels: labels}, []string{"method"}),
	}
	in := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "msync_comet_frames_in_total",
		Help: "Frames received from clients, by op.", ConstLabels: labels}, []string{"op"})
	out := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "msync_comet_frames_out_total",
		Help: "Frames written to clients, by op.", ConstLabels: labels}, []string{"op"})
	for i := range opSlots {
		name := "other"
		if op := protocol.Op(i); op.Known() && i < opSlots-1 {
			name = op.String()
		}
		m.framesIn[i] = in.WithLabelValues(name)
		m.framesOut[i] = out.WithLabelValues(name)
	}
	m.pushDelivered = m.pushes.WithLabelValues(pushDelivered)
	m.pushSkipped = m.pushes.WithLabelValues(pushSkipped)
	m.pushDuplicate = m.pushes.WithLabelValues(pushDuplicate)
	m.pushDeferred = m.pushes.WithLabelValues(pushDeferred)
	m.pushResync = m.pushes.WithLabelValues(pushResync)
	m.compressMetrics = newCompressMetrics(labels)
	for _, c := range append([]prometheus.Collector{m.sessions, in, out, m.pushes, m.resyncs, m.kicks, m.errors, m.logicErrs}, m.compressMetrics.collectors()...) {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("comet: metrics: %w (two comets with id %q on one registerer?)", err, cometID)
			}
			return nil, fmt.Errorf("comet: metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) errorCode(code protocol.Code) {
	m.errors.WithLabelValues(strconv.FormatUint(uint64(code), 10)).Inc()
}
