package dane

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testNow is the injected clock of every test.
var testNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

const day = 24 * time.Hour

type keyKind int

const (
	kECDSA keyKind = iota
	kRSA
	kEd25519
)

func (k keyKind) String() string {
	return [...]string{"ECDSA", "RSA", "Ed25519"}[k]
}

var (
	rsaOnce sync.Once
	rsaKeys []*rsa.PrivateKey
	rsaNext atomic.Int32
)

// newKey makes a key. RSA generation is slow, so a few RSA keys are made
// once and handed out in turn; tests never need more distinct RSA keys
// than that at once.
func newKey(t testing.TB, k keyKind) crypto.Signer {
	t.Helper()
	switch k {
	case kRSA:
		rsaOnce.Do(func() {
			for i := 0; i < 4; i++ {
				key, err := rsa.GenerateKey(rand.Reader, 2048)
				if err != nil {
					panic(err)
				}
				rsaKeys = append(rsaKeys, key)
			}
		})
		return rsaKeys[int(rsaNext.Add(1))%len(rsaKeys)]
	case kEd25519:
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return key
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

type tcert struct {
	cert *x509.Certificate
	key  crypto.Signer
}

type spec struct {
	cn                  string
	dns                 []string
	ca                  bool
	pathLenZero         bool
	notBefore, notAfter time.Time
	key                 keyKind
	signer              crypto.Signer // overrides key
	permitted, excluded []string
	eku                 []x509.ExtKeyUsage
	critical            bool // add an unknown critical extension
}

var serial atomic.Int64

// issue creates a certificate from s, signed by parent, or self-signed when
// parent is nil.
func issue(t testing.TB, s spec, parent *tcert) *tcert {
	t.Helper()
	key := s.signer
	if key == nil {
		key = newKey(t, s.key)
	}
	if s.notBefore.IsZero() {
		s.notBefore = testNow.Add(-30 * day)
	}
	if s.notAfter.IsZero() {
		s.notAfter = testNow.Add(365 * day)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: s.cn, Organization: []string{"daneguard test"}},
		DNSNames:              s.dns,
		NotBefore:             s.notBefore,
		NotAfter:              s.notAfter,
		BasicConstraintsValid: true,
		IsCA:                  s.ca,
		ExtKeyUsage:           s.eku,
		PermittedDNSDomains:   s.permitted,
		ExcludedDNSDomains:    s.excluded,
	}
	if s.critical {
		tmpl.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 2}, Critical: true, Value: []byte{5, 0}}}
	}
	if s.ca {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		tmpl.MaxPathLen = -1
		if s.pathLenZero {
			tmpl.MaxPathLen, tmpl.MaxPathLenZero = 0, true
		}
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	signCert, signKey := tmpl, key
	if parent != nil {
		signCert, signKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signCert, key.Public(), signKey)
	if err != nil {
		t.Fatalf("creating %q: %v", s.cn, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tcert{cert: c, key: key}
}

// rec builds the record of the given parameters for cert.
func rec(u Usage, s Selector, m MatchingType, cert *x509.Certificate) Record {
	data := selectData(cert, s)
	switch m {
	case SHA2_256:
		d := sha256.Sum256(data)
		data = d[:]
	case SHA2_512:
		d := sha512.Sum512(data)
		data = d[:]
	}
	return Record{Usage: u, Selector: s, MatchingType: m, Data: append([]byte(nil), data...)}
}

func chainOf(cs ...*tcert) []*x509.Certificate {
	out := make([]*x509.Certificate, len(cs))
	for i, c := range cs {
		out[i] = c.cert
	}
	return out
}

// fixture is a set of PKIs exercising the DANE-TA(2) rules. The reference
// names are mx.example.com and example.com.
type fixture struct {
	root, inter, leaf *tcert // ECDSA root -> RSA intermediate -> Ed25519 leaf

	expiredLeaf, futureLeaf, otherName, wildcard, cnOnly, cnAndSAN, clientOnly *tcert // under inter

	expiredInter, leafUnderExpiredInter *tcert // under root

	expiredRoot, interUnderExpiredRoot, leafUnderExpiredRoot *tcert

	// constrainedRoot permits only example.org.
	constrainedRoot, interC, leafC, leafCCN *tcert
	// excludingInter (under root) excludes example.com.
	excludingInter, leafX *tcert

	// pathLenRoot has path length 0, so a chain through interP breaks it.
	pathLenRoot, interP, leafP *tcert

	notCA, leafUnderNotCA *tcert // a leaf issued by a non-CA certificate under inter

	// permittingRoot permits only example.com; leafPermCN has no SAN.
	permittingRoot, leafPermCN *tcert
	// leafXCN has no SAN and is issued by excludingInter.
	leafXCN *tcert
	// renewedInter has the subject and key of expiredInter, is valid,
	// and is issued by unrelatedRoot.
	renewedInter *tcert
	// critLeaf carries an unknown critical extension.
	critLeaf *tcert
	// unknownKeyCA is a CA certificate under root whose public key
	// algorithm crypto/x509 does not know.
	unknownKeyCA *x509.Certificate

	selfSigned, selfSignedExpired *tcert
	unrelatedRoot                 *tcert
}

var refNames = []string{"mx.example.com", "example.com"}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{}
	f.root = issue(t, spec{cn: "Test Root CA", ca: true, key: kECDSA, notBefore: testNow.Add(-1000 * day), notAfter: testNow.Add(3000 * day)}, nil)
	f.inter = issue(t, spec{cn: "Test Intermediate CA", ca: true, key: kRSA, notBefore: testNow.Add(-500 * day), notAfter: testNow.Add(1000 * day)}, f.root)
	f.leaf = issue(t, spec{cn: "mx.example.com", dns: []string{"mx.example.com"}, key: kEd25519}, f.inter)

	f.expiredLeaf = issue(t, spec{cn: "mx.example.com", dns: []string{"mx.example.com"}, notBefore: testNow.Add(-400 * day), notAfter: testNow.Add(-1 * day)}, f.inter)
	f.futureLeaf = issue(t, spec{cn: "mx.example.com", dns: []string{"mx.example.com"}, notBefore: testNow.Add(day), notAfter: testNow.Add(400 * day)}, f.inter)
	f.otherName = issue(t, spec{cn: "mail.example.net", dns: []string{"mail.example.net"}}, f.inter)
	f.wildcard = issue(t, spec{cn: "*.example.com", dns: []string{"*.example.com"}}, f.inter)
	f.cnOnly = issue(t, spec{cn: "mx.example.com"}, f.inter)
	f.cnAndSAN = issue(t, spec{cn: "mx.example.com", dns: []string{"mail.example.net"}}, f.inter)
	f.clientOnly = issue(t, spec{cn: "mx.example.com", dns: []string{"mx.example.com"}, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, f.inter)

	f.expiredInter = issue(t, spec{cn: "Expired Intermediate CA", ca: true, notBefore: testNow.Add(-400 * day), notAfter: testNow.Add(-1 * day)}, f.root)
	f.leafUnderExpiredInter = issue(t, spec{cn: "mx.example.com", dns: []string{"mx.example.com"}, notBefore: testNow.Add(-300 * day), notAfter: testNow.Add(60 * day)}, f.expiredInter)

	f.expiredRoot = issue(t, spec{cn: "Expired Root CA", ca: true, notBefore: testNow.Add(-800 * day), notAfter: testNow.Add(-1 * day)}, nil)
	f.interUnderExpiredRoot = issue(t, spec{cn: "Intermediate Under Expired Root", ca: true, notBefore: testNow.Add(-700 * day), notAfter: testNow.Add(300 * day)}, f.expiredRoot)
	f.leafUnderExpiredRoot = issue(t, spec{cn: "mx.example.com", dns: []string{"mx.example.com"}}, f.interUnderExpiredRoot)

	f.constrainedRoot = issue(t, spec{cn: "Constrained Root CA", ca: true, permitted: []string{"example.org"}}, nil)
	f.interC = issue(t, spec{cn: "Constrained Intermediate CA", ca: true}, f.constrainedRoot)
	f.leafC = issue(t, spec{cn: "mx.example.com", dns: []string{"mx.example.com"}}, f.interC)
	f.leafCCN = issue(t, spec{cn: "mx.example.com"}, f.interC)

	f.excludingInter = issue(t, spec{cn: "Excluding Intermediate CA", ca: true, excluded: []string{"example.com"}}, f.root)
	f.leafX = issue(t, spec{cn: "mx.example.com", dns: []string{"mx.example.com"}}, f.excludingInter)

	f.pathLenRoot = issue(t, spec{cn: "Path Length Zero Root CA", ca: true, pathLenZero: true}, nil)
	f.interP = issue(t, spec{cn: "Intermediate Under Path Length Zero", ca: true}, f.pathLenRoot)
	f.leafP = issue(t, spec{cn: "mx.example.com", dns: []string{"mx.example.com"}}, f.interP)

	f.notCA = issue(t, spec{cn: "Not A CA"}, f.inter)
	f.leafUnderNotCA = issue(t, spec{cn: "mx.example.com", dns: []string{"mx.example.com"}}, f.notCA)

	f.selfSigned = issue(t, spec{cn: "mx.example.com", dns: []string{"mx.example.com"}, key: kEd25519}, nil)
	f.selfSignedExpired = issue(t, spec{cn: "mx.example.com", dns: []string{"mx.example.com"}, notBefore: testNow.Add(-400 * day), notAfter: testNow.Add(-1 * day)}, nil)
	f.unrelatedRoot = issue(t, spec{cn: "Unrelated Root CA", ca: true}, nil)

	f.permittingRoot = issue(t, spec{cn: "Permitting Root CA", ca: true, permitted: []string{"example.com"}}, nil)
	f.leafPermCN = issue(t, spec{cn: "mx.example.com"}, f.permittingRoot)
	f.leafXCN = issue(t, spec{cn: "mx.example.com"}, f.excludingInter)
	f.renewedInter = issue(t, spec{cn: "Expired Intermediate CA", ca: true, signer: f.expiredInter.key}, f.unrelatedRoot)
	f.critLeaf = issue(t, spec{cn: "mx.example.com", dns: []string{"mx.example.com"}, critical: true}, f.inter)
	f.unknownKeyCA = withUnknownKey(t, issue(t, spec{cn: "Unknown Key CA", ca: true}, f.root), f.root)
	return f
}

// withUnknownKey re-signs c, issued by parent (an ECDSA issuer), with its
// public key replaced by one of an algorithm crypto/x509 does not know.
func withUnknownKey(t testing.TB, c *tcert, parent *tcert) *x509.Certificate {
	t.Helper()
	var outer struct {
		TBS    asn1.RawValue
		SigAlg pkix.AlgorithmIdentifier
		Sig    asn1.BitString
	}
	if _, err := asn1.Unmarshal(c.cert.Raw, &outer); err != nil {
		t.Fatal(err)
	}
	content := bytes.Replace(outer.TBS.Bytes, c.cert.RawSubjectPublicKeyInfo, unknownAlgSPKI(t), 1)
	tbs, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: content})
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, parent.key.(*ecdsa.PrivateKey), h[:])
	if err != nil {
		t.Fatal(err)
	}
	outer.TBS = asn1.RawValue{FullBytes: tbs}
	outer.Sig = asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}
	der, err := asn1.Marshal(outer)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if parsed.PublicKey != nil || parsed.CheckSignatureFrom(parent.cert) != nil {
		t.Fatalf("re-signed certificate: key %T, signature %v", parsed.PublicKey, parsed.CheckSignatureFrom(parent.cert))
	}
	return parsed
}

