package dane

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestParseStepTTL: the TTL of an answer is its smallest record TTL; a
// negative answer lives for min(SOA TTL, SOA MINIMUM) (RFC 2308 §5), and a
// TTL with its top bit set counts as zero (RFC 2181 §8), so that such an
// answer is not cached for 68 years.
func TestParseStepTTL(t *testing.T) {
	q := "mx.example."
	soa := func(ttl, minimum uint32) dns.RR {
		return &dns.SOA{Hdr: dns.RR_Header{Name: "example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
			Ns: "ns.example.", Mbox: "h.example.", Minttl: minimum}
	}
	a := func(ttl uint32) dns.RR {
		return &dns.A{Hdr: dns.RR_Header{Name: q, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: net.IPv4(192, 0, 2, 1)}
	}
	for _, tc := range []struct {
		name       string
		answer, ns []dns.RR
		want       time.Duration
	}{
		{"records", []dns.RR{a(300), a(60)}, nil, 60 * time.Second},
		{"record top bit", []dns.RR{a(1 << 31)}, nil, 0},
		{"negative minimum", nil, []dns.RR{soa(3600, 900)}, 900 * time.Second},
		{"negative soa ttl", nil, []dns.RR{soa(120, 900)}, 120 * time.Second},
		{"negative top bit", nil, []dns.RR{soa(3600, 1<<31|5)}, 0},
		{"negative without soa", nil, nil, 0},
	} {
		m := new(dns.Msg)
		m.SetQuestion(q, dns.TypeA)
		m.Answer, m.Ns = tc.answer, tc.ns
		st, err := parseStep(m, q, dns.TypeA)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if st.ttl != tc.want {
			t.Errorf("%s: TTL %v, want %v", tc.name, st.ttl, tc.want)
		}
	}
}
