package service

import (
	"slices"
	"sync"
	"time"

	"github.com/maddy-dane/daneguard/internal/engine"
	policycache "github.com/maddy-dane/daneguard/policy_cache"
	"github.com/maddy-dane/daneguard/tlsrpt"
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

	// deferrals counts the deferred verdicts per next-hop domain, for the
	// alert rules of examples/monitoring ("DANE deferrals rising for a
	// destination", "DNSSEC failures across many destinations"). The
	// destination label is bounded by destinations.
	deferrals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "maddy",
		Subsystem: "daneguard",
		Name:      "deferrals_by_destination_total",
		Help:      "Deferred deliveries by next-hop domain (A-labels; beyond metrics_max_destinations distinct domains \"other\"), reason and mechanism.",
	}, []string{"destination", "reason", "mechanism"})
	destinations *tlsrpt.LabelCap

	registerOnce sync.Once
	cacheMu      sync.Mutex
	// cacheColls holds, per collector name, the DNS caches of the live
	// services of that name in the order they were built. Only the first
	// is registered (two collectors of one name would clash); when it is
	// released the next one takes its place. Two services share a name
	// while a configuration reload overlaps the old and the new server
	// (maddy 0.9), or when two unnamed dane blocks coexist.
	cacheColls = map[string][]prometheus.Collector{}
)

// registerMetrics registers the metrics, once per process, and the DNS
// cache collector of the named instance. The first dane block's
// metrics_max_destinations bounds the destination label for the process.
// The returned function drops the cache collector again.
func registerMetrics(instance string, q *engine.CachedQuerier, maxDestinations int) (release func()) {
	registerOnce.Do(func() {
		destinations = tlsrpt.NewLabelCap(maxDestinations, nil)
		prometheus.MustRegister(verdicts, lookupSeconds, stsPolicies, stsFetchAttempts, deferrals)
	})
	name := "dns"
	if instance != "" {
		name = "dns:" + instance
	}
	c := policycache.NewCollector("maddy", "daneguard_cache", name, q.Cache())
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if len(cacheColls[name]) == 0 {
		_ = prometheus.Register(c)
	}
	cacheColls[name] = append(cacheColls[name], c)
	var once sync.Once
	return func() {
		once.Do(func() {
			cacheMu.Lock()
			defer cacheMu.Unlock()
			l := cacheColls[name]
			i := slices.Index(l, prometheus.Collector(c))
			if i < 0 {
				return
			}
			if i == 0 {
				prometheus.Unregister(c)
				if len(l) > 1 {
					_ = prometheus.Register(l[1])
				}
			}
			if l = slices.Delete(l, i, i+1); len(l) == 0 {
				delete(cacheColls, name)
			} else {
				cacheColls[name] = l
			}
		})
	}
}

// Values of the stage label of maddy_daneguard_lookup_duration_seconds.
const (
	// stageDestination: the domain's policy, MX RRset and MTA-STS
	// policy, from PrepareDomain until the last of them was known (they
	// run in the background, beside maddy's own work), once per next-hop
	// domain and message.
	stageDestination = "destination"
	// stageMX: the time CheckMX held maddy back for one MX host: waiting
	// for the policy, the MX RRset and the host's address and TLSA
	// lookups (started when the MX RRset arrived), and the MTA-STS policy
	// where the verdict needs it.
	stageMX = "mx"
	// stageConn: the check of an established connection (DANE or WebPKI
	// verification, any lookup CheckMX did not make, and what is left of
	// an MTA-STS lookup CheckMX did not wait for).
	stageConn = "conn"
)

// observeLookup records the time spent in one stage since start. With a
// warm cache the destination and mx stages take well under a millisecond;
// a cold lookup shows the resolver's latency.
func observeLookup(stage string, start time.Time) {
	observeDuration(stage, time.Since(start))
}

func observeDuration(stage string, d time.Duration) {
	lookupSeconds.WithLabelValues(stage).Observe(d.Seconds())
}

func verdictCount(v *engine.Verdict) {
	verdicts.WithLabelValues(string(v.Result), string(v.Reason), string(v.Mechanism)).Inc()
}

// deferralCount counts a deferred delivery for its destination. Report
// deliveries, which go out despite the verdict (RFC 8460 §5.3), are not
// deferrals.
func deferralCount(v *engine.Verdict) {
	if v.OK() || destinations == nil {
		return
	}
	dst := destinations.Value(engine.CanonicalDomain(v.Domain))
	deferrals.WithLabelValues(dst, string(v.Reason), string(v.Mechanism)).Inc()
}

// TLS reporting metrics (docs/tlsrpt.md).
var (
	tlsrptReports = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "maddy",
		Subsystem: "daneguard",
		Name:      "tlsrpt_reports_total",
		Help:      "TLS reports (RFC 8460) by outcome: built, sent, retry, failed (given up), no-policy, expired.",
	}, []string{"result"})
	tlsrptRecords = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "maddy",
		Subsystem: "daneguard",
		Name:      "tlsrpt_sessions_recorded_total",
		Help:      "Sessions recorded for TLS reports, by policy type and result type (success for successes).",
	}, []string{"policy_type", "result"})
	tlsrptStoreErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "maddy",
		Subsystem: "daneguard",
		Name:      "tlsrpt_store_errors_total",
		Help:      "TLS report store failures (cannot open, cannot write, found corrupt); mail is never affected.",
	})
	tlsrptRegisterOnce sync.Once
)

func registerTLSRPTMetrics() {
	tlsrptRegisterOnce.Do(func() {
		prometheus.MustRegister(tlsrptReports, tlsrptRecords, tlsrptStoreErrors)
	})
}