var (
	fixOnce sync.Once
	fix     *fixture
)

// sharedFixture builds the fixture once per test binary; tests only read it.
func sharedFixture(t testing.TB) *fixture {
	fixOnce.Do(func() { fix = newFixture(t) })
	return fix
}

func opts() VerifyOptions {
	return VerifyOptions{ReferenceNames: refNames, Now: testNow}
}

// wantFail checks that err is a *VerifyError with the given reason.
func wantFail(t *testing.T, m *Match, err error, reason Reason) *VerifyError {
	t.Helper()
	if m != nil {
		t.Fatalf("got match %v, want failure %s", m, reason)
	}
	var ve *VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T) is not a *VerifyError", err, err)
	}
	if ve.Reason != reason {
		t.Fatalf("reason %s, want %s (%v)", ve.Reason, reason, err)
	}
	return ve
}

func wantMatch(t *testing.T, m *Match, err error, r Record) *Match {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	if m == nil {
		t.Fatal("nil match without error")
	}
	if !m.Record.Equal(r) {
		t.Fatalf("matched %s, want %s", m.Record.Mnemonic(), r.Mnemonic())
	}
	return m
}

// TestVerifyMatrix covers every usage, selector and matching type against a
// three-certificate chain: DANE-EE(3) records for the leaf and DANE-TA(2)
// records for the root and the intermediate succeed; the same parameters
// with data of another certificate fail with no-match; the PKIX and
// unassigned values are never used.
func TestVerifyMatrix(t *testing.T) {
	f := sharedFixture(t)
	chain := chainOf(f.leaf, f.inter, f.root)
	for _, u := range []Usage{PKIXTA, PKIXEE, DANETA, DANEEE, 4, PrivCert} {
		for _, s := range []Selector{Cert, SPKI, 2} {
			for _, mt := range []MatchingType{Full, SHA2_256, SHA2_512, 3} {
				targets := []*tcert{f.leaf}
				if u == DANETA {
					targets = []*tcert{f.root, f.inter}
				}
				for _, target := range targets {
					r := rec(u, s, mt, target.cert)
					name := r.Mnemonic() + "/" + target.cert.Subject.CommonName
					t.Run(name, func(t *testing.T) {
						usable := (u == DANETA || u == DANEEE) && s <= SPKI && mt <= SHA2_512
						if mt > SHA2_512 || s > SPKI {
							// Give unassigned types data the right size
							// for SHA2-256 so that only the type is wrong.
							r.Data = make([]byte, 32)
						}
						m, err := Verify(chain, []Record{r}, opts())
						if !usable {
							wantFail(t, m, err, ReasonNoUsableRecords)
							return
						}
						m = wantMatch(t, m, err, r)
						if u == DANEEE {
							if len(m.Chain) != 1 || m.Chain[0] != f.leaf.cert || m.Name != "" || m.Anchor != nil {
								t.Errorf("DANE-EE match %+v", m)
							}
						} else {
							if m.Name != "mx.example.com" || m.Anchor != target.cert || m.AnchorFromDNS {
								t.Errorf("DANE-TA match: name %q anchor %v fromDNS %v", m.Name, m.Anchor, m.AnchorFromDNS)
							}
							if m.Chain[0] != f.leaf.cert || m.Chain[len(m.Chain)-1] != target.cert {
								t.Errorf("chain does not run from leaf to anchor: %v", subjects(m.Chain))
							}
						}

						// The same parameters for an unrelated
						// certificate must not authenticate.
						wrong := rec(u, s, mt, f.unrelatedRoot.cert)
						m, err = Verify(chain, []Record{wrong}, opts())
						want := ReasonNoMatch
						if u == DANETA && mt == Full {
							// A Full(0) DANE-TA record brings its own
							// anchor, which did not sign this chain.
							want = ReasonChainBuild
						}
						wantFail(t, m, err, want)
					})
				}
			}
		}
	}
}

