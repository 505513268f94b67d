package selfcheck

import (
	"strings"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/tlsrpt"
)

// TestExplain: each reported failure finds the self-check's finding that
// fits its result type, receiving address and MX host; nothing is made up
// when the self-check found nothing.
func TestExplain(t *testing.T) {
	now := time.Date(2025, 3, 2, 0, 0, 0, 0, time.UTC)
	rep := &Report{CheckedAt: now,
		Domains: []DomainInfo{
			{Name: "example.org", MX: []string{"mx.example.org", "mx2.example.org"}, MTASTS: &STSInfo{State: "enforce", Unlisted: []string{"mx2.example.org"}}},
			{Name: "example.net", MTASTS: &STSInfo{State: "fetch-failed", FetchError: "certificate signed by unknown authority"}},
		},
		Hosts: []HostInfo{
			{Name: "mx.example.org", TLSAStatus: "tlsa", TLSAOwner: "_25._tcp.mx.example.org", LoadedMatch: "match (3 1 1 ab)", Addresses: []AddrProbe{
				{Address: "192.0.2.25:25", Result: "match", WebPKI: "ok"},
				{Address: "[2001:db8::25]:25", Result: "mismatch", Detail: "no usable TLSA record matched", WebPKI: "ok"},
			}},
			{Name: "mx3.example.org", TLSAStatus: "lookup-failed", TLSAError: "bogus: signature expired"},
			{Name: "mx4.example.org", TLSAStatus: "no-tlsa", Addresses: []AddrProbe{{Address: "192.0.2.27:25", Result: "no-starttls", Detail: "no STARTTLS offered"}}},
		},
	}
	for _, tc := range []struct {
		dom  string
		f    tlsrpt.ReceivedFailure
		want string // substring; "" means no explanation
	}{
		{"mx.example.org", tlsrpt.ReceivedFailure{ResultType: "certificate-host-mismatch", ReceivingIP: "2001:db8:0::25", MXHost: "mx.example.org"},
			"[2001:db8::25]:25 serves a certificate that _25._tcp.mx.example.org does not match"},
		{"mx.example.org", tlsrpt.ReceivedFailure{ResultType: "certificate-host-mismatch", ReceivingIP: "192.0.2.25", MXHost: "mx.example.org"}, ""},
		{"mx3.example.org", tlsrpt.ReceivedFailure{ResultType: "dnssec-invalid", MXHost: "mx3.example.org"}, "signature expired"},
		{"example.org", tlsrpt.ReceivedFailure{ResultType: "certificate-host-mismatch", MXHost: "mx2.example.org"}, "does not list the MX host mx2.example.org"},
		{"example.net", tlsrpt.ReceivedFailure{ResultType: "sts-policy-fetch-error"}, "unknown authority"},
		{"mx4.example.org", tlsrpt.ReceivedFailure{ResultType: "starttls-not-supported", ReceivingIP: "192.0.2.27", MXHost: "mx4.example.org"}, "no STARTTLS offered"},
		{"other.example", tlsrpt.ReceivedFailure{ResultType: "certificate-expired", MXHost: "mx.other.example"}, ""},
	} {
		got := rep.Explain(tc.dom, tc.f)
		if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("%s %+v: %q, want %q", tc.dom, tc.f, got, tc.want)
		}
	}
}
