package fleet

import "github.com/prometheus/client_golang/prometheus"

// Metrics of the shared store. NewMetrics builds them unregistered; the
// maddy glue registers Collectors with maddy's registry. A nil *Metrics is
// valid and records nothing.
type Metrics struct {
	// Latency of every Redis operation, by op (the names below).
	Latency *prometheus.HistogramVec
	// Errors by op; "down" counts operations skipped because the store
	// was marked down after a failure.
	Errors *prometheus.CounterVec
	// JournalDepth is the number of TLS-RPT session records of this node
	// not yet counted in the shared store.
	JournalDepth prometheus.Gauge
	// PolicyRepairs is the number of MTA-STS policies waiting to be
	// written to the shared store.
	PolicyRepairs prometheus.Gauge
	// ReceivedPending is the number of received TLS reports (target.
	// tlsrpt_receiver) of this node not yet stored in the shared store.
	ReceivedPending prometheus.Gauge
	// Up is 1 while the store answers, 0 while it is marked down.
	Up prometheus.Gauge
}

// Operation names, the "op" label.
const (
	OpPolicyGet   = "policy_get"
	OpPolicyPut   = "policy_put"
	OpPolicyKeys  = "policy_keys"
	OpLock        = "lock"
	OpCountsPush  = "counts_push"
	OpCountsRead  = "counts_read"
	OpReportState = "report_state"
	OpPing        = "ping"
	// Received TLS reports (SharedReceived): storing one (and the epoch
	// check of a flush), reading the fleet's, pruning.
	OpReceivedAdd   = "received_add"
	OpReceivedRead  = "received_read"
	OpReceivedPrune = "received_prune"
)

// NewMetrics builds the metrics under namespace (maddy's is "maddy"),
// subsystem daneguard_store.
func NewMetrics(namespace string) *Metrics {
	const sub = "daneguard_store"
	return &Metrics{
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: sub, Name: "op_duration_seconds",
			Help:    "Duration of shared-store (Redis) operations, by operation.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"op"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: sub, Name: "errors_total",
			Help: "Failed shared-store operations, by operation (op=down: skipped while the store is down).",
		}, []string{"op"}),
		JournalDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: sub, Name: "journal_depth",
			Help: "TLS-RPT session records of this node not yet counted in the shared store.",
		}),
		PolicyRepairs: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: sub, Name: "policy_repairs_pending",
			Help: "MTA-STS policies of this node waiting to be written to the shared store.",
		}),
		ReceivedPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: sub, Name: "received_pending",
			Help: "Received TLS reports of this node not yet stored in the shared store.",
		}),
		Up: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: sub, Name: "up",
			Help: "1 while the shared store answers, 0 while it is treated as down.",
		}),
	}
}

// Collectors lists the metrics for registration.
func (m *Metrics) Collectors() []prometheus.Collector {
	if m == nil {
		return nil
	}
	return []prometheus.Collector{m.Latency, m.Errors, m.JournalDepth, m.PolicyRepairs, m.ReceivedPending, m.Up}
}
