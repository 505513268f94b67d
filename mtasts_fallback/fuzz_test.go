package mtastsfallback

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func FuzzParseTXT(f *testing.F) {
	for _, s := range []string{
		"v=STSv1; id=20160831085700Z;", "v=STSv1;id=1", "v=STSv1 ;\tid=abc \t; ", "v=STSv1",
		"v=STSv1;; id=x", "v=STSv1; x=a=b; id=x", "v=STSv10; id=1", "v=spf1 -all",
		"v=STSv1; id=" + strings.Repeat("z", 33), "v=STSv1; id=é",
	} {
		f.Add(s, "")
		f.Add(s, "v=spf1 -all")
	}
	f.Add("v=STSv1; id=1", "v=STSv1; id=2")
	f.Fuzz(func(t *testing.T, a, b string) {
		recs := []string{a}
		if b != "" {
			recs = append(recs, b)
		}
		id, err := ParseTXT(recs)
		if err != nil {
			if id != "" {
				t.Fatalf("id %q returned with error %v", id, err)
			}
			if !errors.Is(err, ErrNoRecord) && !errors.Is(err, ErrMultipleRecords) && !errors.Is(err, ErrInvalidTXT) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if !validID(id) {
			t.Fatalf("invalid id %q accepted from %q", id, recs)
		}
		// The id must literally appear as a field in the accepted record.
		found := false
		for _, r := range recs {
			if strings.HasPrefix(r, stsVersion) && strings.Contains(r, "id="+id) {
				found = true
			}
		}
		if !found {
			t.Fatalf("id %q not present in %q", id, recs)
		}
	})
}

func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{
		goodPolicy,
		"version: STSv1\nmode: none\nmax_age: 86400",
		"version: STSv1\nmode: testing\nmx: a.example\nmax_age: 99999999999\n",
		"\xef\xbb\xbfversion: STSv1\r\n\r\nmode: enforce\nmx: *.A.example.\nmax_age: 1\nx: y: z\n",
		"version: STSv1\nversion: STSv2\nmode: testing\nmode: bogus\nmax_age: 10\nmx: a.example\n",
		"mx: *.*.example\n", "<html>", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := ParsePolicy(body)
		if err != nil {
			if p != nil || !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("policy %v, error %v", p, err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("parsed policy invalid: %v", err)
		}
		// Canonical form round trip.
		p2, err := ParsePolicy([]byte(strings.Join(p.Lines(), "\n")))
		if err != nil {
			t.Fatalf("canonical form rejected: %v\n%q", err, p.Lines())
		}
		if !reflect.DeepEqual(p, p2) {
			t.Fatalf("round trip changed the policy:\n%#v\n%#v", p, p2)
		}
		// Every pattern matches a host built from it.
		for _, mx := range p.MX {
			host := strings.Replace(mx, "*", "x", 1)
			if !p.MatchMX(host) {
				t.Fatalf("pattern %q does not match %q", mx, host)
			}
		}
	})
}

// referenceMatch is RFC 8461 Appendix B's policyMatches, applied to
// lower-cased, dot-trimmed inputs, with one correction: the label the
// wildcard stands for must not be empty (the pseudocode would let ".a"
// match "*.a"; §4.1 asks for a whole label).
func referenceMatch(pattern, host string) bool {
	if pattern == host {
		return true
	}
	if strings.HasPrefix(pattern, "*") {
		parts := strings.SplitN(host, ".", 2)
		if len(parts) > 1 && parts[0] != "" && len(pattern) >= 2 && parts[1] == pattern[2:] {
			return true
		}
	}
	return false
}

func FuzzMatchMX(f *testing.F) {
	for _, s := range [][2]string{
		{"mail.example.com", "mail.example.com"}, {"*.example.net", "mx.example.net"},
		{"*.example.net", "a.b.example.net"}, {"*.example.net", "example.net"},
		{"MX.Example.com.", "mx.example.COM"}, {"*.a", ".a"}, {"*.a", "*.a"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, host string) {
		p, err := ParsePolicy([]byte("version: STSv1\nmode: enforce\nmax_age: 1\nmx: " + pattern + "\n"))
		if err != nil {
			// Hand-made policies with arbitrary patterns must not panic.
			(&Policy{Mode: ModeEnforce, MX: []string{pattern}}).MatchMX(host)
			return
		}
		got := p.MatchMX(host)
		if got && p.CheckMX(host) != nil {
			t.Fatal("MatchMX and CheckMX disagree")
		}
		h := strings.TrimSuffix(host, ".")
		ascii := h != ""
		for i := 0; i < len(h); i++ {
			if h[i] >= 0x80 || h[i] == '*' {
				ascii = false
			}
		}
		want := ascii && referenceMatch(p.MX[0], strings.ToLower(h))
		if got != want {
			t.Fatalf("MatchMX(%q) with pattern %q = %v, reference %v", host, p.MX[0], got, want)
		}
	})
}
