package daneguard

import (
	"sync"

	"github.com/maddy-dane/daneguard/internal/engine"
	policycache "github.com/maddy-dane/daneguard/policy_cache"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are registered with the default Prometheus registry, which maddy's
// openmetrics endpoint serves. Every metric is documented in docs/metrics.md.
var (
	verdicts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "maddy",
		Subsystem: "daneguard",
		Name:      "verdicts_total",
		Help:      "Verdicts reached by the daneguard policy, by result, reason and mechanism.",
	}, []string{"result", "reason", "mechanism"})
	lookupSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "maddy",
		Subsystem: "daneguard",
		Name:      "lookup_duration_seconds",
		Help:      "Time spent in policy lookups (policy table, MX, address and TLSA records, cached or not) before a connection.",
		Buckets:   []float64{0.0001, 0.001, 0.005, 0.02, 0.1, 0.5, 2, 10},
	}, []string{"stage"})

	stsPolicies = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "maddy",
		Subsystem: "daneguard",
		Name:      "mtasts_policy_lookups_total",
		Help:      "MTA-STS policy lookups made for deliveries, by where the policy came from (none, cache, fetched, stale) and the RFC 8460 result type of a discovery failure (empty if none).",
	}, []string{"source", "error"})
	stsFetchAttempts = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "maddy",
		Subsystem: "daneguard",
		Name:      "mtasts_fetch_attempts_total",
		Help:      "HTTPS connections opened to MTA-STS policy hosts (deliveries and background refreshes).",
	})

	registerOnce sync.Once
	cacheMu      sync.Mutex
	cacheColls   = map[string]bool{}
)

func registerMetrics(p *Policy) {
	registerOnce.Do(func() {
		prometheus.MustRegister(verdicts, lookupSeconds, stsPolicies, stsFetchAttempts)
	})
	name := "dns"
	if p.instName != "" {
		name = "dns:" + p.instName
	}
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if cacheColls[name] {
		return
	}
	cacheColls[name] = true
	_ = prometheus.Register(policycache.NewCollector("maddy", "daneguard_cache", name, p.eng.Cache()))
}

func verdictCount(v *engine.Verdict) {
	verdicts.WithLabelValues(string(v.Result), string(v.Reason), string(v.Mechanism)).Inc()
}
