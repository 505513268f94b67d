package dnsbed

import (
	"testing"

	"github.com/miekg/dns"
)

// TestWildcardValidates: answers synthesized from a wildcard (RFC 4592)
// validate in a real unbound: positive answers, CNAMEs and NODATA are
// SECURE, names that exist are not shadowed, and a wildcard in a zone with
// broken signatures is BOGUS.
func TestWildcardValidates(t *testing.T) {
	needUnbound(t)
	srv := NewServer()
	ex := srv.Zone(t, "wild.example.", TTL(300))
	ex.Add(t,
		"*._tcp.mx TLSA 3 1 1 8d02536c887482bc34ff54e41d2ba659bf85b341a0a20afadb5813dcfbcf286d",
		"_26._tcp.mx TXT exact",
		"*.alias CNAME target",
		"target A 127.0.0.9",
		"mx A 127.0.0.8")
	srv.Zone(t, "badwild.example.", BadSignatures()).Add(t, "*.x A 127.0.0.7")
	srv.Start(t, "127.0.0.1:0")
	ub := StartUnbound(t, srv, UnboundOptions{Addr: "127.0.0.1:0"})

	r := ub.Query(t, "_25._tcp.mx.wild.example.", dns.TypeTLSA)
	if r.Rcode != dns.RcodeSuccess || !r.AuthenticatedData || len(r.Answer) == 0 {
		t.Fatalf("wildcard TLSA: %v", r)
	}
	if tl, ok := r.Answer[0].(*dns.TLSA); !ok || tl.Hdr.Name != "_25._tcp.mx.wild.example." {
		t.Fatalf("wildcard TLSA answer %v", r.Answer)
	}
	// An existing name is not covered by the wildcard: NODATA, secure.
	r = ub.Query(t, "_26._tcp.mx.wild.example.", dns.TypeTLSA)
	if r.Rcode != dns.RcodeSuccess || !r.AuthenticatedData || len(r.Answer) != 0 {
		t.Fatalf("exact name shadowed by wildcard: %v", r)
	}
	// The wildcard lacks the type: NODATA proved by two NSECs.
	r = ub.Query(t, "_25._tcp.mx.wild.example.", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || !r.AuthenticatedData || len(r.Answer) != 0 {
		t.Fatalf("wildcard NODATA: %v", r)
	}
	r = ub.Query(t, "anything.alias.wild.example.", dns.TypeA)
	var data []uint16
	for _, rr := range r.Answer {
		if rr.Header().Rrtype != dns.TypeRRSIG {
			data = append(data, rr.Header().Rrtype)
		}
	}
	if r.Rcode != dns.RcodeSuccess || !r.AuthenticatedData || len(data) != 2 || data[0] != dns.TypeCNAME || data[1] != dns.TypeA {
		t.Fatalf("wildcard CNAME: %v", r)
	}
	r = ub.Query(t, "y.x.badwild.example.", dns.TypeA)
	if r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("wildcard in a zone with bad signatures: %v", r)
	}
	// Without DO the server answers with the synthesized data only.
	m := new(dns.Msg)
	m.SetQuestion("_443._tcp.mx.wild.example.", dns.TypeTLSA)
	resp := srv.handle(m, true)
	if len(resp.Answer) != 1 || resp.Answer[0].Header().Name != "_443._tcp.mx.wild.example." || len(resp.Ns) != 0 {
		t.Fatalf("plain wildcard answer: %v", resp)
	}
}
