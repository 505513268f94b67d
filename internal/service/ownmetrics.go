package service

import (
	"strings"
	"sync"

	"github.com/maddy-dane/daneguard/internal/selfcheck"
	"github.com/prometheus/client_golang/prometheus"
)

// The metrics of the background checks (docs/metrics.md, "Own-server
// metrics"). A collector exports the last result as it is, so a series
// disappears with what it describes (an address dropped from DNS) and a
// scrape never sees half of a run. The state is per process: when more
// than one dane block runs the self-check, the last run wins.
var own = &ownState{health: map[string]selfcheck.Health{}}

type ownState struct {
	mu     sync.Mutex
	health map[string]selfcheck.Health
	report *selfcheck.Report
}

func (o *ownState) setHealth(h selfcheck.Health) {
	o.mu.Lock()
	o.health[h.Server] = h
	o.mu.Unlock()
}

func (o *ownState) setReport(r *selfcheck.Report) {
	if r == nil {
		return
	}
	o.mu.Lock()
	o.report = r
	o.mu.Unlock()
}

// STSStates are the values of the state label of
// maddy_daneguard_selfcheck_mtasts_state (selfcheck.STSInfo.State).
var STSStates = []string{"none", "enforce", "testing", "mode-none", "txt-invalid", "fetch-failed"}

func ownDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("maddy_daneguard_"+name, help, labels, nil)
}

var (
	descResolverUp         = ownDesc("resolver_up", "1 if the resolver answered the health probe (the root's DNSKEY) in time, else 0.", "server")
	descResolverValidating = ownDesc("resolver_validating", "1 if the resolver set the AD bit on the health probe, else 0.", "server")
	descResolverRTT        = ownDesc("resolver_rtt_seconds", "Time the last health probe took (0 when the resolver is down).", "server")
	descMatch              = ownDesc("selfcheck_match", "1 if the address serves a certificate its MX host's secure TLSA RRset matches, or the host publishes no TLSA; 0 on a mismatch, a failed TLSA lookup or no TLS.", "mx", "address")
	descLoadedMatch        = ownDesc("selfcheck_loaded_match", "1 if the certificate maddy loads matches the MX host's TLSA RRset, else 0 (only for hosts with TLSA records).", "mx")
	descDaysToKeyChange    = ownDesc("selfcheck_days_to_key_change", "Days until the next expected key change (ACME renewal, or expiry of a tls file certificate).", "mx")
	descSurvives           = ownDesc("selfcheck_survives_key_change", "1 if some TLSA record of the MX host survives the next key change, else 0.", "mx")
	descSTSState           = ownDesc("selfcheck_mtasts_state", "1 for the domain's current MTA-STS state as a sender sees it, 0 for the others.", "domain", "state")
	descProblems           = ownDesc("selfcheck_problems", "Problems found by the last self-check run, by severity.", "severity")
	descLastRun            = ownDesc("selfcheck_last_run_timestamp_seconds", "When the last self-check run started (Unix time).")
)

type ownCollector struct{ o *ownState }

func (ownCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descResolverUp, descResolverValidating, descResolverRTT, descMatch, descLoadedMatch,
		descDaysToKeyChange, descSurvives, descSTSState, descProblems, descLastRun} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c ownCollector) Collect(ch chan<- prometheus.Metric) {
	c.o.mu.Lock()
	defer c.o.mu.Unlock()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for srv, h := range c.o.health {
		g(descResolverUp, b2f(h.Up), srv)
		g(descResolverValidating, b2f(h.Validating), srv)
		g(descResolverRTT, h.RTT.Seconds(), srv)
	}
	r := c.o.report
	if r == nil {
		return
	}
	g(descLastRun, float64(r.CheckedAt.UnixNano())/1e9)
	count := map[selfcheck.Severity]float64{selfcheck.SevError: 0, selfcheck.SevWarning: 0, selfcheck.SevInfo: 0}
	for _, p := range r.Problems {
		count[p.Severity]++
	}
	for sev, n := range count {
		g(descProblems, n, string(sev))
	}
	for _, h := range r.Hosts {
		for _, a := range h.Addresses {
			ok := a.Result == "match" || (a.Result == "no-tlsa" && h.TLSAStatus == "no-tlsa")
			g(descMatch, b2f(ok), h.Name, a.Address)
		}
		if h.LoadedMatch != "" {
			g(descLoadedMatch, b2f(strings.HasPrefix(h.LoadedMatch, "match")), h.Name)
		}
		if h.Rollover != nil {
			g(descSurvives, b2f(h.Rollover.SurvivesKeyChange), h.Name)
			if r.Certificate != nil && !r.Certificate.NextKeyChange.IsZero() {
				g(descDaysToKeyChange, r.Certificate.DaysToKeyChange, h.Name)
			}
		}
	}
	for _, d := range r.Domains {
		if d.MTASTS == nil {
			continue
		}
		for _, st := range STSStates {
			g(descSTSState, b2f(d.MTASTS.State == st), d.Name, st)
		}
	}
}

var ownRegisterOnce sync.Once

func registerOwnMetrics() {
	ownRegisterOnce.Do(func() { prometheus.MustRegister(ownCollector{own}) })
}
