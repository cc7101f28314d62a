package embedded

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the host's Prometheus collectors, kept in the host's own
// registry (Host.Registry) so several hosts in one process never collide.
type metrics struct {
	reg       *prometheus.Registry
	toolCalls *prometheus.CounterVec
	opSeconds *prometheus.HistogramVec
	freeze    prometheus.Histogram
}

// latencyBuckets span 100 µs to ~13 s.
var latencyBuckets = prometheus.ExponentialBuckets(0.0001, 2, 18)

func newMetrics(h *Host) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		toolCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "turnbox_tool_calls_total",
			Help: "Tool calls by tool and outcome (ok: ran and succeeded; tool_error: ran and failed; rejected: could not run).",
		}, []string{"tool", "outcome"}),
		opSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "turnbox_operation_seconds",
			Help:    "Latency of session operations: create, fork, exec (per tool), snapshot, rollback, pause, resume, destroy.",
			Buckets: latencyBuckets,
		}, []string{"op"}),
		freeze: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "turnbox_snapshot_freeze_seconds",
			Help:    "How long a snapshot kept the sandbox frozen (quiesce, backend snapshot, thaw).",
			Buckets: latencyBuckets,
		}),
	}
	sessions := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "turnbox_sessions",
		Help: "Sessions on this host (not destroyed).",
	}, func() float64 {
		h.mu.Lock()
		defer h.mu.Unlock()
		return float64(len(h.sessions))
	})
	m.reg.MustRegister(m.toolCalls, m.opSeconds, m.freeze, sessions)
	return m
}

func (m *metrics) observe(op string, start time.Time) {
	m.opSeconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

// Registry returns the registry holding the host's metrics, for a
// /metrics endpoint (promhttp.HandlerFor(h.Registry(), ...)) or to merge
// with others through prometheus.Gatherers.
func (h *Host) Registry() *prometheus.Registry { return h.metrics.reg }
