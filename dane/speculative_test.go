package dane

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// specQuerier answers from a map and remembers what it was asked and
// told to forget.
type specQuerier struct {
	mu      sync.Mutex
	answers map[string]any // "name/type" -> *Answer or error
	forgot  []string
}

func (q *specQuerier) Query(_ context.Context, name string, qtype uint16) (*Answer, error) {
	k := dns.Fqdn(name) + "/" + dns.TypeToString[qtype]
	switch a := q.answers[k].(type) {
	case *Answer:
		return a, nil
	case error:
		return nil, a
	}
	return &Answer{Name: name, Type: qtype, Secure: true, Target: name, TTL: time.Hour}, nil
}

func (q *specQuerier) Forget(name string, qtype uint16) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.forgot = append(q.forgot, name+"/"+dns.TypeToString[qtype])
}

func (q *specQuerier) forgotten() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]string(nil), q.forgot...)
}

// TestSpeculativeTLSASameResult: with SpeculativeTLSA, LookupHost returns
// what the sequential order returns, in the cases where the early answer
// must be ignored or must not be reached.
func TestSpeculativeTLSASameResult(t *testing.T) {
	fail := &LookupError{Name: "_25._tcp.mx.d.example.", Type: dns.TypeTLSA, Kind: ErrServFail, Rcode: dns.RcodeServerFailure, EDE: -1}
	a := func(name string, secure bool, cnames ...*dns.CNAME) *Answer {
		target := name
		if len(cnames) != 0 {
			target = cnames[len(cnames)-1].Target
		}
		return &Answer{Name: name, Type: dns.TypeA, Secure: secure, CNAMEs: cnames, Target: target, TTL: time.Hour,
			Records: []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: target, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 3600}, A: net.IPv4(192, 0, 2, 1)}}}
	}
	tlsa := func(owner string) *Answer {
		return &Answer{Name: owner, Type: dns.TypeTLSA, Secure: true, Target: owner, TTL: time.Hour,
			Records: []dns.RR{&dns.TLSA{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeTLSA, Class: dns.ClassINET, Ttl: 3600}, Usage: 3, Selector: 1, MatchingType: 1, Certificate: "00"}}}
	}
	cn := &dns.CNAME{Hdr: dns.RR_Header{Name: "mx.d.example.", Rrtype: dns.TypeCNAME, Class: dns.ClassINET}, Target: "mail.hoster.example."}
	for _, tc := range []struct {
		name    string
		answers map[string]any
		forget  bool
	}{
		// Insecure address records: the failing TLSA query is ignored
		// and forgotten.
		{"insecure", map[string]any{"mx.d.example./A": a("mx.d.example.", false), "_25._tcp.mx.d.example./TLSA": fail}, true},
		// Secure CNAME whose expanded name has TLSA records: the original
		// name's failing TLSA query is never reached.
		{"secure-cname", map[string]any{"mx.d.example./A": a("mx.d.example.", true, cn),
			"_25._tcp.mail.hoster.example./TLSA": tlsa("_25._tcp.mail.hoster.example."), "_25._tcp.mx.d.example./TLSA": fail}, true},
		// Secure, no CNAME: the early answer is the one used, failure and
		// all.
		{"secure-failing", map[string]any{"mx.d.example./A": a("mx.d.example.", true), "_25._tcp.mx.d.example./TLSA": fail}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seqQ := &specQuerier{answers: tc.answers}
			seqH, seqErr := (&Discoverer{Q: seqQ}).LookupHost(context.Background(), "mx.d.example")
			q := &specQuerier{answers: tc.answers}
			h, err := (&Discoverer{Q: q, SpeculativeTLSA: true}).LookupHost(context.Background(), "mx.d.example")
			if !errors.Is(err, seqErr) && (err == nil) != (seqErr == nil) {
				t.Fatalf("error %v, sequential %v", err, seqErr)
			}
			if (h == nil) != (seqH == nil) || (h != nil && h.String() != seqH.String()) {
				t.Fatalf("host %v, sequential %v", h, seqH)
			}
			want := []string{}
			if tc.forget {
				want = []string{"_25._tcp.mx.d.example./TLSA"}
			}
			deadline := time.Now().Add(10 * time.Second)
			for len(q.forgotten()) != len(want) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if got := q.forgotten(); len(got) != len(want) || (len(want) == 1 && got[0] != want[0]) {
				t.Fatalf("forgot %v, want %v", got, want)
			}
		})
	}
}

