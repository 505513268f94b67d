package service

import (
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/internal/engine"
	"github.com/maddy-dane/daneguard/internal/testbed/redisbed"
	mtastsfallback "github.com/maddy-dane/daneguard/mtasts_fallback"
)

// BenchmarkDeliveryStores measures what a delivery costs in the stores,
// through the service as the module builds it: recording the session's
// TLS-RPT record (Delivery's recording path) and reading the domain's
// MTA-STS policy from the manager's store (done on a domain's first
// contact per process; later reads are in memory). "embedded" is a
// service without a store directive, "redis" one with `store redis://...`
// on a real redis-server on loopback; both in the same run so that the
// ratio is meaningful on a shared machine.
func BenchmarkDeliveryStores(b *testing.B) {
	srv := redisbed.Start(b, redisbed.Options{})
	now := time.Now()
	pol := &mtastsfallback.Policy{Domain: "d.example", Mode: mtastsfallback.ModeEnforce, MX: []string{"mx.d.example"},
		MaxAge: 86400, ID: "1", FetchedAt: now, Expires: now.Add(24 * time.Hour)}
	val, err := mtastsfallback.MarshalPolicy(pol)
	if err != nil {
		b.Fatal(err)
	}
	v := &engine.Verdict{Domain: "d.example", MX: "mx.d.example", Result: engine.Authenticated, Reason: engine.ReasonDANEMatch,
		Mechanism: engine.MechDANE, TLSABase: "mx.d.example"}
	for _, mode := range []struct{ name, url string }{{"embedded", ""}, {"redis", srv.URL(0)}} {
		dir := b.TempDir()
		s, err := New(fleetSettings(b, mode.url, dir), Deps{Log: newTestLog(), StateDir: dir, Instance: "bench-" + mode.name})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Start(); err != nil {
			b.Fatal(err)
		}
		if err := s.stsStore.Put("mta-sts/d.example", val, pol.Expires); err != nil {
			b.Fatal(err)
		}
		d := s.Delivery("bench")
		b.Run("record/"+mode.name, func(b *testing.B) {
			for b.Loop() {
				d.recordTLSRPT(v)
			}
		})
		b.Run("policy-read/"+mode.name, func(b *testing.B) {
			for b.Loop() {
				if _, _, err := s.stsStore.Get("mta-sts/d.example"); err != nil {
					b.Fatal(err)
				}
			}
		})
		_ = s.Close()
	}
}
