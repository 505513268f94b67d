package dane

import (
	"testing"

	"github.com/miekg/dns"
)

// FuzzParseStep feeds arbitrary DNS messages to the answer parser: it must
// never panic and must only return records of the asked type owned by the
// end of the alias chain.
func FuzzParseStep(f *testing.F) {
	m := new(dns.Msg)
	m.SetQuestion("a.example.", dns.TypeA)
	m.Response = true
	c, _ := dns.NewRR("a.example. 60 IN CNAME b.example.")
	a, _ := dns.NewRR("b.example. 30 IN A 127.0.0.1")
	soa, _ := dns.NewRR("example. 300 IN SOA ns. host. 1 2 3 4 120")
	m.Answer = []dns.RR{c, a}
	m.Ns = []dns.RR{soa}
	seed, _ := m.Pack()
	f.Add(seed, uint16(dns.TypeA))
	f.Fuzz(func(t *testing.T, wire []byte, qtype uint16) {
		msg := new(dns.Msg)
		if msg.Unpack(wire) != nil || len(msg.Question) != 1 {
			return
		}
		q := msg.Question[0]
		st, err := parseStep(msg, q.Name, qtype)
		if err != nil {
			return
		}
		for _, rr := range st.records {
			if rr.Header().Rrtype != qtype || !dns.IsSubDomain(st.target, rr.Header().Name) || !dns.IsSubDomain(rr.Header().Name, st.target) {
				t.Fatalf("record %v does not belong to %s/%d", rr, st.target, qtype)
			}
		}
		if len(st.cnames) > maxCNAMEChain+1 {
			t.Fatalf("chain of %d CNAMEs", len(st.cnames))
		}
	})
}