func subjects(chain []*x509.Certificate) []string {
	var s []string
	for _, c := range chain {
		s = append(s, c.Subject.CommonName)
	}
	return s
}

// TestVerifyKeyAlgorithms runs the main record types over single-algorithm
// PKIs for each key type, including the bare-key anchor path, whose
// signature check is algorithm specific.
func TestVerifyKeyAlgorithms(t *testing.T) {
	for _, k := range []keyKind{kRSA, kECDSA, kEd25519} {
		t.Run(k.String(), func(t *testing.T) {
			root := issue(t, spec{cn: k.String() + " Root", ca: true, key: k}, nil)
			inter := issue(t, spec{cn: k.String() + " Intermediate", ca: true, key: k}, root)
			leaf := issue(t, spec{cn: "mx.example.com", dns: []string{"mx.example.com"}, key: k}, inter)
			self := issue(t, spec{cn: "mx.example.com", dns: []string{"mx.example.com"}, key: k}, nil)
			cases := []struct {
				name  string
				chain []*x509.Certificate
				r     Record
			}{
				{"3 1 1", chainOf(leaf), rec(DANEEE, SPKI, SHA2_256, leaf.cert)},
				{"3 0 2", chainOf(leaf, inter), rec(DANEEE, Cert, SHA2_512, leaf.cert)},
				{"2 0 1 root", chainOf(leaf, inter, root), rec(DANETA, Cert, SHA2_256, root.cert)},
				{"2 1 1 root", chainOf(leaf, inter, root), rec(DANETA, SPKI, SHA2_256, root.cert)},
				{"2 1 0 root absent", chainOf(leaf, inter), rec(DANETA, SPKI, Full, root.cert)},
				{"2 1 0 intermediate absent", chainOf(leaf), rec(DANETA, SPKI, Full, inter.cert)},
				{"2 0 0 root absent", chainOf(leaf, inter), rec(DANETA, Cert, Full, root.cert)},
				{"2 0 1 self-signed leaf", chainOf(self), rec(DANETA, Cert, SHA2_256, self.cert)},
				{"3 1 1 self-signed leaf", chainOf(self), rec(DANEEE, SPKI, SHA2_256, self.cert)},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					m, err := Verify(c.chain, []Record{c.r}, opts())
					wantMatch(t, m, err, c.r)
				})
			}
		})
	}
}

