package mtastsfallback

import (
	"context"
	"testing"
)

func BenchmarkParseTXT(b *testing.B) {
	recs := []string{"v=spf1 include:_spf.example.com -all", "v=STSv1; id=20160831085700Z;"}
	for b.Loop() {
		if _, err := ParseTXT(recs); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParsePolicy(b *testing.B) {
	body := []byte(goodPolicy)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := ParsePolicy(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMatchMX(b *testing.B) {
	p := &Policy{Mode: ModeEnforce, MX: []string{"mail.example.com", "backup.example.com", "*.example.net"}}
	for b.Loop() {
		if !p.MatchMX("MX7.Example.NET.") {
			b.Fatal("no match")
		}
	}
}

// BenchmarkManagerCached measures the per-message path: TXT id unchanged,
// policy served from memory.
func BenchmarkManagerCached(b *testing.B) {
	site, f := siteFetcher(b)
	txt := newFakeTXT()
	txt.set("example.com", "v=STSv1; id=1")
	site.set("example.com", goodPolicy)
	m, err := NewManager(Config{LookupTXT: txt.Lookup, Fetcher: f})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	if _, err := m.Policy(ctx, "example.com"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		r, err := m.Policy(ctx, "example.com")
		if err != nil || r.Source != SourceCache {
			b.Fatal(err, r.Source)
		}
	}
}
