package logic

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	published     *prometheus.CounterVec // by biz
	duplicates    *prometheus.CounterVec // by biz
	publishSecs   prometheus.Histogram
	storeErrors   *prometheus.CounterVec // by op
	queueFailures prometheus.Counter
	orderTimeouts prometheus.Counter
	connects      *prometheus.CounterVec // by result
	replaced      prometheus.Counter
	syncs         prometheus.Counter
	syncOplogs    prometheus.Counter
	acks          prometheus.Counter
	// ticketRefusals counts Sync calls and Ack items refused for their
	// session ticket (missing, forged, expired, another comet's).
	ticketRefusals prometheus.Counter
	expired        prometheus.Counter
	httpRequests   *prometheus.CounterVec // by route, code
	repairs        *prometheus.CounterVec // by result
	lateAppends    prometheus.Counter
	rateLimited    *prometheus.CounterVec // by kind
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "msync", "logic"
	m := &metrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "published_total", Help: "Oplogs durably stored by publish calls (duplicates excluded)."}, []string{"biz"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "duplicates_total", Help: "Publish items answered with an existing oplog (dedup key repeat)."}, []string{"biz"}),
		publishSecs: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "publish_duration_seconds", Help: "Store append plus queue send of one publish or batch call.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "store_errors_total", Help: "Failed store calls, by operation."}, []string{"op"}),
		queueFailures: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "queue_send_failures_total", Help: "Queue sends that failed after the oplogs were stored (devices catch up by sync)."}),
		orderTimeouts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "publish_order_timeouts_total", Help: "Publish calls that sent to the queue after OrderWait without the calls that may hold lower ids of their channels (the comet reorders or resyncs)."}),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "connects_total", Help: "Connect calls, by result."}, []string{"result"}),
		replaced: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "sessions_replaced_total", Help: "Connects that replaced (and kicked) a previous session of the device."}),
		syncs: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "syncs_total", Help: "Sync calls served."}),
		syncOplogs: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "sync_oplogs_total", Help: "Oplogs returned in sync pages."}),
		acks: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "acks_total", Help: "Ack items stored as sync points."}),
		ticketRefusals: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "ticket_refusals_total", Help: "Sync calls and ack items refused for their session ticket (missing, forged, expired, another comet's)."}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "expired_deleted_total", Help: "Expired oplogs deleted by the janitor."}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "http_requests_total", Help: "HTTP requests, by route and status code."}, []string{"route", "code"}),
		repairs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "tail_repushes_total", Help: "Re-pushes of a channel's newest oplog after a lost live push (repair.go), by result: pushed, failed, dropped (too many channels pending)."}, []string{"result"}),
	}
	m.lateAppends = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
		Name: "late_appends_total", Help: "Appends answered 504 outcome_unknown whose write landed afterwards and was queued then."})
	m.rateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
		Name: "rate_limited_total", Help: "Publish requests answered 429 because their API key was over its budget, by kind (publishes, bytes)."}, []string{"kind"})
	for _, c := range []prometheus.Collector{m.rateLimited, m.lateAppends, m.repairs, m.published, m.duplicates, m.publishSecs, m.storeErrors, m.queueFailures, m.orderTimeouts,
		m.connects, m.replaced, m.syncs, m.syncOplogs, m.acks, m.ticketRefusals, m.expired, m.httpRequests} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("logic: register metrics: %w", err)
		}
	}
	return m, nil
}
