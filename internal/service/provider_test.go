package service

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/engine"
	policycache "github.com/maddy-dane/daneguard/policy_cache"
	"github.com/maddy-dane/daneguard/tlsrpt"
	"github.com/miekg/dns"
)

// txtQuerier answers TXT questions from a map; every other name does not
// exist.
type txtQuerier map[string]string

func (q txtQuerier) Query(_ context.Context, name string, qtype uint16) (*dane.Answer, error) {
	a := &dane.Answer{Name: name, Type: qtype, Target: name, Rcode: dns.RcodeNameError, TTL: time.Minute}
	if v, ok := q[name]; ok && qtype == dns.TypeTXT {
		a.Rcode = dns.RcodeSuccess
		a.Records = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{v}}}
	}
	return a, nil
}

// TestTLSRPTProviderCopy: a DANE result is also recorded for the MX host's
// domain when that differs from the recipient domain and publishes a
// TLSRPT record; never twice for one domain, never for MTA-STS results,
// never for report deliveries.
func TestTLSRPTProviderCopy(t *testing.T) {
	st, err := tlsrpt.OpenStore(filepath.Join(t.TempDir(), "tlsrpt.db"), tlsrpt.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	q := txtQuerier{
		"_smtp._tls.provider.example.": "v=TLSRPTv1; rua=mailto:tlsrpt@provider.example",
		"_smtp._tls.own.example.":      "v=TLSRPTv1; rua=mailto:tlsrpt@own.example",
	}
	s := &Service{log: newTestLog(), rpt: &reporter{store: st, cfg: TLSRPTSettings{SendingIP: "192.0.2.1"}},
		dns: engine.NewCachedQuerier(q, policycache.Config{MaxEntries: 100, MaxTTL: time.Hour, MinFailureTTL: time.Second, MaxFailureTTL: time.Minute}, nil)}
	daneOK := func(domain, mx string) *engine.Verdict {
		return &engine.Verdict{Domain: domain, MX: mx, Result: engine.Authenticated, Reason: engine.ReasonDANEMatch, Mechanism: engine.MechDANE, TLSABase: mx}
	}
	d := s.Delivery("m1")
	d.recordTLSRPT(daneOK("customer.example", "mx1.provider.example")) // copied
	d.recordTLSRPT(daneOK("own.example", "mx.own.example"))            // parent = recipient: once
	d.recordTLSRPT(daneOK("quiet.example", "mx.silent.example"))       // the MX domain publishes nothing
	d.recordTLSRPT(&engine.Verdict{Domain: "sts.example", MX: "mx2.provider.example", Result: engine.Authenticated,
		Reason: engine.ReasonSTSValid, Mechanism: engine.MechMTASTS, STSPolicyID: "1", STSMode: "enforce"}) // not DANE
	s.Delivery(ReportMsgIDPrefix + "1").recordTLSRPT(daneOK("report.example", "mx3.provider.example")) // a report

	list, err := st.List()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, p := range list {
		got[p.Domain] += p.Successes + p.Failures
	}
	want := map[string]uint64{"customer.example": 1, "provider.example": 1, "own.example": 1, "quiet.example": 1, "sts.example": 1}
	if len(got) != len(want) {
		t.Fatalf("recorded domains %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Fatalf("recorded domains %v, want %v", got, want)
		}
	}
	aggs, err := st.Aggregates(list[0].Day, "provider.example")
	if err != nil || len(aggs) != 1 {
		t.Fatalf("provider aggregates %+v %v", aggs, err)
	}
	if k := aggs[0].Key; k.PolicyType != tlsrpt.PolicyTLSA || k.PolicyDomain != "mx1.provider.example" || k.MXHost != "mx1.provider.example" || !k.Success {
		t.Fatalf("provider record %+v", k)
	}
}
