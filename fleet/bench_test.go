package fleet

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/internal/testbed/redisbed"
	mtastsfallback "github.com/maddy-dane/daneguard/mtasts_fallback"
	policycache "github.com/maddy-dane/daneguard/policy_cache"
	"github.com/maddy-dane/daneguard/tlsrpt"
)

// BenchmarkRecord is the recording call on the delivery path: the
// embedded store's Add against SharedReports.Add with its push loop
// running against a real redis-server (the push happens off the path).
func BenchmarkRecord(b *testing.B) {
	rec := failure("example.org", "192.0.2.10")
	b.Run("embedded", func(b *testing.B) {
		st, err := tlsrpt.OpenStore(filepath.Join(b.TempDir(), "tlsrpt.db"), tlsrpt.StoreOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if err := st.Add(time.Now(), rec); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("redis", func(b *testing.B) {
		srv := redisbed.Start(b, redisbed.Options{})
		dir := b.TempDir()
		st, err := tlsrpt.OpenStore(filepath.Join(dir, "tlsrpt.db"), tlsrpt.StoreOptions{})
		if err != nil {
			b.Fatal(err)
		}
		sr, err := NewSharedReports(client(b, srv, nil), ReportsConfig{Local: st, NodeIDFile: filepath.Join(dir, "id")})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go sr.Run(ctx, 100*time.Millisecond)
		for b.Loop() {
			if err := sr.Add(time.Now(), rec); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkPolicyRead is the MTA-STS store read (done on a domain's
// first contact by the manager): the embedded store against the layered
// one (local file plus a Redis round trip).
func BenchmarkPolicyRead(b *testing.B) {
	now := time.Now()
	p := &mtastsfallback.Policy{Domain: "example.org", Mode: mtastsfallback.ModeEnforce, MX: []string{"mx.example.org"},
		MaxAge: 86400, ID: "1", FetchedAt: now, Expires: now.Add(24 * time.Hour)}
	v, err := mtastsfallback.MarshalPolicy(p)
	if err != nil {
		b.Fatal(err)
	}
	local, err := policycache.OpenStore(b.TempDir(), policycache.StoreOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if err := local.Put("mta-sts/example.org", v, p.Expires); err != nil {
		b.Fatal(err)
	}
	b.Run("embedded", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := local.Get("mta-sts/example.org"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("redis", func(b *testing.B) {
		srv := redisbed.Start(b, redisbed.Options{})
		shared := NewSharedPolicies(client(b, srv, nil))
		if err := shared.Put("mta-sts/example.org", v, p.Expires); err != nil {
			b.Fatal(err)
		}
		l := NewLayeredPolicies(local, shared, nil, nil)
		for b.Loop() {
			if _, _, err := l.Get("mta-sts/example.org"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