func TestVerifyDANEEE(t *testing.T) {
	f := sharedFixture(t)
	cases := []struct {
		name  string
		chain []*x509.Certificate
		r     Record
		fail  Reason // "" for success
	}{
		// RFC 7672 §3.1.1, §3.2.1: no name or date checks.
		{"wrong name ignored", chainOf(f.otherName, f.inter), rec(DANEEE, SPKI, SHA2_256, f.otherName.cert), ""},
		{"expired leaf ignored", chainOf(f.expiredLeaf), rec(DANEEE, SPKI, SHA2_256, f.expiredLeaf.cert), ""},
		{"not-yet-valid leaf ignored", chainOf(f.futureLeaf), rec(DANEEE, Cert, SHA2_256, f.futureLeaf.cert), ""},
		{"self-signed expired", chainOf(f.selfSignedExpired), rec(DANEEE, Cert, Full, f.selfSignedExpired.cert), ""},
		{"unknown critical extension ignored", chainOf(f.critLeaf), rec(DANEEE, Cert, SHA2_256, f.critLeaf.cert), ""},
		{"no chain needed", chainOf(f.leafUnderNotCA), rec(DANEEE, SPKI, SHA2_512, f.leafUnderNotCA.cert), ""},
		// Only the leaf is matched.
		{"intermediate does not count", chainOf(f.leaf, f.inter), rec(DANEEE, SPKI, SHA2_256, f.inter.cert), ReasonNoMatch},
		{"root does not count", chainOf(f.leaf, f.inter, f.root), rec(DANEEE, Cert, SHA2_256, f.root.cert), ReasonNoMatch},
		{"leaf in second position", chainOf(f.otherName, f.leaf), rec(DANEEE, SPKI, SHA2_256, f.leaf.cert), ReasonNoMatch},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := opts()
			m, err := Verify(c.chain, []Record{c.r}, o)
			if c.fail != "" {
				wantFail(t, m, err, c.fail)
				return
			}
			m = wantMatch(t, m, err, c.r)
			if len(m.Chain) != 1 || m.Chain[0] != c.chain[0] {
				t.Errorf("chain %v, want just the leaf", subjects(m.Chain))
			}
		})
	}
}

