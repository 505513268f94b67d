package engine

import "testing"

func TestCanonicalDomain(t *testing.T) {
	for in, want := range map[string]string{
		"Example.ORG.":          "example.org",
		"bücher.example":        "xn--bcher-kva.example",
		"BÜCHER.example.":       "xn--bcher-kva.example",
		"xn--bcher-kva.example": "xn--bcher-kva.example",
		"mx.пример.рф":          "mx.xn--e1afmkfd.xn--p1ai",
		"under_score.example":   "under_score.example",
		"":                      "",
	} {
		if got := CanonicalDomain(in); got != want {
			t.Errorf("CanonicalDomain(%q) = %q, want %q", in, got, want)
		}
	}
}
