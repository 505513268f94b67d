package selfcheck

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
)

// chainOf builds leaf ← intermediate ← root and returns the chain a server
// sends (leaf, intermediate).
func chainOf(t *testing.T, ca *pki.CA, lifetime time.Duration) []*x509.Certificate {
	t.Helper()
	now := time.Now()
	l := ca.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.own.example"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(lifetime - time.Hour)})
	return append([]*x509.Certificate{l.Cert}, l.Chain...)
}

func rec(t *testing.T, u dane.Usage, s dane.Selector, c *x509.Certificate) dane.Record {
	t.Helper()
	data, err := pki.TLSAData(uint8(s), 1, c)
	if err != nil {
		t.Fatal(err)
	}
	return dane.Record{Usage: u, Selector: s, MatchingType: dane.SHA2_256, Data: data}
}

func TestRecordFates(t *testing.T) {
	ca := pki.NewCA(t, "root").Intermediate(t, "issuer")
	chain := chainOf(t, ca, 90*24*time.Hour)
	other := chainOf(t, ca, 90*24*time.Hour)
	cases := []struct {
		name string
		r    dane.Record
		want Fate
	}{
		{"3 1 1 leaf", rec(t, dane.DANEEE, dane.SPKI, chain[0]), FateDiesWithKey},
		{"3 0 1 leaf", rec(t, dane.DANEEE, dane.Cert, chain[0]), FateDiesWithCert},
		{"2 1 1 issuer", rec(t, dane.DANETA, dane.SPKI, chain[1]), FateSurvives},
		{"2 0 1 issuer", rec(t, dane.DANETA, dane.Cert, chain[1]), FateSurvives},
		{"3 1 1 other key", rec(t, dane.DANEEE, dane.SPKI, other[0]), FateNoMatch},
		// DANE-TA(2) of the leaf itself designates no CA.
		{"2 1 1 leaf", rec(t, dane.DANETA, dane.SPKI, chain[0]), FateNoMatch},
		{"1 1 1 leaf", rec(t, 1, dane.SPKI, chain[0]), FateUnusable},
	}
	for _, c := range cases {
		got := RecordFates([]dane.Record{c.r}, chain)
		if len(got) != 1 || got[0].Fate != c.want {
			t.Errorf("%s: fate %+v, want %s", c.name, got, c.want)
		}
	}
}

func TestAssessRolloverACME(t *testing.T) {
	ca := pki.NewCA(t, "root").Intermediate(t, "issuer")
	chain := chainOf(t, ca, 90*24*time.Hour)
	ee := rec(t, dane.DANEEE, dane.SPKI, chain[0])
	owner := "_25._tcp.mx.own.example"

	ro := AssessRollover(owner, []dane.Record{ee}, chain, SourceACME)
	if !ro.MatchesNow || !ro.SurvivesRenewal || ro.SurvivesKeyChange {
		t.Fatalf("3 1 1 only under ACME: %+v", ro)
	}
	want := []string{ZoneLine(owner, ee), ZoneLine(owner, RecordFor(dane.DANETA, chain[1]))}
	if strings.Join(ro.Publish, "\n") != strings.Join(want, "\n") {
		t.Errorf("publish %q, want %q", ro.Publish, want)
	}
	if !strings.HasPrefix(ro.Publish[1], "_25._tcp.mx.own.example. IN TLSA 2 1 1 ") {
		t.Errorf("issuer line %q", ro.Publish[1])
	}
	// Renewal at 1/3 of the lifetime before expiry: 30 days for 90.
	if d := chain[0].NotAfter.Sub(ro.NextKeyChange); d != 30*24*time.Hour {
		t.Errorf("renewal %v before expiry, want 720h", d)
	}

	ro = AssessRollover(owner, []dane.Record{ee, rec(t, dane.DANETA, dane.SPKI, chain[1])}, chain, SourceACME)
	if !ro.SurvivesKeyChange || len(ro.Publish) != 0 {
		t.Errorf("3 1 1 + 2 1 1: %+v", ro)
	}
	// Files: the operator chooses when the key changes; nothing to add.
	ro = AssessRollover(owner, []dane.Record{ee}, chain, SourceFile)
	if ro.SurvivesKeyChange || len(ro.Publish) != 0 || !ro.NextKeyChange.Equal(chain[0].NotAfter) {
		t.Errorf("3 1 1 under files: %+v", ro)
	}
}