func TestVerifyDANETA(t *testing.T) {
	f := sharedFixture(t)
	junk := issue(t, spec{cn: "junk.example.net", dns: []string{"junk.example.net"}}, f.unrelatedRoot)
	type tc struct {
		name   string
		chain  []*x509.Certificate
		r      Record
		names  []string // nil: refNames
		extra  []*x509.Certificate
		fail   Reason
		cert   *x509.Certificate // VerifyError.Cert when failing
		chainN int               // expected chain length on success, if non-zero
		match  string            // expected Match.Name, if non-empty
	}
	cases := []tc{
		{name: "root digest in chain", chain: chainOf(f.leaf, f.inter, f.root), r: rec(DANETA, Cert, SHA2_256, f.root.cert), chainN: 3},
		{name: "intermediate digest", chain: chainOf(f.leaf, f.inter, f.root), r: rec(DANETA, Cert, SHA2_256, f.inter.cert), chainN: 2},
		{name: "intermediate SPKI", chain: chainOf(f.leaf, f.inter), r: rec(DANETA, SPKI, SHA2_512, f.inter.cert), chainN: 2},
		{name: "wrong order", chain: chainOf(f.leaf, f.root, f.inter), r: rec(DANETA, Cert, SHA2_256, f.root.cert), chainN: 3},
		{name: "junk in chain", chain: []*x509.Certificate{f.leaf.cert, junk.cert, f.unrelatedRoot.cert, nil, f.root.cert, f.leaf.cert, f.inter.cert, {}}, r: rec(DANETA, Cert, SHA2_256, f.root.cert), chainN: 3},
		{name: "missing intermediate", chain: chainOf(f.leaf, f.root), r: rec(DANETA, Cert, SHA2_256, f.root.cert), fail: ReasonChainBuild},
		{name: "missing intermediate supplied", chain: chainOf(f.leaf, f.root), extra: chainOf(f.inter), r: rec(DANETA, Cert, SHA2_256, f.root.cert), chainN: 3},
		{name: "anchor among extra intermediates", chain: chainOf(f.leaf), extra: chainOf(f.inter), r: rec(DANETA, Cert, SHA2_256, f.inter.cert), chainN: 2},
		{name: "digest anchor absent", chain: chainOf(f.leaf, f.inter), r: rec(DANETA, Cert, SHA2_256, f.root.cert), fail: ReasonNoMatch},
		{name: "anchor is not an ancestor", chain: chainOf(f.leaf, f.inter, f.unrelatedRoot), r: rec(DANETA, Cert, SHA2_256, f.unrelatedRoot.cert), fail: ReasonChainBuild},

		// Names (RFC 7672 §3.2).
		{name: "second reference name", chain: chainOf(f.leaf, f.inter), r: rec(DANETA, SPKI, SHA2_256, f.inter.cert), names: []string{"mx1.example.com", "mx.example.com"}, match: "mx.example.com"},
		{name: "name case and trailing dot", chain: chainOf(f.leaf, f.inter), r: rec(DANETA, SPKI, SHA2_256, f.inter.cert), names: []string{"MX.Example.COM."}, match: "mx.example.com"},
		{name: "wrong name", chain: chainOf(f.otherName, f.inter), r: rec(DANETA, SPKI, SHA2_256, f.inter.cert), fail: ReasonNameMismatch, cert: f.otherName.cert},
		{name: "no reference names", chain: chainOf(f.leaf, f.inter), r: rec(DANETA, SPKI, SHA2_256, f.inter.cert), names: []string{}, fail: ReasonNameMismatch},
		{name: "wildcard", chain: chainOf(f.wildcard, f.inter), r: rec(DANETA, SPKI, SHA2_256, f.inter.cert), match: "mx.example.com"},
		{name: "wildcard not for parent", chain: chainOf(f.wildcard, f.inter), r: rec(DANETA, SPKI, SHA2_256, f.inter.cert), names: []string{"example.com"}, fail: ReasonNameMismatch},
		{name: "wildcard one label only", chain: chainOf(f.wildcard, f.inter), r: rec(DANETA, SPKI, SHA2_256, f.inter.cert), names: []string{"a.b.example.com"}, fail: ReasonNameMismatch},
		{name: "wildcard reference never matches", chain: chainOf(f.wildcard, f.inter), r: rec(DANETA, SPKI, SHA2_256, f.inter.cert), names: []string{"*.example.com"}, fail: ReasonNameMismatch},
		{name: "CN without SAN", chain: chainOf(f.cnOnly, f.inter), r: rec(DANETA, SPKI, SHA2_256, f.inter.cert), match: "mx.example.com"},
		{name: "CN wrong name", chain: chainOf(f.cnOnly, f.inter), r: rec(DANETA, SPKI, SHA2_256, f.inter.cert), names: []string{"other.example.com"}, fail: ReasonNameMismatch},
		{name: "CN ignored with SAN", chain: chainOf(f.cnAndSAN, f.inter), r: rec(DANETA, SPKI, SHA2_256, f.inter.cert), fail: ReasonNameMismatch},
		{name: "EKU not enforced", chain: chainOf(f.clientOnly, f.inter), r: rec(DANETA, Cert, SHA2_256, f.inter.cert), chainN: 2},

		// Dates: leaf and intermediates always, a Cert(0) anchor too, a
		// bare key never.
		{name: "expired leaf", chain: chainOf(f.expiredLeaf, f.inter), r: rec(DANETA, Cert, SHA2_256, f.inter.cert), fail: ReasonExpired, cert: f.expiredLeaf.cert},
		{name: "future leaf", chain: chainOf(f.futureLeaf, f.inter), r: rec(DANETA, Cert, SHA2_256, f.inter.cert), fail: ReasonNotYetValid, cert: f.futureLeaf.cert},
		{name: "expired intermediate", chain: chainOf(f.leafUnderExpiredInter, f.expiredInter, f.root), r: rec(DANETA, Cert, SHA2_256, f.root.cert), fail: ReasonExpired, cert: f.expiredInter.cert},
		{name: "expired intermediate bare key", chain: chainOf(f.leafUnderExpiredInter, f.expiredInter, f.root), r: rec(DANETA, SPKI, SHA2_256, f.root.cert), fail: ReasonExpired, cert: f.expiredInter.cert},
		// crypto/x509 reports the failure of the last candidate issuer;
		// the expired one must still be found.
		{name: "expired intermediate beside renewed one", chain: chainOf(f.leafUnderExpiredInter, f.expiredInter, f.renewedInter, f.root), r: rec(DANETA, Cert, SHA2_256, f.root.cert), fail: ReasonExpired, cert: f.expiredInter.cert},
		{name: "expired Cert anchor", chain: chainOf(f.leafUnderExpiredRoot, f.interUnderExpiredRoot, f.expiredRoot), r: rec(DANETA, Cert, SHA2_256, f.expiredRoot.cert), fail: ReasonExpired, cert: f.expiredRoot.cert},
		{name: "expired SPKI anchor", chain: chainOf(f.leafUnderExpiredRoot, f.interUnderExpiredRoot, f.expiredRoot), r: rec(DANETA, SPKI, SHA2_256, f.expiredRoot.cert), chainN: 3},
		{name: "expired SPKI anchor from DNS", chain: chainOf(f.leafUnderExpiredRoot, f.interUnderExpiredRoot), r: rec(DANETA, SPKI, Full, f.expiredRoot.cert), chainN: 2},

		// Constraints of a Cert(0) anchor apply; those of an SPKI(1)
		// anchor do not (RFC 7672 §3.1.2); intermediates' always do.
		{name: "anchor name constraints", chain: chainOf(f.leafC, f.interC, f.constrainedRoot), r: rec(DANETA, Cert, SHA2_256, f.constrainedRoot.cert), fail: ReasonConstraint},
		{name: "anchor name constraints on CN", chain: chainOf(f.leafCCN, f.interC, f.constrainedRoot), r: rec(DANETA, Cert, SHA2_256, f.constrainedRoot.cert), fail: ReasonConstraint, cert: f.leafCCN.cert},
		{name: "anchor name constraints from DNS", chain: chainOf(f.leafC, f.interC), r: rec(DANETA, Cert, Full, f.constrainedRoot.cert), fail: ReasonConstraint},
		{name: "SPKI anchor constraints not applied", chain: chainOf(f.leafC, f.interC, f.constrainedRoot), r: rec(DANETA, SPKI, SHA2_256, f.constrainedRoot.cert), chainN: 3},
		{name: "intermediate exclusion", chain: chainOf(f.leafX, f.excludingInter, f.root), r: rec(DANETA, SPKI, SHA2_256, f.root.cert), fail: ReasonConstraint},
		{name: "anchor path length", chain: chainOf(f.leafP, f.interP, f.pathLenRoot), r: rec(DANETA, Cert, SHA2_256, f.pathLenRoot.cert), fail: ReasonConstraint},
		{name: "SPKI anchor path length not applied", chain: chainOf(f.leafP, f.interP, f.pathLenRoot), r: rec(DANETA, SPKI, SHA2_256, f.pathLenRoot.cert), chainN: 3},
		{name: "anchor permits CN", chain: chainOf(f.leafPermCN, f.permittingRoot), r: rec(DANETA, Cert, SHA2_256, f.permittingRoot.cert), chainN: 2},
		{name: "intermediate excludes CN", chain: chainOf(f.leafXCN, f.excludingInter, f.root), r: rec(DANETA, SPKI, SHA2_256, f.root.cert), fail: ReasonConstraint, cert: f.leafXCN.cert},
		{name: "unknown critical extension", chain: chainOf(f.critLeaf, f.inter), r: rec(DANETA, Cert, SHA2_256, f.inter.cert), fail: ReasonConstraint, cert: f.critLeaf.cert},
		{name: "anchor key algorithm unknown", chain: []*x509.Certificate{f.leaf.cert, f.inter.cert, f.unknownKeyCA}, r: rec(DANETA, SPKI, SHA2_256, f.unknownKeyCA), fail: ReasonChainBuild},
		{name: "issuer not a CA", chain: chainOf(f.leafUnderNotCA, f.notCA, f.inter), r: rec(DANETA, Cert, SHA2_256, f.inter.cert), fail: ReasonChainBuild},

		// The leaf as its own trust anchor.
		{name: "self-signed leaf Cert", chain: chainOf(f.selfSigned), r: rec(DANETA, Cert, SHA2_256, f.selfSigned.cert), chainN: 1},
		{name: "self-signed leaf SPKI", chain: chainOf(f.selfSigned), r: rec(DANETA, SPKI, SHA2_512, f.selfSigned.cert), chainN: 1},
		{name: "self-signed leaf Full", chain: chainOf(f.selfSigned), r: rec(DANETA, Cert, Full, f.selfSigned.cert), chainN: 1},
		{name: "self-signed leaf wrong name", chain: chainOf(f.selfSigned), r: rec(DANETA, Cert, SHA2_256, f.selfSigned.cert), names: []string{"mail.example.net"}, fail: ReasonNameMismatch},
		{name: "self-signed leaf expired", chain: chainOf(f.selfSignedExpired), r: rec(DANETA, Cert, SHA2_256, f.selfSignedExpired.cert), fail: ReasonExpired, cert: f.selfSignedExpired.cert},
		{name: "issued leaf as anchor", chain: chainOf(f.leaf), r: rec(DANETA, Cert, SHA2_256, f.leaf.cert), chainN: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := opts()
			if c.names != nil {
				o.ReferenceNames = c.names
			}
			o.Intermediates = c.extra
			m, err := Verify(c.chain, []Record{c.r}, o)
			if c.fail != "" {
				ve := wantFail(t, m, err, c.fail)
				if c.cert != nil && ve.Cert != c.cert {
					t.Errorf("VerifyError.Cert = %v, want %q", ve.Cert, c.cert.Subject.CommonName)
				}
				if c.fail != ReasonNoMatch && (ve.Record == nil || !ve.Record.Equal(c.r) || len(ve.Attempts) == 0) {
					t.Errorf("failure does not name the record: %+v", ve)
				}
				return
			}
			m = wantMatch(t, m, err, c.r)
			if c.chainN != 0 && len(m.Chain) != c.chainN {
				t.Errorf("chain %v, want %d certificates", subjects(m.Chain), c.chainN)
			}
			if m.Chain[0] != c.chain[0] {
				t.Errorf("chain does not start with the leaf")
			}
			want := c.match
			if want == "" {
				want = "mx.example.com"
			}
			if m.Name != want {
				t.Errorf("matched name %q, want %q", m.Name, want)
			}
		})
	}
}

