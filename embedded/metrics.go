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

	idlePauses    prometheus.Counter
	idleResumes   prometheus.Counter
	quotaExceeded prometheus.Counter
	sandboxDeaths prometheus.Counter
	poolClaims    *prometheus.CounterVec
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
			Help:    "Latency of session operations: create, fork, exec (per tool), snapshot, rollback, pause, resume, idle_resume, restart, destroy.",
			Buckets: latencyBuckets,
		}, []string{"op"}),
		freeze: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "turnbox_snapshot_freeze_seconds",
			Help:    "How long a snapshot kept the sandbox frozen (quiesce, backend snapshot, thaw).",
			Buckets: latencyBuckets,
		}),
	}
	m.idlePauses = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "turnbox_idle_pauses_total",
		Help: "Sandboxes frozen by --idle-pause (Config.IdlePause) after a session went idle.",
	})
	m.idleResumes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "turnbox_idle_resumes_total",
		Help: "Idle-paused sandboxes thawed by the next call.",
	})
	m.quotaExceeded = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "turnbox_disk_quota_exceeded_total",
		Help: "Tool calls refused or failed because a session's workspace reached its disk quota.",
	})
	m.sandboxDeaths = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "turnbox_sandbox_deaths_total",
		Help: "Sandboxes that exited on their own (crashed or killed from outside); their sessions are failed.",
	})
	idlePaused := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "turnbox_sessions_idle_paused",
		Help: "Active sessions whose sandbox is frozen by --idle-pause (Config.IdlePause).",
	}, func() float64 {
		h.mu.Lock()
		ss := make([]*session, 0, len(h.sessions))
		for _, s := range h.sessions {
			ss = append(ss, s)
		}
		h.mu.Unlock()
		n := 0
		for _, s := range ss {
			if s.idlePaused() {
				n++
			}
		}
		return float64(n)
	})
	sessions := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "turnbox_sessions",
		Help: "Sessions on this host (not destroyed).",
	}, func() float64 {
		h.mu.Lock()
		defer h.mu.Unlock()
		return float64(len(h.sessions))
	})
	m.poolClaims = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "turnbox_pool_claims_total",
		Help: "New sessions that asked the sandbox pool (--pool, Config.PoolSize) for a started sandbox, by result (hit, miss).",
	}, []string{"result"})
	poolReady := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "turnbox_pool_ready",
		Help: "Started sandboxes waiting in the pool for new sessions (--pool, Config.PoolSize).",
	}, func() float64 {
		if h.pool == nil {
			return 0
		}
		return float64(h.pool.len())
	})
	m.reg.MustRegister(m.toolCalls, m.opSeconds, m.freeze, sessions, idlePaused, m.idlePauses, m.idleResumes, m.quotaExceeded, m.sandboxDeaths, m.poolClaims, poolReady)
	m.reg.MustRegister(networkCollectors(h)...)
	return m
}

func (m *metrics) observe(op string, start time.Time) {
	m.opSeconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

// Registry returns the registry holding the host's metrics, for a
// /metrics endpoint (promhttp.HandlerFor(h.Registry(), ...)) or to merge
// with others through prometheus.Gatherers.
func (h *Host) Registry() *prometheus.Registry { return h.metrics.reg }
