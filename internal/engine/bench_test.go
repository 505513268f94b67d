package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/engine"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	policycache "github.com/maddy-dane/daneguard/policy_cache"
	"github.com/miekg/dns"
)

// newBenchBed publishes one signed DANE destination behind a real
// unbound and returns a warm engine for it, a resolver without a cache on
// the same unbound, the MX host and one delivery's worth of engine calls
// with a real TLS state.
func newBenchBed(b *testing.B) (*bed, *engine.Engine, *dane.Resolver, string, func() *engine.Verdict) {
	bd := newBed(b)
	leaf := pki.SelfSigned(b, pki.LeafOptions{DNSNames: []string{"mx.bench.example"}})
	mx, _ := bd.daneZone("bench.example", leaf, 3600, 3600, 3600)
	bd.start()
	st := handshake(b, leaf, "mx.bench.example")
	e := bd.engine(policycache.Config{})
	res, err := dane.NewResolver(dane.ResolverConfig{Servers: []string{bd.ub.Addr()}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	one := func() *engine.Verdict { return deliver(ctx, e, "bench.example", mx, st) }
	// Warm both caches, ours and unbound's.
	wantAuthenticated(b, one())
	if _, err := res.Query(ctx, "_25._tcp."+mx, dns.TypeTLSA); err != nil {
		b.Fatal(err)
	}
	return bd, e, res, mx, one
}

// BenchmarkDelivery measures what the policy costs one delivery to a DANE
// destination (Destination, CheckMX, CheckConn with a real TLS state,
// DANE verification included) with a warm cache, against baselines
// measured in the same run on the same real unbound:
//
//   - bare-tlsa-query: one uncached TLSA query through dane.Resolver, the
//     least a policy without a cache asks per delivery (maddy's built-in
//     dane asks it, plus an address query, for every connection);
//   - uncached-discovery: the MX, address and TLSA queries of RFC 7672
//     discovery through dane.Resolver without a cache.
//
// The warm sub-benchmark reports the baselines' ns/op divided by its own
// as "x-vs-tlsa-query" and "x-vs-discovery".
func BenchmarkDelivery(b *testing.B) {
	_, e, res, mx, one := newBenchBed(b)
	ctx := context.Background()
	tlsaOwner := "_25._tcp." + mx
	bareQuery := func() {
		if _, err := res.Query(ctx, tlsaOwner, dns.TypeTLSA); err != nil {
			b.Fatal(err)
		}
	}
	disc := &dane.Discoverer{Q: res}
	discovery := func() {
		if _, err := disc.LookupMX(ctx, "bench.example"); err != nil {
			b.Fatal(err)
		}
		if h, err := disc.LookupHost(ctx, mx); err != nil || h.Status != dane.HasTLSA {
			b.Fatalf("%v %v", h, err)
		}
	}
	// measure returns the mean time of n calls of f.
	measure := func(n int, f func()) time.Duration {
		start := time.Now()
		for range n {
			f()
		}
		return time.Since(start) / time.Duration(n)
	}

	b.Run("warm-cache", func(b *testing.B) {
		tlsaNs := measure(300, bareQuery)
		discNs := measure(100, discovery)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if v := one(); v.Result != engine.Authenticated {
				b.Fatal(v)
			}
		}
		per := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		b.ReportMetric(float64(tlsaNs.Nanoseconds())/per, "x-vs-tlsa-query")
		b.ReportMetric(float64(discNs.Nanoseconds())/per, "x-vs-discovery")
		if s := e.DNS().Cache().Stats(); s.Fetches != 3 {
			b.Fatalf("the cache fetched %d times, want 3 (it must stay warm): %+v", s.Fetches, s)
		}
	})
	b.Run("warm-cache-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if v := one(); v.Result != engine.Authenticated {
					b.Error(v)
					return
				}
			}
		})
	})
	b.Run("bare-tlsa-query", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			bareQuery()
		}
	})
	b.Run("uncached-discovery", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			discovery()
		}
	})
}