func TestVerifyAnchorFromDNS(t *testing.T) {
	f := sharedFixture(t)
	// RFC 7671 §5.2.2: a "2 0 0" record lets the server omit the anchor.
	r := rec(DANETA, Cert, Full, f.root.cert)
	m, err := Verify(chainOf(f.leaf, f.inter), []Record{r}, opts())
	m = wantMatch(t, m, err, r)
	if !m.AnchorFromDNS || m.Anchor == nil || !m.Anchor.Equal(f.root.cert) || len(m.Chain) != 3 {
		t.Errorf("2 0 0: fromDNS=%v anchor=%v chain=%v", m.AnchorFromDNS, m.Anchor, subjects(m.Chain))
	}
	// RFC 7671 §5.2.3: a "2 1 0" bare key checks the top signature.
	r = rec(DANETA, SPKI, Full, f.root.cert)
	m, err = Verify(chainOf(f.leaf, f.inter), []Record{r}, opts())
	m = wantMatch(t, m, err, r)
	if !m.AnchorFromDNS || m.Anchor != nil || len(m.Chain) != 2 || m.Chain[1] != f.inter.cert {
		t.Errorf("2 1 0: fromDNS=%v anchor=%v chain=%v", m.AnchorFromDNS, m.Anchor, subjects(m.Chain))
	}
	if s := m.String(); s != "DANE-TA(2) SPKI(1) Full(0), trust anchor from DNS, name mx.example.com" {
		t.Errorf("String() = %q", s)
	}
	// When the anchor is in the chain it is matched there, not "from DNS".
	m, err = Verify(chainOf(f.leaf, f.inter, f.root), []Record{r}, opts())
	m = wantMatch(t, m, err, r)
	if m.AnchorFromDNS || m.Anchor != f.root.cert {
		t.Errorf("2 1 0 with anchor present: fromDNS=%v anchor=%v", m.AnchorFromDNS, m.Anchor)
	}
	// A bare key that signed nothing in the chain.
	r = rec(DANETA, SPKI, Full, f.unrelatedRoot.cert)
	m, err = Verify(chainOf(f.leaf, f.inter), []Record{r}, opts())
	wantFail(t, m, err, ReasonChainBuild)
}

func TestVerifyRecordSets(t *testing.T) {
	f := sharedFixture(t)
	chain := chainOf(f.leaf, f.inter, f.root)
	bad := rec(DANEEE, SPKI, SHA2_256, f.leaf.cert)
	bad.Data = bad.Data[:31]
	good := rec(DANEEE, SPKI, SHA2_256, f.leaf.cert)
	t.Run("mixed usable unusable malformed", func(t *testing.T) {
		set := []Record{
			rec(PKIXTA, Cert, SHA2_256, f.root.cert),
			rec(PKIXEE, SPKI, SHA2_256, f.leaf.cert),
			bad,
			{Usage: DANETA, Selector: Cert, MatchingType: Full, Data: []byte("not a certificate")},
			rec(DANETA, Cert, SHA2_256, f.unrelatedRoot.cert),
			good,
		}
		m, err := Verify(chain, set, opts())
		wantMatch(t, m, err, good)
	})
	t.Run("only unusable", func(t *testing.T) {
		set := []Record{rec(PKIXTA, Cert, SHA2_256, f.root.cert), rec(PKIXEE, SPKI, SHA2_256, f.leaf.cert), bad}
		m, err := Verify(chain, set, opts())
		wantFail(t, m, err, ReasonNoUsableRecords)
	})
	t.Run("empty", func(t *testing.T) {
		m, err := Verify(chain, nil, opts())
		wantFail(t, m, err, ReasonNoUsableRecords)
	})
	t.Run("any record suffices", func(t *testing.T) {
		ta := rec(DANETA, Cert, SHA2_256, f.root.cert)
		set := []Record{rec(DANEEE, SPKI, SHA2_256, f.otherName.cert), rec(DANETA, Cert, SHA2_256, f.expiredRoot.cert), ta}
		m, err := Verify(chain, set, opts())
		wantMatch(t, m, err, ta)
	})
	t.Run("furthest failure reported", func(t *testing.T) {
		// The intermediate anchors a chain whose leaf has the wrong
		// name; the unrelated root anchors nothing. The name mismatch
		// is the informative failure.
		set := []Record{rec(DANETA, Cert, SHA2_256, f.unrelatedRoot.cert), rec(DANETA, SPKI, SHA2_256, f.inter.cert)}
		m, err := Verify(chainOf(f.otherName, f.inter, f.unrelatedRoot), set, opts())
		ve := wantFail(t, m, err, ReasonNameMismatch)
		if len(ve.Attempts) != 2 || ve.Attempts[0].Reason != ReasonChainBuild || ve.Attempts[1].Reason != ReasonNameMismatch {
			t.Errorf("attempts %+v", ve.Attempts)
		}
		if !ve.Record.Equal(set[1]) {
			t.Errorf("record %v, want %v", ve.Record, set[1])
		}
	})
	t.Run("digest agility", func(t *testing.T) {
		// RFC 7671 §9: a SHA2-256 match does not count when a SHA2-512
		// record exists for the same usage and selector...
		set := []Record{good, rec(DANEEE, SPKI, SHA2_512, f.otherName.cert)}
		m, err := Verify(chain, set, opts())
		wantFail(t, m, err, ReasonNoMatch)
		// ...but a Full(0) record is never set aside,
		set = append(set, rec(DANEEE, SPKI, Full, f.leaf.cert))
		m, err = Verify(chain, set, opts())
		wantMatch(t, m, err, set[2])
		// and a client preferring SHA2-256 uses it.
		o := opts()
		o.DigestOrder = DigestOrder{SHA2_256, SHA2_512}
		m, err = Verify(chain, set[:2], o)
		wantMatch(t, m, err, good)
	})
}

