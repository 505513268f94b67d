package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// verify runs crypto/x509 chain and host name verification the way a PKIX
// TLS client would.
func verify(l *Leaf, roots *x509.CertPool, host string, at time.Time) error {
	_, err := l.Cert.Verify(x509.VerifyOptions{
		DNSName:       host,
		Roots:         roots,
		Intermediates: l.Intermediates(),
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	return err
}

func TestLeafFromRootVerifies(t *testing.T) {
	ca := NewCA(t, "Test Root CA")
	for _, kt := range []KeyType{ECDSAP256, ECDSAP384, RSA2048, Ed25519} {
		t.Run(kt.String(), func(t *testing.T) {
			l := ca.Leaf(t, LeafOptions{DNSNames: []string{"mx1.example"}, KeyType: kt})
			if err := verify(l, ca.Pool(), "mx1.example", time.Now()); err != nil {
				t.Fatalf("leaf from root: %v", err)
			}
			if len(l.Chain) != 0 || !l.Root.Equal(ca.Cert) || l.Issuer != ca {
				t.Fatalf("chain=%d root=%v issuer=%p", len(l.Chain), l.Root.Subject, l.Issuer)
			}
			var ok bool
			switch kt {
			case ECDSAP256, ECDSAP384:
				_, ok = l.Cert.PublicKey.(*ecdsa.PublicKey)
			case RSA2048:
				_, ok = l.Cert.PublicKey.(*rsa.PublicKey)
			case Ed25519:
				_, ok = l.Cert.PublicKey.(ed25519.PublicKey)
			}
			if !ok {
				t.Fatalf("public key type %T for %v", l.Cert.PublicKey, kt)
			}
			// The TLS certificate's key must belong to the certificate.
			tc := l.TLSCertificate()
			if _, err := tls.X509KeyPair(l.CertPEM(), l.KeyPEM(t)); err != nil {
				t.Fatalf("PEM key pair: %v", err)
			}
			if tc.Leaf != l.Cert || len(tc.Certificate) != 1 {
				t.Fatalf("tls.Certificate = %d certs", len(tc.Certificate))
			}
		})
	}
}

func TestIntermediateChain(t *testing.T) {
	root := NewCA(t, "Test Root CA")
	inter := root.Intermediate(t, "Test Intermediate")
	inter2 := inter.Intermediate(t, "Test Intermediate 2")
	l := inter2.Leaf(t, LeafOptions{DNSNames: []string{"mx1.example"}})

	if len(l.Chain) != 2 || !l.Chain[0].Equal(inter2.Cert) || !l.Chain[1].Equal(inter.Cert) {
		t.Fatalf("chain order wrong: %d entries", len(l.Chain))
	}
	if !l.Root.Equal(root.Cert) || inter2.Root() != root {
		t.Fatal("root not found")
	}
	if err := verify(l, root.Pool(), "mx1.example", time.Now()); err != nil {
		t.Fatalf("leaf below two intermediates: %v", err)
	}
	// Without the intermediates the chain cannot be built.
	_, err := l.Cert.Verify(x509.VerifyOptions{DNSName: "mx1.example", Roots: root.Pool()})
	var ua x509.UnknownAuthorityError
	if !errors.As(err, &ua) {
		t.Fatalf("verify without intermediates: %v, want UnknownAuthorityError", err)
	}
	// A different root is not trusted.
	other := NewCA(t, "Other Root")
	if err := verify(l, other.Pool(), "mx1.example", time.Now()); !errors.As(err, &ua) {
		t.Fatalf("verify against an unrelated root: %v, want UnknownAuthorityError", err)
	}

	if n := len(l.TLSCertificate().Certificate); n != 3 {
		t.Fatalf("TLSCertificate has %d certs, want leaf+2 intermediates", n)
	}
	if n := len(l.TLSCertificateLeafOnly().Certificate); n != 1 {
		t.Fatalf("TLSCertificateLeafOnly has %d certs", n)
	}
	full := l.TLSCertificateWithRoot().Certificate
	if len(full) != 4 || !bytes.Equal(full[3], root.Cert.Raw) {
		t.Fatalf("TLSCertificateWithRoot has %d certs or wrong last", len(full))
	}
	// CertPEM holds leaf then intermediates.
	rest := l.CertPEM()
	var ders [][]byte
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		ders = append(ders, b.Bytes)
	}
	if len(ders) != 3 || !bytes.Equal(ders[0], l.Cert.Raw) || !bytes.Equal(ders[2], inter.Cert.Raw) {
		t.Fatalf("CertPEM has %d blocks in the wrong order", len(ders))
	}
}

func TestSelfSigned(t *testing.T) {
	l := SelfSigned(t, LeafOptions{DNSNames: []string{"mx1.example"}})
	if l.Issuer != nil || len(l.Chain) != 0 || !l.Root.Equal(l.Cert) {
		t.Fatal("self-signed leaf has an issuer or chain")
	}
	if err := l.Cert.CheckSignature(l.Cert.SignatureAlgorithm, l.Cert.RawTBSCertificate, l.Cert.Signature); err != nil {
		t.Fatalf("self-signature does not verify: %v", err)
	}
	if !bytes.Equal(l.Cert.RawIssuer, l.Cert.RawSubject) {
		t.Fatal("issuer differs from subject")
	}
	// Not trusted by an unrelated CA.
	var ua x509.UnknownAuthorityError
	if err := verify(l, NewCA(t, "Unrelated").Pool(), "mx1.example", time.Now()); !errors.As(err, &ua) {
		t.Fatalf("self-signed against CA pool: %v, want UnknownAuthorityError", err)
	}
	// Pinned as its own trust anchor it verifies.
	if err := verify(l, l.Pool(), "mx1.example", time.Now()); err != nil {
		t.Fatalf("self-signed pinned: %v", err)
	}
}

func TestValidityWindows(t *testing.T) {
	now := time.Now()
	// The CA must be valid at every instant the test verifies at.
	ca := NewCAWith(t, CAOptions{CommonName: "Test Root CA", NotBefore: now.Add(-30 * 24 * time.Hour)})
	expired := ca.Leaf(t, LeafOptions{
		DNSNames:  []string{"mx1.example"},
		NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour),
	})
	future := ca.Leaf(t, LeafOptions{
		DNSNames:  []string{"mx1.example"},
		NotBefore: now.Add(24 * time.Hour), NotAfter: now.Add(48 * time.Hour),
	})
	for name, l := range map[string]*Leaf{"expired": expired, "not yet valid": future} {
		err := verify(l, ca.Pool(), "mx1.example", now)
		var ci x509.CertificateInvalidError
		if !errors.As(err, &ci) || ci.Reason != x509.Expired {
			t.Errorf("%s leaf: %v, want CertificateInvalidError{Expired}", name, err)
		}
	}
	// Inside their windows both verify: the only defect is the date.
	if err := verify(expired, ca.Pool(), "mx1.example", now.Add(-36*time.Hour)); err != nil {
		t.Errorf("expired leaf inside its window: %v", err)
	}
	if err := verify(future, ca.Pool(), "mx1.example", now.Add(36*time.Hour)); err != nil {
		t.Errorf("future leaf inside its window: %v", err)
	}

	// Explicit CA windows are honoured too.
	old := NewCAWith(t, CAOptions{CommonName: "Old CA", NotBefore: now.Add(-72 * time.Hour), NotAfter: now.Add(-time.Hour)})
	l := old.Leaf(t, LeafOptions{DNSNames: []string{"mx1.example"}, NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(48 * time.Hour)})
	var ci x509.CertificateInvalidError
	if err := verify(l, old.Pool(), "mx1.example", now); !errors.As(err, &ci) || ci.Reason != x509.Expired {
		t.Errorf("leaf under expired CA: %v, want Expired", err)
	}
}

