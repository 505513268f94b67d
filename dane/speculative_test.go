package dane

import (
	"context"
	"errors"
	"net"
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
