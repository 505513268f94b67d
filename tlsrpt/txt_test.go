package tlsrpt

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestParsePolicy(t *testing.T) {
	for _, tc := range []struct {
		rec  string
		want []string // rua URIs; nil means a parse error
	}{
		// RFC 8460 §3.1.1 and §3.1.2.
		{"v=TLSRPTv1;rua=mailto:reports@example.com", []string{"mailto:reports@example.com"}},
		{"v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt", []string{"https://reporting.example.com/v1/tlsrpt"}},
		{"v=TLSRPTv1 ; rua=mailto:a@example.com , https://r.example/x ;", []string{"mailto:a@example.com", "https://r.example/x"}},
		{"v=TLSRPTv1;rua=mailto:a@example.com;ext_1=val", []string{"mailto:a@example.com"}},
		// Unknown schemes are skipped, the others kept.
		{"v=TLSRPTv1;rua=ftp://x.example/,mailto:a@example.com", []string{"mailto:a@example.com"}},
		// Percent-encoded comma inside a URI.
		{"v=TLSRPTv1;rua=https://r.example/a%2Cb", []string{"https://r.example/a%2Cb"}},
		{"v=TLSRPTv1;rua=mailto:a@example.com?subject=x", []string{"mailto:a@example.com?subject=x"}},
		{"v=TLSRPTv1", nil},                          // no rua
		{"v=TLSRPTv1;", nil},                         // no rua
		{"v=TLSRPTv1;rua=", nil},                     // empty URI
		{"v=TLSRPTv1;rua=ftp://x.example/", nil},     // nothing usable
		{"v=TLSRPTv2;rua=mailto:a@example.com", nil}, // wrong version
		{"V=TLSRPTv1;rua=mailto:a@example.com", nil}, // %s: case-sensitive
		{"rua=mailto:a@example.com;v=TLSRPTv1", nil}, // version first
		{"v=TLSRPTv1;rua=mailto:a@example.com;rua=mailto:b@example.com", nil},
		{"v=TLSRPTv1;rua=mailto:a@example.com;-x=1", nil},  // bad extension name
		{"v=TLSRPTv1;rua=mailto:a@example.com;x=a=b", nil}, // "=" in value
		{"v=TLSRPTv1;rua=mailto:a@example.com;x", nil},     // no "="
		{"v=TLSRPTv1;rua=https://r.example/a!b", nil},      // "!" must be encoded
		{"v=TLSRPTv1;rua=mailto:not-an-address", nil},
		{"v=TLSRPTv1;rua=https:///nohost", nil},
	} {
		p, err := ParsePolicy(tc.rec)
		if tc.want == nil {
			if err == nil {
				t.Errorf("%q: parsed (%v), want an error", tc.rec, p)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.rec, err)
			continue
		}
		var got []string
		for _, u := range p.RUA {
			got = append(got, u.String())
		}
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("%q: rua %v, want %v", tc.rec, got, tc.want)
		}
	}
}

func TestSelectPolicy(t *testing.T) {
	good := "v=TLSRPTv1;rua=mailto:a@example.com"
	if p, err := SelectPolicy([]string{"v=spf1 -all", good}); err != nil || len(p.RUA) != 1 {
		t.Fatalf("one TLSRPT record among others: %v %v", p, err)
	}
	// RFC 8460 §3: not exactly one record: no TLSRPT.
	for _, txts := range [][]string{nil, {"v=spf1 -all"}, {good, good}, {"v=TLSRPTv1;rua=bad"}} {
		if _, err := SelectPolicy(txts); !errors.Is(err, ErrNoPolicy) {
			t.Errorf("%q: err %v, want ErrNoPolicy", txts, err)
		}
	}
	// "v=TLSRPTv1x" is another version, not ours.
	if _, err := SelectPolicy([]string{"v=TLSRPTv1x;rua=mailto:a@example.com"}); !errors.Is(err, ErrNoPolicy) {
		t.Errorf("v=TLSRPTv1x accepted")
	}
}

func TestDiscover(t *testing.T) {
	var asked string
	lookup := func(_ context.Context, name string) ([]string, error) {
		asked = name
		return []string{"v=TLSRPTv1;rua=https://r.example/"}, nil
	}
	p, err := Discover(context.Background(), lookup, "Example.COM.")
	if err != nil || asked != "_smtp._tls.example.com." || p.RUA[0].Host != "r.example" {
		t.Fatalf("asked %q, got %v, %v", asked, p, err)
	}
	boom := errors.New("servfail")
	_, err = Discover(context.Background(), func(context.Context, string) ([]string, error) { return nil, boom }, "x.example")
	if !errors.Is(err, boom) {
		t.Fatalf("lookup error not returned: %v", err)
	}
}

func TestMailtoAddresses(t *testing.T) {
	p, err := ParsePolicy("v=TLSRPTv1;rua=mailto:a@example.com%2Cb@example.org?subject=hi")
	if err != nil {
		t.Fatal(err)
	}
	got, err := MailtoAddresses(p.RUA[0])
	if err != nil || strings.Join(got, " ") != "a@example.com b@example.org" {
		t.Fatalf("got %v %v", got, err)
	}
}