func TestHostNames(t *testing.T) {
	ca := NewCA(t, "Test Root CA")
	var he x509.HostnameError

	wrong := ca.Leaf(t, LeafOptions{DNSNames: []string{"mx2.example"}})
	if err := verify(wrong, ca.Pool(), "mx1.example", time.Now()); !errors.As(err, &he) {
		t.Errorf("wrong-name leaf: %v, want HostnameError", err)
	}

	wild := ca.Leaf(t, LeafOptions{DNSNames: []string{"*.example"}})
	if err := verify(wild, ca.Pool(), "mx1.example", time.Now()); err != nil {
		t.Errorf("wildcard leaf for mx1.example: %v", err)
	}
	// A wildcard covers exactly one label.
	if err := verify(wild, ca.Pool(), "a.mx1.example", time.Now()); !errors.As(err, &he) {
		t.Errorf("wildcard leaf for a.mx1.example: %v, want HostnameError", err)
	}
	if err := verify(wild, ca.Pool(), "example", time.Now()); !errors.As(err, &he) {
		t.Errorf("wildcard leaf for the parent: %v, want HostnameError", err)
	}

	nosan := ca.Leaf(t, LeafOptions{DNSNames: []string{"mx1.example"}, NoSAN: true})
	if len(nosan.Cert.DNSNames) != 0 || nosan.Cert.Subject.CommonName != "mx1.example" {
		t.Fatalf("NoSAN leaf: SAN=%v CN=%q", nosan.Cert.DNSNames, nosan.Cert.Subject.CommonName)
	}
	if err := verify(nosan, ca.Pool(), "mx1.example", time.Now()); !errors.As(err, &he) {
		t.Errorf("CN-only leaf: %v, want HostnameError", err)
	}

	cn := ca.Leaf(t, LeafOptions{DNSNames: []string{"mx1.example"}, CommonName: "Some Name"})
	if cn.Cert.Subject.CommonName != "Some Name" {
		t.Errorf("CN = %q", cn.Cert.Subject.CommonName)
	}

	ip := ca.Leaf(t, LeafOptions{IPAddresses: []net.IP{net.ParseIP("127.0.0.10")}})
	if err := verify(ip, ca.Pool(), "127.0.0.10", time.Now()); err != nil {
		t.Errorf("IP leaf: %v", err)
	}
}