func TestVerifyAttemptBudget(t *testing.T) {
	f := sharedFixture(t)
	chain := chainOf(f.leaf, f.inter, f.root)
	var set []Record
	for i := 0; i < 2*maxAnchorAttempts; i++ {
		spki, err := x509.MarshalPKIXPublicKey(newKey(t, kECDSA).Public())
		if err != nil {
			t.Fatal(err)
		}
		set = append(set, Record{DANETA, SPKI, Full, spki})
	}
	good := rec(DANETA, Cert, SHA2_256, f.root.cert)
	m, err := Verify(chain, append([]Record{good}, set...), opts())
	wantMatch(t, m, err, good)

	m, err = Verify(chain, append(set, good), opts())
	ve := wantFail(t, m, err, ReasonChainBuild)
	if len(ve.Attempts) != maxAnchorAttempts+1 || !strings.Contains(ve.Attempts[maxAnchorAttempts].Detail, "gave up") || !strings.Contains(ve.Detail, "gave up") {
		t.Errorf("%d attempts, last %+v, detail %q", len(ve.Attempts), ve.Attempts[len(ve.Attempts)-1], ve.Detail)
	}
	// Exactly the budget is not giving up.
	m, err = Verify(chain, set[:maxAnchorAttempts], opts())
	ve = wantFail(t, m, err, ReasonChainBuild)
	if strings.Contains(ve.Detail, "gave up") || len(ve.Attempts) != maxAnchorAttempts {
		t.Errorf("within budget: %d attempts, detail %q", len(ve.Attempts), ve.Detail)
	}
}

func TestVerifyNoCertificate(t *testing.T) {
	f := sharedFixture(t)
	r := []Record{rec(DANEEE, SPKI, SHA2_256, f.leaf.cert)}
	for name, chain := range map[string][]*x509.Certificate{
		"nil":      nil,
		"nil leaf": {nil, f.leaf.cert},
		"unparsed": {{}},
	} {
		t.Run(name, func(t *testing.T) {
			m, err := Verify(chain, r, opts())
			wantFail(t, m, err, ReasonNoCertificate)
		})
	}
	// A hand-made certificate has no DER, so even the digest of empty
	// input cannot match it.
	empty := sha256.Sum256(nil)
	m, err := Verify([]*x509.Certificate{{}}, []Record{{Usage: DANEEE, Selector: Cert, MatchingType: SHA2_256, Data: empty[:]}}, opts())
	wantFail(t, m, err, ReasonNoCertificate)
}

func TestVerifyErrorChain(t *testing.T) {
	f := sharedFixture(t)
	m, err := Verify(chainOf(f.leaf, f.root), []Record{rec(DANETA, Cert, SHA2_256, f.root.cert)}, opts())
	ve := wantFail(t, m, err, ReasonChainBuild)
	var uae x509.UnknownAuthorityError
	if !errors.As(err, &uae) {
		t.Errorf("underlying x509 error not reachable: %v", ve.Err)
	}
	if !strings.Contains(err.Error(), "chain-build-failed") || !strings.Contains(err.Error(), "DANE-TA(2) Cert(0) SHA2-256(1)") {
		t.Errorf("error text %q", err)
	}
}

