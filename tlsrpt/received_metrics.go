package tlsrpt

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// ReceivedMetrics counts received reports for Prometheus. It is a
// prometheus.Collector: the MTA registers it once. Label values that come
// from the reports are bounded:
//
//   - policy_domain: the domains in MetricsOptions.PolicyDomains (the
//     operator's own); any other becomes "other". Without a list, the
//     first MaxPolicyDomains distinct values are kept.
//   - organization: the first MaxOrganizations distinct names are kept,
//     later ones become "other" (until restart).
//   - result: "success", a registered §4.3 result type, "unspecified"
//     (failures counted in a summary but in no failure detail) or
//     "other" (an unregistered type).
//
// The series are:
//
//	maddy_daneguard_tlsrpt_received_reports_total{transport, result}
//	    result: accepted, duplicate, or a refusal reason (RefusalReason,
//	    and store-error)
//	maddy_daneguard_tlsrpt_received_sessions_total{policy_domain, organization, result}
//	    sessions the accepted reports count
type ReceivedMetrics struct {
	reports  *prometheus.CounterVec
	sessions *prometheus.CounterVec

	domains *LabelCap
	orgs    *LabelCap
}

// MetricsOptions bounds ReceivedMetrics' labels.
type MetricsOptions struct {
	// PolicyDomains lists the domains kept as policy_domain values.
	PolicyDomains []string
	// MaxPolicyDomains applies without a list. Default 20.
	MaxPolicyDomains int
	// MaxOrganizations bounds the organization values. Default 20.
	MaxOrganizations int
}

// LabelOther is the value a label folds into beyond its bound.
const LabelOther = "other"

// NewReceivedMetrics returns the counters; namespace and subsystem are
// "maddy" and "daneguard" in maddy.
func NewReceivedMetrics(namespace, subsystem string, o MetricsOptions) *ReceivedMetrics {
	if o.MaxPolicyDomains <= 0 {
		o.MaxPolicyDomains = 20
	}
	if o.MaxOrganizations <= 0 {
		o.MaxOrganizations = 20
	}
	m := &ReceivedMetrics{
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "tlsrpt_received_reports_total",
			Help: "TLS reports (RFC 8460) received about the local domains, by transport (email, https) and result (accepted, duplicate, or why refused).",
		}, []string{"transport", "result"}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "tlsrpt_received_sessions_total",
			Help: "Sessions counted by accepted TLS reports from other MTAs, by policy domain, reporting organization and result (success or the RFC 8460 result type).",
		}, []string{"policy_domain", "organization", "result"}),
		orgs: NewLabelCap(o.MaxOrganizations, nil),
	}
	var doms []string
	for _, d := range o.PolicyDomains {
		doms = append(doms, normDomain(d))
	}
	m.domains = NewLabelCap(o.MaxPolicyDomains, doms)
	return m
}

// LabelCap bounds the values of a Prometheus label: it keeps a fixed set,
// or the first Max distinct values it is asked about; any other value
// becomes LabelOther. Safe for concurrent use. The maddy glue uses one
// for the destination label of its deferral counter.
type LabelCap struct {
	mu    sync.Mutex
	max   int
	fixed bool
	seen  map[string]bool
}

// NewLabelCap keeps the values in fixed if it is not empty, else the
// first max values seen.
func NewLabelCap(max int, fixed []string) *LabelCap {
	c := &LabelCap{max: max, seen: map[string]bool{}}
	if len(fixed) > 0 {
		c.fixed = true
		for _, v := range fixed {
			c.seen[v] = true
		}
	}
	return c
}

// Value returns v or LabelOther.
func (c *LabelCap) Value(v string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen[v] {
		return v
	}
	if c.fixed || len(c.seen) >= c.max {
		return LabelOther
	}
	c.seen[v] = true
	return v
}

// Describe implements prometheus.Collector.
func (m *ReceivedMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.reports.Describe(ch)
	m.sessions.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *ReceivedMetrics) Collect(ch chan<- prometheus.Metric) {
	m.reports.Collect(ch)
	m.sessions.Collect(ch)
}

// Refused counts a refused report (reason from RefusalReason, or
// RefusedStoreError).
func (m *ReceivedMetrics) Refused(transport, reason string) {
	m.reports.WithLabelValues(transport, reason).Inc()
}

// Duplicate counts a report already stored.
func (m *ReceivedMetrics) Duplicate(transport string) {
	m.reports.WithLabelValues(transport, "duplicate").Inc()
}

// Accepted counts a newly stored report and its sessions.
func (m *ReceivedMetrics) Accepted(transport string, r *Report) {
	m.reports.WithLabelValues(transport, "accepted").Inc()
	org := m.orgs.Value(r.OrganizationName)
	type key struct{ dom, res string }
	add := map[key]uint64{}
	for _, p := range r.Policies {
		dom := m.domains.Value(normDomain(p.Policy.PolicyDomain))
		add[key{dom, "success"}] += p.Summary.TotalSuccessful
		var detailed uint64
		for _, fd := range p.FailureDetails {
			res := fd.ResultType
			if !knownResultTypes[res] {
				res = LabelOther
			}
			add[key{dom, res}] += fd.FailedSessionCount
			detailed += fd.FailedSessionCount
		}
		if p.Summary.TotalFailure > detailed {
			add[key{dom, "unspecified"}] += p.Summary.TotalFailure - detailed
		}
	}
	for k, n := range add {
		// A zero still creates the series, so that a rate over it
		// starts from 0 rather than from absence.
		m.sessions.WithLabelValues(k.dom, org, k.res).Add(float64(n))
	}
}
