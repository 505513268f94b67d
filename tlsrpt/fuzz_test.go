package tlsrpt

import (
	"strings"
	"testing"
)

// FuzzParsePolicy: the parser never panics, and what it accepts renders
// back to a record that parses to the same URIs.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{
		"v=TLSRPTv1;rua=mailto:reports@example.com",
		"v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt",
		"v=TLSRPTv1 ; rua=mailto:a@example.com , https://r.example/x ;",
		"v=TLSRPTv1;rua=mailto:a@example.com;ext=1",
		"v=TLSRPTv1;rua=mailto:a@example.com%2Cb@example.org?subject=x",
		"v=TLSRPTv1;;",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rec string) {
		p, err := ParsePolicy(rec)
		if err != nil {
			return
		}
		if len(p.RUA) == 0 {
			t.Fatalf("%q: accepted without URIs", rec)
		}
		for _, u := range p.RUA {
			if u.Scheme != "https" && u.Scheme != "mailto" {
				t.Fatalf("%q: scheme %q", rec, u.Scheme)
			}
		}
		again, err := ParsePolicy(p.String())
		if err != nil {
			t.Fatalf("%q rendered as %q does not parse: %v", rec, p.String(), err)
		}
		a, b := []string{}, []string{}
		for _, u := range p.RUA {
			a = append(a, u.String())
		}
		for _, u := range again.RUA {
			b = append(b, u.String())
		}
		if strings.Join(a, ",") != strings.Join(b, ",") {
			t.Fatalf("%q: %v then %v", rec, a, b)
		}
	})
}