func TestMatchHostname(t *testing.T) {
	cases := []struct {
		pattern, ref string
		want         bool
	}{
		{"mx.example.com", "mx.example.com", true},
		{"MX.example.com.", "mx.example.com", true},
		{"mx.example.com", "mx2.example.com", false},
		{"*.example.com", "mx.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "a.mx.example.com", false},
		{"*.com", "example.com", false},
		{"mx*.example.com", "mx1.example.com", false},
		{"*mx.example.com", "amx.example.com", false},
		{"*.*.example.com", "a.b.example.com", false},
		{"*", "com", false},
		{"", "", false},
		{"mx..example.com", "mx..example.com", false},
		{"*.example.com", ".example.com", false},
		{"bücher.example", "bücher.example", false},
		{"xn--bcher-kva.example", "xn--bcher-kva.example", true},
	}
	for _, c := range cases {
		if got := matchHostname(c.pattern, normalizeName(c.ref)); got != c.want {
			t.Errorf("matchHostname(%q, %q) = %v, want %v", c.pattern, c.ref, got, c.want)
		}
	}
}

func TestInDNSSubtree(t *testing.T) {
	cases := []struct {
		name, constraint string
		want             bool
	}{
		{"example.com", "example.com", true},
		{"mx.example.com", "example.com", true},
		{"mx.example.com", "Example.COM.", true},
		{"badexample.com", "example.com", false},
		{"example.com", ".example.com", false},
		{"mx.example.com", ".example.com", true},
		{"anything", "", true},
	}
	for _, c := range cases {
		if got := inDNSSubtree(c.name, c.constraint); got != c.want {
			t.Errorf("inDNSSubtree(%q, %q) = %v, want %v", c.name, c.constraint, got, c.want)
		}
	}
}

func TestReasonResultType(t *testing.T) {
	want := map[Reason]string{
		ReasonNameMismatch:    "certificate-host-mismatch",
		ReasonExpired:         "certificate-expired",
		ReasonNotYetValid:     "certificate-not-trusted",
		ReasonNoMatch:         "certificate-host-mismatch",
		ReasonChainBuild:      "certificate-not-trusted",
		ReasonConstraint:      "certificate-not-trusted",
		ReasonNoUsableRecords: "tlsa-invalid",
		ReasonLookupFailed:    "dnssec-invalid",
		ReasonTLSRequired:     "starttls-not-supported",
		ReasonDANERequired:    "dane-required",
		ReasonNoCertificate:   "validation-failure",
		ReasonNotVerified:     "validation-failure",
		ReasonInvalidState:    "validation-failure",
		Reason("bogus"):       "",
	}
	for r, rt := range want {
		if got := r.ResultType(); got != rt {
			t.Errorf("%s.ResultType() = %q, want %q", r, got, rt)
		}
	}
}

func TestMatchString(t *testing.T) {
	f := sharedFixture(t)
	m, err := Verify(chainOf(f.leaf, f.inter, f.root), []Record{rec(DANETA, Cert, SHA2_256, f.root.cert)}, opts())
	if err != nil {
		t.Fatal(err)
	}
	s := m.String()
	if !strings.Contains(s, "DANE-TA(2) Cert(0) SHA2-256(1)") || !strings.Contains(s, "Test Root CA") || !strings.Contains(s, "name mx.example.com") {
		t.Errorf("Match.String() = %q", s)
	}
	if (*Match)(nil).String() != "<no match>" {
		t.Error("nil Match.String()")
	}
}

// fuzzChain is a fixed, deterministic chain for fuzzing: Ed25519 keys from
// fixed seeds and fixed dates make the DER identical in every run, so
// corpus entries stay meaningful.
func fuzzChain(t testing.TB) []*x509.Certificate {
	t.Helper()
	key := func(b byte) ed25519.PrivateKey {
		seed := make([]byte, ed25519.SeedSize)
		for i := range seed {
			seed[i] = b
		}
		return ed25519.NewKeyFromSeed(seed)
	}
	mk := func(n int64, cn string, dns []string, ca bool, k ed25519.PrivateKey, parent *x509.Certificate, pk ed25519.PrivateKey) *x509.Certificate {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(n), Subject: pkix.Name{CommonName: cn}, DNSNames: dns,
			NotBefore: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
			BasicConstraintsValid: true, IsCA: ca, SubjectKeyId: []byte{byte(n)},
		}
		if parent == nil {
			parent, pk = tmpl, k
		}
		der, err := x509.CreateCertificate(nil, tmpl, parent, k.Public(), pk)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	rk, ik, lk := key(1), key(2), key(3)
	root := mk(1, "Fuzz Root", nil, true, rk, nil, nil)
	inter := mk(2, "Fuzz Intermediate", nil, true, ik, root, rk)
	leaf := mk(3, "mx.example.com", []string{"mx.example.com"}, false, lk, inter, ik)
	return []*x509.Certificate{leaf, inter, root}
}

// FuzzVerify feeds arbitrary records to Verify against a fixed chain. It
// must never panic, and any success must be justified by the record.
func FuzzVerify(f *testing.F) {
	chain := fuzzChain(f)
	for _, r := range []Record{
		rec(DANEEE, SPKI, SHA2_256, chain[0]),
		rec(DANEEE, Cert, Full, chain[0]),
		rec(DANETA, Cert, SHA2_512, chain[2]),
		rec(DANETA, SPKI, Full, chain[1]),
		rec(DANETA, Cert, Full, chain[2]),
		rec(PKIXEE, SPKI, SHA2_256, chain[0]),
	} {
		f.Add(uint8(r.Usage), uint8(r.Selector), uint8(r.MatchingType), r.Data, uint8(0), []byte(nil))
	}
	f.Add(uint8(2), uint8(1), uint8(0), []byte{0x30, 0x03, 0x02, 0x01, 0x00}, uint8(3), []byte{1, 2})
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, u, s, mt uint8, data []byte, drop uint8, data2 []byte) {
		records := []Record{{Usage: Usage(u), Selector: Selector(s), MatchingType: MatchingType(mt), Data: data}}
		if len(data2) != 0 {
			records = append(records, Record{Usage: Usage(u ^ 1), Selector: Selector(s), MatchingType: MatchingType(mt), Data: data2})
		}
		// Vary the chain: drop one element (not the leaf) or reverse the
		// rest.
		c := append([]*x509.Certificate(nil), chain...)
		switch d := int(drop % 5); d {
		case 1, 2:
			c = append(c[:d], c[d+1:]...)
		case 3:
			c[1], c[2] = c[2], c[1]
		case 4:
			c = append(c, nil)
		}
		m, err := Verify(c, records, VerifyOptions{ReferenceNames: []string{"mx.example.com"}, Now: now})
		if (m == nil) == (err == nil) {
			t.Fatalf("match %v and error %v", m, err)
		}
		if err != nil {
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Reason == "" {
				t.Fatalf("error %v is not a VerifyError with a reason", err)
			}
			return
		}
		if m.Record.Usage != DANEEE && m.Record.Usage != DANETA {
			t.Fatalf("matched with usage %s", m.Record.Usage)
		}
		if m.Record.Usage == DANEEE && !m.Record.Matches(chain[0]) {
			t.Fatalf("DANE-EE match %s does not match the leaf", m.Record)
		}
		if m.Record.Usage == DANETA && (m.Name != "mx.example.com" || m.Chain[0] != chain[0]) {
			t.Fatalf("DANE-TA match %+v", m)
		}
	})
}

func BenchmarkVerifyEESPKISHA256(b *testing.B) {
	f := sharedFixture(b)
	chain := chainOf(f.leaf, f.inter, f.root)
	records := []Record{rec(DANEEE, SPKI, SHA2_256, f.leaf.cert)}
	o := opts()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(chain, records, o); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyTAChain(b *testing.B) {
	f := sharedFixture(b)
	chain := chainOf(f.leaf, f.inter, f.root)
	records := []Record{rec(DANETA, Cert, SHA2_256, f.root.cert)}
	o := opts()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(chain, records, o); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyTABareKey(b *testing.B) {
	f := sharedFixture(b)
	chain := chainOf(f.leaf, f.inter)
	records := []Record{rec(DANETA, SPKI, Full, f.root.cert)}
	o := opts()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(chain, records, o); err != nil {
			b.Fatal(err)
		}
	}
}