func TestExtKeyUsage(t *testing.T) {
	ca := NewCA(t, "Test Root CA")
	l := ca.Leaf(t, LeafOptions{DNSNames: []string{"mx1.example"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}})
	var ci x509.CertificateInvalidError
	if err := verify(l, ca.Pool(), "mx1.example", time.Now()); !errors.As(err, &ci) || ci.Reason != x509.IncompatibleUsage {
		t.Fatalf("code-signing leaf as server: %v, want IncompatibleUsage", err)
	}
}

func TestNameConstraints(t *testing.T) {
	root := NewCA(t, "Test Root CA")
	inter := root.IntermediateWith(t, CAOptions{
		CommonName:              "Constrained Intermediate",
		PermittedDNSDomains:     []string{"example"},
		ExcludedDNSDomains:      []string{"bad.example"},
		NameConstraintsCritical: true,
	})
	var ci x509.CertificateInvalidError

	good := inter.Leaf(t, LeafOptions{DNSNames: []string{"mx1.example"}})
	if err := verify(good, root.Pool(), "mx1.example", time.Now()); err != nil {
		t.Errorf("permitted name: %v", err)
	}
	excluded := inter.Leaf(t, LeafOptions{DNSNames: []string{"mx.bad.example"}})
	if err := verify(excluded, root.Pool(), "mx.bad.example", time.Now()); !errors.As(err, &ci) || ci.Reason != x509.CANotAuthorizedForThisName {
		t.Errorf("excluded name: %v, want CANotAuthorizedForThisName", err)
	}
	outside := inter.Leaf(t, LeafOptions{DNSNames: []string{"mx.other"}})
	if err := verify(outside, root.Pool(), "mx.other", time.Now()); !errors.As(err, &ci) || ci.Reason != x509.CANotAuthorizedForThisName {
		t.Errorf("name outside permitted subtree: %v, want CANotAuthorizedForThisName", err)
	}
	// A constrained root works the same way.
	croot := NewCAWith(t, CAOptions{CommonName: "Constrained Root", ExcludedDNSDomains: []string{"evil.example"}})
	bad := croot.Leaf(t, LeafOptions{DNSNames: []string{"mx.evil.example"}})
	if err := verify(bad, croot.Pool(), "mx.evil.example", time.Now()); !errors.As(err, &ci) || ci.Reason != x509.CANotAuthorizedForThisName {
		t.Errorf("excluded by root: %v, want CANotAuthorizedForThisName", err)
	}
}

func TestPEMAndFiles(t *testing.T) {
	ca := NewCA(t, "Test Root CA")
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca.PEM()) {
		t.Fatal("CA PEM does not parse")
	}
	l := ca.Leaf(t, LeafOptions{DNSNames: []string{"mx1.example"}})
	if err := verify(l, pool, "mx1.example", time.Now()); err != nil {
		t.Fatalf("verify against PEM pool: %v", err)
	}
	dir := t.TempDir()
	caFile := ca.WritePEM(t, dir)
	b, err := os.ReadFile(caFile)
	if err != nil || !bytes.Equal(b, ca.PEM()) {
		t.Fatalf("CA file: %v", err)
	}
	certFile, keyFile := l.WriteFiles(t, dir)
	kp, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("LoadX509KeyPair: %v", err)
	}
	if !bytes.Equal(kp.Certificate[0], l.Cert.Raw) {
		t.Fatal("written certificate differs")
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi.Mode(), err)
	}
}

