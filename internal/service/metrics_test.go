package service

import (
	"fmt"
	"testing"

	"github.com/maddy-dane/daneguard/internal/engine"
	"github.com/maddy-dane/daneguard/tlsrpt"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestDeferralsByDestination: deferred verdicts are counted per
// destination in A-labels, successes are not, and destinations beyond the
// cap fold into "other".
func TestDeferralsByDestination(t *testing.T) {
	old := destinations
	destinations = tlsrpt.NewLabelCap(3, nil)
	deferrals.Reset()
	t.Cleanup(func() { destinations = old; deferrals.Reset() })

	deferred := func(dom string) *engine.Verdict {
		return &engine.Verdict{Result: engine.Deferred, Domain: dom, Reason: engine.ReasonDANEMismatch, Mechanism: engine.MechDANE}
	}
	deferralCount(deferred("bücher.example"))
	deferralCount(deferred("xn--bcher-kva.example"))
	deferralCount(&engine.Verdict{Result: engine.Authenticated, Domain: "ok.example", Reason: engine.ReasonDANEMatch, Mechanism: engine.MechDANE})
	for i := 0; i < 4; i++ {
		deferralCount(deferred(fmt.Sprintf("d%d.example", i)))
	}
	get := func(dst string) float64 {
		return testutil.ToFloat64(deferrals.WithLabelValues(dst, string(engine.ReasonDANEMismatch), string(engine.MechDANE)))
	}
	if v := get("xn--bcher-kva.example"); v != 2 {
		t.Errorf("xn--bcher-kva.example: %v deferrals, want 2 (U-label and A-label are one destination)", v)
	}
	if v := get("d0.example") + get("d1.example"); v != 2 {
		t.Errorf("d0+d1: %v, want 2", v)
	}
	if v := get(tlsrpt.LabelOther); v != 2 {
		t.Errorf("other: %v, want 2 (d2, d3 beyond the cap of 3)", v)
	}
	if n := testutil.CollectAndCount(deferrals); n != 4 {
		t.Errorf("%d series, want 4 (3 destinations + other; successes not counted)", n)
	}
}
