package daneguard

import (
	"context"
	"testing"

	"github.com/foxcpp/maddy/framework/config"
	"github.com/maddy-dane/daneguard/internal/engine"
)

// TestInlinePolicyIDN: policy entries may be written with U-labels or
// A-labels; both match the A-label form the engine looks up.
func TestInlinePolicyIDN(t *testing.T) {
	p := &Policy{inline: map[string]engine.DomainPolicy{}}
	for _, args := range [][]string{
		{"bücher.example", "dane-only"},
		{".XN--E1AFMKFD.example.", "encrypt"},
	} {
		if err := p.addInlinePolicy(config.Node{Name: "policy", Args: args}); err != nil {
			t.Fatal(err)
		}
	}
	for domain, want := range map[string]engine.Level{
		"xn--bcher-kva.example":   engine.LevelDANEOnly,
		"bücher.example":          engine.LevelDANEOnly,
		"mx.пример.example":       engine.LevelEncrypt,
		"mx.xn--e1afmkfd.example": engine.LevelEncrypt,
	} {
		pol, ok, err := p.lookupPolicy(context.Background(), engine.CanonicalDomain(domain))
		if err != nil || !ok || pol.Level != want {
			t.Errorf("%s: policy %v (found %v, %v), want %s", domain, pol.Level, ok, err, want)
		}
	}
}