func TestStillMatches(t *testing.T) {
	ca := pki.NewCA(t, "root").Intermediate(t, "issuer")
	chain := chainOf(t, ca, 90*24*time.Hour)
	ee := rec(t, dane.DANEEE, dane.SPKI, chain[0])
	ta := rec(t, dane.DANETA, dane.SPKI, chain[1])
	refs := []string{"mx.own.example"}
	now := time.Now()
	in := func(days int) time.Time { return now.AddDate(0, 0, days) }
	cases := []struct {
		name string
		recs []dane.Record
		src  KeySource
		at   time.Time
		want bool
	}{
		{"acme 3 1 1 before renewal", []dane.Record{ee}, SourceACME, in(10), true},
		{"acme 3 1 1 after renewal", []dane.Record{ee}, SourceACME, in(70), false},
		{"acme 3 1 1 + 2 1 1 after renewal", []dane.Record{ee, ta}, SourceACME, in(70), true},
		// DANE-EE ignores dates: an expired file certificate still matches.
		{"file 3 1 1 after expiry", []dane.Record{ee}, SourceFile, in(120), true},
		// DANE-TA checks the leaf's dates (RFC 7672 §3.1.2).
		{"file 2 1 1 after expiry", []dane.Record{ta}, SourceFile, in(120), false},
	}
	for _, c := range cases {
		if got := StillMatches(c.recs, chain, c.src, refs, c.at); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestObserve(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var st NextKeyState
	ns := Observe(st, false, 0, t0)
	if ns.Safe || ns.Err != ErrNotVisible {
		t.Fatalf("not visible: %+v", ns)
	}
	ns = Observe(ns.State, true, 300*time.Second, t0)
	if ns.Safe || ns.Err != ErrNotYet || !ns.SafeAt.Equal(t0.Add(600*time.Second)) {
		t.Fatalf("first sight: %+v", ns)
	}
	// A shorter remaining TTL from a cache does not shorten the wait.
	ns = Observe(ns.State, true, 10*time.Second, t0.Add(599*time.Second))
	if ns.Safe {
		t.Fatalf("before two TTLs: %+v", ns)
	}
	ns = Observe(ns.State, true, 10*time.Second, t0.Add(600*time.Second))
	if !ns.Safe || ns.Err != nil {
		t.Fatalf("after two TTLs: %+v", ns)
	}
	// Withdrawn: the wait starts again.
	ns = Observe(ns.State, false, 0, t0.Add(700*time.Second))
	ns = Observe(ns.State, true, 300*time.Second, t0.Add(800*time.Second))
	if ns.Safe || !ns.SafeAt.Equal(t0.Add(1400*time.Second)) {
		t.Fatalf("after withdrawal: %+v", ns)
	}
}

// ACMECertPath finds certmagic's file layout, newest issuer directory first.
func TestACMECertPath(t *testing.T) {
	store := t.TempDir()
	if _, err := ACMECertPath(store, "MX.Own.Example."); err == nil {
		t.Fatal("no certificate: want an error")
	}
	write := func(issuer string, age time.Duration) string {
		dir := filepath.Join(store, "certificates", issuer, "mx.own.example")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "mx.own.example.crt")
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		mt := time.Now().Add(-age)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("acme-staging-v02.api.letsencrypt.org-directory", time.Hour)
	want := write("acme-v02.api.letsencrypt.org-directory", 0)
	if got, err := ACMECertPath(store, "MX.Own.Example."); err != nil || got != want {
		t.Errorf("got %q, %v; want %q", got, err, want)
	}
}