// TestTLSHandshake checks that the generated material works with crypto/tls
// end to end over an in-memory pipe, including the SNI.
func TestTLSHandshake(t *testing.T) {
	root := NewCA(t, "Test Root CA")
	l := root.Intermediate(t, "Inter").Leaf(t, LeafOptions{DNSNames: []string{"mx1.example"}})
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	srv := tls.Server(c1, &tls.Config{Certificates: []tls.Certificate{l.TLSCertificate()}})
	cli := tls.Client(c2, &tls.Config{RootCAs: root.Pool(), ServerName: "mx1.example"})
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if got := srv.ConnectionState().ServerName; got != "mx1.example" {
		t.Fatalf("SNI = %q", got)
	}
}

func TestInvalidOptions(t *testing.T) {
	if _, err := newCA(nil, CAOptions{}); err == nil {
		t.Error("CA without a name accepted")
	}
	if _, err := newCA(nil, CAOptions{CommonName: "x", KeyType: KeyType(99)}); err == nil || !strings.Contains(err.Error(), "unknown key type") {
		t.Errorf("unknown key type: %v", err)
	}
	now := time.Now()
	if _, err := newLeaf(nil, LeafOptions{DNSNames: []string{"a"}, NotBefore: now, NotAfter: now.Add(-time.Second)}); err == nil {
		t.Error("inverted validity accepted")
	}
	if _, err := newLeaf(nil, LeafOptions{}); err == nil {
		t.Error("leaf without any name accepted")
	}
	if _, err := newLeaf(nil, LeafOptions{NoSAN: true}); err == nil {
		t.Error("NoSAN leaf without a CN accepted")
	}
}

func TestTLSARecords(t *testing.T) {
	root := NewCA(t, "Test Root CA")
	l := root.Leaf(t, LeafOptions{DNSNames: []string{"mx1.example"}, KeyType: RSA2048})
	owner := TLSAOwner("mx1.example", 25)
	if owner != "_25._tcp.mx1.example." {
		t.Fatalf("owner = %q", owner)
	}
	sum256 := func(b []byte) []byte { s := sha256.Sum256(b); return s[:] }
	sum512 := func(b []byte) []byte { s := sha512.Sum512(b); return s[:] }
	cases := []struct {
		usage, sel, mt uint8
		cert           *x509.Certificate
		want           []byte
	}{
		{UsageDANEEE, SelectorSPKI, MatchSHA256, l.Cert, sum256(l.SPKI())},
		{UsageDANEEE, SelectorSPKI, MatchSHA512, l.Cert, sum512(l.SPKI())},
		{UsageDANEEE, SelectorSPKI, MatchFull, l.Cert, l.SPKI()},
		{UsageDANEEE, SelectorCert, MatchSHA256, l.Cert, sum256(l.DER())},
		{UsageDANEEE, SelectorCert, MatchSHA512, l.Cert, sum512(l.DER())},
		{UsageDANEEE, SelectorCert, MatchFull, l.Cert, l.DER()},
		{UsageDANETA, SelectorCert, MatchSHA256, root.Cert, sum256(root.Cert.Raw)},
		{UsageDANETA, SelectorSPKI, MatchSHA512, root.Cert, sum512(root.Cert.RawSubjectPublicKeyInfo)},
		{UsagePKIXTA, SelectorCert, MatchSHA256, root.Cert, sum256(root.Cert.Raw)},
		{200, SelectorSPKI, MatchSHA256, l.Cert, sum256(l.SPKI())}, // unknown usage is allowed
	}
	for _, c := range cases {
		for _, name := range []string{owner, "_25._tcp.mx1.example"} {
			s := TLSA(t, name, c.usage, c.sel, c.mt, c.cert)
			rr, err := dns.NewRR(s)
			if err != nil {
				t.Fatalf("dns.NewRR(%q): %v", s, err)
			}
			tl, ok := rr.(*dns.TLSA)
			if !ok {
				t.Fatalf("%q parsed as %T", s, rr)
			}
			if tl.Hdr.Name != owner || tl.Hdr.Ttl != DefaultTLSATTL || tl.Hdr.Class != dns.ClassINET {
				t.Errorf("header %v", tl.Hdr)
			}
			if tl.Usage != c.usage || tl.Selector != c.sel || tl.MatchingType != c.mt {
				t.Errorf("%q: fields %d %d %d", s, tl.Usage, tl.Selector, tl.MatchingType)
			}
			got, err := hex.DecodeString(tl.Certificate)
			if err != nil || !bytes.Equal(got, c.want) {
				t.Errorf("%d %d %d: association data mismatch", c.usage, c.sel, c.mt)
			}
		}
	}
	// Cross-check one record against miekg/dns's own TLSA verifier.
	rr, err := dns.NewRR(TLSA(t, owner, UsageDANEEE, SelectorSPKI, MatchSHA256, l.Cert))
	if err != nil {
		t.Fatal(err)
	}
	if err := rr.(*dns.TLSA).Verify(l.Cert); err != nil {
		t.Errorf("miekg/dns Verify: %v", err)
	}
	if err := rr.(*dns.TLSA).Verify(root.Cert); err == nil {
		t.Error("miekg/dns Verify accepted the wrong certificate")
	}

	rr2 := TLSARR(t, owner, 3, 1, 1, l.Cert)
	rr2.Hdr.Ttl = 60
	if parsed, err := dns.NewRR(rr2.String()); err != nil || parsed.Header().Ttl != 60 {
		t.Errorf("TLSARR with TTL 60: %v", err)
	}

	raw := TLSARaw(t, owner, 3, 1, 255, []byte{0xde, 0xad})
	parsed, err := dns.NewRR(raw)
	if err != nil {
		t.Fatalf("TLSARaw: %v", err)
	}
	if p := parsed.(*dns.TLSA); p.MatchingType != 255 || p.Certificate != "dead" {
		t.Errorf("TLSARaw parsed as %v", p)
	}
}

