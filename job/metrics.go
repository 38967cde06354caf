package job

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	messages        *prometheus.CounterVec // by kind
	bad             prometheus.Counter
	skipped         *prometheus.CounterVec // by reason
	directoryErrors prometheus.Counter
	calls           *prometheus.CounterVec // by op (push, kick), result
	pushed          prometheus.Counter
	delivered       prometheus.Counter
	pushSecs        prometheus.Histogram
	panics          prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "msync", "job"
	m := &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "messages_total", Help: "Queue messages consumed, by kind."}, []string{"kind"}),
		bad: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "bad_messages_total", Help: "Queue messages skipped because they could not be decoded or routed."}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "skipped_total", Help: "Oplogs not routed, by reason."}, []string{"reason"}),
		directoryErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "directory_errors_total", Help: "Failed directory lookups (those oplogs were not pushed)."}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "comet_calls_total", Help: "Comet calls, by op and result."}, []string{"op", "result"}),
		pushed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "pushed_total", Help: "(connection key, oplog) pairs sent to comets."}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "delivered_total", Help: "(connection key, oplog) pairs comets reported handed to a live session."}),
		pushSecs: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "push_duration_seconds", Help: "One Push call to a comet.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "panics_total", Help: "Comet calls that panicked (recovered by the pool)."}),
	}
	for _, c := range []prometheus.Collector{m.messages, m.bad, m.skipped, m.directoryErrors, m.calls,
		m.pushed, m.delivered, m.pushSecs, m.panics} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("job: register metrics: %w", err)
		}
	}
	return m, nil
}
