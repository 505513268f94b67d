package engine

import (
	"testing"

	"github.com/maddy-dane/daneguard/tlsrpt"
)

func TestProviderDomain(t *testing.T) {
	for mx, want := range map[string]string{
		"mx1.provider.example":      "provider.example",
		"MX1.Provider.Example.":     "provider.example",
		"a.b.provider.example":      "b.provider.example", // the parent as written, no PSL walk
		"mx.example":                "",                   // the parent would be a TLD
		"example":                   "",
		"":                          "",
		"mx.xn--bcher-kva.example":  "xn--bcher-kva.example",
		"mx.bücher.example":         "xn--bcher-kva.example",
		"smtp.provider.co.example.": "provider.co.example",
	} {
		if got := ProviderDomain(mx); got != want {
			t.Errorf("ProviderDomain(%q) = %q, want %q", mx, got, want)
		}
	}
}

func TestProviderRecord(t *testing.T) {
	dane := tlsrpt.Record{Domain: "customer.example", PolicyType: tlsrpt.PolicyTLSA, PolicyDomain: "mx1.provider.example", MXHost: "mx1.provider.example",
		ResultType: tlsrpt.ResultCertificateHostMismatch, FailureReason: "no-match"}
	got, ok := ProviderRecord(dane)
	if !ok || got.Domain != "provider.example" || got.PolicyDomain != "mx1.provider.example" || got.MXHost != dane.MXHost ||
		got.ResultType != dane.ResultType || got.FailureReason != dane.FailureReason {
		t.Fatalf("provider copy %+v, %v", got, ok)
	}
	own := dane
	own.Domain, own.MXHost, own.PolicyDomain = "Provider.Example", "mx1.provider.example", "mx1.provider.example"
	if _, ok := ProviderRecord(own); ok {
		t.Fatal("a copy for the recipient domain itself (duplicate)")
	}
	sts := dane
	sts.PolicyType = tlsrpt.PolicySTS
	if _, ok := ProviderRecord(sts); ok {
		t.Fatal("an MTA-STS result copied to the MX host's domain")
	}
	none := dane
	none.PolicyType = tlsrpt.PolicyNotFound
	if _, ok := ProviderRecord(none); ok {
		t.Fatal("a no-policy-found result copied to the MX host's domain")
	}
	short := dane
	short.MXHost = "mx.example"
	if _, ok := ProviderRecord(short); ok {
		t.Fatal("a copy for a TLD")
	}
}