func TestTLSADataErrors(t *testing.T) {
	ca := NewCA(t, "CA")
	if _, err := TLSAData(2, MatchSHA256, ca.Cert); err == nil {
		t.Error("selector 2 accepted")
	}
	if _, err := TLSAData(SelectorSPKI, 3, ca.Cert); err == nil {
		t.Error("matching type 3 accepted")
	}
	if _, err := TLSAData(SelectorSPKI, MatchSHA256, nil); err == nil {
		t.Error("nil certificate accepted")
	}
	// Invalid owner names and data fail the test through t.Fatal.
	for name, f := range map[string]func(tb testing.TB){
		"bad selector":  func(tb testing.TB) { TLSA(tb, "_25._tcp.mx.example", 3, 7, 1, ca.Cert) },
		"space in name": func(tb testing.TB) { TLSA(tb, "_25._tcp.mx example", 3, 1, 1, ca.Cert) },
		"empty name":    func(tb testing.TB) { TLSA(tb, "", 3, 1, 1, ca.Cert) },
		"empty data":    func(tb testing.TB) { TLSARaw(tb, "_25._tcp.mx.example", 3, 1, 1, nil) },
		"long label":    func(tb testing.TB) { TLSA(tb, strings.Repeat("a", 64)+".example", 3, 1, 1, ca.Cert) },
		"root name":     func(tb testing.TB) { TLSA(tb, ".", 3, 1, 1, ca.Cert) },
		"empty label":   func(tb testing.TB) { TLSA(tb, "_25._tcp..example", 3, 1, 1, ca.Cert) },
		"escape":        func(tb testing.TB) { TLSA(tb, "_25._tcp.mx\\", 3, 1, 1, ca.Cert) },
		"non-ASCII":     func(tb testing.TB) { TLSA(tb, "_25._tcp.mx\u00e9.example", 3, 1, 1, ca.Cert) },
		"too long":      func(tb testing.TB) { TLSA(tb, strings.Repeat("abcdefghi.", 26), 3, 1, 1, ca.Cert) },
	} {
		if !fails(f) {
			t.Errorf("%s: did not fail the test", name)
		}
	}
	// The helper used above does report success when nothing fails.
	if fails(func(tb testing.TB) { TLSA(tb, "_25._tcp.*.mx-1.example", 3, 1, 1, ca.Cert) }) {
		t.Error("valid TLSA call reported as failing")
	}
}

// fakeTB records whether Fatal was called; it stops the calling function
// with runtime.Goexit like testing.T does.
type fakeTB struct {
	testing.TB
	failed bool
}

func (f *fakeTB) Helper()               {}
func (f *fakeTB) Fatal(...any)          { f.failed = true; runtime.Goexit() }
func (f *fakeTB) Fatalf(string, ...any) { f.failed = true; runtime.Goexit() }

func fails(fn func(testing.TB)) bool {
	f := &fakeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f.failed
}

func BenchmarkLeaf(b *testing.B) {
	ca := NewCA(b, "bench root")
	for _, kt := range []KeyType{ECDSAP256, Ed25519, RSA2048} {
		b.Run(kt.String(), func(b *testing.B) {
			for b.Loop() {
				ca.Leaf(b, LeafOptions{DNSNames: []string{"mx1.example"}, KeyType: kt})
			}
		})
	}
}
