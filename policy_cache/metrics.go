package policycache

import (
	"github.com/prometheus/client_golang/prometheus"
)

// StatsSource is anything with a Stats snapshot; every [Cache]
// instantiation is one.
type StatsSource interface {
	Stats() Stats
}

// metricDef describes one exported metric.
type metricDef struct {
	name  string
	help  string
	kind  prometheus.ValueType
	value func(Stats) float64
}

// metricDefs lists the metrics a collector exports; README.md documents
// the same list for operators.
var metricDefs = []metricDef{
	{"hits_total", "Lookups answered from the cache, cached failures included.",
		prometheus.CounterValue, func(s Stats) float64 { return float64(s.Hits) }},
	{"failure_hits_total", "Lookups answered with a cached resolution failure (RFC 9520).",
		prometheus.CounterValue, func(s Stats) float64 { return float64(s.FailureHits) }},
	{"misses_total", "Lookups that waited for a fetch.",
		prometheus.CounterValue, func(s Stats) float64 { return float64(s.Misses) }},
	{"collapsed_total", "Missed lookups that joined a fetch already in progress.",
		prometheus.CounterValue, func(s Stats) float64 { return float64(s.Collapsed) }},
	{"fetches_total", "Fetches started, background refreshes included.",
		prometheus.CounterValue, func(s Stats) float64 { return float64(s.Fetches) }},
	{"fetch_errors_total", "Fetches that returned an error.",
		prometheus.CounterValue, func(s Stats) float64 { return float64(s.FetchErrors) }},
	{"failures_cached_total", "Fetch errors stored as cached failures.",
		prometheus.CounterValue, func(s Stats) float64 { return float64(s.FailuresCached) }},
	{"refreshes_total", "Background refreshes started by refresh-ahead.",
		prometheus.CounterValue, func(s Stats) float64 { return float64(s.Refreshes) }},
	{"evictions_total", "Entries evicted because the cache was full.",
		prometheus.CounterValue, func(s Stats) float64 { return float64(s.Evictions) }},
	{"expired_total", "Expired entries removed, on access or by a sweep.",
		prometheus.CounterValue, func(s Stats) float64 { return float64(s.Expired) }},
	{"entries", "Entries currently held, expired ones not yet removed included.",
		prometheus.GaugeValue, func(s Stats) float64 { return float64(s.Entries) }},
	{"inflight_fetches", "Fetches currently in progress.",
		prometheus.GaugeValue, func(s Stats) float64 { return float64(s.InFlight) }},
}

// Collector exports the statistics of one cache to Prometheus.
type Collector struct {
	src   StatsSource
	descs []*prometheus.Desc
}

// NewCollector returns a prometheus.Collector for src. Metric names are
// built from namespace and subsystem (either may be empty), for example
// with namespace "maddy" and subsystem "cache":
//
//	maddy_cache_hits_total{cache="tlsa"}
//
// cacheName becomes the constant label cache, so collectors for several
// caches can be registered in the same registry.
func NewCollector(namespace, subsystem, cacheName string, src StatsSource) *Collector {
	labels := prometheus.Labels{"cache": cacheName}
	c := &Collector{src: src, descs: make([]*prometheus.Desc, len(metricDefs))}
	for i, d := range metricDefs {
		c.descs[i] = prometheus.NewDesc(prometheus.BuildFQName(namespace, subsystem, d.name), d.help, nil, labels)
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Stats()
	for i, d := range metricDefs {
		ch <- prometheus.MustNewConstMetric(c.descs[i], d.kind, d.value(s))
	}
}