// TestCNAMEProbeSameResult: with a CNAME probe, LookupHost returns what the
// sequential order returns, whether the probe names the address answer's
// expanded name, another name, nothing, or fails; a TLSA failure at the
// probed target that the procedure does not use is forgotten.
func TestCNAMEProbeSameResult(t *testing.T) {
	owner := func(n string) string { return "_25._tcp." + n }
	fail := func(n string) *LookupError {
		return &LookupError{Name: owner(n), Type: dns.TypeTLSA, Kind: ErrServFail, Rcode: dns.RcodeServerFailure, EDE: -1}
	}
	tlsa := func(o string) *Answer {
		return &Answer{Name: o, Type: dns.TypeTLSA, Secure: true, Target: o, TTL: time.Hour,
			Records: []dns.RR{&dns.TLSA{Hdr: dns.RR_Header{Name: o, Rrtype: dns.TypeTLSA, Class: dns.ClassINET, Ttl: 3600}, Usage: 3, Selector: 1, MatchingType: 1, Certificate: "00"}}}
	}
	cname := func(from, to string) *dns.CNAME {
		return &dns.CNAME{Hdr: dns.RR_Header{Name: from, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 3600}, Target: to}
	}
	addr := func(secure bool, chain ...string) *Answer {
		a := &Answer{Name: "mx.d.example.", Type: dns.TypeA, Secure: secure, Target: "mx.d.example.", TTL: time.Hour}
		for _, to := range chain {
			a.CNAMEs = append(a.CNAMEs, cname(a.Target, to))
			a.Target = to
		}
		a.Records = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: a.Target, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 3600}, A: net.IPv4(192, 0, 2, 1)}}
		return a
	}
	probe := func(to string) *Answer {
		return &Answer{Name: "mx.d.example.", Type: dns.TypeCNAME, Secure: true, Target: "mx.d.example.", TTL: time.Hour, Records: []dns.RR{cname("mx.d.example.", to)}}
	}
	for _, tc := range []struct {
		name    string
		answers map[string]any
		forget  []string // what may be forgotten
	}{
		// The probe names the expanded name: its TLSA answer is used.
		{"match", map[string]any{"mx.d.example./A": addr(true, "mail.h.example."), "mx.d.example./CNAME": probe("mail.h.example."),
			"_25._tcp.mail.h.example./TLSA": tlsa(owner("mail.h.example."))}, nil},
		// The probe names the expanded name, whose TLSA lookup fails:
		// the failure is used, as the sequential order would see it.
		{"match-failing", map[string]any{"mx.d.example./A": addr(true, "mail.h.example."), "mx.d.example./CNAME": probe("mail.h.example."),
			"_25._tcp.mail.h.example./TLSA": fail("mail.h.example.")}, nil},
		// Double alias: the probe's first hop is no TLSA base.
		{"first-hop", map[string]any{"mx.d.example./A": addr(true, "relay.h.example.", "mail.h.example."), "mx.d.example./CNAME": probe("relay.h.example."),
			"_25._tcp.relay.h.example./TLSA": fail("relay.h.example."), "_25._tcp.mail.h.example./TLSA": tlsa(owner("mail.h.example."))},
			[]string{"_25._tcp.relay.h.example./TLSA"}},
		// Insecure alias target: no expanded-name TLSA question at all.
		{"insecure-target", map[string]any{"mx.d.example./A": addr(false, "mail.h.example."), "mx.d.example./CNAME": probe("mail.h.example."),
			"_25._tcp.mail.h.example./TLSA": fail("mail.h.example.")},
			[]string{"_25._tcp.mail.h.example./TLSA"}},
		// The probe fails: the sequential order, unchanged.
		{"probe-fails", map[string]any{"mx.d.example./A": addr(true, "mail.h.example."), "mx.d.example./CNAME": errors.New("no answer"),
			"_25._tcp.mail.h.example./TLSA": tlsa(owner("mail.h.example."))}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seqH, seqErr := (&Discoverer{Q: &specQuerier{answers: tc.answers}}).LookupHost(context.Background(), "mx.d.example")
			q := &specQuerier{answers: tc.answers}
			h, err := (&Discoverer{Q: q, SpeculativeTLSA: true, CNAMEProbe: q}).LookupHost(context.Background(), "mx.d.example")
			if (err == nil) != (seqErr == nil) || (err != nil && err.Error() != seqErr.Error()) {
				t.Fatalf("error %v, sequential %v", err, seqErr)
			}
			if (h == nil) != (seqH == nil) || (h != nil && h.String() != seqH.String()) {
				t.Fatalf("host %v, sequential %v", h, seqH)
			}
			// Whether the probe answered before the address answer
			// is a race here (the engine tests hold answers back): a
			// forgotten question must be one of tc.forget.
			for _, f := range q.forgotten() {
				if !slices.Contains(tc.forget, f) {
					t.Fatalf("forgot %s, may forget only %v", f, tc.forget)
				}
			}
		})
	}
}
