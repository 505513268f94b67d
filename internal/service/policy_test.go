package service

import (
	"context"
	"testing"

	"github.com/maddy-dane/daneguard/internal/engine"
)

// TestInlinePolicyIDN: policy entries may be written with U-labels or
// A-labels; both match the A-label form the engine looks up.
func TestInlinePolicyIDN(t *testing.T) {
	s := DefaultSettings()
	for _, args := range [][]string{
		{"bücher.example", "dane-only"},
		{".XN--E1AFMKFD.example.", "encrypt"},
	} {
		if err := addPolicy(&s, args); err != nil {
			t.Fatal(err)
		}
	}
	for domain, want := range map[string]engine.Level{
		"xn--bcher-kva.example":   engine.LevelDANEOnly,
		"bücher.example":          engine.LevelDANEOnly,
		"mx.пример.example":       engine.LevelEncrypt,
		"mx.xn--e1afmkfd.example": engine.LevelEncrypt,
	} {
		pol, ok, err := lookupPolicy(context.Background(), s.Policies, nil, engine.CanonicalDomain(domain))
		if err != nil || !ok || pol.Level != want {
			t.Errorf("%s: policy %v (found %v, %v), want %s", domain, pol.Level, ok, err, want)
		}
	}
}
